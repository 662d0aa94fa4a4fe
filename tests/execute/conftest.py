"""A real Dask LocalCluster: two worker processes, one core each, each with its own directory."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    distributed = pytest.importorskip("distributed")
    scratch = tmp_path_factory.mktemp("dask")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, resources={"cores": 1},
        dashboard_address=":0", local_directory=str(scratch), silence_logs=40,
    ) as local:
        yield local
