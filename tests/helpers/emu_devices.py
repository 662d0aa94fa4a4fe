"""Shared by the emulated-device tests: start a kind's device once per module, and reach it over SSH
with strict host keys (paramiko, RejectPolicy), as edgeship's transport does."""

from __future__ import annotations

import os
import posixpath
import shlex
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.emu import EmuLayout, build_image, start, status, stop
from pipeline.errors import EdgeshipError


def running_device(layout: EmuLayout) -> Iterator[EmuLayout]:
    """The running device of ``layout`` (built once, cached under the real results/); stopped after
    the module unless it already ran."""
    if os.geteuid() != 0:
        pytest.skip("the emulated Raspberry Pi needs root (debootstrap, chroot, mounts, binfmt_misc)")
    try:
        build_image(layout)
    except EdgeshipError as exc:
        pytest.skip(f"the emulated {layout.kind.debian_arch} rootfs cannot be built here: {exc}")
    was_running = status(layout).running
    start(layout)
    try:
        yield layout
    finally:
        if not was_running:
            stop(layout)


def connect(layout: EmuLayout, known_hosts: Path):
    import paramiko

    found = status(layout)
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())  # strict: never AutoAdd
    client.connect(
        "127.0.0.1", port=found.port, username="root", key_filename=str(layout.client_key),
        look_for_keys=False, allow_agent=False, timeout=30, banner_timeout=30, auth_timeout=30,
    )  # fmt: skip
    return client


def run(client, argv: list[str], timeout: float = 600) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(shlex.join(argv), timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def upload_dir(sftp, local: Path, remote: str) -> None:
    sftp.mkdir(remote)
    for path in sorted(local.rglob("*")):
        target = posixpath.join(remote, path.relative_to(local).as_posix())
        if path.is_dir():
            sftp.mkdir(target)
        else:
            sftp.put(str(path), target)


def doctor_and_profile_by_hand(layout: EmuLayout, bundle: Path, remote_dir: str) -> tuple[dict, dict]:
    """Upload agent.py and ``bundle`` over SFTP, run ``agent.py doctor`` and a short ``profile`` there
    (tflite_runtime, marked emulated), remove the upload; ``(doctor report, profile record)``."""
    import json

    from pipeline.paths import agent_path

    client = connect(layout, layout.known_hosts)
    try:
        run(client, ["rm", "-rf", "--", remote_dir])
        sftp = client.open_sftp()
        sftp.mkdir(remote_dir)
        agent = posixpath.join(remote_dir, "agent.py")
        sftp.put(str(agent_path()), agent)
        remote_bundle = posixpath.join(remote_dir, bundle.name)
        upload_dir(sftp, bundle, remote_bundle)
        code, out, err = run(client, ["python3", agent, "doctor"])
        assert code == 0, err
        doctor = json.loads(out)
        profile = ["python3", agent, "profile", remote_bundle, "--target", layout.target_name, "--runs", "5", "--min-seconds", "0"]
        code, out, err = run(client, [*profile, "--warmup", "1", "--runtime", "tflite_runtime", "--emulated"])
        assert code == 0, err
        run(client, ["rm", "-rf", "--", remote_dir])
        return doctor, json.loads(out)
    finally:
        client.close()
