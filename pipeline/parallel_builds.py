"""Several whole builds at once (a sweep's variants, a nightly's profiles), as the executor allows.

On this machine builds run one after another: each already uses every core (its students train
side by side). With a cluster, the client drives all of them at once in threads, and the
scheduler decides which training runs where; builds sharing a teacher train it once.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

from pipeline.config.profile import BuildProfile
from pipeline.errors import EdgeshipError
from pipeline.execute.executor import Executor
from pipeline.progress import NullProgress, Progress

if TYPE_CHECKING:
    from pipeline.build import BuildResult

log = logging.getLogger(__name__)

ProfileRef = Union[BuildProfile, str, Path]


@dataclass
class BuildOutcome:
    """A finished build, or the user-facing error that stopped it (bugs still raise)."""

    result: Optional["BuildResult"] = None
    error: Optional[EdgeshipError] = None


def build_each(profiles: Sequence[ProfileRef], progress: Optional[Progress] = None, executor: Optional[Executor] = None) -> list[BuildOutcome]:
    """One outcome per profile, in order."""
    from pipeline.build import build_profile

    progress = progress or NullProgress()

    def one(profile: ProfileRef) -> BuildOutcome:
        try:
            return BuildOutcome(result=build_profile(profile, progress=progress, executor=executor))
        except EdgeshipError as exc:
            log.warning("build of %s failed: %s", getattr(profile, "name", profile), exc)
            return BuildOutcome(error=exc)

    at_once = min(len(profiles), executor.builds_at_once if executor is not None else 1)
    if at_once <= 1:
        return [one(profile) for profile in profiles]
    with ThreadPoolExecutor(at_once, thread_name_prefix="build") as pool:
        futures = [pool.submit(one, profile) for profile in profiles]
        try:
            return [future.result() for future in futures]
        except BaseException:  # Ctrl-C or a bug: the cluster must not go on training for nobody
            assert executor is not None
            for future in futures:
                future.cancel()
            executor.cancel_all()
            raise
