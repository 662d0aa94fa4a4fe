"""The link emulator against plain TCP servers on loopback: bytes intact, delay, rate, cuts.

Only lower bounds on time are asserted (a link can never be faster than it was told to be); how
close it gets to the configured figures is the bench's business.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Iterator

import pytest

from pipeline.lab.link import Link


class Upstream:
    """A loopback TCP server: ``echo`` sends everything back, ``sink`` keeps what it received."""

    def __init__(self, mode: str):
        self.mode = mode
        self.received: list[bytearray] = []  # one per connection
        self.closed = threading.Event()  # set when a connection ended (EOF or reset)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        got = bytearray()
        self.received.append(got)
        with conn:
            try:
                while data := conn.recv(65536):
                    got += data
                    if self.mode == "echo":
                        conn.sendall(data)
            except OSError:
                pass
        self.closed.set()

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def echo() -> Iterator[Upstream]:
    server = Upstream("echo")
    yield server
    server.close()


@pytest.fixture
def sink() -> Iterator[Upstream]:
    server = Upstream("sink")
    yield server
    server.close()


def _connect(link: Link) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", link.port), timeout=10)
    return sock


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        data = sock.recv(size - len(out))
        if not data:
            break
        out += data
    return bytes(out)


def _ended(sock: socket.socket) -> bool:
    """True when the peer closed or reset the connection (within the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_link_carries_bytes_both_ways_intact(echo: Upstream) -> None:
    payload = os.urandom(1 << 20)
    with Link(echo.port) as link, _connect(link) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        back = _read_exactly(sock, len(payload))
        sender.join()
        assert back == payload
        assert link.delivered == {"up": len(payload), "down": len(payload)} and link.connections == 1 and link.cuts == 0


def test_link_round_trip_is_what_was_asked_for(echo: Upstream) -> None:
    with Link(echo.port, rtt=0.2) as link, _connect(link) as sock:
        for _ in range(3):
            started = time.monotonic()
            sock.sendall(b"x")
            assert _read_exactly(sock, 1) == b"x"
            assert time.monotonic() - started >= 0.2 - 0.005  # 0.1 s each way


def test_link_limits_bandwidth(sink: Upstream) -> None:
    size, rate = 300_000, 200_000
    with Link(sink.port, rate=rate) as link, _connect(link) as sock:
        started = time.monotonic()
        sock.sendall(os.urandom(size))
        while link.delivered["up"] < size:
            time.sleep(0.01)
        elapsed = time.monotonic() - started
    assert elapsed >= (size - link.piece) / rate  # the bucket starts full: one piece may go at once
    assert len(sink.received[0]) == size


def test_cut_after_n_bytes_delivers_exactly_n_then_resets_both_sides_once(sink: Upstream) -> None:
    with Link(sink.port) as link:
        with _connect(link) as sock:
            link.cut_after(up=12_345)
            with pytest.raises(OSError):  # the reset reaches the sender while it is still sending
                for _ in range(200):
                    sock.sendall(os.urandom(16_384))
                    time.sleep(0.005)
            assert sink.closed.wait(5), "the device side was not closed"
        assert link.cuts == 1 and len(sink.received[0]) == 12_345 == link.delivered["up"]

        sink.closed.clear()
        with _connect(link) as again:  # the cut fired once: the next connection carries everything
            again.sendall(b"y" * 50_000)
        assert sink.closed.wait(5)
        assert bytes(sink.received[1]) == b"y" * 50_000 and link.cuts == 1


def test_cut_at_a_second_and_staying_down_until_restored(echo: Upstream) -> None:
    with Link(echo.port) as link:
        with _connect(link) as idle:
            started = time.monotonic()
            link.cut_at(0.3, stay_down=True)
            assert _ended(idle)
            assert time.monotonic() - started >= 0.3 - 0.005
        with _connect(link) as refused:
            assert _ended(refused), "a link that stays down must reset new connections"
        link.restore()
        with _connect(link) as back:
            back.sendall(b"ping")
            assert _read_exactly(back, 4) == b"ping"
        assert link.cuts == 1


def test_cut_now_ends_every_open_connection(echo: Upstream) -> None:
    with Link(echo.port) as link:
        socks = [_connect(link) for _ in range(3)]
        for sock in socks:  # each connection is through to the server before the cut
            sock.sendall(b"a")
            assert _read_exactly(sock, 1) == b"a"
        link.cut_now()
        assert all(_ended(sock) for sock in socks)
        for sock in socks:
            sock.close()


def test_link_to_a_dead_device_resets_the_client() -> None:
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with Link(port) as link, _connect(link) as sock:
        assert _ended(sock)
        assert link.connections == 0


def test_link_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        Link(22, rtt=-1)
    with pytest.raises(ValueError):
        Link(22, rate=0)
