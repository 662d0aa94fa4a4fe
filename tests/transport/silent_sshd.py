"""A real SSH server (paramiko) on loopback that authenticates the client's key, then goes silent.

It stands in for a hung device: the TCP connection, the SSH handshake and key authentication all
work, but the server stops answering at one chosen step. OpenSSH's sshd cannot be made to do that,
so the transport's deadlines are tested against this one. The client still checks the host key:
:meth:`SilentSSHServer.write_known_hosts` records it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Literal, Optional

import paramiko

from pipeline.lab.sshd import keygen

#: where the server stops answering:
#: ``exit``      accepts the exec request, then never sends data, exit status or EOF;
#: ``pid``       like ``exit``, after writing the edgeship pid line on stderr (so the client tries to kill it);
#: ``exec``      never answers the exec (or subsystem) request at all;
#: ``channel``   never answers the request to open a channel.
Silence = Literal["exit", "pid", "exec", "channel"]

PID_LINE = b"edgeship-pid:4242\n"


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: "SilentSSHServer"):
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.server.user and key.get_base64() == self.server.client_public_base64:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if self.server.silence == "channel":
            self.server.stopped.wait()
        if kind != "session" or self.server.stopped.is_set():
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.server.commands.append(command.decode("utf-8", "replace"))
        if self.server.silence == "exec":
            self.server.stopped.wait()
            return False
        if self.server.silence == "pid":
            channel.send_stderr(PID_LINE)
        return True

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if self.server.silence == "exec":
            self.server.stopped.wait()
        return False


class SilentSSHServer:
    """``with SilentSSHServer(tmp, "exit") as server: ...`` (listens on 127.0.0.1:server.port)."""

    def __init__(self, root: Path, silence: Silence, user: str = "edgeship"):
        self.root = Path(root)
        self.silence = silence
        self.user = user
        self.host_key_path = keygen(self.root / "silent_host_key", comment="silent-sshd")
        self.host_key = paramiko.Ed25519Key.from_private_key_file(str(self.host_key_path))
        self.client_key = keygen(self.root / "silent_client_key", comment="silent-client")
        self.client_public_base64 = Path(f"{self.client_key}.pub").read_text().split()[1]
        self.commands: list[str] = []
        self.stopped = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._thread: Optional[threading.Thread] = None

    def write_known_hosts(self, path: Optional[Path] = None) -> Path:
        path = path or self.root / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n")
        return path

    def __enter__(self) -> "SilentSSHServer":
        self._thread = threading.Thread(target=self._accept, name="silent-sshd", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        if self._thread is not None:
            self._thread.join(5)
        for transport in self._transports:
            with contextlib.suppress(Exception):
                transport.close()
        self._sock.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self._transports.append(transport)
            with contextlib.suppress(Exception):
                transport.start_server(server=_Interface(self))
