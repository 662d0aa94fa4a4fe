"""End-to-end build on a small real slice of Fashion-MNIST: real TensorFlow, real conversion, real LiteRT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.build import build_profile
from pipeline.bundle.manifest import verify_bundle
from tests.helpers.profiles import merged

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny",
    "seed": 3,
    "dataset": {"max_train": 800, "max_test": 300, "calibration_count": 60, "eval_count": 100},
    "teacher": {"base_width": 8, "blocks_per_stage": [1, 1], "training": {"epochs": 1, "batch_size": 64}},
    "student": {"family": "mobilenet_v2", "width_multiplier": 0.35, "training": {"epochs": 2, "batch_size": 64}},
    "distillation": {"temperature": 4.0, "alpha": 0.2},
    "quantization": {"modes": ["float32", "float16", "dynamic", "int8"], "ship": "int8", "calibration_samples": 40},
    "acceptance": {"min_accuracy": 0.99},
}


def write_profile(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(merged(TINY, **overrides)))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESHIP_RESULTS", str(root / "results"))
        profile_path = write_profile(root / "tiny.yaml")
        result = build_profile(profile_path)
    return root, profile_path, result


def test_build_produces_a_verified_bundle(built) -> None:
    root, _, result = built
    manifest = verify_bundle(result.bundle_dir)
    assert result.bundle_dir.parent == root / "results" / "bundles"
    assert result.bundle_dir.with_suffix(".tar.gz").is_file()
    assert manifest["profile"] == "tiny" and manifest["model"]["quantization"] == "int8"
    assert manifest["eval"]["count"] == 100
    images = np.load(result.bundle_dir / "eval/images.npy")
    assert images.dtype == np.uint8 and images.shape == (100, 28, 28, 1)
    labels = (result.bundle_dir / "labels.txt").read_text().split("\n")
    assert labels[0] == "T-shirt/top" and len([x for x in labels if x]) == 10
    prov = manifest["provenance"]
    assert prov["teacher_id"] == result.artifacts["teacher"].recipe_id
    assert len(prov["dataset_sha256"]) == 64 and "tensorflow-cpu" in prov["tool_versions"]
    assert manifest["host_metrics"]["scratch_student_accuracy"] is not None


def test_every_quantization_mode_is_evaluated_with_litert(built) -> None:
    _, _, result = built
    sizes = {}
    for mode in ("float32", "float16", "dynamic", "int8"):
        metrics = result.artifacts[f"evaluate:{mode}"].metrics
        assert metrics["count"] == 300
        assert 0.0 <= metrics["accuracy"] <= 1.0
        sizes[mode] = metrics["tflite_bytes"]
    # float32 models agree with Keras almost exactly; quantized ones shrink the file.
    assert result.artifacts["evaluate:float32"].metrics["agreement_with_keras"] >= 0.99
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert sizes["dynamic"] < sizes["float32"]


def test_acceptance_miss_is_reported(built) -> None:
    _, _, result = built
    assert any("min_accuracy" in w for w in result.warnings)


def test_rerun_is_all_cache_hits(built, monkeypatch: pytest.MonkeyPatch) -> None:
    root, profile_path, first = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root / "results"))
    again = build_profile(profile_path)
    assert all(a.cached for a in again.artifacts.values())
    assert again.bundle_dir == first.bundle_dir


def test_calibration_change_reruns_only_int8_stages(built, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root, _, first = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root / "results"))
    changed = build_profile(write_profile(tmp_path / "tiny.yaml", quantization={"calibration_samples": 20}))
    rerun = {key for key, a in changed.artifacts.items() if not a.cached}
    assert rerun == {"quantize:int8", "evaluate:int8", "package"}
    assert changed.artifacts["quantize:float16"].recipe_id == first.artifacts["quantize:float16"].recipe_id
    assert changed.bundle_dir != first.bundle_dir


def test_until_stops_after_the_named_stage(built, monkeypatch: pytest.MonkeyPatch) -> None:
    root, profile_path, _ = built
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root / "results"))
    partial = build_profile(profile_path, until="distill")
    assert set(partial.artifacts) == {"data", "teacher", "student", "scratch"}
    assert partial.bundle_dir is None


def test_distilled_and_scratch_students_share_architecture_and_budget(built) -> None:
    _, _, result = built
    distilled, scratch = result.artifacts["student"].metrics, result.artifacts["scratch"].metrics
    assert distilled["distilled"] is True and scratch["distilled"] is False
    assert distilled["parameters"] == scratch["parameters"] and distilled["epochs"] == scratch["epochs"]
    assert "teacher" in result.artifacts["student"].meta["inputs"]
    assert "teacher" not in result.artifacts["scratch"].meta["inputs"]


def run_cli(*args: str, env_results: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGESHIP_RESULTS=str(env_results))
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, timeout=600)


def test_cli_build_prints_table_from_cache(built) -> None:
    root, profile_path, result = built
    proc = run_cli("build", "--profile", str(profile_path), env_results=root / "results")
    assert proc.returncode == 0, proc.stderr
    assert "tflite int8 *" in proc.stdout and result.bundle_dir.name in proc.stdout
    assert "warning: accuracy" in proc.stderr


def test_a_piped_cli_build_prints_plain_progress_and_no_tensorflow_lines(built, tmp_path: Path) -> None:
    """As in CI: a plain line per task, none of TensorFlow's or the converter's lines (they go to
    results/logs/). The trained stages come from the cache; quantize and evaluate run again."""
    import shutil

    root, profile_path, _ = built
    results = tmp_path / "results"
    for stage in (root / "results" / "cache").iterdir():
        if stage.name not in ("quantize", "evaluate", "package"):
            shutil.copytree(stage, results / "cache" / stage.name)
    env = dict(os.environ, EDGESHIP_RESULTS=str(results))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI sets its own level, as it does for a user
    proc = subprocess.run([sys.executable, "-m", "pipeline", "build", "--profile", str(profile_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "calibrating int8 ..." in proc.stderr and "calibrating int8: done in" in proc.stderr
    for chatter in ("oneDNN", "absl", "fully_quantize", "UserWarning", "tensorflow/"):
        assert chatter not in proc.stderr + proc.stdout, chatter
    logs = list((results / "logs").glob("*-build-*.log"))
    assert len(logs) == 1 and "fully_quantize" in logs[0].read_text()


def test_cli_missing_dataset_names_the_directory(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"name": "p", "dataset": {"source": "idx", "path": str(tmp_path / "nowhere")}}))
    proc = run_cli("build", "--profile", str(profile), env_results=tmp_path / "results")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere") in proc.stderr
    assert not any((tmp_path / "results" / "cache" / "data").glob("*/meta.json"))


def test_cli_unknown_profile_key_is_one_paragraph(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\nquantisation: {}\n")
    proc = run_cli("build", "--profile", str(profile), env_results=tmp_path / "results")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "quantisation" in proc.stderr and str(profile) in proc.stderr


def test_killed_build_reruns_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL during training leaves only ignorable temp dirs; the rerun completes from the cache."""
    import signal
    import time

    profile = write_profile(tmp_path / "tiny.yaml", teacher={"training": {"epochs": 3, "batch_size": 64}})
    results = tmp_path / "results"
    env = dict(os.environ, EDGESHIP_RESULTS=str(results))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "build", "--profile", str(profile)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    teacher_dir = results / "cache" / "teacher"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (teacher_dir.is_dir() and any(teacher_dir.iterdir())):
        time.sleep(0.2)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not list(teacher_dir.glob("*/meta.json")), "a killed stage must not look finished"
    assert (results / "cache" / "data").is_dir() and list((results / "cache" / "data").glob("*/meta.json"))
    monkeypatch.setenv("EDGESHIP_RESULTS", str(results))
    result = build_profile(profile, until="teacher")
    assert result.artifacts["data"].cached and not result.artifacts["teacher"].cached
    assert (result.artifacts["teacher"].path / "teacher.keras").is_file()


