"""Names of things under a target's remote directory (the device layout).

::

    <remote_dir>/
      bin/agent.py                 the device agent (replaced when its sha256 differs: put + rename)
      releases/<bundle id>/        installed, verified bundles
      releases/<id>.tar.gz.partial an upload in progress (removed by the next deploy if stale)
      releases/<id>.partial/       an extraction in progress (agent install; removed if stale)
      current -> releases/<id>     the active release (relative symlink, switched with a rename)
      history                      activated bundle ids, oldest first (rollback walks it backwards)
      runs/                        profile records in flight (fetched, then deleted)
      .lock/                       present while a deploy/rollback/profile holds the device
                                   (owner, heartbeat, token.<token>: see pipeline.deploy.lock)

Leftovers of interrupted runs, removed by the next deploy (it holds the lock): the ``.partial``
names above and ``bin/agent.py.partial``, ``history.partial`` (uploads of ``put``),
``current.tmp`` (a switch), ``releases/<id>.broken-<pid>/`` (an agent replacing a broken release)
and ``.lock.new.*`` / ``.lock.dead.*`` / ``.lock.broken.*`` (taking, breaking or releasing the lock).
Only these exact name patterns are ever removed, and a symlink is removed as a link, never followed.
Every path a deploy or rollback uploads to must have its ``.partial`` among them
(:func:`partial_is_cleaned`; a test records every put and checks): a link cut mid-upload leaves the
``.partial`` behind, and the next deploy is what removes it.
"""

from __future__ import annotations

import posixpath
import re

from pipeline.transport.base import Transport

AGENT = "bin/agent.py"
RELEASES = "releases"
CURRENT = "current"
HISTORY = "history"
RUNS = "runs"
LOCK = ".lock"

BUNDLE_ID = re.compile(r"[0-9a-f]{16}")  # always with fullmatch: "$" would accept a trailing newline
#: leftovers under releases/: a tarball or half upload, a half extraction, a replaced broken release
RELEASE_LEFTOVER = re.compile(r"[0-9a-f]{16}(\.tar\.gz|\.tar\.gz\.partial|\.partial|\.broken-[0-9]+)")
#: leftovers next to .lock: a lock being taken (by token), condemned ones (this and older versions)
LOCK_LEFTOVER = re.compile(r"\.lock\.(new|dead|broken)\.[0-9a-f]+")
#: uploads of Transport.put outside releases/ (the agent and the history), relative to remote_dir
PUT_LEFTOVERS = (f"{AGENT}.partial", f"{HISTORY}.partial")


def is_bundle_id(name: str) -> bool:
    return BUNDLE_ID.fullmatch(name) is not None


def partial_is_cleaned(name: str) -> bool:
    """Whether the next deploy removes ``<name>.partial`` (``name`` relative to remote_dir), the file
    a put of ``name`` leaves when the connection is cut mid-upload."""
    partial = f"{name}.partial"
    if partial in PUT_LEFTOVERS:
        return True
    folder, _, leaf = partial.partition("/")
    return folder == RELEASES and RELEASE_LEFTOVER.fullmatch(leaf) is not None


class Layout:
    def __init__(self, transport: Transport):
        self.root = transport.remote_dir

    def path(self, *parts: str) -> str:
        """A path under the target's remote directory (callers quote it when it reaches a shell)."""
        return posixpath.join(self.root, *parts)

    @property
    def bin_dir(self) -> str:
        return self.path("bin")

    @property
    def agent(self) -> str:
        return self.path(AGENT)

    @property
    def releases(self) -> str:
        return self.path(RELEASES)

    def release(self, bundle_id: str) -> str:
        return self.path(RELEASES, bundle_id)

    def tarball(self, bundle_id: str) -> str:
        return self.path(RELEASES, f"{bundle_id}.tar.gz")

    @staticmethod
    def link_target(bundle_id: str) -> str:
        """What ``current`` points to: relative, so the device directory can be moved."""
        return f"{RELEASES}/{bundle_id}"

    @property
    def current(self) -> str:
        return self.path(CURRENT)

    @property
    def history(self) -> str:
        return self.path(HISTORY)

    @property
    def runs(self) -> str:
        return self.path(RUNS)

    @property
    def lock(self) -> str:
        return self.path(LOCK)
