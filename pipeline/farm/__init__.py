"""Device farm data: the results store (SQLite) and the regression check against baselines.

The farm runner (inventory, parallel SSH) records each device's outcome with
:meth:`ResultsStore.record_result`, then calls :func:`check_run` and :func:`summarize` for the exit
code; ``pipeline.reports`` turns a run into JUnit XML, Markdown and HTML.
"""

from pipeline.farm.regression import (
    DEFAULT_POLICY,
    EXIT_INFRASTRUCTURE,
    EXIT_OK,
    EXIT_REGRESSION,
    Policy,
    RunSummary,
    check_result,
    check_run,
    compare,
    exit_code,
    learn_noise_floor,
    load_verdicts,
    summarize,
)
from pipeline.farm.rows import Baseline, BaselineExistsError, Result, Run, StoreError
from pipeline.farm.store import ResultsStore
from pipeline.farm.verdicts import Verdict

__all__ = [
    "DEFAULT_POLICY",
    "EXIT_INFRASTRUCTURE",
    "EXIT_OK",
    "EXIT_REGRESSION",
    "Baseline",
    "BaselineExistsError",
    "Policy",
    "Result",
    "ResultsStore",
    "Run",
    "RunSummary",
    "StoreError",
    "Verdict",
    "check_result",
    "check_run",
    "compare",
    "exit_code",
    "learn_noise_floor",
    "load_verdicts",
    "summarize",
]
