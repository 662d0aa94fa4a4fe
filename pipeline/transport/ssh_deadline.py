"""Paramiko channel steps that give up at a deadline.

paramiko waits without any timeout for the server's reply to an exec or subsystem request
(``Channel.exec_command`` / ``invoke_subsystem``) and for the exit status
(``Channel.recv_exit_status``); ``Channel.settimeout`` covers only ``recv``/``send``. A device that
accepts a channel and then goes silent would hang a deploy forever. Every step here takes an absolute
``time.monotonic()`` deadline and raises :class:`Stalled` when it passes; the caller closes what it
opened (:func:`abandon`) and reports the timeout.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import TYPE_CHECKING, Callable, Literal

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

log = logging.getLogger(__name__)

#: how long closing a channel may take before the connection is considered wedged
CLOSE_GRACE = 2.0


class Stalled(Exception):
    """The server did not answer one step in time; ``step`` says which (for the error message)."""

    def __init__(self, step: str):
        super().__init__(step)
        self.step = step


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _call_by(call: Callable[[], None], deadline: float, name: str) -> bool:
    """Run ``call`` in a helper thread; True if it finished by the deadline (its error re-raised)."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=body, name=f"edgeship-ssh-{name}", daemon=True)
    thread.start()
    thread.join(remaining(deadline))
    if thread.is_alive():
        return False  # the thread ends when the channel is closed (paramiko then raises in it)
    if errors:
        raise errors[0]
    return True


def open_channel(transport: "paramiko.Transport", deadline: float) -> "paramiko.Channel":
    """A session channel; paramiko's own open timeout (polled) is the deadline."""
    import paramiko

    try:
        return transport.open_session(timeout=max(remaining(deadline), 0.01))
    except paramiko.ChannelException:
        raise  # the server refused the channel: an answer, not silence
    except paramiko.SSHException:
        if transport.is_active():  # paramiko's "Timeout opening channel."
            raise Stalled("open a channel") from None
        raise


def request(
    chan: "paramiko.Channel", kind: Literal["exec", "subsystem"], arg: str, deadline: float, close_stdin: bool = True
) -> None:
    """``exec_command(arg)`` (then EOF on its stdin, unless ``close_stdin`` is False: the caller streams
    it) or ``invoke_subsystem(arg)``, waiting for the server's reply until the deadline. Sending runs
    in the helper thread too: a send waits out a stuck key exchange."""

    def call() -> None:
        if kind == "exec":
            chan.exec_command(arg)
            if close_stdin:
                chan.shutdown_write()
        else:
            chan.invoke_subsystem(arg)

    if not _call_by(call, deadline, kind):
        raise Stalled(f"answer the {kind} request")


def exit_status(chan: "paramiko.Channel", deadline: float) -> int:
    """``recv_exit_status`` with a deadline (the caller must keep reading output: see paramiko's warning)."""
    if not chan.status_event.wait(remaining(deadline)):
        raise Stalled("send the exit status")
    return chan.exit_status


def collect(
    chan: "paramiko.Channel", transport: "paramiko.Transport", deadline: float, on_stdout: Callable[[bytes], object], err: bytearray
) -> int:
    """Read stdout (into ``on_stdout``) and stderr until the exit status and EOF arrive, and return the
    status (-1: the server closed the channel without one, as after a signal); :class:`Stalled` at the
    deadline, EOFError when the connection goes away."""
    idle = 0.002  # poll interval: short while output flows, up to 0.1 s when idle
    while True:
        got = False
        while chan.recv_ready():
            on_stdout(chan.recv(65536))
            got = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            got = True
        finished = chan.exit_status_ready() and (chan.eof_received or chan.closed)
        if finished and not chan.recv_ready() and not chan.recv_stderr_ready():
            code = exit_status(chan, deadline)  # already there: exit_status_ready()
            if code == -1 and not transport.is_active():
                raise EOFError("the server closed the connection")  # the channel died with it: no status
            return code
        if time.monotonic() > deadline:
            raise Stalled("finish")
        if not transport.is_active():
            raise EOFError("the server closed the connection")
        idle = 0.002 if got else min(idle * 2, 0.1)
        select.select([chan], [], [], min(idle, remaining(deadline)))


def close_channel(chan: "paramiko.Channel", grace: float = CLOSE_GRACE) -> bool:
    """Close ``chan``; False if that blocked for ``grace`` seconds (a close waits out a stuck key exchange)."""
    if chan.closed:
        return True
    try:
        return _call_by(chan.close, time.monotonic() + grace, "close")
    except Exception as exc:  # noqa: BLE001 - the channel is being thrown away
        log.debug("closing an SSH channel failed: %s", exc)
        return True


def abandon(transport: "paramiko.Transport", chan: "paramiko.Channel | None", wedged: bool = False) -> bool:
    """Close ``chan`` and, if that stalls or ``wedged`` is set, the whole connection.

    Returns True when the connection was closed (the caller must reconnect before the next command).
    ``Transport.close`` only flags its packetizer and closes the socket, so it cannot block.
    """
    if chan is not None and not close_channel(chan):
        wedged = True
    if wedged:
        log.info("closing the SSH connection: the server stopped answering")
        transport.close()
    return wedged
