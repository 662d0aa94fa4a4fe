"""The target: one YAML file per device (or device class) under ``targets/``.

A target names the device's facts (architecture, cores, threads, runtime preference, Python command,
remote directory, default build profile) and a ``transport:`` block chosen by ``type``:

* ``ssh``   - a real device reached with paramiko (host keys checked against known_hosts);
* ``local`` - the agent runs as a subprocess on this machine, in its own directory.

Every section forbids unknown keys, so a typo is an error naming the file and the dotted key.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails

from pipeline.config.loader import Strict, describe_validation_error, read_yaml, resolve_named_yaml
from pipeline.errors import ConfigError
from pipeline.paths import builtin_targets_dir, generated_targets_dirs

RUNTIMES: tuple[str, ...] = ("ai_edge_litert", "tflite_runtime", "tensorflow")
# Not a TFLite runtime and never part of "auto": listed first, the agent profiles the bundle's
# model.onnx (profile ``export: {onnx: true}``) with it; bundles without one use the TFLite runtimes.
EXTRA_RUNTIMES: tuple[str, ...] = ("onnxruntime",)
HOST_PYTHON = "host"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # target and device names; fullmatch: "$" would let a trailing newline through
# The deployer creates, replaces and deletes entries under remote_dir, so it must be a directory
# edgeship owns: never the file system root, a system directory, or somebody's home itself.
_SYSTEM_DIRS = frozenset(
    "/" + d for d in "bin boot dev etc home lib lib32 lib64 libx32 media mnt opt proc root run sbin srv sys tmp usr var".split()
)


class ProfilingConfig(Strict):
    """How long the agent measures: at least ``runs`` timed invokes and at least ``min_seconds``."""

    runs: int = Field(100, gt=0)
    min_seconds: float = Field(2.0, ge=0)
    warmup: int = Field(10, ge=0)
    eval_images: Optional[int] = Field(
        None, gt=0, description="score accuracy on the first N eval images only (a slow device, a brief farm run); all when absent"
    )
    energy: bool = Field(
        True, description="sample the board's power during the timed loop where it can tell (a Pi 5's PMIC); false sends --no-energy"
    )


class SSHTransportConfig(Strict):
    type: Literal["ssh"]
    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(min_length=1)
    key_file: Optional[str] = Field(None, description="private key; ssh-agent and default keys when absent")
    known_hosts: str = Field("~/.ssh/known_hosts", validate_default=True)
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    connect_timeout: float = Field(10.0, gt=0)
    command_timeout: float = Field(600.0, gt=0)
    keepalive: int = Field(15, ge=0, description="seconds between keepalive packets; 0 disables")
    retries: int = Field(3, ge=0, description="extra connection attempts after a refused/timed-out one")
    retry_backoff: float = Field(1.0, ge=0, description="first retry delay in seconds; doubles each time")

    @field_validator("key_file", "known_hosts")
    @classmethod
    def _expand(cls, value: Optional[str]) -> Optional[str]:
        return os.path.expanduser(value) if value else value

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        if any(ch.isspace() for ch in value) or value.startswith("-") or "@" in value:
            raise ValueError("must be a plain host name or IP address (put the user in transport.user)")
        return value

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class LocalTransportConfig(Strict):
    type: Literal["local"]
    command_timeout: float = Field(600.0, gt=0)

    def describe(self) -> str:
        return "this machine (local transport)"


TransportConfig = Annotated[Union[SSHTransportConfig, LocalTransportConfig], Field(discriminator="type")]


class TargetConfig(Strict):
    name: str = Field(description="defaults to the file name without .yaml")
    description: str = ""
    arch: Literal["aarch64", "armv7l", "x86_64"]
    os: Literal["raspios", "debian", "termux", "linux"] = "linux"
    cores: int = Field(4, gt=0)
    threads: int = Field(4, gt=0, description="interpreter threads the agent asks for")
    runtime: Union[str, list[str]] = Field(
        "auto", description="'auto' or a preference list; the first importable on the device is used"
    )
    python: str = Field(
        "python3",
        description="interpreter command on the device (may include arguments); 'host' = the Python running edgeship (local transport only)",
    )
    remote_dir: str = Field(
        "edgeship",
        description="device directory; relative = the login home (ssh) or the results directory (local); ~ allowed",
    )
    default_profile: str = "default"
    emulated: bool = False
    keep_releases: int = Field(3, ge=1)
    profiling: ProfilingConfig = ProfilingConfig()
    transport: TransportConfig

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names a results folder)")
        return value

    @field_validator("runtime")
    @classmethod
    def _runtimes(cls, value):
        allowed = ", ".join(RUNTIMES + EXTRA_RUNTIMES)
        if isinstance(value, str):
            if value == "auto":
                return value
            value = [value]
        if not value:
            raise ValueError(f"list at least one of {allowed}, or say 'auto'")
        for item in value:
            if item not in RUNTIMES + EXTRA_RUNTIMES:
                raise ValueError(f"'{item}' is not a TFLite runtime (or onnxruntime); use 'auto' or a list from {allowed}")
        if len(set(value)) != len(value):
            raise ValueError("lists a runtime twice")
        return list(value)

    @field_validator("python")
    @classmethod
    def _python(cls, value: str) -> str:
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into words: {exc}") from None
        if not parts:
            raise ValueError("is empty")
        return value

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        if "\x00" in value or "\n" in value:
            raise ValueError("contains a NUL or newline character")
        problem = _unsafe_remote_dir(value)
        if problem:
            raise ValueError(
                f"{problem} (edgeship replaces and deletes files under remote_dir: give it a directory of its own, such as ~/edgeship)"
            )
        return value

    @field_validator("transport")
    @classmethod
    def _host_python_is_local(cls, value, info):
        if info.data.get("python") == HOST_PYTHON and value.type != "local":
            raise ValueError("python 'host' (the Python running edgeship) only works with transport type 'local'")
        return value

    @property
    def runtime_preference(self) -> list[str]:
        return list(RUNTIMES) if self.runtime == "auto" else list(self.runtime)

    def python_argv(self) -> list[str]:
        if self.python == HOST_PYTHON:
            import sys

            return [sys.executable]
        return shlex.split(self.python)

    def describe(self) -> str:
        return f"target '{self.name}' ({self.transport.describe()})"


def _normalized(absolute: str) -> str:
    return posixpath.normpath("/" + absolute.lstrip("/"))  # normpath alone keeps a leading "//"


def _unsafe_remote_dir(value: str) -> Optional[str]:
    """Why ``value`` is not a directory edgeship may own (None when it is)."""
    if ".." in value.split("/"):
        return "must not contain '..' components"
    if value == "~" or value.startswith("~/"):
        return "is the login home itself" if _normalized(value[1:]) == "/" else None
    if not value.startswith("/"):
        return "is the login home (or, for a local target, the results directory) itself" if posixpath.normpath(value) == "." else None
    path = _normalized(value)
    if path == "/":
        return "is the file system root"
    if path in _SYSTEM_DIRS:
        return f"is the system directory {path}"
    if posixpath.dirname(path) == "/home":
        return f"is the home directory {path} itself"
    return None


def is_inventory_data(data: object) -> bool:
    """A farm inventory (``edgeship farm run -i``) has a top-level ``devices:`` list; no target can
    have that key, so the content says which kind of file it is, whatever its name."""
    return isinstance(data, dict) and isinstance(data.get("devices"), list)


def is_target_file(path: Path) -> bool:
    """False for a farm inventory kept among the targets; an unreadable file still counts (its load
    error names the problem)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True
    return not is_inventory_data(data)


