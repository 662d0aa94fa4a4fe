"""Load a YAML file into a pydantic model, turning every failure into a one-paragraph error.

The message names the file and the dotted key, which is what a user needs to fix a typo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, and NaN/inf are refused.

    YAML reads ``.nan`` and ``.inf`` as floats, and they pass ``gt=0``/``ge=0`` bounds; shipped to a
    device as preprocessing or a time budget, they would silently poison every measurement.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def resolve_named_yaml(
    name_or_path: str | Path, folder: Path, what: str, hint: str, listed: Optional[Callable[[Path], bool]] = None
) -> Path:
    """``quick``, ``quick.yaml`` or a path: a bare name means ``folder/<name>.yaml``, which must exist.

    The error lists the folder's files as the known names; ``listed`` leaves out files that live
    there but are something else (targets/ also holds a farm inventory)."""
    text = str(name_or_path)
    candidate = Path(text)
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        return candidate
    builtin = folder / f"{text}.yaml"
    if builtin.is_file():
        return builtin
    known = sorted(p.stem for p in folder.glob("*.yaml") if listed is None or listed(p))
    raise ConfigError(f"No {what} named '{text}': there is no file {builtin}. Known {what}s: {', '.join(known) or '(none)'}; {hint}")


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{what} file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} file {path} cannot be read: {exc}.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {path} must contain a YAML mapping at the top level, not {type(data).__name__}.")
    return data


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One readable sentence per problem, each naming its dotted key."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}' (check the spelling)")
        elif err["type"] == "missing":
            parts.append(f"missing required key '{key}'")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"key '{key}': {msg} (got {err.get('input')!r})")
    return f"{source} is invalid: " + "; ".join(parts) + "."


def validate(model: Type[M], data: dict[str, Any], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None


def load_model(model: Type[M], path: Path, what: str) -> M:
    return validate(model, read_yaml(path, what), f"{what} file {path}")
