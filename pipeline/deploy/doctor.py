"""Is the device ready? Python, numpy and a TFLite runtime, checked by the agent's ``doctor``.

:func:`run_doctor` returns a structured :class:`DoctorReport` (with the exact install commands for
that kind of device); :meth:`DoctorReport.raise_if_broken` turns a failed check into one
:class:`DeployError` paragraph that names the target and prints those commands. The tflite-runtime
release in those commands comes from :mod:`pipeline.deploy.runtime_wheels` (the device's Python,
architecture, glibc and numpy decide it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from pipeline.config.target import EXTRA_RUNTIMES, RUNTIMES, TargetConfig
from pipeline.deploy.remote import Agent, AgentError, PythonMissing
from pipeline.deploy.runtime_wheels import apt_numpy, pick_tflite_runtime, version_tuple
from pipeline.errors import DeployError
from pipeline.transport.base import Transport

#: What device_agents/agent.py promises to run on (its docstring and README say the same; a test
#: runs vermin over the agent against AGENT_PYTHON_FLOOR and checks its numpy uses against 1.16).
AGENT_PYTHON_FLOOR: tuple[int, int] = (3, 7)
AGENT_NUMPY_FLOOR: tuple[int, int] = (1, 16)

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
    glibc: Optional[str] = None  # the device's glibc ("2.31"); None on musl/Android or an older agent
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
    fill_report(report, target, agent.python_command, data)
    return report


def fill_report(report: DoctorReport, target: TargetConfig, python_command: str, data: dict[str, Any]) -> DoctorReport:
    """Judge the agent's ``doctor`` JSON: problems, warnings and the install commands for what is missing."""
    report.raw = data
    report.python = _text(data.get("python"))
    report.numpy = _text(data.get("numpy"))
    runtimes = data.get("runtimes") or {}
    report.runtimes = {name: _text(runtimes.get(name)) for name in RUNTIMES + EXTRA_RUNTIMES if name in runtimes}
    report.machine = _text(data.get("machine"))
    report.glibc = _text(data.get("glibc"))
    report.os = _text(data.get("os"))
    report.termux = bool(data.get("termux")) if data.get("termux") is not None else None
    report.cores = data.get("cores") if isinstance(data.get("cores"), int) else None
    for name in target.runtime_preference:
        if report.runtimes.get(name):
            report.selected_runtime = name
            break
    python_version = version_tuple(report.python)
    if python_version is not None and python_version[:2] < AGENT_PYTHON_FLOOR:
        report.problems.append(f"Python {report.python} under `{python_command}` is older than {_dotted(AGENT_PYTHON_FLOOR)}, the agent's floor")
    numpy_version = version_tuple(report.numpy)
    if not report.numpy:
        report.problems.append(f"numpy is not importable by `{python_command}`")
    elif numpy_version is not None and numpy_version[:2] < AGENT_NUMPY_FLOOR:
        report.problems.append(f"numpy {report.numpy} under `{python_command}` is older than {_dotted(AGENT_NUMPY_FLOOR)}, the agent's floor")
    if report.selected_runtime == "tflite_runtime" and numpy_version is not None and numpy_version >= (2,):
        report.warnings.append(
            f"numpy {report.numpy} with tflite_runtime: every tflite-runtime release was built against numpy 1.x "
            f"and fails under numpy 2; install 'numpy<2' for `{python_command}`"
        )
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
            python_command,
            python=True,
            numpy=bool(report.numpy),
            runtime=bool(report.selected_runtime),
            python_version=report.python,
            numpy_version=report.numpy,
            glibc=report.glibc,
        )
    return report


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in version)


def _text(value: Any) -> Optional[str]:
    return None if value in (None, "", False) else str(value)


def _runtime_install(
    target: TargetConfig, python_version: Optional[str], numpy_version: Optional[str], glibc: Optional[str]
) -> tuple[Optional[list[str]], Optional[str]]:
    """The pip requirements to suggest, or None and a note when nothing on PyPI fits this device.

    The first preferred runtime that ships wheels for the device wins; for tflite-runtime that is a
    pinned release that fits the device's Python, glibc and numpy (``numpy<2`` when it does not).
    """
    py = version_tuple(python_version)
    have_numpy = version_tuple(numpy_version)
    for name in target.runtime_preference:
        if name == "tflite_runtime":
            if py is None:  # no interpreter yet: let pip choose, but never numpy 2
                return [PIP_NAMES[name]] + (["'numpy<2'"] if have_numpy and have_numpy >= (2,) else []), None
            pick = pick_tflite_runtime(target.arch, python_version, glibc=glibc, numpy=numpy_version, numpy_floor=AGENT_NUMPY_FLOOR)
            if pick is not None:
                return [f"'{r}'" if "<" in r or ">" in r else r for r in pick.requirements], None
        if name == "ai_edge_litert" and target.arch in ("aarch64", "x86_64"):
            return [PIP_NAMES[name]], None  # no 32-bit ARM wheels
    if "tflite_runtime" in target.runtime_preference and py is not None:
        if "tensorflow" in target.runtime_preference and target.arch in ("aarch64", "x86_64"):
            return [PIP_NAMES["tensorflow"]], None
        return None, (
            f"PyPI has no tflite-runtime wheel for Python {_dotted(py[:2])} on {target.arch}"
            f"{f' with glibc {glibc}' if glibc else ''} (the last release, 2.14.0, covers Python 3.8-3.11 and needs glibc 2.34 "
            "on ARM; 2.13.0 covers 3.8-3.10 on older glibc): point the target's python: at an interpreter PyPI has wheels for"
        )
    fallback = next((n for n in target.runtime_preference if n != "tensorflow"), target.runtime_preference[0])
    return [PIP_NAMES[fallback]], None


