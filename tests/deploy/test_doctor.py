"""doctor: what is missing on the device, and the exact command that installs it."""

from __future__ import annotations

import pytest

from pipeline.config.target import load_target, parse_target
from pipeline.deploy.deployer import connected, deploy
from pipeline.deploy.doctor import AGENT_PYTHON_FLOOR, DoctorReport, fill_report, install_commands, run_doctor
from pipeline.deploy.runtime_wheels import TFLITE_RUNTIME_WHEELS, pick_tflite_runtime
from pipeline.errors import DeployError


def _target(os_name: str, arch: str = "aarch64", runtime="auto"):
    return parse_target(
        {"name": "dev", "arch": arch, "os": os_name, "runtime": runtime, "transport": {"type": "ssh", "host": "h", "user": "u"}},
        "test",
    )


def test_install_commands_per_kind_of_device():
    raspios = install_commands(_target("raspios", runtime=["tflite_runtime"]), "python3", python=True, numpy=False, runtime=False)
    assert raspios[0] == "sudo apt install -y python3-numpy python3-pip"
    assert raspios[1] == "python3 -m pip install --break-system-packages tflite-runtime"
    assert "venv" in raspios[2]
    termux = install_commands(_target("termux"), "python", python=True, numpy=False, runtime=False)
    assert termux[0] == "pkg install -y python-numpy python-tflite-runtime"
    generic = install_commands(_target("linux"), "python3", python=True, numpy=True, runtime=False)
    assert generic == ["python3 -m pip install ai-edge-litert"]
    # 32-bit ARM: ai-edge-litert has no wheels, tflite-runtime does (up to Python 3.11); numpy unknown: never 2
    armv7 = install_commands(_target("debian", arch="armv7l"), "python3", python=True, numpy=True, runtime=False, python_version="3.11.2")
    assert "python3 -m pip install --break-system-packages tflite-runtime==2.14.0 'numpy>=1.23.2,<2'" in armv7
    # Python 3.12+ has no tflite-runtime wheels
    new = install_commands(_target("debian", runtime=["tflite_runtime", "ai_edge_litert"]), "python3", python=True, numpy=True, runtime=False, python_version="3.13.1")
    assert "python3 -m pip install --break-system-packages ai-edge-litert" in new
    nopython = install_commands(_target("debian"), "python3", python=False, numpy=False, runtime=False)
    assert nopython[0] == "sudo apt install -y python3 python3-numpy python3-pip"


def test_doctor_on_a_healthy_device(local_target, device_python):
    target = local_target(python=device_python, runtime=["tflite_runtime", "ai_edge_litert"])
    with connected(target) as tr:
        report = run_doctor(target, tr)
    assert report.ok and report.agent_uploaded
    assert report.selected_runtime == "tflite_runtime" and report.runtimes["tflite_runtime"] == "2.14.0"
    assert report.numpy.startswith("1.") and report.python
    assert report.install_commands == []


@pytest.mark.ssh
def test_ssh_doctor_reports_missing_runtime_with_install_commands(ssh_target, numpy_only_python):
    target = ssh_target(python=numpy_only_python, os="debian", runtime=["tflite_runtime"])
    with connected(target) as tr:
        report = run_doctor(target, tr)
    assert not report.ok and report.numpy and report.selected_runtime is None
    assert any("no TFLite runtime" in p for p in report.problems)
    # The device-like venv: Python 3.11 on x86_64 with numpy 1.26 (fits 2.14.0's floor 1.23.2, below 2).
    assert report.glibc and report.python.startswith("3.11.") and report.numpy.startswith("1.")
    assert f"{numpy_only_python} -m pip install --break-system-packages tflite-runtime==2.14.0" in report.install_commands


@pytest.mark.ssh
def test_ssh_doctor_and_deploy_on_python_without_numpy(ssh_target, tiny_bundle_int8, tmp_path):
    target = ssh_target(name="naked", python="/usr/bin/python3", os="raspios", remote_dir=tmp_path / "dev")
    with connected(target) as tr:
        report = run_doctor(target, tr)
    if report.numpy:
        pytest.skip("/usr/bin/python3 has numpy on this machine")
    assert any("numpy" in p for p in report.problems)
    assert report.install_commands[0] == "sudo apt install -y python3-numpy python3-pip"
    with pytest.raises(DeployError) as err:
        deploy(target, tiny_bundle_int8)
    assert "Target 'naked'" in str(err.value) and "sudo apt install -y python3-numpy" in str(err.value)


