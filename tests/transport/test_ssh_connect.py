"""Which connection failures are retried and which stop at once (unit level; the real sshd tests
in test_ssh_transport.py cover refused ports, bad keys and stalled banners end to end)."""

from __future__ import annotations

import errno
import socket

import paramiko
import pytest

from pipeline.config.target import SSHTransportConfig
from pipeline.errors import DeployError
from pipeline.transport.ssh_connect import Transient, classify_failure

CFG = SSHTransportConfig(type="ssh", host="pi.example", port=2222, user="ci", key_file="/keys/id", known_hosts="/keys/kh")


@pytest.mark.parametrize(
    "exc, kind, words",
    [
        (paramiko.PasswordRequiredException("x"), DeployError, "passphrase"),
        (paramiko.AuthenticationException("denied"), DeployError, "authentication as user 'ci'"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), DeployError, "Cannot resolve"),
        (paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 2222): OSError(errno.ECONNREFUSED, "refused")}), Transient, "refused"),
        (socket.timeout("timed out"), Transient, "timed out after 10 s"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Transient, "refused"),
        (EOFError(), Transient, "during the SSH handshake (EOFError)"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), Transient, "unreachable"),
        (OSError(errno.EACCES, "Permission denied"), DeployError, "failed"),
        (paramiko.SSHException("Error reading SSH protocol banner"), Transient, "did not complete the SSH handshake"),
        (paramiko.SSHException("Incompatible ssh peer"), DeployError, "negotiation"),
    ],
)
def test_each_failure_is_retried_or_reported(exc: BaseException, kind: type, words: str) -> None:
    failure = classify_failure(exc, CFG, "targets/pi.yaml", paramiko.SSHClient())
    assert type(failure) is kind
    assert "pi.example" in str(failure)
    assert words in str(failure)


def test_an_unknown_exception_is_left_to_propagate() -> None:
    assert classify_failure(ValueError("a bug"), CFG, "targets/pi.yaml", paramiko.SSHClient()) is None
