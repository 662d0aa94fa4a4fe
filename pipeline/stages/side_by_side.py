"""Run independent stages side by side: the students of a build.

Kept as the entry point the build and older callers use; the work is done by
:class:`pipeline.execute.stage_runner.StageRunner`, which runs the misses in local worker
processes with the cores split (see :mod:`pipeline.execute.local_pool`) or on a cluster.
"""

from __future__ import annotations

from typing import Optional, Sequence

from pipeline.execute.local_pool import JOBS_ENV, QueueProgress, default_jobs
from pipeline.execute.stage_runner import StageJob, StageRunner
from pipeline.stages.base import Artifact, RunContext

__all__ = ["JOBS_ENV", "QueueProgress", "StageJob", "default_jobs", "run_side_by_side"]


def run_side_by_side(jobs: Sequence[StageJob], ctx: RunContext, max_jobs: Optional[int] = None) -> dict[str, Artifact]:
    """Return each job's artifact by key: cache hits directly, misses run concurrently when allowed.

    With fewer than two misses, or ``max_jobs`` of 1, the misses run here, one after another,
    exactly as :func:`run_stage` would.
    """
    return StageRunner(ctx, max_jobs=max_jobs).run_all(jobs)
