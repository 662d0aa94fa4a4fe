"""Run the real device agent as a subprocess, the way the host drives it on a device."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "device_agents" / "agent.py"
MAIN_PYTHON = REPO / ".venv" / "bin" / "python"
if not MAIN_PYTHON.exists():  # pragma: no cover - a checkout without the Makefile's venv
    MAIN_PYTHON = Path(sys.executable)
# numpy 1.26 + tflite-runtime 2.14, no TensorFlow: what a Raspberry Pi OS image has (`make agent-venv`).
AGENT_PYTHON = REPO / ".venv-agent" / "bin" / "python"

skip_without_agent_venv = pytest.mark.skipif(
    not AGENT_PYTHON.exists(),
    reason=f"{AGENT_PYTHON} does not exist; create the device-like venv with `make agent-venv`",
)
needs_agent_venv = [pytest.mark.agent_venv, skip_without_agent_venv]

# Each Python the agent must work under, with the runtime it should pick there.
PYTHONS = [
    pytest.param(MAIN_PYTHON, "ai_edge_litert", id="main-venv"),
    pytest.param(AGENT_PYTHON, "tflite_runtime", id="agent-venv", marks=needs_agent_venv),
]


class AgentResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def json(self) -> Any:
        assert self.returncode == 0, f"agent failed ({self.returncode}): {self.stderr}"
        return json.loads(self.stdout)

    @property
    def error(self) -> dict:
        """The failure contract: the last stderr line is one JSON object with error and kind."""
        assert self.returncode != 0, f"agent unexpectedly succeeded: {self.stdout[:500]}"
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert lines, "no error line on stderr"
        error = json.loads(lines[-1])
        assert set(error) == {"error", "kind"}, error
        return error


def run_agent(*args: Any, python: Path = MAIN_PYTHON, env: Optional[dict] = None, timeout: float = 120) -> AgentResult:
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    full_env.update(env or {})
    proc = subprocess.run(
        [str(python), str(AGENT), *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    return AgentResult(proc)


def load_agent_module():
    """Import agent.py as a module for unit tests of its pure functions."""
    spec = importlib.util.spec_from_file_location("edgeship_device_agent", AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_bundle(bundle: Path, root: Path) -> Path:
    """A private copy (same folder name = bundle id) that a test may damage."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(bundle, root / bundle.name))


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())