def test_teacher_records_its_augmentation_and_flip_averaged_accuracy(built) -> None:
    _, _, result = built
    teacher = result.artifacts["teacher"].metrics
    assert teacher["augmentation"] == {"flip": True, "shift": 0, "erasing": 0.0}
    assert teacher["label_smoothing"] == 0.0
    assert 0.0 <= teacher["test_accuracy_flip_average"] <= 1.0
    assert (result.artifacts["teacher"].path / "logits_train_flipped.npy").is_file()


def test_ctrl_c_while_the_students_train_side_by_side_stops_everything_and_reruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C reaches the whole process group: both student workers stop, nothing is committed."""
    import signal
    import time

    profile = write_profile(tmp_path / "tiny.yaml", student={"training": {"epochs": 6, "batch_size": 32}})
    results = tmp_path / "results"
    env = dict(os.environ, EDGESHIP_RESULTS=str(results), EDGESHIP_JOBS="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "build", "--profile", str(profile)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # A suite started in the background by a non-interactive shell inherits SIGINT as ignored,
        # and so would the build; give it the disposition a terminal's Ctrl-C meets.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    distill_dir = results / "cache" / "distill"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(distill_dir.glob(".*.partial"))) < 2:
        time.sleep(0.2)
    assert proc.poll() is None and len(list(distill_dir.glob(".*.partial"))) == 2, "both students should be training"
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert not list(distill_dir.glob("*/meta.json")) and not list(distill_dir.glob(".*.partial"))
    monkeypatch.setenv("EDGESHIP_RESULTS", str(results))
    result = build_profile(profile, until="distill", max_jobs=2)
    assert result.artifacts["teacher"].cached
    assert not result.artifacts["student"].cached and not result.artifacts["scratch"].cached
