"""The agent's Python floor, checked by vermin: nothing in device_agents/agent.py may need more than
Python 3.7 (``AGENT_PYTHON_FLOOR``, the floor doctor states too). A 3.8-only call that is guarded
(``except ImportError``) carries a ``# novermin`` comment on its line, so vermin skips that line.

``ast.parse(feature_version=...)`` in test_agent_cli.py catches new syntax; vermin also knows which
modules, functions and keyword arguments each Python version added.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.deploy.doctor import AGENT_PYTHON_FLOOR
from tests.helpers.agent_runner import AGENT


class VerminError(AssertionError):
    """vermin could not judge the file (it did not parse, or the output was not understood)."""


def _has_future_annotations(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False  # vermin --pessimistic reports it
    return any(
        isinstance(node, ast.ImportFrom) and node.module == "__future__" and any(a.name == "annotations" for a in node.names)
        for node in tree.body
    )


def vermin_minimum(path: Path) -> tuple[tuple[int, int], str]:
    """The lowest Python 3 that vermin finds ``path`` runs on, and vermin's report line by line.

    Flags: ``--no-config-file`` so a vermin.ini or setup.cfg in the tree cannot change the verdict;
    ``--pessimistic`` so a file vermin cannot parse fails instead of counting as "any Python 3";
    ``--eval-annotations`` unless the file has ``from __future__ import annotations``, because without
    it Python evaluates annotations when the ``def`` runs (``list[int]`` breaks 3.7 then); the
    self-documenting f-string check (``f"{x=}"``) named explicitly, since it is opt-in in older
    vermin releases. No ``--backport``: the agent imports nothing outside the standard library.
    """
    source = path.read_text(encoding="utf-8")
    flags = ["--no-config-file", "--no-tips", "--pessimistic", "--format", "parsable", "--feature", "fstring-self-doc"]
    if not _has_future_annotations(source):
        flags.append("--eval-annotations")
    code = "import sys; from vermin.main import main; sys.argv[0] = 'vermin'; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, *flags, str(path)], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines or not lines[-1].startswith(":::"):
        raise VerminError(f"vermin failed on {path} (exit {result.returncode}): {result.stdout}{result.stderr}")
    py3 = lines[-1].split(":")[4]  # the last line is ":::<py2>:<py3>:"
    if py3.startswith("!"):
        raise VerminError(f"vermin says {path} cannot run on Python 3 (or cannot be parsed):\n{result.stdout}")
    if py3 == "~3":  # no known requirement
        return (3, 0), result.stdout
    match = re.fullmatch(r"(\d+)\.(\d+)", py3)
    if not match:
        raise VerminError(f"vermin's verdict {py3!r} for {path} is not a version:\n{result.stdout}")
    return (int(match.group(1)), int(match.group(2))), result.stdout


def _above(line: str, floor: tuple[int, int]) -> bool:
    """Is this parsable report line ("file:line:col:py2:py3:feature") a reason above ``floor``?"""
    fields = line.rsplit(":", 3)  # the path may not contain ':' (vermin skips such paths anyway)
    match = re.fullmatch(r"(\d+)\.(\d+)", fields[-2]) if len(fields) == 4 and fields[-1] else None
    return bool(match) and (int(match.group(1)), int(match.group(2))) > floor


def test_the_agent_needs_no_more_than_the_floor() -> None:
    minimum, report = vermin_minimum(AGENT)
    reasons = "\n".join(line for line in report.splitlines() if _above(line, AGENT_PYTHON_FLOOR))
    assert minimum <= AGENT_PYTHON_FLOOR, (
        f"device_agents/agent.py needs Python {minimum[0]}.{minimum[1]} by vermin, above the agent's floor "
        f"{AGENT_PYTHON_FLOOR[0]}.{AGENT_PYTHON_FLOOR[1]}:\n{reasons}"
    )


def test_the_agent_docs_state_the_same_python_floor() -> None:
    floor = f"{AGENT_PYTHON_FLOOR[0]}.{AGENT_PYTHON_FLOOR[1]}"
    assert f"Python >= {floor}," in AGENT.read_text(encoding="utf-8")
    assert f"runs on Python ≥ {floor} with" in (AGENT.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("snippet", "needs"),
    [
        ("x = 1\nprint(f'{x=}')\n", (3, 8)),  # self-documenting f-string
        ("if (n := 3) > 2:\n    print(n)\n", (3, 8)),  # walrus
        ("def f(a, /, b):\n    return a + b\n", (3, 8)),  # positional-only parameters
        ("import math\nprint(math.dist((0, 0), (3, 4)))\n", (3, 8)),  # a function new in 3.8
        ("def f(x: list[int]) -> None:\n    pass\n", (3, 9)),  # evaluated at def time without the future import
    ],
)
def test_the_check_reports_newer_features_above_the_floor(tmp_path: Path, snippet: str, needs: tuple[int, int]) -> None:
    path = tmp_path / "snippet.py"
    path.write_text(snippet, encoding="utf-8")
    minimum, _ = vermin_minimum(path)
    assert minimum == needs and minimum > AGENT_PYTHON_FLOOR


def test_the_check_honours_future_annotations_and_novermin(tmp_path: Path) -> None:
    """With ``from __future__ import annotations`` annotations stay strings, so ``list[int]`` is fine on
    3.7; a guarded 3.8 import marked ``# novermin`` does not count."""
    path = tmp_path / "ok.py"
    path.write_text(
        "from __future__ import annotations\n"
        "def f(x: list[int]) -> None:\n    pass\n"
        "try:\n    from importlib import metadata  # novermin\nexcept ImportError:\n    metadata = None\n",
        encoding="utf-8",
    )
    assert vermin_minimum(path)[0] == (3, 7)  # __future__.annotations itself is 3.7
    path.write_text("try:\n    from importlib import metadata\nexcept ImportError:\n    metadata = None\n", encoding="utf-8")
    assert vermin_minimum(path)[0] == (3, 8)


def test_the_check_fails_on_a_file_it_cannot_parse(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def f(:\n", encoding="utf-8")
    with pytest.raises(VerminError, match="cannot run on Python 3"):
        vermin_minimum(path)
