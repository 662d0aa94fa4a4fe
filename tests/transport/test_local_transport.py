"""The local transport: subprocess without a shell, in the device directory; atomic copies."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.errors import DeployError
from pipeline.transport import CommandTimeout
from pipeline.transport.base import sh_script, shell_join
from pipeline.transport.local import LocalTransport


def test_relative_remote_dir_resolves_under_results(isolated_results: Path):
    tr = LocalTransport("devices/box")
    assert Path(tr.remote_dir) == isolated_results / "devices" / "box"
    assert Path(tr.remote_dir).is_dir()
    assert tr.run(["pwd"]).stdout.strip() == str(isolated_results / "devices" / "box")


def test_arguments_are_never_shell_interpreted(tmp_path: Path):
    tr = LocalTransport(str(tmp_path / "dev"))
    canary = tmp_path / "pwned"
    word = f"$(touch {canary}); `touch {canary}` | & * 'q\""
    assert tr.run(["printf", "%s", word]).stdout == word
    script = sh_script('printf "%s|%s" "$1" "$2"', word, "two words")
    assert tr.run(script).stdout == f"{word}|two words"
    assert not canary.exists()


def test_missing_program_reports_127_like_a_shell(tmp_path: Path):
    tr = LocalTransport(str(tmp_path / "dev"))
    result = tr.run(["/nonexistent/python3", "-V"], check=False)
    assert result.exit_code == 127
    with pytest.raises(DeployError, match="exit code 127"):
        tr.run(["/nonexistent/python3", "-V"])


def test_timeout_kills_the_process_group(tmp_path: Path):
    tr = LocalTransport(str(tmp_path / "dev"))
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        tr.run(["sh", "-c", 'sleep 60 & echo $! > "$1"; wait', "sh", str(pidfile)], timeout=0.5)
    assert time.monotonic() - start < 5
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_put_and_get_are_atomic_copies(tmp_path: Path):
    tr = LocalTransport(str(tmp_path / "dev"))
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    seen = []
    tr.put(src, str(Path(tr.remote_dir) / "file.bin"), progress=lambda s, t: seen.append((s, t)))
    assert (Path(tr.remote_dir) / "file.bin").read_bytes() == src.read_bytes()
    assert not (Path(tr.remote_dir) / "file.bin.partial").exists()
    assert seen[-1] == (3 << 20, 3 << 20) and len(seen) == 3
    tr.get(str(Path(tr.remote_dir) / "file.bin"), tmp_path / "back" / "file.bin")
    assert (tmp_path / "back" / "file.bin").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["file.bin"]


def test_failed_put_leaves_no_partial_and_keeps_the_old_file(tmp_path: Path):
    tr = LocalTransport(str(tmp_path / "dev"))
    dest = Path(tr.remote_dir) / "file.bin"
    dest.write_bytes(b"old")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))

    def interrupt(sent, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.put(src, str(dest), progress=interrupt)
    assert dest.read_bytes() == b"old"
    assert not (Path(tr.remote_dir) / "file.bin.partial").exists()


def test_shell_join_quotes_every_word():
    assert shell_join(["ls", "a b", "$(x)", "it's"]) == "ls 'a b' '$(x)' 'it'\"'\"'s'"
