"""The nightly job: build (cached) → farm run → regression check → reports → exit code.

Exit codes: 0 all well, 1 a regression, 2 infrastructure failed (devices unreachable or failed)
with no regression found. A ``busy`` device (a labgrid place someone else held) is neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pipeline.execute.executor import Executor
from pipeline.farm.inventory import load_inventory
from pipeline.farm.regression import Policy, RunSummary, Verdict, check_run, summarize
from pipeline.farm.runner import FarmRun, Listener, run_farm
from pipeline.farm.store import ResultsStore
from pipeline.progress import Progress


@dataclass
class NightlyResult:
    farm: FarmRun
    verdicts: list[Verdict]
    summary: RunSummary
    reports: dict[str, Path]


def run_nightly(
    inventory: str | Path,
    tags: Sequence[str] = (),
    profile: Optional[str] = None,
    store: Optional[ResultsStore] = None,
    policy: Optional[Policy] = None,
    progress: Optional[Progress] = None,
    listener: Optional[Listener] = None,
    bundles: Optional[dict[str, Path]] = None,
    executor: Optional[Executor] = None,
) -> NightlyResult:
    from pipeline.reports.html import write_reports
    from pipeline.reports.index import write_index

    loaded = load_inventory(inventory, profile_override=profile)
    store = store or ResultsStore()
    policy = policy or loaded.policy
    farm = run_farm(loaded, tags=tags, store=store, progress=progress, listener=listener, bundles=bundles, policy=policy, executor=executor)
    verdicts = check_run(store, farm.run_id, policy=policy)
    reports = write_reports(store, farm.run_id, policy=policy)
    reports["index"] = write_index(store)  # the morning page across nights
    return NightlyResult(farm=farm, verdicts=verdicts, summary=summarize(verdicts), reports=reports)
