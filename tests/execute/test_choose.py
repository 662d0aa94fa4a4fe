"""Choosing where training runs from --cluster / EDGESHIP_CLUSTER."""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.errors import ConfigError, EdgeshipError
from pipeline.execute.choose import open_executor
from pipeline.execute.dask_cluster import DaskExecutor


def test_no_address_means_this_machine() -> None:
    with open_executor(None) as executor:
        assert executor is None
    with open_executor("  ") as executor:
        assert executor is None


@pytest.mark.parametrize("address", ["build 01:8786", "http://build-01:8786/status", "tcp://host:port"])
def test_a_malformed_address_names_the_setting(address: str) -> None:
    with pytest.raises(ConfigError, match=r"--cluster / EDGESHIP_CLUSTER is .* not a Dask scheduler address"):
        open_executor(address)


def test_an_unreachable_scheduler_is_one_clear_error_naming_it() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(EdgeshipError, match=rf"Cannot reach the Dask scheduler at tcp://127.0.0.1:{port}.*dask scheduler"):
        DaskExecutor(f"tcp://127.0.0.1:{port}", connect_timeout=2)
    assert time.monotonic() - started < 30


def test_the_cli_turns_a_bad_cluster_into_a_message_not_a_traceback(tmp_path) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, ["build", "--profile", "quick"], env={"EDGESHIP_CLUSTER": "not a cluster"})
    assert result.exit_code == 1
    assert "EDGESHIP_CLUSTER is 'not a cluster'" in result.output and "Traceback" not in result.output
