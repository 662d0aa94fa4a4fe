"""The deploy commands through click: tables on success, one paragraph and no traceback on error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_deploy_local_prints_a_results_table(tiny_bundle_int8, isolated_results):
    result = _invoke("deploy", "local", "--bundle", str(tiny_bundle_int8), "--runs", "3", "--min-seconds", "0", "--warmup", "0")
    assert result.exit_code == 0, result.output
    out = result.output
    for label in ("latency p50", "latency p90", "latency p99", "init", "first invoke", "peak RSS", "top-1 accuracy", "agreement with host", "runtime", "threads"):
        assert label in out, label
    assert "ai_edge_litert" in out and tiny_bundle_int8.name in out
    assert len(list((isolated_results / "profiles" / "local" / tiny_bundle_int8.name).glob("*.json"))) == 1

    releases = _invoke("releases", "local")
    assert releases.exit_code == 0 and tiny_bundle_int8.name in releases.output

    nothing = _invoke("rollback", "local")
    assert nothing.exit_code == 1 and "no earlier release" in nothing.output and "Traceback" not in nothing.output


def test_cli_bad_target_name_is_one_paragraph_without_traceback():
    result = CliRunner().invoke(main, ["deploy", "no-such-target", "--bundle", "."])
    assert result.exit_code == 1
    assert result.output.startswith("error: No target named 'no-such-target'")
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_cli_invalid_target_file_names_file_and_key(tmp_path: Path):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"arch": "aarch64", "transport": {"type": "ssh", "host": "h", "user": "u", "prot": 22}}))
    result = CliRunner().invoke(main, ["doctor", str(path)])
    assert result.exit_code == 1
    assert str(path) in result.output and "'transport.prot'" in result.output and "Traceback" not in result.output


def test_cli_doctor_table_and_install_commands(tmp_path: Path, device_python: str, numpy_only_python: str):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"arch": "x86_64", "python": device_python, "remote_dir": str(tmp_path / "d1"), "transport": {"type": "local"}}))
    ok = _invoke("doctor", str(good))
    assert ok.exit_code == 0, ok.output
    assert "tflite_runtime" in ok.output and "selected" in ok.output and "ready" in ok.output

    bad = tmp_path / "bare.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"arch": "x86_64", "os": "debian", "runtime": ["tflite_runtime"], "python": numpy_only_python, "remote_dir": str(tmp_path / "d2"), "transport": {"type": "local"}}
        )
    )
    result = _invoke("doctor", str(bad))
    assert result.exit_code == 1
    assert "not ready" in result.output
    assert f"{numpy_only_python} -m pip install --break-system-packages tflite-runtime" in result.output.replace("\n", "")


def test_cli_deploy_rejects_bundle_and_profile_together(tiny_bundle_int8):
    result = CliRunner().invoke(main, ["deploy", "local", "--bundle", str(tiny_bundle_int8), "--profile", "quick"])
    assert result.exit_code == 2 and "alternatives" in result.output


def test_edgeship_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys; from pipeline.cli import main; import pipeline.cli.deploy, pipeline.deploy.deployer, pipeline.deploy.profiling, pipeline.transport.ssh; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


@pytest.mark.ssh
def test_cli_deploy_over_ssh_with_json_output(sshd, tmp_path, tiny_bundle_int8, device_python):
    import json

    path = sshd.write_target(tmp_path / "pi.yaml", "pi", tmp_path / "device", device_python)
    result = _invoke("deploy", str(path), "--bundle", str(tiny_bundle_int8), "--runs", "2", "--min-seconds", "0", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["bundle_id"] == tiny_bundle_int8.name and data["profile"]["runtime"]["name"] == "tflite_runtime"
    assert data["warnings"] == []  # nothing failed after the switch


def test_profile_table_prints_counts_as_whole_numbers() -> None:
    import io

    from rich.console import Console

    from pipeline.cli.deploy import profile_table
    from pipeline.deploy.record import ProfileRecord
    from tests.helpers.records import make_record

    raw = make_record([0.1] * 50)
    raw["latency_ms"]["count"] = 18920
    out = io.StringIO()
    Console(file=out, width=200).print(profile_table(ProfileRecord.parse(raw)))
    assert "18,920" in out.getvalue() and "e+04" not in out.getvalue()


@pytest.mark.parametrize("energy, shown", [
    (0.0412, "0.0412 mJ (est., "),
    (None, "no vcgencmd on PATH"),
    ("absent", "predates energy estimates"),
])
def test_profile_table_shows_the_energy_estimate_or_why_there_is_none(energy, shown: str) -> None:
    import io

    from rich.console import Console

    from pipeline.cli.deploy import profile_table
    from pipeline.deploy.record import ProfileRecord
    from tests.helpers.records import make_record

    out = io.StringIO()
    Console(file=out, width=250).print(profile_table(ProfileRecord.parse(make_record([0.1] * 50, energy=energy))))
    row = next(line for line in out.getvalue().splitlines() if "energy per inference" in line)
    assert shown in row
