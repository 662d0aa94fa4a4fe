"""Benchmark compression depth: structured pruning, mixed precision, clustering, and the sweep.

Everything comes from one sweep (profiles/sweeps/default.yaml on the local target) run twice, plus
one clustered build:
- pruning: the int8 variant of each family at 0 and 0.5 structured sparsity, p50 on the target and
  host top-1 on the whole test split;
- mixed precision: float32, int8 and mixed variants of the same student;
- the second sweep run must build nothing (every stage a cache hit) and measure nothing new.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from pipeline.bench.common import target, write_result
from pipeline.progress import Progress

GRID = "default"  # profiles/sweeps/default.yaml


def _row(rows: list[dict[str, Any]], **settings: Any) -> Optional[dict[str, Any]]:
    for row in rows:
        if all(row.get(k) == v for k, v in settings.items()) and not row.get("error"):
            return row
    return None


def interleaved_p50s(models: dict[str, bytes], threads: int, rounds: int = 7, runs: int = 3000) -> dict[str, float]:
    """Median over ABCABC... rounds of each model's p50, so drift on the host hits all alike.

    At ~50 µs per invoke, two sweep measurements minutes apart differ by more than the effect of
    pruning; alternating the models in one process is the fair comparison.
    """
    import numpy as np

    from pipeline.quantize.litert_eval import load_interpreter
    from pipeline.quantize.mixed import p50_latency_ms

    images = {name: np.zeros(load_interpreter(model).get_input_details()[0]["shape"][1:], np.float32) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(p50_latency_ms(model, images[name], runs=runs, threads=threads))
    return {name: float(np.median(values)) for name, values in times.items()}


def interleaved_p50(dense: bytes, pruned: bytes, threads: int, rounds: int = 7, runs: int = 3000) -> dict[str, float]:
    p50 = interleaved_p50s({"dense": dense, "pruned": pruned}, threads, rounds, runs)
    return {"dense_ms": p50["dense"], "pruned_ms": p50["pruned"], "reduction": round(1 - p50["pruned"] / p50["dense"], 4)}


def latency_model(rows: list[dict[str, Any]], pruning: list[dict[str, Any]], rounds: int = 5, runs: int = 2000) -> dict[str, Any]:
    """Fit p50 (1 thread, interleaved) against op count and MACs over every sweep variant, and say
    per family what pruning half the channels should buy, can buy at most, and did buy."""
    from pipeline.reports.latency_model import ceiling, fit, predicted_reduction
    from pipeline.reports.sweep_report import latency_points, variant_model

    models = {r["name"]: variant_model(r).read_bytes() for r in rows if not r.get("error") and r.get("bundle_id")}
    points = latency_points(rows, interleaved_p50s(models, threads=1, rounds=rounds, runs=runs))
    fits = fit(points)
    by_name = {p.name: p for p in points}
    families = []
    for entry in pruning:
        dense = _row(rows, family=entry["family"], sparsity=0.0, quantization="int8")
        pruned = _row(rows, family=entry["family"], sparsity=0.5, quantization="int8")
        if not dense or not pruned or "int8" not in fits:
            continue
        ops = by_name[dense["name"]].ops
        families.append({
            "family": entry["family"],
            "int8_ops": ops,
            "predicted_reduction": predicted_reduction(fits["int8"], ops, int(dense["macs"]), int(pruned["macs"])),
            "measured_reduction": entry.get("latency_reduction"),
            "ceiling_all_macs_removed": ceiling(fits["int8"], ops, int(dense["macs"])),
            "int8_fit_explains_latency": fits["int8"]["explains_latency"],
        })
    return {"threads": 1, "model": "p50 = per_op * ops + per_mmac * MMACs, per quantization mode", "fits": fits, "pruning": families}


def _pruning(rows: list[dict[str, Any]], family: str) -> dict[str, Any]:
    from pipeline.reports.sweep_report import variant_model

    dense = _row(rows, family=family, sparsity=0.0, quantization="int8")
    pruned = _row(rows, family=family, sparsity=0.5, quantization="int8")
    if not dense or not pruned:
        return {"family": family, "error": "variant missing from the sweep"}
    models = [variant_model(row).read_bytes() for row in (dense, pruned)]
    ab = {f"threads_{t}": interleaved_p50(*models, threads=t) for t in (1, 2)}
    return {
        "family": family,
        "dense": {k: dense[k] for k in ("accuracy", "latency_ms", "size_kb", "parameters", "macs")},
        "pruned_50pct_channels": {k: pruned[k] for k in ("accuracy", "latency_ms", "size_kb", "parameters", "macs")},
        "sweep_latency_reduction": round(1 - pruned["latency_ms"] / dense["latency_ms"], 4),
        "interleaved_p50": ab,
        # Headline: one thread. With two threads on this 2-core host a ~50 µs invoke is dominated by
        # thread hand-off and is bimodal (one identical model measured 0.054 and 0.093 ms in one sweep);
        # both figures are in "interleaved_p50".
        "latency_reduction": ab["threads_1"]["reduction"],
        "accuracy_loss_points": round((dense["accuracy"] - pruned["accuracy"]) * 100, 3),
    }


def _write_latency_plot(fits: dict[str, Any]) -> Path:
    from pipeline.fsutil import atomic_write_bytes
    from pipeline.paths import results_dir
    from pipeline.reports.plots import latency_split_png

    path = results_dir() / "bench" / "compression-latency.png"
    atomic_write_bytes(path, latency_split_png(fits))
    return path


def _mixed(rows: list[dict[str, Any]], family: str, sparsity: float, budget: float) -> dict[str, Any]:
    modes = {m: _row(rows, family=family, sparsity=sparsity, quantization=m) for m in ("float32", "int8", "mixed")}
    if not all(modes.values()):
        return {"family": family, "sparsity": sparsity, "error": "variant missing from the sweep"}
    f32, i8, mx = (modes[m]["accuracy"] for m in ("float32", "int8", "mixed"))
    lost = f32 - i8
    within = lost <= budget
    recovered = None if within or lost <= 0 else (mx - i8) / lost
    return {
        "family": family,
        "sparsity": sparsity,
        "accuracy": {"float32": f32, "int8": i8, "mixed": mx},
        "size_kb": {m: modes[m]["size_kb"] for m in modes},
        "latency_ms": {m: modes[m]["latency_ms"] for m in modes},
        "int8_loss_points": round(lost * 100, 3),
        "int8_within_budget": within,
        "share_of_int8_loss_recovered": None if recovered is None else round(recovered, 3),
        "met": within or (recovered is not None and recovered >= 0.5),
    }


def _clustering(progress: Optional[Progress]) -> dict[str, Any]:
    from pipeline.build import build_profile
    from pipeline.config.profile import load_profile

    base = load_profile("default")
    data = base.model_dump(mode="json")
    data.update(name="default-clustered")
    data["clustering"] = {"enabled": True, "clusters": 16, "fine_tune_epochs": 1}
    data["quantization"].update(modes=["float32", "int8"], ship="int8")
    data["distillation"]["scratch_baseline"] = False
    result = build_profile(base.model_validate(data), progress=progress)
    report = result.artifacts["prune"].metrics["compression"]
    before, after = report["before"], report["after"]
    return {
        "clusters": 16,
        "float32_tflite_bytes": {"before": before["float32_tflite_bytes"], "after": after["float32_tflite_bytes"]},
        "float32_tflite_gzip_bytes": {"before": before["float32_tflite_gzip_bytes"], "after": after["float32_tflite_gzip_bytes"]},
        "gzip_ratio": round(after["float32_tflite_gzip_bytes"] / before["float32_tflite_gzip_bytes"], 4),
        "test_accuracy": {"before": before["test_accuracy"], "after": after["test_accuracy"]},
        "int8_accuracy": result.artifacts["evaluate:int8"].metrics["accuracy"],
    }


def run(profile: str = "default", progress: Optional[Progress] = None) -> dict[str, Any]:
    from pipeline.config.profile import load_profile
    from pipeline.config.target import load_target
    from pipeline.reports.sweep_report import write_sweep_report
    from pipeline.sweep.grid import expand, load_grid
    from pipeline.sweep.runner import run_sweep, sweep_reports_dir

    grid = load_grid(GRID)
    if profile != "default":
        grid = grid.model_copy(update={"base_profile": profile})
    local = load_target("local")
    started = time.perf_counter()
    first = run_sweep(grid, local, progress=progress, remeasure=True)  # all 16 measured in one session
    first_seconds = time.perf_counter() - started
    write_sweep_report(first, sweep_reports_dir(first.sweep_id))
    started = time.perf_counter()
    second = run_sweep(grid, local, progress=progress)
    second_seconds = time.perf_counter() - started

    budget = load_profile(grid.base_profile).quantization.mixed.max_accuracy_drop
    rows = first.rows
    pruning = [_pruning(rows, family) for family in grid.family]
    mixed = [_mixed(rows, family, s, budget) for family in grid.family for s in grid.sparsity]
    primary = pruning[0]  # the base profile's family
    latency = latency_model(rows, pruning)
    latency["plot"] = str(_write_latency_plot(latency["fits"]))
    clustering = _clustering(progress)
    payload = {
        "grid": grid.model_dump(mode="json"),
        "target": local.name,
        "variants": len(expand(grid)),
        "sweep": {
            "first_run_seconds": round(first_seconds, 1),
            "second_run_seconds": round(second_seconds, 1),
            "first_run_variants_fully_cached": sum(int(r.get("built_from_cache") or 0) for r in first.rows),
            "second_run_variants_fully_cached": sum(int(r.get("built_from_cache") or 0) for r in second.rows),
            "failed_variants": [r["name"] for r in first.rows if r.get("error")],
            "latency_front": [first.rows[i]["name"] for i in first.latency_front],
            "size_front": [first.rows[i]["name"] for i in first.size_front],
            "report": str(sweep_reports_dir(first.sweep_id) / "report.html"),
            "rows": [{k: r.get(k) for k in ("name", "accuracy", "latency_ms", "size_kb", "parameters", "macs", "build_seconds", "error")} for r in rows],
        },
        "structured_pruning": pruning,
        "latency_model": latency,
        "mixed_precision": mixed,
        "clustering": clustering,
        "targets": {
            "pruning_50pct_latency_reduction_ge_30pct": target(primary.get("latency_reduction"), 0.30, True),
            "pruning_50pct_accuracy_loss_le_1_point": target(primary.get("accuracy_loss_points"), 1.0, False),
            "mixed_recovers_half_or_int8_within_budget": {"value": [m.get("share_of_int8_loss_recovered") for m in mixed],
                                                          "met": all(m.get("met") for m in mixed)},
            "sweep_variants_ge_12": target(len(expand(grid)), 12, True),
            "sweep_minutes_le_60": target(round(first_seconds / 60, 2), 60, False),
            "second_sweep_all_cached": {
                "value": f"{sum(int(r.get('built_from_cache') or 0) for r in second.rows)}/{len(second.rows)}",
                "met": all(r.get("built_from_cache") for r in second.rows),
            },
        },
    }
    write_result("compression", payload)
    return payload
