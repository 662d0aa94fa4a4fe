"""Transports: how the host reaches a device (``ssh`` or ``local``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.transport.base import CommandTimeout, RemoteCommandError, Result, Transport, sh_script

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.config.target import TargetConfig

__all__ = ["CommandTimeout", "RemoteCommandError", "Result", "Transport", "open_transport", "sh_script"]


def open_transport(target: "TargetConfig") -> Transport:
    """A connected transport for ``target`` (SSH connects here, so errors surface early)."""
    if target.transport.type == "local":
        from pipeline.transport.local import LocalTransport

        return LocalTransport(target.remote_dir, command_timeout=target.transport.command_timeout)
    from pipeline.transport.ssh import SSHTransport

    transport = SSHTransport(target.transport, target.remote_dir, target_name=f"target '{target.name}'")
    transport.connect()
    return transport
