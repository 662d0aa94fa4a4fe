"""Talking to the device agent (``bin/agent.py``) and reading the device's release state.

The agent interface is documented in device_agents/README.md: one JSON document on stdout, one JSON
error line on stderr, exit codes 0 ok, 2 usage, 3 bundle verification failed, 4 no TFLite runtime,
5 other failure.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from pipeline.config.target import TargetConfig
from pipeline.deploy.layout import LOCK_LEFTOVER, PUT_LEFTOVERS, RELEASE_LEFTOVER, Layout, is_bundle_id
from pipeline.errors import DeployError
from pipeline.fsutil import sha256_file
from pipeline.paths import agent_path
from pipeline.transport.base import COMMAND_NOT_FOUND, Result, Transport, sh_script, shell_join, short

EXIT_OK, EXIT_USAGE, EXIT_VERIFY, EXIT_NO_RUNTIME, EXIT_FAILURE = 0, 2, 3, 4, 5

# Hashes a device file with nothing but the interpreter we are going to use anyway.
_HASH_SNIPPET = (
    "import hashlib,sys\n"
    "try:\n"
    " f=open(sys.argv[1],'rb')\n"
    "except OSError:\n"
    " print('missing')\n"
    "else:\n"
    " h=hashlib.sha256()\n"
    " [h.update(b) for b in iter(lambda:f.read(1<<20),b'')]\n"
    " print(h.hexdigest())\n"
)


class AgentError(DeployError):
    """The agent exited non-zero; ``code`` is its exit code, ``kind`` and ``detail`` its JSON error."""

    def __init__(self, message: str, code: int, kind: str = "", detail: str = ""):
        super().__init__(message)
        self.code, self.kind, self.detail = code, kind, detail


class PythonMissing(DeployError):
    """The configured interpreter does not exist on the device."""


def agent_error(result: Result) -> tuple[str, str]:
    """The agent's ``{"error", "kind"}`` line from stderr, or the stderr tail."""
    for line in reversed(result.stderr.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "error" in data:
                return str(data.get("error")), str(data.get("kind") or "")
    return short(result.stderr) or short(result.stdout) or "no output", ""


def python_argv(target: TargetConfig, transport: Transport) -> list[str]:
    """The device interpreter command; a leading ``~/`` is resolved against the device home."""
    argv = target.python_argv()
    if argv[0] == "~" or argv[0].startswith("~/"):
        argv = [transport.expand_home(argv[0]), *argv[1:]]
    return argv


class Agent:
    """``<python> <remote_dir>/bin/agent.py SUBCOMMAND ...`` on one device."""

    def __init__(self, target: TargetConfig, transport: Transport):
        self.target = target
        self.transport = transport
        self.layout = Layout(transport)
        self.python = python_argv(target, transport)

    @property
    def python_command(self) -> str:
        return shell_join(self.python)

    def ensure_uploaded(self) -> bool:
        """Upload the agent if the device copy differs; True if it was uploaded."""
        local = agent_path()
        if not local.is_file():
            raise DeployError(
                f"The device agent {local} is missing from this checkout, so nothing can run on the device."
            )
        want = sha256_file(local)
        result = self.transport.run([*self.python, "-c", _HASH_SNIPPET, self.layout.agent], check=False)
        if result.exit_code in (COMMAND_NOT_FOUND, 126):
            raise PythonMissing(
                f"The Python interpreter `{self.python_command}` was not found on {self.transport.where} "
                f"({short(result.stderr, 200) or 'command not found'})."
            )
        if result.exit_code != 0:
            raise DeployError(
                f"`{self.python_command}` on {self.transport.where} does not work: {short(result.stderr) or 'no output'}."
            )
        if result.stdout.strip() == want:
            return False
        self.transport.run(["mkdir", "-p", self.layout.bin_dir])
        self.transport.put(local, self.layout.agent)
        return True

    def call(
        self, args: Sequence[str], timeout: Optional[float] = None, accept: Sequence[int] = (0,), stdout_json: bool = True
    ) -> dict[str, Any]:
        """Run a subcommand and return its JSON document; an exit code not in ``accept`` raises
        :class:`AgentError`. With ``stdout_json=False`` (the command used ``--output``) returns {}."""
        result = self.transport.run([*self.python, self.layout.agent, *args], timeout=timeout, check=False)
        if result.exit_code in (COMMAND_NOT_FOUND, 126) and not result.stdout:
            raise PythonMissing(
                f"The Python interpreter `{self.python_command}` was not found on {self.transport.where}."
            )
        if result.exit_code not in accept or (result.exit_code != 0 and not result.stdout.strip()):
            message, kind = agent_error(result)
            raise AgentError(
                f"The device agent on {self.transport.where} failed (`agent.py {' '.join(args[:1])}`, exit code "
                f"{result.exit_code}): {message}",
                result.exit_code,
                kind,
                message,
            )
        if not stdout_json:
            return {}
        try:
            data = json.loads(result.stdout)
        except ValueError:
            raise DeployError(
                f"The device agent on {self.transport.where} printed something that is not JSON for "
                f"`agent.py {args[0] if args else ''}`: {short(result.stdout, 300)!r}."
            ) from None
        if not isinstance(data, dict):
            raise DeployError(f"The device agent on {self.transport.where} returned {type(data).__name__}, not a JSON object.")
        return data


@dataclass
class DeviceState:
    """What is installed under remote_dir/releases and which release is active."""

    current: Optional[str] = None
    releases: list[str] = field(default_factory=list)  # complete release directories (bundle ids)
    leftovers: list[str] = field(default_factory=list)  # under releases/: partial uploads/extractions, tarballs, .broken-PID
    history: list[str] = field(default_factory=list)  # activated ids, oldest first
    strays: list[str] = field(default_factory=list)  # current.tmp and put's .partial files, relative to remote_dir
    lock_leftovers: list[tuple[str, int]] = field(default_factory=list)  # (.lock.new/dead/broken.* name, age s)

    @property
    def stray_link(self) -> bool:
        """A current.tmp left by an interrupted switch."""
        return "current.tmp" in self.strays


# Lists names only; what is removed is decided on the host against the patterns in layout.py.
_STATE_SCRIPT = r"""
cd "$1" 2>/dev/null || exit 0
printf 'current\t%s\n' "$(readlink current 2>/dev/null)"
if [ -e current.tmp ] || [ -L current.tmp ]; then printf 'stray\tcurrent.tmp\n'; fi
shift
for f in "$@"; do
  if [ -f "$f" ] && [ ! -L "$f" ]; then printf 'stray\t%s\n' "$f"; fi
done
for f in releases/* releases/.[!.]*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ -d "$f" ] && [ ! -L "$f" ]; then t=d; else t=f; fi
  printf 'entry\t%s\t%s\n' "$t" "${f#releases/}"
done
now=$(date +%s)
for f in .lock.?*; do
  if [ -d "$f" ] && [ ! -L "$f" ]; then
    m=$(stat -c %Y "$f" 2>/dev/null) || m=$now
    printf 'lockdir\t%s\t%s\n' "$((now - m))" "$f"
  fi
done
if [ -f history ]; then
  while IFS= read -r line || [ -n "$line" ]; do printf 'history\t%s\n' "$line"; done < history
fi
"""


def read_state(transport: Transport) -> DeviceState:
    out = transport.run(sh_script(_STATE_SCRIPT, transport.remote_dir, *PUT_LEFTOVERS)).stdout
    state = DeviceState()
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == "current" and len(parts) == 2 and parts[1]:
            name = posixpath.basename(parts[1].rstrip("/"))
            state.current = name if is_bundle_id(name) else None
        elif parts[0] == "entry" and len(parts) == 3:
            kind, name = parts[1], parts[2]
            if kind == "d" and is_bundle_id(name):
                state.releases.append(name)
            elif (leftover := RELEASE_LEFTOVER.fullmatch(name)) and (kind == "d" or ".broken-" not in leftover.group(1)):
                state.leftovers.append(name)  # the agent's .broken-PID is a directory: leave files and links of that name
        elif parts[0] == "stray" and len(parts) == 2 and parts[1] in ("current.tmp", *PUT_LEFTOVERS):
            state.strays.append(parts[1])
        elif parts[0] == "lockdir" and len(parts) == 3 and LOCK_LEFTOVER.fullmatch(parts[2]) and parts[1].lstrip("-").isdigit():
            state.lock_leftovers.append((parts[2], int(parts[1])))
        elif parts[0] == "history" and len(parts) == 2 and is_bundle_id(parts[1].strip()):
            state.history.append(parts[1].strip())
    state.releases.sort()
    return state