def install_commands(
    target: TargetConfig,
    python_command: str,
    *,
    python: bool,
    numpy: bool,
    runtime: bool,
    python_version: Optional[str] = None,
    numpy_version: Optional[str] = None,
    glibc: Optional[str] = None,
) -> list[str]:
    """Exact commands to run on the device for what is missing (``python``/``numpy``/``runtime`` = present).

    ``python_version``, ``numpy_version`` and ``glibc`` are what the agent's doctor saw; they pick
    the tflite-runtime release (see :mod:`pipeline.deploy.runtime_wheels`).
    """
    py = python_command if python else ("python" if target.os == "termux" else "python3")
    floor = _dotted(AGENT_PYTHON_FLOOR)
    py_version = version_tuple(python_version)
    have_numpy = version_tuple(numpy_version) if numpy else None
    if not numpy and target.os in ("raspios", "debian"):
        numpy_version = apt_numpy(glibc)  # what the apt line below brings, when the release is known
    elif not numpy:
        numpy_version = None
    requirements, note = _runtime_install(target, python_version, numpy_version, glibc)
    # numpy older than the agent's floor while the runtime imports: upgrade numpy alone (not to 2,
    # which no tflite-runtime release can load).
    numpy_fix = have_numpy is not None and have_numpy[:2] < AGENT_NUMPY_FLOOR
    numpy_only = f"'numpy>={_dotted(AGENT_NUMPY_FLOOR)},<2'"
    cmds: list[str] = []
    if py_version is not None and py_version[:2] < AGENT_PYTHON_FLOOR:
        cmds.append(f"install Python {floor} or newer and point the target's python: at it (the agent needs {floor}+)")
    if target.os == "termux":
        pkgs = [p for p, have in (("python", python), ("python-numpy", numpy)) if not have]
        if not runtime:
            pkgs.append("python-tflite-runtime")  # Termux's own build; PyPI has no Android wheels
        if pkgs:
            cmds.append("pkg install -y " + " ".join(pkgs))
        if not runtime and requirements:
            cmds.append(
                "(only if that package is unavailable: "
                f"{py} -m pip install {' '.join(requirements)} - it needs a wheel built for Termux's Python, which PyPI does not provide)"
            )
    elif target.os in ("raspios", "debian"):
        apt = [p for p, have in (("python3", python), ("python3-numpy", numpy)) if not have]
        if (not runtime and requirements) or numpy_fix:
            apt.append("python3-pip")
        if apt:
            cmds.append("sudo apt install -y " + " ".join(apt))
        # Debian bookworm (Python 3.11) marks the system Python as externally managed (PEP 668);
        # bullseye's pip 20.3 does not know --break-system-packages and would refuse the command.
        pep668 = " --break-system-packages" if py_version is None or py_version[:2] >= (3, 11) else ""
        if not runtime and requirements:
            cmds.append(f"{py} -m pip install{pep668} {' '.join(requirements)}")
            cmds.append(
                "or in a venv: python3 -m venv --system-site-packages ~/edgeship-venv && "
                f"~/edgeship-venv/bin/pip install {' '.join(requirements)}  (then set python: ~/edgeship-venv/bin/python in the target)"
            )
        elif numpy_fix:
            cmds.append(f"{py} -m pip install{pep668} {numpy_only}")
    else:
        pinned_numpy = any(r.startswith("'numpy") for r in requirements or [])
        pkgs = [] if numpy or (pinned_numpy and not runtime) else ["numpy"]
        if not runtime:
            pkgs += requirements or []
        elif numpy_fix:
            pkgs.append(numpy_only)
        if not python:
            cmds.append(f"install Python {floor} or newer with your distribution's package manager")
        if pkgs:
            cmds.append(f"{py} -m pip install " + " ".join(pkgs))
    if note and not runtime:
        cmds.append(note)
    return cmds
