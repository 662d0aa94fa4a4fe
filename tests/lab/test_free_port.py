"""free_port hands out listening ports outside the ephemeral range outgoing connections draw from."""

from __future__ import annotations

import socket

import pytest

import pipeline.lab.sshd as sshd
from pipeline.lab.sshd import free_port


def test_free_port_is_bindable_and_outside_the_ephemeral_range() -> None:
    low, high = sshd._ephemeral_range()
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1, "ports are drawn at random, not handed out in a fixed order"
    for port in ports:
        assert not low <= port <= high, (port, low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_free_port_skips_a_port_someone_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", free_port()))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken, taken])
        real_choice = sshd._LISTEN_PORTS.choice
        monkeypatch.setattr(sshd._LISTEN_PORTS, "choice", lambda seq: next(picks, None) or real_choice(seq))
        assert free_port() != taken


def test_free_port_falls_back_to_the_kernel_when_no_range_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sshd, "_ephemeral_range", lambda: (1024, 65535))
    port = free_port()
    assert 1024 <= port <= 65535
