"""Is the device ready? Python, numpy and a TFLite runtime, checked by the agent's ``doctor``.

:func:`run_doctor` returns a structured :class:`DoctorReport` (with the exact install commands for
that kind of device); :meth:`DoctorReport.raise_if_broken` turns a failed check into one
:class:`DeployError` paragraph that names the target and prints those commands.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from pipeline.config.target import EXTRA_RUNTIMES, RUNTIMES, TargetConfig
from pipeline.deploy.remote import Agent, AgentError, PythonMissing
from pipeline.errors import DeployError
from pipeline.transport.base import Transport

PIP_NAMES = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "tensorflow": "tensorflow", "onnxruntime": "onnxruntime"}


@dataclass
class DoctorReport:
    target: str
    where: str
    device_os: str  # the target's os setting: raspios | debian | termux | linux
    python_command: str
    python: Optional[str] = None  # version on the device, None if the interpreter is missing
    numpy: Optional[str] = None
    runtimes: dict[str, Optional[str]] = field(default_factory=dict)
    selected_runtime: Optional[str] = None  # first of the target's preference list that imports
    machine: Optional[str] = None
    os: Optional[str] = None
    termux: Optional[bool] = None
    cores: Optional[int] = None
    agent_uploaded: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    install_commands: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def raise_if_broken(self) -> "DoctorReport":
        if self.ok:
            return self
        commands = " ; ".join(f"`{c}`" for c in self.install_commands)
        raise DeployError(
            f"Target '{self.target}' ({self.where}) cannot run the device agent: {'; '.join(self.problems)}. "
            f"Install what is missing on the device, e.g. {commands}. Then check again with `edgeship doctor {self.target}`."
        )


def run_doctor(target: TargetConfig, transport: Transport) -> DoctorReport:
    agent = Agent(target, transport)
    report = DoctorReport(
        target=target.name, where=transport.where, device_os=target.os, python_command=agent.python_command
    )
    try:
        report.agent_uploaded = agent.ensure_uploaded()
    except PythonMissing as exc:
        report.problems.append(f"no Python interpreter: {exc}")
        report.install_commands = install_commands(target, agent.python_command, python=False, numpy=False, runtime=False)
        return report
    try:
        # Probe the target's runtimes in its order and stop at the first that imports: importing
        # TensorFlow alone costs seconds, and every deploy runs doctor.
        data = agent.call(["doctor", "--prefer", ",".join(target.runtime_preference)], timeout=min(transport.command_timeout, 300), accept=(0, 4))
    except AgentError as exc:
        report.problems.append(f"the agent's doctor failed under `{agent.python_command}`: {exc.detail}")
        report.install_commands = install_commands(target, agent.python_command, python=True, numpy=False, runtime=False)
        return report
    report.raw = data
    report.python = _text(data.get("python"))
    report.numpy = _text(data.get("numpy"))
    runtimes = data.get("runtimes") or {}
    report.runtimes = {name: _text(runtimes.get(name)) for name in RUNTIMES + EXTRA_RUNTIMES if name in runtimes}
    report.machine = _text(data.get("machine"))
    report.os = _text(data.get("os"))
    report.termux = bool(data.get("termux")) if data.get("termux") is not None else None
    report.cores = data.get("cores") if isinstance(data.get("cores"), int) else None
    for name in target.runtime_preference:
        if report.runtimes.get(name):
            report.selected_runtime = name
            break
    if not report.numpy:
        report.problems.append(f"numpy is not importable by `{agent.python_command}`")
    if not report.selected_runtime:
        wanted = ", ".join(target.runtime_preference)
        found = ", ".join(f"{k} {v}" for k, v in report.runtimes.items() if v) or "none"
        report.problems.append(f"no TFLite runtime from the target's list ({wanted}) is importable (found: {found})")
    if report.machine and report.machine != target.arch and not target.emulated:
        report.warnings.append(f"the device says it is {report.machine} but the target file says arch {target.arch}")
    if report.termux is not None and report.termux != (target.os == "termux"):
        report.warnings.append(
            f"the device {'is' if report.termux else 'is not'} Termux but the target file says os {target.os}"
        )
    if report.problems:
        report.install_commands = install_commands(
            target,
            agent.python_command,
            python=True,
            numpy=bool(report.numpy),
            runtime=bool(report.selected_runtime),
            python_version=report.python,
        )
    return report


def _text(value: Any) -> Optional[str]:
    return None if value in (None, "", False) else str(value)


def _runtime_package(target: TargetConfig, python_version: Optional[str]) -> str:
    """The pip package to suggest: the first preferred runtime that ships wheels for this device."""
    major_minor = _version_tuple(python_version)
    for name in target.runtime_preference:
        if name == "tflite_runtime" and (major_minor is None or major_minor <= (3, 11)):
            return PIP_NAMES[name]  # last release 2.14: wheels for CPython 3.7-3.11 on aarch64/armv7l/x86_64
        if name == "ai_edge_litert" and target.arch in ("aarch64", "x86_64"):
            return PIP_NAMES[name]  # no 32-bit ARM wheels
    for name in target.runtime_preference:
        if name != "tensorflow":
            return PIP_NAMES[name]
    return PIP_NAMES[target.runtime_preference[0]]


def _version_tuple(text: Optional[str]) -> Optional[tuple[int, int]]:
    if not text:
        return None
    try:
        parts = text.split()[0].split(".")
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def install_commands(
    target: TargetConfig,
    python_command: str,
    *,
    python: bool,
    numpy: bool,
    runtime: bool,
    python_version: Optional[str] = None,
) -> list[str]:
    """Exact commands to run on the device for what is missing (``python``/``numpy``/``runtime`` = present)."""
    py = python_command if python else ("python" if target.os == "termux" else "python3")
    package = _runtime_package(target, python_version)
    cmds: list[str] = []
    if target.os == "termux":
        pkgs = [p for p, have in (("python", python), ("python-numpy", numpy)) if not have]
        if not runtime:
            pkgs.append("python-tflite-runtime")  # Termux's own build; PyPI has no Android wheels
        if pkgs:
            cmds.append("pkg install -y " + " ".join(pkgs))
        if not runtime:
            cmds.append(
                "(only if that package is unavailable: "
                f"{py} -m pip install {package} - it needs a wheel built for Termux's Python, which PyPI does not provide)"
            )
    elif target.os in ("raspios", "debian"):
        apt = [p for p, have in (("python3", python), ("python3-numpy", numpy)) if not have]
        if not runtime:
            apt.append("python3-pip")
        if apt:
            cmds.append("sudo apt install -y " + " ".join(apt))
        if not runtime:
            # Debian bookworm marks the system Python as externally managed (PEP 668).
            cmds.append(f"{py} -m pip install --break-system-packages {package}")
            cmds.append(
                "or in a venv: python3 -m venv --system-site-packages ~/edgeship-venv && "
                f"~/edgeship-venv/bin/pip install {package}  (then set python: ~/edgeship-venv/bin/python in the target)"
            )
    else:
        pkgs = [] if numpy else ["numpy"]
        if not runtime:
            pkgs.append(package)
        if not python:
            cmds.append("install Python 3.8 or newer with your distribution's package manager")
        if pkgs:
            cmds.append(f"{py} -m pip install " + " ".join(pkgs))
    return cmds

