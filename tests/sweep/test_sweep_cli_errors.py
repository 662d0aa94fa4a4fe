"""Bad sweep input fails before anything is built: one paragraph, non-zero exit, no traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main


def _invoke(*args: str):
    return CliRunner().invoke(main, ["sweep", "--target", "local", "--profile", "quick", *args])


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--sparsity", "0,1.2"), "every sparsity must be in [0, 1)"),
        (("--sparsity", "-0.1"), "every sparsity must be in [0, 1)"),
        (("--select", "latency_ms=<2"), "Cannot parse the constraint 'latency_ms=<2'"),
        (("--quant", ","), "zero variants: quantization is empty"),
        (("--quant", "int4"), "quantization"),
        (("--grid", "no-such-grid"), "No sweep grid named 'no-such-grid'"),
        (("--resolution", "24.5"), "expected comma-separated whole numbers of pixels"),
    ],
)
def test_bad_sweep_input_is_one_clear_paragraph(args, expected, isolated_results) -> None:
    result = _invoke(*args)
    assert result.exit_code != 0
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (isolated_results / "cache").exists(), "nothing may be built for a bad sweep"


def test_write_profile_needs_select() -> None:
    result = _invoke("--write-profile", "x.yaml")
    assert result.exit_code == 2 and "--write-profile needs --select" in result.output


def test_sweep_select_without_any_sweep_says_so(isolated_results) -> None:
    result = CliRunner().invoke(main, ["sweep-select", "--select", "accuracy>=0.5"])
    assert result.exit_code == 1 and "no sweep has been run yet" in result.output
