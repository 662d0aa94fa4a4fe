"""The latency model recovers known costs, never goes negative, and predicts what pruning buys."""

from __future__ import annotations

import pytest

from pipeline.reports.latency_model import LatencyPoint, ceiling, fit, fit_mode, predicted_reduction


def synthetic(per_op_ms: float, per_mmac_ms: float, mode: str = "int8") -> list[LatencyPoint]:
    shapes = [(30, 5_800_000), (30, 1_700_000), (52, 5_600_000), (52, 1_750_000)]
    return [LatencyPoint(f"v{i}", mode, ops, macs, per_op_ms * ops + per_mmac_ms * macs / 1e6) for i, (ops, macs) in enumerate(shapes)]


def test_exact_costs_are_recovered() -> None:
    model = fit_mode(synthetic(0.001, 0.004))
    assert model["per_op_us"] == pytest.approx(1.0, abs=1e-3) and model["per_mmac_us"] == pytest.approx(4.0, abs=1e-3)
    assert model["r2"] == pytest.approx(1.0) and model["max_relative_error"] < 1e-6 and model["explains_latency"]
    first = model["variants"][0]  # 30 ops, 5.8 M MACs: 30 µs fixed of 53.2 µs
    assert first["fixed_share"] == pytest.approx(30 / 53.2, abs=1e-3)


def test_a_negative_cost_is_dropped_rather_than_reported() -> None:
    # time falls as ops rise: a free fit would give a negative cost per op
    points = [LatencyPoint("a", "int8", 10, 4_000_000, 0.05), LatencyPoint("b", "int8", 40, 4_200_000, 0.03), LatencyPoint("c", "int8", 20, 4_100_000, 0.045)]
    model = fit_mode(points)
    assert model["per_op_us"] == 0 and model["per_mmac_us"] > 0
    assert not model["explains_latency"]  # time falling as MACs rise: the fit explains none of it


def test_modes_are_fitted_separately() -> None:
    models = fit(synthetic(0.001, 0.004, "int8") + synthetic(0.002, 0.012, "float32"))
    assert set(models) == {"float32", "int8"}
    assert models["float32"]["per_mmac_us"] == pytest.approx(12.0, abs=1e-3)


def test_pruning_is_capped_by_the_fixed_cost_of_ops() -> None:
    model = {"per_op_us": 1.0, "per_mmac_us": 4.0}
    # 30 µs in ops + 23.2 µs in MACs; removing 70 % of the MACs removes 16.24 µs of 53.2
    assert predicted_reduction(model, 30, 5_800_000, 1_740_000) == pytest.approx(16.24 / 53.2, abs=1e-4)
    assert ceiling(model, 30, 5_800_000) == pytest.approx(23.2 / 53.2, abs=1e-4)


def test_too_few_variants_is_an_error_that_says_so() -> None:
    with pytest.raises(ValueError, match="at least 2 variants"):
        fit_mode(synthetic(0.001, 0.004)[:1])


def test_the_split_plot_draws_every_mode_and_says_when_there_is_nothing() -> None:
    from pipeline.reports.plots import latency_split_png, placeholder_png

    png = latency_split_png(fit(synthetic(0.001, 0.004, "int8") + synthetic(0.002, 0.012, "float32")))
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    title = "Where each variant's p50 goes (1 thread)"
    assert latency_split_png({}) == placeholder_png(title)


def test_a_mode_with_one_variant_is_left_out_of_the_fits() -> None:
    lone = LatencyPoint("only-dynamic", "dynamic", 15, 5_800_000, 0.13)
    assert set(fit(synthetic(0.001, 0.004) + [lone])) == {"int8"}


def test_describe_gives_the_costs_and_the_floor_or_says_the_fit_explains_little() -> None:
    from pipeline.reports.latency_model import describe

    good = describe("int8", fit_mode(synthetic(0.001, 0.004)), "rpi4")
    assert good.startswith("int8 on rpi4: 1.00 µs per op + 4.00 µs per million MACs (R² 1.00)")
    assert "cannot remove 56%–88%" in good  # fixed shares: 30 of 53.2 µs (v0) up to 52 of 59 µs (v3)
    bad = {"per_op_us": 2.7, "per_mmac_us": 6.5, "r2": 0.17, "explains_latency": False, "variants": []}
    assert "R² 0.17: ops and MACs do not explain" in describe("int8", bad, "local")
