"""Pick where training runs from what the user said: a cluster address, or this machine."""

from __future__ import annotations

import re
from contextlib import nullcontext
from typing import ContextManager, Optional

from pipeline.errors import ConfigError
from pipeline.execute.executor import Executor
from pipeline.progress import Progress

CLUSTER_ENV = "EDGESHIP_CLUSTER"
_ADDRESS = re.compile(r"^(?:(tcp|tls|inproc|ucx|ws|wss)://)?[^\s/:]+(?::\d+)?$")


def open_executor(cluster: Optional[str], progress: Optional[Progress] = None) -> ContextManager[Optional[Executor]]:
    """``None`` (this machine, as always) without an address; a connected Dask executor with one.

    The address is checked before connecting, so a typo names the setting instead of timing out.
    """
    address = (cluster or "").strip()
    if not address:
        return nullcontext(None)
    if not _ADDRESS.match(address):
        raise ConfigError(
            f"--cluster / {CLUSTER_ENV} is {address!r}, which is not a Dask scheduler address; "
            f"give one like tcp://build-01:8786, or leave it empty to build on this machine."
        )
    from pipeline.execute.dask_cluster import DaskExecutor

    return DaskExecutor(address if "://" in address else f"tcp://{address}", progress)
