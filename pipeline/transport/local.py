"""The local transport: the "device" is a directory on this machine and the agent a subprocess.

Commands run without a shell, in the device directory. Relative ``remote_dir`` values resolve
against the results directory (``$EDGESHIP_RESULTS``), so tests stay isolated.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from pipeline.errors import DeployError
from pipeline.paths import results_dir
from pipeline.transport.base import COMMAND_NOT_FOUND, CommandTimeout, ProgressCallback, Result, Transport, shell_join

_CHUNK = 1 << 20


class LocalTransport(Transport):
    where = "this machine (local transport)"

    def _resolve_remote_dir(self, raw: str) -> str:
        path = Path(os.path.expanduser(raw))
        if not path.is_absolute():
            path = results_dir() / path
        path = Path(os.path.abspath(path))
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeployError(f"The local device directory {path} cannot be created: {exc}.") from None
        return str(path)

    def home(self) -> str:
        return os.path.expanduser("~")

    def run(self, argv: Sequence[str], timeout: Optional[float] = None, check: bool = True) -> Result:
        argv = [str(a) for a in argv]
        timeout = self.command_timeout if timeout is None else timeout
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.remote_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # so a timeout can kill the whole process group
            )
        except FileNotFoundError:
            result = Result(COMMAND_NOT_FOUND, "", f"{argv[0]}: command not found", tuple(argv))
            return self.check_result(result) if check else result
        except PermissionError as exc:
            result = Result(126, "", f"{argv[0]}: {exc.strerror}", tuple(argv))
            return self.check_result(result) if check else result
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(
                f"On {self.where}, `{shell_join(argv)}` ran longer than {timeout:g} s and was killed."
            ) from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        result = Result(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), tuple(argv))
        return self.check_result(result) if check else result

    def _abs(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.remote_dir) / p

    def put(self, local_path: Path, remote_path: str, progress: Optional[ProgressCallback] = None) -> None:
        dest = self._abs(remote_path)
        _copy_atomic(Path(local_path), dest, progress, partial=dest.with_name(dest.name + ".partial"))

    def get(self, remote_path: str, local_path: Path) -> None:
        source = self._abs(remote_path)
        if not source.is_file():
            raise DeployError(f"On {self.where}, {source} does not exist or is not a file.")
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local_path.name}.", suffix=".tmp", dir=local_path.parent)
        os.close(fd)
        _copy_atomic(source, local_path, None, partial=Path(tmp))

    def close(self) -> None:
        pass


def _copy_atomic(source: Path, dest: Path, progress: Optional[ProgressCallback], partial: Path) -> None:
    total = source.stat().st_size
    sent = 0
    try:
        with open(source, "rb") as src, open(partial, "wb") as dst:
            for block in iter(lambda: src.read(_CHUNK), b""):
                dst.write(block)
                sent += len(block)
                if progress:
                    progress(sent, total)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(partial, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise DeployError(f"Copying {source} to {dest} failed: {exc}.") from None
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    if progress and total == 0:
        progress(0, 0)
