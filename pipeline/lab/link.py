"""A link emulator: a small TCP proxy between the host and one device's sshd (delay, bandwidth, cuts).

Real Pis sit on Wi-Fi, and the kernel's netem is not available where the tests and benches run, so
the link is emulated in user space on loopback::

    with Link(server.port, rtt=0.1, rate=500_000) as link:   # 100 ms round trip, 4 Mbit/s
        target = ...port=link.port...                          # known_hosts: link.known_hosts_line(...)
        link.cut_after(up=40_000)                              # drop after 40 kB more towards the device

Model. Each direction ("up" towards the device, "down" back) reads at most ``rate`` bytes/s
(a token bucket shared by all of the link's connections: one radio), then delays every byte by
``rtt / 2`` before delivering it, so the round trip is what was asked for. What waits in the delay
line is bounded by ``buffer``; beyond that, and while the bucket is empty, the proxy does not read,
so the sender feels the bottleneck instead of the proxy swallowing an upload at loopback speed.
The sender's kernel still buffers some of it: a paramiko upload at 200 kB/s runs about 0.6 MB
ahead of what the link has delivered (its progress callbacks end that much early); when the
upload completes, and every byte count here, follow the emulated link.

A cut resets both sides of every open connection, like a radio that drops: after N more bytes in
one direction (exactly N are delivered) or at a given second. It fires once; with ``stay_down``
new connections are reset at once until :meth:`Link.restore`.

One asyncio loop in a daemon thread serves the link; the public methods are thread-safe (they run
in the loop and wait for it), so farm worker threads and progress callbacks may call them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.lab.sshd import SSHServer

log = logging.getLogger(__name__)

DIRECTIONS = ("up", "down")
_KERNEL_BUFFER = 4096  # the kernel doubles it; smaller sender buffers follow (see _small_socket)
_MSS = 1448
_T = TypeVar("_T")


class _Bucket:
    """A token bucket of ``rate`` bytes/s holding at most ``burst`` bytes (``rate`` None: no limit)."""

    def __init__(self, rate: Optional[float], burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    async def take(self, size: int) -> None:
        if self.rate is None:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= size:
                self.tokens -= size
                return
            await asyncio.sleep((size - self.tokens) / self.rate)


@dataclass(eq=False)  # hashed by identity: the link keeps a set of open ones
class _Connection:
    client: asyncio.StreamWriter
    device: asyncio.StreamWriter
    tasks: list[asyncio.Task] = field(default_factory=list)

    def reset(self) -> None:
        for writer in (self.client, self.device):
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class Link:
    """``Link(upstream_port, rtt=seconds, rate=bytes_per_s)``; ``.port`` is where clients connect."""

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        *,
        rtt: float = 0.0,
        rate: Optional[float] = None,
        buffer: int = 128 * 1024,
        chunk: int = 16 * 1024,
    ):
        if rtt < 0 or (rate is not None and rate <= 0):
            raise ValueError("rtt must be >= 0 and rate > 0 bytes/s (or None for no limit)")
        self.upstream = (upstream_host, upstream_port)
        self.delay = rtt / 2
        self.rate = rate
        #: bytes read at a time: a bucket's worth (20 ms of the rate), so pacing is smooth
        self.piece = chunk if rate is None else int(min(chunk, max(1500, rate * 0.02)))
        self.queue_pieces = max(4, buffer // self.piece)
        self._buckets = {d: _Bucket(rate, self.piece) for d in DIRECTIONS}
        self.port = 0
        #: bytes delivered per direction, connections accepted, cuts fired (read them any time)
        self.delivered = {d: 0 for d in DIRECTIONS}
        self.connections = 0
        self.cuts = 0
        self._budget: dict[str, Optional[int]] = {d: None for d in DIRECTIONS}
        self._cut_timer: Optional[asyncio.TimerHandle] = None
        self._stay_down = False
        self._down = False
        self._open: set[_Connection] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"link-{upstream_port}", daemon=True)
        self._server: Optional[asyncio.AbstractServer] = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Link":
        self._thread.start()
        self.port = self._call(self._listen)
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> "Link":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults (thread-safe) ------------------------------------------------------------------
    def cut_after(self, up: Optional[int] = None, down: Optional[int] = None, stay_down: bool = False) -> None:
        """Cut once ``up`` more bytes went towards the device or ``down`` more came back."""

        def arm() -> None:
            self._budget = {"up": up, "down": down}
            self._stay_down = stay_down

        self._call(arm)

    def cut_at(self, seconds: float, stay_down: bool = False) -> None:
        """Cut ``seconds`` from now."""

        def arm() -> None:
            if self._cut_timer is not None:
                self._cut_timer.cancel()
            self._stay_down = stay_down
            self._cut_timer = self._loop.call_later(seconds, self._cut)

        self._call(arm)

    def cut_now(self, stay_down: bool = False) -> None:
        def cut() -> None:
            self._stay_down = stay_down
            self._cut()

        self._call(cut)

    def restore(self) -> None:
        """Accept connections again after a cut with ``stay_down``."""

        def up() -> None:
            self._down = self._stay_down = False

        self._call(up)

    def cpu_seconds(self) -> float:
        """CPU time the link's thread has used (benches subtract it from the host's)."""
        return self._call(time.thread_time)

    def known_hosts_line(self, host_public_key: str, host: str = "127.0.0.1") -> str:
        """The known_hosts line for the device's key as reached through this link."""
        return f"[{host}]:{self.port} {host_public_key}\n"

    def write_known_hosts(self, path: Path, host_public_key: str) -> Path:
        Path(path).write_text(self.known_hosts_line(host_public_key))
        return Path(path)

    # -- the loop ------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` (plain or async) in the loop thread and wait for its result."""

        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._accept, sock=_small_socket(listen=True))
        return self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._open):
            conn.reset()
        self._open.clear()
        for _ in range(3):  # let the reset connections' tasks finish before the loop stops
            await asyncio.sleep(0)

    def _cut(self) -> None:
        self.cuts += 1
        self._budget = {d: None for d in DIRECTIONS}
        self._cut_timer = None
        self._down = self._stay_down
        log.info("link to %s:%d cut (%d open connections)", *self.upstream, len(self._open))
        for conn in list(self._open):
            conn.reset()
        self._open.clear()

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        if self._down:
            client_out.transport.abort()
            return
        try:
            sock = _small_socket()
            sock.setblocking(False)
            await self._loop.sock_connect(sock, self.upstream)
            device_in, device_out = await asyncio.open_connection(sock=sock)
        except OSError as exc:
            log.info("link: cannot reach %s:%d: %s", *self.upstream, exc)
            client_out.transport.abort()
            return
        self.connections += 1
        for writer in (client_out, device_out):
            _shrink(writer)
        conn = _Connection(client_out, device_out)
        self._open.add(conn)
        conn.tasks = [
            asyncio.ensure_future(self._direction(conn, client_in, device_out, "up")),
            asyncio.ensure_future(self._direction(conn, device_in, client_out, "down")),
        ]
        try:
            await asyncio.gather(*conn.tasks)
        except (asyncio.CancelledError, ConnectionError, OSError):
            conn.reset()
        finally:
            self._open.discard(conn)
            for writer in (client_out, device_out):
                writer.close()

    async def _direction(self, conn: _Connection, source: asyncio.StreamReader, sink: asyncio.StreamWriter, direction: str) -> None:
        """Read at the link's rate (stamped on the way in), deliver each piece once its delay has passed."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(self.queue_pieces)

        async def read() -> None:
            bucket = self._buckets[direction]
            try:
                while True:
                    data = await source.read(self.piece)
                    await bucket.take(len(data))  # the bottleneck: bytes leave the sender at the link's rate
                    await queue.put((time.monotonic(), data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                conn.reset()

        reader = asyncio.ensure_future(read())
        conn.tasks.append(reader)
        try:
            while True:
                stamp, data = await queue.get()
                if not data:
                    if sink.can_write_eof():
                        sink.write_eof()
                    return
                wait = stamp + self.delay - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._deliver(data, sink, direction)
        except (ConnectionError, OSError):
            conn.reset()
        finally:
            reader.cancel()

    async def _deliver(self, data: bytes, sink: asyncio.StreamWriter, direction: str) -> None:
        for start in range(0, len(data), self.piece):
            piece = data[start : start + self.piece]
            budget = self._budget[direction]
            if budget is not None and len(piece) >= budget:
                self.delivered[direction] += budget  # counted first: a reader may look the moment it arrives
                sink.write(piece[:budget])
                await sink.drain()
                self._cut()
                return
            if budget is not None:
                self._budget[direction] = budget - len(piece)
            self.delivered[direction] += len(piece)
            sink.write(piece)
            await sink.drain()


def target_through(link: Link, server: "SSHServer", name: str, remote_dir: Path | str, python: str, **overrides: Any) -> dict[str, Any]:
    """``server.target_dict(...)`` reached through ``link``: its port, and a known_hosts file that
    holds the device's real host key under the link's port (the key is checked as ever)."""
    known_hosts = link.write_known_hosts(Path(server.root) / f"known_hosts.link-{link.port}", server.host_public_key())
    transport = {"port": link.port, "known_hosts": str(known_hosts), **overrides.pop("transport", {})}
    return server.target_dict(name, remote_dir, python, transport=transport, **overrides)


def _small_socket(listen: bool = False) -> socket.socket:
    """A socket whose peer buffers less than loopback lets it.

    On loopback (64 kB segments, an instant first burst) a sender's kernel grows its send buffer
    to megabytes, and an upload would "finish" in the sender's own socket long before the link
    carried it. An Ethernet-sized MSS and a small receive buffer, set before the connection exists
    (an accepted socket inherits both), with reading at the link's rate, cut that to about 0.6 MB
    (measured at 200 kB/s; 64 kB instead of 4 kB here left about 1 MB).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _KERNEL_BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, _MSS)
    if listen:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
    return sock


def _shrink(writer: asyncio.StreamWriter) -> None:
    """drain() waits until a piece is handed to the kernel, so a cut delivers exactly what it counted."""
    writer.transport.set_write_buffer_limits(high=0)
