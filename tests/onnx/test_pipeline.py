"""An ONNX teacher through the real pipeline (cached onnx_import stage), ONNX export into the bundle,
`edgeship export onnx`, and the device agent profiling model.onnx with onnxruntime."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.build import build_profile
from pipeline.bundle.manifest import verify_bundle
from pipeline.errors import BundleError, ConfigError
from pipeline.fsutil import sha256_file
from tests.helpers.agent_runner import AGENT_PYTHON, run_agent, skip_without_agent_venv
from tests.onnx.helpers import conv_classifier, export_nchw, keras_classifier, write_pattern_idx

pytestmark = pytest.mark.slow


def profile_data(onnx_path: Path, data_dir: Path, **sections) -> dict:
    data = {
        "name": "onnx-tiny",
        "seed": 5,
        "dataset": {"source": "idx", "path": str(data_dir), "calibration_count": 20, "eval_count": 30},
        "preprocessing": {"height": 12, "width": 12, "channels": 1},
        "teacher": {"kind": "onnx-file", "path": str(onnx_path), "onnx": {"layout": "NCHW", "check_samples": 40}},
        "student": {"family": "mobilenet_v2", "width_multiplier": 0.35, "training": {"epochs": 1, "batch_size": 32}},
        "distillation": {"scratch_baseline": False},
        "quantization": {"modes": ["float32"], "ship": "float32", "calibration_samples": 10},
        "export": {"onnx": True, "check_samples": 30},
    }
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def write_profile(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("onnx-build")
    data_dir = write_pattern_idx(root / "data")
    onnx_path = export_nchw(keras_classifier(), root / "teacher.onnx")
    profile = write_profile(root / "onnx-tiny.yaml", profile_data(onnx_path, data_dir))
    results = root / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESHIP_RESULTS", str(results))
        result = build_profile(profile)
    return root, profile, result, results


def test_onnx_teacher_is_imported_checked_and_distilled(built) -> None:
    _, _, result, _ = built
    imported = result.artifacts["onnx_import"].metrics
    assert imported["layout"] == "NCHW" and imported["input_shape"] == [12, 12, 1] and imported["num_outputs"] == 3
    check = imported["check"]
    assert check["passed"] and check["top1_agreement"] == 1.0 and check["max_abs_error"] < 1e-4 and check["samples"] > 0
    teacher = result.artifacts["teacher"]
    assert teacher.meta["inputs"]["onnx_import"] == result.artifacts["onnx_import"].recipe_id
    assert teacher.metrics["parameters"] == imported["parameters"] > 0 and teacher.metrics["macs"] > 0
    assert (teacher.path / "logits_train.npy").is_file() and result.artifacts["student"].metrics["distilled"]


def test_onnx_import_is_cached_and_follows_the_file(built, monkeypatch: pytest.MonkeyPatch) -> None:
    root, profile, first, results = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(results))
    again = build_profile(profile, until="teacher")
    assert again.artifacts["onnx_import"].cached and again.artifacts["teacher"].cached
    assert again.artifacts["onnx_import"].recipe_id == first.artifacts["onnx_import"].recipe_id

    data = yaml.safe_load(profile.read_text())
    edited = export_nchw(keras_classifier(seed=1), root / "teacher-v2.onnx")
    shutil.copyfile(edited, data["teacher"]["path"] + ".v2")
    data["teacher"]["path"] += ".v2"
    changed = build_profile(write_profile(root / "edited.yaml", data), until="teacher")
    assert not changed.artifacts["onnx_import"].cached
    assert changed.artifacts["onnx_import"].recipe_id != first.artifacts["onnx_import"].recipe_id
    assert changed.artifacts["teacher"].recipe_id != first.artifacts["teacher"].recipe_id


def test_bundle_ships_model_onnx_with_its_hash(built, tmp_path: Path) -> None:
    _, _, result, _ = built
    manifest = verify_bundle(result.bundle_dir)
    assert manifest["files"]["model.onnx"] == sha256_file(result.bundle_dir / "model.onnx")
    (entry,) = manifest["extra_models"]
    assert entry["file"] == "model.onnx" and entry["format"] == "onnx" and entry["opset"] == 17
    assert entry["bytes"] == (result.bundle_dir / "model.onnx").stat().st_size
    assert entry["check"]["passed"] and entry["check"]["top1_agreement"] == 1.0 and entry["exporter"].startswith("tf2onnx")

    tampered = tmp_path / result.bundle_dir.name
    shutil.copytree(result.bundle_dir, tampered)
    with open(tampered / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx has sha256"):
        verify_bundle(tampered)
    assert run_agent("verify", tampered).returncode == 3


def test_agent_profiles_the_onnx_model_with_onnxruntime(built) -> None:
    import onnxruntime

    _, _, result, _ = built
    args = ("profile", result.bundle_dir, "--target", "local", "--threads", "1", "--runs", "20", "--min-seconds", "0", "--warmup", "2")
    onnx_record = run_agent(*args, "--runtime", "onnxruntime").json
    tflite_record = run_agent(*args).json
    assert set(onnx_record) == set(tflite_record) and set(onnx_record["runtime"]) == set(tflite_record["runtime"])
    rt = onnx_record["runtime"]
    assert rt["name"] == "onnxruntime" and rt["version"] == onnxruntime.__version__ and rt["threads_used"] == 1
    assert tflite_record["runtime"]["name"] == "ai_edge_litert"
    latency = onnx_record["latency_ms"]
    assert latency["count"] == len(latency["samples"]) >= 20 and latency["p50"] > 0
    # The host predictions come from the float32 .tflite; the float ONNX model must give the same classes.
    assert onnx_record["accuracy"]["count"] == 30 and onnx_record["accuracy"]["agreement_with_host"] == 1.0


@pytest.mark.agent_venv
@skip_without_agent_venv
def test_agent_without_onnxruntime_keeps_working(built) -> None:
    _, _, result, _ = built
    args = ("profile", result.bundle_dir, "--target", "local", "--threads", "1", "--runs", "5", "--min-seconds", "0", "--warmup", "1")
    record = run_agent(*args, python=AGENT_PYTHON).json
    assert record["runtime"]["name"] == "tflite_runtime"
    error = run_agent(*args, "--runtime", "onnxruntime", python=AGENT_PYTHON).error
    assert error["kind"] == "no_runtime" and "onnxruntime" in error["error"]


def test_cli_export_onnx(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import main

    _, profile, _, results = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(results))
    out = tmp_path / "student.onnx"
    result = CliRunner().invoke(main, ["export", "onnx", "--profile", str(profile), "--opset", "13", "--out", str(out)])
    assert result.exit_code == 0, result.output
    import onnx

    assert onnx.load(str(out)).opset_import[0].version == 13
    text = " ".join(result.output.split())
    assert "student → ONNX opset 13" in text and "tf2onnx" in text and "bundle with model.onnx" in text


def test_dynamic_teacher_needs_the_profile_size(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, _, results = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(results))
    dynamic = conv_classifier(tmp_path / "dyn.onnx", dims=("N", 1, "H", "W"))
    data_dir = root / "data"
    without_size = write_profile(tmp_path / "a.yaml", profile_data(dynamic, data_dir, preprocessing=None))
    with pytest.raises(ConfigError, match=r"dynamic height and width.*Set preprocessing\.height and preprocessing\.width"):
        build_profile(without_size, until="teacher")
    with_size = write_profile(tmp_path / "b.yaml", profile_data(dynamic, data_dir))
    assert build_profile(with_size, until="teacher").artifacts["onnx_import"].metrics["input_shape"] == [12, 12, 1]


def test_profile_layout_mistake_names_the_key(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, profile, _, results = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(results))
    data = yaml.safe_load(profile.read_text())
    data["teacher"]["onnx"]["layout"] = "NHWC"
    with pytest.raises(ConfigError, match=r"teacher\.onnx\.layout: NHWC\) looks wrong; set it to NCHW"):
        build_profile(write_profile(tmp_path / "nhwc.yaml", data), until="teacher")


def test_cli_build_with_a_bad_onnx_teacher_is_a_clean_error(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import main

    root, profile, _, results = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(results))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not onnx" * 7)
    data = yaml.safe_load(profile.read_text())
    data["teacher"]["path"] = str(junk)
    result = CliRunner().invoke(main, ["build", "--profile", str(write_profile(tmp_path / "junk.yaml", data))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "junk.onnx is not a valid ONNX file" in " ".join(result.output.split())


def test_deploy_to_a_target_that_prefers_onnxruntime(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target's runtime preference decides: deploy's doctor picks onnxruntime, profile passes it on."""
    import os

    from pipeline.config.target import parse_target
    from pipeline.deploy.deployer import deploy
    from pipeline.deploy.profiling import profile

    _, _, result, _ = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(tmp_path / "results"))
    target = parse_target(
        {
            "name": "onnx-box", "arch": os.uname().machine if os.uname().machine in ("aarch64", "x86_64") else "x86_64",
            "os": "debian", "threads": 1, "python": "host", "remote_dir": str(tmp_path / "device"),
            "runtime": ["onnxruntime", "ai_edge_litert"], "profiling": {"runs": 5, "min_seconds": 0.0, "warmup": 1},
            "transport": {"type": "local", "command_timeout": 120},
        },
        "test target onnx-box",
    )
    deployed = deploy(target, result.bundle_dir)
    assert deployed.doctor.selected_runtime == "onnxruntime"
    record = profile(target, doctor=deployed.doctor).record
    assert record.runtime.name == "onnxruntime" and record.accuracy.agreement_with_host == 1.0


def test_build_table_lists_the_onnx_export(built) -> None:
    from rich.console import Console

    from pipeline.reports.build_table import build_table

    _, _, result, _ = built
    console = Console(width=200, record=True)
    console.print(build_table(result))
    assert "onnx opset 17" in console.export_text()