def test_doctor_without_python(local_target):
    target = local_target(python="/nonexistent/bin/python3")
    with connected(target) as tr:
        report = run_doctor(target, tr)
    assert not report.ok and report.python is None
    assert "no Python interpreter" in report.problems[0] and "/nonexistent/bin/python3" in report.problems[0]
    with pytest.raises(DeployError, match="Target 'localdev'.*sudo apt install -y python3 python3-numpy"):
        report.raise_if_broken()


# ------------------------------------------------------------- which tflite-runtime a device gets


def _doctor_json(python: str, numpy, glibc, machine: str = "armv7l", runtimes=None) -> dict:
    """What the agent's doctor prints on a device (``--prefer tflite_runtime``)."""
    return {
        "python": python, "numpy": numpy, "runtimes": runtimes or {"tflite_runtime": None}, "not_probed": [],
        "selected_runtime": None, "machine": machine, "os": "Debian", "termux": False, "cores": 4, "glibc": glibc,
    }


def _judge(target, data) -> DoctorReport:
    report = DoctorReport(target=target.name, where="pi@pi:22", device_os=target.os, python_command="python3")
    return fill_report(report, target, "python3", data)


def _emu_rpi3():
    """What `edgeship emu start --device rpi3` writes: an armv7l Debian bullseye device."""
    return parse_target(
        {"name": "emu-rpi3", "arch": "armv7l", "os": "debian", "runtime": ["tflite_runtime"], "emulated": True,
         "transport": {"type": "ssh", "host": "127.0.0.1", "port": 2223, "user": "edge"}},
        "test",
    )


def test_the_wheel_table_holds_what_pypi_has():
    """Spot checks of the facts read off PyPI's wheels (see pipeline/deploy/runtime_wheels.py)."""
    rows = {(w.release, arch): w for w in TFLITE_RUNTIME_WHEELS for arch in w.arches}
    assert rows["2.14.0", "armv7l"].pythons == ((3, 8), (3, 9), (3, 10), (3, 11)) and rows["2.14.0", "armv7l"].glibc == (2, 34)
    assert rows["2.13.0", "armv7l"].pythons[-1] == (3, 10) and rows["2.13.0", "armv7l"].numpy == (1, 21, 2)
    assert rows["2.12.0", "armv7l"].glibc == (2, 34)  # tagged manylinux2014, needs GLIBC_2.34
    assert rows["2.11.0", "armv7l"].pythons == ((3, 7), (3, 8), (3, 9)) and rows["2.11.0", "armv7l"].numpy == (1, 19, 2)
    assert ("2.5.0", "aarch64") not in rows
    assert not any((3, 12) in w.pythons for w in TFLITE_RUNTIME_WHEELS)
    releases = [w.release for w in TFLITE_RUNTIME_WHEELS]
    assert releases == sorted(releases, key=lambda r: tuple(int(n) for n in r.split(".")), reverse=True)


@pytest.mark.parametrize(
    ("python", "glibc", "numpy", "release", "numpy_requirement"),
    [
        ("3.11.2", "2.36", "1.24.2", "2.14.0", None),  # 32-bit Raspberry Pi OS bookworm
        ("3.11.2", "2.36", "2.2.6", "2.14.0", "numpy>=1.23.2,<2"),  # numpy 2 cannot load tflite-runtime
        ("3.9.2", "2.31", "1.19.5", "2.11.0", None),  # bullseye: 2.12/2.14 need glibc 2.34, 2.13 numpy 1.21
        ("3.9.2", "2.31", "1.21.6", "2.13.0", None),
        ("3.9.2", "2.31", "2.0.2", "2.13.0", "numpy>=1.21.2,<2"),
        ("3.9.2", None, "1.19.5", "2.11.0", None),  # an older agent: unknown glibc counts as old
        ("3.7.3", "2.28", "1.16.2", "2.5.0", None),  # buster's numpy 1.16: only 2.5.0 was built for it
        ("3.7.3", "2.28", "1.14.0", "2.11.0", "numpy>=1.19.2,<2"),  # below the agent's numpy floor
    ],
)
def test_armv7l_picks(python, glibc, numpy, release, numpy_requirement):
    pick = pick_tflite_runtime("armv7l", python, glibc=glibc, numpy=numpy)
    assert pick is not None and (pick.release, pick.numpy) == (release, numpy_requirement)