def resolve_target_path(name_or_path: str | Path) -> Path:
    """Accept ``rpi4``, ``rpi4.yaml`` or a path to any YAML file. A bare name that is not in targets/
    may be a target edgeship wrote while its device runs (``emu-rpi4``: ``edgeship emu start``)."""
    text = str(name_or_path)
    if Path(text).name == text and not (builtin_targets_dir() / f"{text}.yaml").is_file():
        for directory in generated_targets_dirs():
            if (directory / f"{text}.yaml").is_file():
                return directory / f"{text}.yaml"
    return resolve_named_yaml(
        name_or_path, builtin_targets_dir(), "target",
        "or pass a path to a target YAML file (copy one of targets/*.yaml to add a device). The emulated "
        "Raspberry Pis' targets emu-rpi4 and emu-rpi3 exist only while they run: start one with "
        "`sudo edgeship emu start --device rpi4` (or rpi3), or run `sudo make deploy TARGET=emu-rpi3`.",
        listed=is_target_file,
    )


def load_target(name_or_path: str | Path) -> TargetConfig:
    path = resolve_target_path(name_or_path)
    data = read_yaml(path, "Target")
    if is_inventory_data(data):
        raise ConfigError(
            f"Target file {path} is a farm inventory (it has a top-level 'devices' list), not a target: "
            f"use it with `edgeship farm run -i {path}` or `edgeship farm show -i {path}`, and name one of its "
            "devices' target files (its 'target' keys) where a target is wanted."
        )
    data.setdefault("name", path.stem)
    return parse_target(data, f"Target file {path}")


def parse_target(data: dict, source: str) -> TargetConfig:
    """Validate a target mapping; errors name ``source`` and the dotted key as the user wrote it."""
    try:
        return TargetConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(_without_union_tags(exc), source)) from None


def _without_union_tags(exc: ValidationError) -> ValidationError:
    """pydantic puts the union tag into the location (``transport.ssh.port``); users wrote ``transport.port``."""
    details: list[InitErrorDetails] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if len(loc) >= 2 and loc[0] == "transport" and loc[1] in ("ssh", "local"):
            loc = (loc[0],) + loc[2:]
        detail: InitErrorDetails = {"type": err["type"], "loc": loc, "input": err.get("input")}
        if "ctx" in err:
            detail["ctx"] = err["ctx"]
        details.append(detail)
    try:
        return ValidationError.from_exception_data(exc.title, details)
    except Exception:  # pragma: no cover - unknown error types cannot be rebuilt; keep the original
        return exc
