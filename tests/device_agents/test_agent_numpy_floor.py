"""The agent's numpy floor: every numpy name device_agents/agent.py uses must exist in numpy 1.16.

The agent receives numpy as ``np`` (imported inside functions, passed on as an argument) and reads
``numpy.__version__``, so walking the AST for ``np.<name>`` / ``numpy.<name>`` finds every use. The
allow-list below was checked against numpy 1.16.6 itself: the agent's numpy code paths (load_eval,
preprocess for float32 and int8, evaluate, runtime_info) ran under CPython 3.7.16 with numpy 1.16.6.
Set EDGESHIP_FLOOR_PYTHON to such an interpreter to repeat that run (the last test).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.deploy.doctor import AGENT_NUMPY_FLOOR
from tests.helpers.agent_runner import AGENT

NUMPY_NAMES = ("np", "numpy")

#: numpy names (module attributes) that exist in numpy 1.16. Only names the agent uses belong here;
#: add one only after checking that numpy 1.16 has it (e.g. np.random.default_rng is 1.17+,
#: numpy.typing 1.20+).
NUMPY_1_16_ATTRIBUTES = frozenset(
    {
        "__version__",
        "argmax", "asarray", "ascontiguousarray", "clip", "dtype", "iinfo", "load", "mean", "nonzero", "prod", "round",
        "float32", "float64", "int64", "uint8", "int8",
    }
)
#: keyword arguments the agent passes to numpy functions, also present in 1.16 (allow_pickle: 1.10).
NUMPY_1_16_KEYWORDS = frozenset({"asarray(dtype)", "load(allow_pickle)"})


def _dotted(node: ast.AST) -> str | None:
    """``np.random.default_rng`` -> ``random.default_rng`` when the chain starts at np/numpy."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in NUMPY_NAMES and parts:
        return ".".join(reversed(parts))
    return None


def numpy_uses(source: str) -> tuple[set[str], set[str], set[str]]:
    """(attributes, ``func(keyword)`` pairs, numpy submodules imported) that ``source`` uses."""
    tree = ast.parse(source)
    attributes: set[str] = set()
    keywords: set[str] = set()
    submodules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name:
                attributes.add(name)
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name:
                keywords.update(f"{name}({kw.arg})" for kw in node.keywords if kw.arg)
        if isinstance(node, ast.Import):
            submodules.update(a.name for a in node.names if a.name.startswith("numpy."))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "numpy":
            submodules.update(f"{node.module}.{a.name}" for a in node.names)
    # ast.walk visits np.a.b and np.a: keep only the longest chains.
    attributes = {a for a in attributes if not any(other.startswith(a + ".") for other in attributes)}
    return attributes, keywords, submodules


def test_the_floor_is_1_16() -> None:
    assert AGENT_NUMPY_FLOOR == (1, 16)
    for path, text in (
        (AGENT, "numpy >= 1.16"),
        (AGENT.parent / "README.md", "numpy ≥ 1.16"),
        (AGENT.parents[1] / "README.md", "numpy ≥ 1.16"),
        (AGENT.parents[1] / "docs" / "ARCHITECTURE.md", "numpy 1.16+"),
    ):
        assert text in path.read_text(encoding="utf-8"), f"{path} does not state the numpy floor ({text})"


def test_every_numpy_name_the_agent_uses_exists_in_numpy_1_16() -> None:
    attributes, keywords, submodules = numpy_uses(AGENT.read_text(encoding="utf-8"))
    assert {"load", "asarray", "float32"} <= attributes  # the walk does find the agent's uses
    assert attributes - NUMPY_1_16_ATTRIBUTES == set(), "numpy names not known to exist in numpy 1.16"
    assert keywords - NUMPY_1_16_KEYWORDS == set(), "numpy keyword arguments not known to exist in numpy 1.16"
    assert submodules == set(), "the agent imports numpy submodules"


def test_the_walk_flags_newer_numpy() -> None:
    source = (
        "import numpy.typing\n"
        "from numpy.random import default_rng\n"
        "def f(np):\n"
        "    rng = np.random.default_rng(0)\n"
        "    return np.quantile(np.asarray([1.0], dtype=np.float32), 0.5, method='linear')\n"
    )
    attributes, keywords, submodules = numpy_uses(source)
    assert "random.default_rng" in attributes - NUMPY_1_16_ATTRIBUTES  # 1.17+
    assert "quantile(method)" in keywords - NUMPY_1_16_KEYWORDS  # the method keyword is 1.22+
    assert submodules == {"numpy.typing", "numpy.random.default_rng"}


@pytest.mark.skipif(not os.environ.get("EDGESHIP_FLOOR_PYTHON"), reason="set EDGESHIP_FLOOR_PYTHON to a Python 3.7 with numpy 1.16")
def test_the_agent_numpy_paths_run_on_the_floor(tmp_path: Path) -> None:
    """With EDGESHIP_FLOOR_PYTHON=<python3.7 with numpy==1.16.6>, run the agent's numpy code there."""
    script = Path(__file__).with_name("floor_numpy_paths.py")
    result = subprocess.run(
        [os.environ["EDGESHIP_FLOOR_PYTHON"], str(script), str(AGENT), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert tuple(int(n) for n in report["numpy"].split(".")[:2]) == AGENT_NUMPY_FLOOR
    assert report["python"].startswith("3.7.") and report["f32"] == "float32" and report["i8"] == "int8"
    assert report["accuracy"]["count"] == 3
