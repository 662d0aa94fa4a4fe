"""A real sweep on the local target: real training, pruning, conversion, agent and SQLite store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from pipeline.build import build_profile
from pipeline.config.profile import load_profile
from pipeline.config.target import load_target
from pipeline.reports.sweep_report import write_sweep_report
from pipeline.sweep.constraints import parse_constraints, select
from pipeline.sweep.export import write_variant_profile
from pipeline.sweep.grid import SweepGrid
from pipeline.sweep.runner import load_sweep, run_sweep
from pipeline.sweep.store import SweepStore
from tests.helpers.profiles import TINY, merged

pytestmark = pytest.mark.slow

BASE = merged(TINY, name="tiny-sweep", pruning={"fine_tune": {"epochs": 1, "batch_size": 64}})


def _model_sha(bundle: Path) -> str:
    return hashlib.sha256((bundle / "model.tflite").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESHIP_RESULTS", str(root / "results"))
        base = root / "tiny-sweep.yaml"
        base.write_text(yaml.safe_dump(BASE))
        target = root / "local.yaml"
        target.write_text(yaml.safe_dump({
            "arch": "x86_64", "threads": 2, "remote_dir": "devices/local", "python": "host", "profiling": {"runs": 5, "min_seconds": 0.0, "warmup": 1},
            "transport": {"type": "local"},
        }))
        grid = SweepGrid(base_profile=str(base), sparsity=(0.0, 0.5), quantization=("float32", "int8"))
        first = run_sweep(grid, load_target(str(target)))
        second = run_sweep(grid, load_target(str(target)))
        yield root, grid, first, second


def test_every_variant_is_built_measured_and_stored(swept) -> None:
    root, _, first, _ = swept
    assert [r["name"] for r in first.rows] == [
        "mobilenet_v2-w0.35-r28-s0-float32", "mobilenet_v2-w0.35-r28-s0-int8",
        "mobilenet_v2-w0.35-r28-s0.5-float32", "mobilenet_v2-w0.35-r28-s0.5-int8",
    ]
    for row in first.rows:
        assert row.get("error") is None, row
        assert row["latency_ms"] > 0 and 0 <= row["accuracy"] <= 1 and row["size_kb"] > 0
        assert Path(row["record_path"]).is_file()
    by = {r["name"]: r for r in first.rows}
    # Structured pruning really removed parameters, and int8 is smaller than float32.
    assert by["mobilenet_v2-w0.35-r28-s0.5-int8"]["parameters"] < by["mobilenet_v2-w0.35-r28-s0-int8"]["parameters"]
    assert by["mobilenet_v2-w0.35-r28-s0-int8"]["size_kb"] < by["mobilenet_v2-w0.35-r28-s0-float32"]["size_kb"]
    with SweepStore(root / "results" / "sweeps.sqlite") as store:
        stored = load_sweep(store, first.sweep_id)
    assert [r["name"] for r in stored.rows] == [r["name"] for r in first.rows]
    assert stored.rows[0]["latency_ms"] == first.rows[0]["latency_ms"]


def test_second_run_reuses_every_stage_and_measurement(swept) -> None:
    _, _, first, second = swept
    assert second.sweep_id != first.sweep_id
    assert all(r["built_from_cache"] for r in second.rows)
    assert [r["record_path"] for r in second.rows] == [r["record_path"] for r in first.rows]


def test_reports_have_fronts_plots_and_table(swept, tmp_path, monkeypatch) -> None:
    root, _, first, _ = swept
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root / "results"))
    chosen = select(first.rows, parse_constraints("accuracy>=0"))
    paths = write_sweep_report(first, tmp_path, chosen)
    for name in ("pareto_latency.png", "pareto_size.png", "latency_model.png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(paths["sweep.json"].read_text())
    assert summary["latency_front"] and set(summary["latency_front"]) <= {r["name"] for r in first.rows}
    assert summary["selection"]["best"] == first.rows[chosen.best]["name"]
    html = paths["report.html"].read_text()
    assert html.count("data:image/png;base64,") == 3 and "selected" in html
    # the latency model of the target: one fit per mode, over the dense and the pruned variant
    fits = summary["latency_model"]
    assert set(fits) == {"float32", "int8"} and all(len(f["variants"]) == 2 for f in fits.values())
    assert {v["name"] for f in fits.values() for v in f["variants"]} == {r["name"] for r in first.rows}
    assert "| variant |" in paths["table.md"].read_text()


def test_selected_variant_round_trips_into_a_profile_that_builds_the_same_model(swept, tmp_path, monkeypatch) -> None:
    root, _, first, _ = swept
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root / "results"))
    smallest = min(r["size_kb"] for r in first.rows)
    chosen = select(first.rows, parse_constraints(f"size_kb<={smallest + 0.01},accuracy>=0"))
    row = first.rows[chosen.best]
    path = tmp_path / "chosen.yaml"
    write_variant_profile(first.profiles[row["name"]], path, name="chosen")
    profile = load_profile(str(path))
    assert profile.name == "chosen"
    rebuilt = build_profile(profile)
    assert all(a.cached for k, a in rebuilt.artifacts.items() if k != "package")
    assert _model_sha(rebuilt.bundle_dir) == _model_sha(root / "results" / "bundles" / row["bundle_id"])


def test_impossible_constraints_name_the_closest(swept) -> None:
    _, _, first, _ = swept
    chosen = select(first.rows, parse_constraints("accuracy>=0.999,latency_ms<=0.000001"))
    assert chosen.best is None and chosen.closest is not None
    assert str(chosen.closest) in chosen.message


def test_sweep_select_prints_the_targets_latency_model(swept, monkeypatch) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    root, _, first, _ = swept
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root / "results"))
    result = CliRunner().invoke(main, ["sweep-select", str(first.sweep_id), "--select", "accuracy>=0"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("latency model, ")]
    assert [line.split(":")[0] for line in lines] == ["latency model, float32 on local", "latency model, int8 on local"]
    assert all("µs per op" in line and "µs per million MACs" in line for line in lines)