def test_no_tflite_runtime_wheel_for_new_pythons():
    assert pick_tflite_runtime("armv7l", "3.12.3", glibc="2.39", numpy="1.26.4") is None
    assert pick_tflite_runtime("armv7l", "3.11.2", glibc="2.31", numpy="1.24.2") is None  # 2.14.0 only, glibc 2.34


def test_doctor_on_rpi3_prints_the_32_bit_install_command():
    rpi3 = load_target("rpi3")
    assert (rpi3.arch, rpi3.os, rpi3.runtime) == ("armv7l", "raspios", ["tflite_runtime"])
    report = _judge(rpi3, _doctor_json("3.11.2", "1.24.2", "2.36"))
    assert not report.ok and "python3 -m pip install --break-system-packages tflite-runtime==2.14.0" in report.install_commands
    numpy2 = _judge(rpi3, _doctor_json("3.11.2", "2.2.6", "2.36"))
    assert "python3 -m pip install --break-system-packages tflite-runtime==2.14.0 'numpy>=1.23.2,<2'" in numpy2.install_commands
    no_numpy = _judge(rpi3, _doctor_json("3.11.2", None, "2.36"))  # apt brings bookworm's numpy 1.24
    assert no_numpy.install_commands[:2] == [
        "sudo apt install -y python3-numpy python3-pip",
        "python3 -m pip install --break-system-packages tflite-runtime==2.14.0",
    ]


def test_doctor_on_emu_rpi3_prints_the_bullseye_install_command():
    """bullseye armhf, Python 3.9, Debian's numpy 1.19, glibc 2.31: tflite-runtime 2.11.0, and no
    --break-system-packages (bullseye's pip predates it and has no PEP 668 marker to override)."""
    target = _emu_rpi3()
    report = _judge(target, _doctor_json("3.9.2", "1.19.5", "2.31"))
    assert report.install_commands[:2] == ["sudo apt install -y python3-pip", "python3 -m pip install tflite-runtime==2.11.0"]
    assert not any("break-system-packages" in c for c in report.install_commands)
    assert not report.warnings  # emulated: the machine is not compared
    numpy2 = _judge(target, _doctor_json("3.9.2", "2.0.2", "2.31"))
    assert "python3 -m pip install tflite-runtime==2.13.0 'numpy>=1.21.2,<2'" in numpy2.install_commands
    no_numpy = _judge(target, _doctor_json("3.9.2", None, "2.31"))  # apt brings bullseye's numpy 1.19
    assert "python3 -m pip install tflite-runtime==2.11.0" in no_numpy.install_commands


def test_doctor_says_when_pypi_has_nothing_for_the_device():
    report = _judge(_emu_rpi3(), _doctor_json("3.13.5", "2.2.4", "2.41"))
    assert not any("pip install" in c for c in report.install_commands)
    assert "PyPI has no tflite-runtime wheel for Python 3.13 on armv7l" in report.install_commands[-1]


def test_doctor_warns_about_numpy_2_under_tflite_runtime():
    report = _judge(_emu_rpi3(), _doctor_json("3.11.2", "2.1.0", "2.36", runtimes={"tflite_runtime": "2.14.0"}))
    assert report.ok and any("numpy 2.1.0 with tflite_runtime" in w and "numpy<2" in w for w in report.warnings)


# --------------------------------------------------------------------------- the agent's floors


def test_doctor_states_the_agents_python_floor():
    floor = "%d.%d" % AGENT_PYTHON_FLOOR
    assert AGENT_PYTHON_FLOOR == (3, 7)
    generic = install_commands(_target("linux"), "python3", python=False, numpy=False, runtime=False)
    assert f"install Python {floor} or newer with your distribution's package manager" in generic
    old = _judge(_target("debian"), _doctor_json("3.5.3", "1.12.1", "2.24", machine="aarch64"))
    assert any(f"Python 3.5.3 under `python3` is older than {floor}, the agent's floor" in p for p in old.problems)
    assert any(f"install Python {floor} or newer" in c for c in old.install_commands)


def test_doctor_flags_numpy_below_the_agents_floor():
    target = _target("debian", runtime=["tflite_runtime"])
    report = _judge(target, _doctor_json("3.7.3", "1.13.3", "2.28", machine="aarch64", runtimes={"tflite_runtime": "2.11.0"}))
    assert report.problems == ["numpy 1.13.3 under `python3` is older than 1.16, the agent's floor"]
    assert report.install_commands[-1] == "python3 -m pip install 'numpy>=1.16,<2'"
