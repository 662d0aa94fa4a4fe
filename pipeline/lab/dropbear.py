"""A real dropbear server on 127.0.0.1 with no SFTP server: the "embedded image" device of the tests.

Many embedded images run dropbear without an SFTP server, so the SSH transport must fall back to
streaming files over exec channels. Debian's ``dropbear-bin`` runs ``/usr/lib/sftp-server`` for the
sftp subsystem, and that file comes with openssh-server, which the lab needs. Nothing is
uninstalled: dropbear runs in a private mount namespace (``unshare --mount``) in which

* ``/dev/null`` is bind-mounted over the sftp server, so the subsystem fails the way it does on a
  device without one (the shell cannot run it and the channel closes);
* a copy of ``/etc/passwd`` gives the login user this server's own home directory: dropbear reads
  ``~/.ssh/authorized_keys`` only, and the real home (and its ``.ssh``) is never touched.

This needs root (mount namespaces); :func:`dropbear_unavailable` says why it cannot run here. The
host key comes from ``dropbearkey``, the client key from ``ssh-keygen`` (paramiko reads OpenSSH
keys), and known_hosts holds the host key as ``[127.0.0.1]:PORT``, as for :class:`SSHServer`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from pipeline.errors import EdgeshipError
from pipeline.fsutil import atomic_write_text
from pipeline.lab.sshd import SSH_KEYGEN, LoopbackServer, current_user, free_port, keygen
from pipeline.safe_paths import open_log

DROPBEAR = Path(shutil.which("dropbear", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/dropbear")
DROPBEARKEY = Path(shutil.which("dropbearkey", path="/usr/bin:/usr/sbin:/bin:/sbin") or "/usr/bin/dropbearkey")
UNSHARE = Path(shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin") or "/usr/bin/unshare")
#: where Debian's dropbear looks for the sftp subsystem's program
SFTP_SERVER = Path("/usr/lib/sftp-server")

# Runs in the new mount namespace: "$1" is the passwd copy, "$2" the sftp server to hide (or ""),
# the rest is dropbear's argv. The private propagation keeps the mounts out of the host's namespace.
_NAMESPACE_SCRIPT = """set -e
mount --bind "$1" /etc/passwd
if [ -n "$2" ]; then mount --bind /dev/null "$2"; fi
if [ -x /usr/lib/sftp-server ]; then echo "edgeship: /usr/lib/sftp-server is still runnable" >&2; exit 97; fi
shift 2
exec "$@"
"""


@functools.lru_cache(maxsize=1)
def dropbear_unavailable() -> Optional[str]:
    """Why a :class:`DropbearServer` cannot run on this machine, or None when it can."""
    for tool, package in ((DROPBEAR, "dropbear-bin"), (DROPBEARKEY, "dropbear-bin"), (Path(SSH_KEYGEN), "openssh-client")):
        if not tool.is_file():
            return f"{tool} is missing (apt install {package}; `make setup` installs it when run as root)"
    if os.geteuid() != 0:
        return "the dropbear test server hides the sftp server in a private mount namespace, which needs root"
    probe = subprocess.run(
        [str(UNSHARE), "--mount", "--propagation", "private", "true"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if probe.returncode != 0:
        return f"`unshare --mount` fails here ({probe.stderr.strip() or probe.returncode}): no mount namespaces"
    return None


class DropbearServer(LoopbackServer):
    """One dropbear with its own files under ``root``; sessions see no sftp server and ``home`` as $HOME."""

    daemon = "dropbear"

    def __init__(self, root: Path):
        reason = dropbear_unavailable()
        if reason is not None:
            raise EdgeshipError(f"Cannot run a dropbear test server: {reason}.")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.user = current_user()
        self.port = free_port()
        self.host_key = self.root / "dropbear_ed25519_host_key"
        self.host_key.unlink(missing_ok=True)  # dropbearkey refuses to overwrite
        subprocess.run(
            [str(DROPBEARKEY), "-t", "ed25519", "-f", str(self.host_key)],
            check=True, capture_output=True, stdin=subprocess.DEVNULL,
        )
        self.client_key = keygen(self.root / "client_ed25519", "edgeship-test-client")
        self.home = self.root / "home"
        self.authorized_keys = self.home / ".ssh" / "authorized_keys"
        self.authorized_keys.parent.mkdir(parents=True, exist_ok=True)
        for directory in (self.home, self.authorized_keys.parent):
            directory.chmod(0o700)  # dropbear refuses keys under a directory others can write
        atomic_write_text(self.authorized_keys, Path(f"{self.client_key}.pub").read_text())
        self.authorized_keys.chmod(0o600)
        self.passwd = self.root / "passwd"
        atomic_write_text(self.passwd, _passwd_with_home(Path("/etc/passwd").read_text(), self.user, self.home))
        self.log = self.root / "dropbear.log"
        self.pidfile = self.root / "dropbear.pid"
        self.known_hosts = self.root / "known_hosts"
        self.write_known_hosts()
        self.proc: Optional[subprocess.Popen] = None

    def host_public_key(self) -> str:
        out = subprocess.run(
            [str(DROPBEARKEY), "-y", "-f", str(self.host_key)], check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
        ).stdout
        line = next(line for line in out.splitlines() if line.startswith("ssh-"))
        kind, blob = line.split()[:2]
        return f"{kind} {blob}"

    def _trusted_files(self) -> tuple[Path, ...]:
        return (self.host_key, self.authorized_keys, self.passwd, self.log)

    def start(self, timeout: float = 10.0, detach: bool = False) -> "DropbearServer":
        """Start dropbear (foreground, logging to ``dropbear.log``) inside its own mount namespace."""
        self._check_files()
        hidden = str(SFTP_SERVER.resolve()) if SFTP_SERVER.exists() else ""
        argv = [
            str(DROPBEAR), "-F", "-E", "-s", "-m",
            "-p", f"127.0.0.1:{self.port}", "-r", str(self.host_key), "-P", str(self.pidfile),
        ]
        with open_log(self.log) as log:
            self.proc = subprocess.Popen(
                [str(UNSHARE), "--mount", "--propagation", "private", "sh", "-c", _NAMESPACE_SCRIPT, "sh",
                 str(self.passwd), hidden, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=detach,
            )
        self._wait_ready(timeout)
        return self


def _passwd_with_home(passwd: str, user: str, home: Path) -> str:
    """``passwd`` with ``user``'s home directory (field 6) replaced by ``home``."""
    lines = []
    found = False
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == user:
            fields[5] = str(home)
            found = True
        lines.append(":".join(fields))
    if not found:
        raise EdgeshipError(f"User {user} is not in /etc/passwd, so the dropbear test server cannot log it in.")
    return "\n".join(lines) + "\n"
