"""The layering in docs/ARCHITECTURE.md, kept true by import-linter contracts (pyproject.toml).

Each rule is checked on the real tree, and once on a copy with a planted violation, so a contract
that no longer matches anything (a renamed package, a typo) fails here instead of passing forever.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
AGENT_ALLOWED = {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime", "resource"}

needs_import_linter = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason=f"{LINT_IMPORTS} missing: `make setup` installs import-linter (the dev extra)"
)


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


@needs_import_linter
def test_the_import_contracts_hold() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@needs_import_linter
@pytest.mark.parametrize(
    "module, planted, contract",
    [
        ("pipeline/reports/junit.py", "import click", "Only the CLI imports click"),
        ("pipeline/quantize/convert.py", "from pipeline.stages import base", "The ML packages know nothing"),
        ("pipeline/deploy/layout.py", "import tensorflow", "Deploying needs no TensorFlow"),
        ("pipeline/clock.py", "from pipeline.config import profile", "The ground floor imports no other"),
        ("pipeline/execute/executor.py", "from pipeline import build", "Execution knows stages"),
    ],
)
def test_a_planted_violation_breaks_its_contract(tmp_path: Path, module: str, planted: str, contract: str) -> None:
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{planted}  # planted by test_layering\n", encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1 and broken[0].startswith(contract), result.stdout[-2000:]


def test_only_the_cli_imports_click_even_in_new_packages() -> None:
    """The contract lists packages by name; this catches a package added after it was written."""
    offenders = []
    for path in (REPO / "pipeline").rglob("*.py"):
        if path.relative_to(REPO / "pipeline").parts[0] == "cli":
            continue
        if "click" in imported_roots(path):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_the_agent_imports_only_the_standard_library_numpy_and_runtimes() -> None:
    roots = imported_roots(REPO / "device_agents" / "agent.py")
    assert "pipeline" not in roots
    third_party = {name for name in roots if name not in sys.stdlib_module_names}
    assert third_party <= AGENT_ALLOWED, third_party - AGENT_ALLOWED
    assert "numpy" in third_party  # the reader sees imports inside functions too


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots
