"""doctor: what is missing on the device, and the exact command that installs it."""

from __future__ import annotations

import pytest

from pipeline.config.target import parse_target
from pipeline.deploy.deployer import connected, deploy
from pipeline.deploy.doctor import install_commands, run_doctor
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
    # 32-bit ARM: ai-edge-litert has no wheels, tflite-runtime does (up to Python 3.11)
    armv7 = install_commands(_target("debian", arch="armv7l"), "python3", python=True, numpy=True, runtime=False, python_version="3.11.2")
    assert "python3 -m pip install --break-system-packages tflite-runtime" in armv7
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
    assert f"{numpy_only_python} -m pip install --break-system-packages tflite-runtime" in report.install_commands


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
