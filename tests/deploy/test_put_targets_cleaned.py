"""Every file a deploy or rollback uploads has its ``.partial`` among the leftovers the next deploy
removes: a link cut mid-upload leaves that ``.partial`` behind (tests/deploy/test_link_cut_deploy_ssh.py
shows it over SSH), so a new upload target without a cleanup pattern would leave litter for good."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Optional

from pipeline.deploy.deployer import deploy, rollback
from pipeline.deploy.layout import partial_is_cleaned
from pipeline.transport.base import ProgressCallback
from pipeline.transport.local import LocalTransport


class RecordingTransport(LocalTransport):
    """The local transport, noting every put's destination relative to remote_dir."""

    def __init__(self, remote_dir: str):
        super().__init__(remote_dir, command_timeout=120)
        self.puts: list[str] = []

    def put(self, local_path: Path, remote_path: str, progress: Optional[ProgressCallback] = None) -> None:
        self.puts.append(posixpath.relpath(remote_path, self.remote_dir))
        super().put(local_path, remote_path, progress)


def test_every_put_of_deploy_and_rollback_has_its_partial_cleaned(local_target, device_python, tiny_bundle_int8, make_variant, tmp_path):
    target = local_target(python=device_python, remote_dir=tmp_path / "device")
    transport = RecordingTransport(str(tmp_path / "device"))
    deploy(target, tiny_bundle_int8, transport=transport)  # fresh device: the agent, the tarball, the history
    deploy(target, make_variant("second"), transport=transport)
    rollback(target, transport=transport)
    kinds = {name.split("/")[0] for name in transport.puts}
    assert {"bin", "releases", "history"} <= kinds, transport.puts
    assert [name for name in transport.puts if not partial_is_cleaned(name)] == []


def test_partial_is_cleaned_knows_only_the_project_patterns() -> None:
    assert partial_is_cleaned("bin/agent.py") and partial_is_cleaned("history")
    assert partial_is_cleaned("releases/0123456789abcdef.tar.gz")
    for name in ("notes", "bin/other.py", "releases/notes.tar.gz", "runs/0123456789abcdef-x.json", "releases/0123456789abcdef.tar.gz/x"):
        assert not partial_is_cleaned(name), name
