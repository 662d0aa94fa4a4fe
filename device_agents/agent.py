#!/usr/bin/env python3
"""edgeship device agent: verify, install and measure a model bundle on the device itself.

This is the only edgeship code that runs on a device, so it is one file that needs nothing but
Python >= 3.7, the standard library, numpy >= 1.16 and a TFLite runtime (``ai_edge_litert``,
``tflite_runtime`` or ``tensorflow.lite``). With ``--runtime onnxruntime`` and a bundle that ships
``model.onnx`` (manifest ``extra_models``), it profiles the ONNX model with onnxruntime instead.
The host copies it to ``<remote dir>/bin/agent.py``.
The command interface, exit codes and the profile record are fixed by ``device_agents/README.md``:

    agent.py doctor [--runtime R]
    agent.py verify BUNDLE_DIR
    agent.py install TARBALL RELEASES_DIR [--max-members N] [--max-file-mb MB] [--max-total-mb MB]
                     [--max-ratio R]
    agent.py profile BUNDLE_DIR --target NAME [--threads N] [--runs N] [--min-seconds S]
                     [--warmup N] [--runtime auto|ai_edge_litert|tflite_runtime|tensorflow|onnxruntime]
                     [--emulated] [--no-energy] [--benchmark-model PATH|auto] [--output FILE]
    agent.py ab BUNDLE_A BUNDLE_B --target NAME [--blocks N] [--runs-per-block N]
                [--min-block-seconds S] [--warmup N] [--threads N] [--runtime ...] [--emulated]
                [--output FILE]
    agent.py parse-benchmark FILE

Every command prints one JSON document on stdout (or writes it atomically to ``--output``); a
failure prints one JSON line ``{"error": ..., "kind": ...}`` on stderr and exits with
2 (usage), 3 (bundle verification failed), 4 (no TFLite runtime importable) or 5 (anything else).

Choices worth knowing when reading a profile record:

* ``latency_ms`` times ``invoke()`` alone with ``time.perf_counter``; copying the input in is not
  part of a sample. ``std`` is the sample standard deviation (n - 1). Percentiles interpolate
  linearly between closest ranks (numpy's default "linear" method), computed here so that old
  numpy versions on devices give the same numbers.
* ``runtime.delegate`` is ``"xnnpack"`` when the runtime announced creating its XNNPACK delegate
  while the interpreter was built (it logs that on stderr, which the agent captures for exactly
  that moment), otherwise ``"default"``: the runtime's default CPU path, where we could not see
  whether XNNPACK was applied (for example when the runtime logs to Android's logcat instead).
* ``memory.peak_rss_mb`` is the process high-water mark (what the device must have free to run
  this model with this runtime); ``baseline_rss_mb`` is the resident size just before the
  interpreter was created, so the difference approximates the model's own cost.
* The device fingerprint is taken after the timed loop, so frequency, temperature and throttling
  describe the device under load rather than at rest.
* ``energy`` is an estimate from the Raspberry Pi 5's PMIC (``vcgencmd pmic_read_adc``): idle
  board power read just before the timed loop, load power sampled every ~0.15 s during it,
  ``(P_load - P_idle) x t / N`` per inference. Elsewhere it is null and ``energy_unavailable`` says why.
"""

import argparse
import datetime
import errno
import gc
import glob
import gzip
import hashlib
import json
import math
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib

# The bundle contract (docs/ARCHITECTURE.md); the profile record has its own version.
SCHEMA_VERSION = 2
RECORD_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# Left out of the hashed manifest: the id itself, and the build time (same model and data, same id).
UNHASHED_KEYS = ("bundle_id", "created")
RUNTIME_ORDER = ("ai_edge_litert", "tflite_runtime", "tensorflow")
# Never chosen by "auto": only when asked for, and only for a bundle that ships an ONNX model.
EXTRA_RUNTIMES = ("onnxruntime",)
# \A...\Z, not ^...$: "$" also matches before a trailing newline. Callers use fullmatch.
BUNDLE_ID_RE = re.compile(r"\A[0-9a-f]{16}\Z")
XNNPACK_LOG_RE = re.compile(r"XNNPACK delegate", re.IGNORECASE)
BENCHMARK_TIMEOUT_S = 900
MAX_RUNTIME_LOG_CHARS = 2000
# Energy from the Raspberry Pi 5's PMIC ADC (README, "Energy"): one subprocess per reading.
PMIC_SOURCE = "vcgencmd pmic_read_adc"
PMIC_TIMEOUT_S = 2.0  # one call; a firmware that hangs must not hold the profile
PMIC_INTERVAL_S = 0.15  # between readings during the timed loop
PMIC_IDLE_READINGS = 3

# Default install limits (device_agents/README.md, "Archive limits"), each overridable by a flag.
# A bundle is a model of up to a few hundred MB plus small eval arrays; a gzip bomb reaches ratios
# near 1000, real bundles stay far below 100. The ratio is only enforced above RATIO_FLOOR_BYTES so
# a small, very compressible bundle is never refused for it.
DEFAULT_MAX_MEMBERS = 1000
DEFAULT_MAX_FILE_MB = 512
DEFAULT_MAX_TOTAL_MB = 1024
DEFAULT_MAX_RATIO = 100.0
RATIO_FLOOR_BYTES = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20
MAX_READ_BYTES = 4 << 20  # one read of the decompressed stream: a header's data or a copy chunk
HEADER_ALLOWANCE_BYTES = 8 << 10  # per member: its header blocks, padding and a long name
STALE_BROKEN_RE = re.compile(r"\A[0-9a-f]{16}\.broken-([0-9]+)\Z")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_RUNTIME = 4
EXIT_OTHER = 5


# ---------------------------------------------------------------------------------------- errors


class AgentError(Exception):
    """A failure we can explain; ``exit_code`` and ``kind`` go into the stderr JSON line."""

    exit_code = EXIT_OTHER
    kind = "error"

    def __init__(self, message, kind=None):
        super(AgentError, self).__init__(message)
        if kind:
            self.kind = kind


class UsageError(AgentError):
    exit_code = EXIT_USAGE
    kind = "usage"


class VerificationError(AgentError):
    """The bundle (or archive) must not be trusted: exit 3 so the host can tell it apart."""

    exit_code = EXIT_VERIFY
    kind = "verification"


class RuntimeMissingError(AgentError):
    exit_code = EXIT_RUNTIME
    kind = "no_runtime"


# --------------------------------------------------------------------------- bundle verification


def sha256_file(path):
    """Hex sha256 of a file, read in chunks so large models do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compute_bundle_id(manifest):
    """First 16 hex of sha256 over the canonical manifest (same rule as the host).

    Canonical: the manifest without ``bundle_id`` and ``created``, as JSON with sorted keys, no
    whitespace and ASCII escapes. ``files`` is part of it, so the id covers every file too.
    """
    body = dict((key, value) for key, value in manifest.items() if key not in UNHASHED_KEYS)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def scan_bundle(root):
    """Hash every regular file under ``root`` except the top-level manifest.

    Returns ``(files, problems)``. Links and special files are problems rather than skipped: a
    symlink inside a bundle could point anywhere, so a bundle containing one is not trusted.
    """
    files = {}
    problems = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                problems.append("%s is a symbolic link" % rel)
            elif stat.S_ISDIR(mode):
                continue
            elif not stat.S_ISREG(mode):
                problems.append("%s is not a regular file" % rel)
            elif rel != MANIFEST:
                try:
                    files[rel] = sha256_file(full)
                except OSError as exc:
                    problems.append("%s could not be read (%s)" % (rel, exc.strerror or exc))
    return files, problems


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("%s is not a finite number" % text)
    return value


def _refuse_constant(name):
    raise ValueError("%s is not JSON" % name)


def read_regular_file(path, limit):
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    Never through a symlink, and never a FIFO or device: opening a FIFO blocks until a writer
    comes, and /dev/zero never ends (O_NONBLOCK makes the open of a FIFO return at once).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError("larger than %s" % _mb(limit))
    return data


def read_manifest(bundle_dir):
    """Load ``manifest.json`` as strict JSON (no NaN or infinities, as the host writes it).

    A missing or unreadable manifest is a verification failure.
    """
    if not os.path.isdir(bundle_dir):
        raise VerificationError("Bundle %s is not a directory." % bundle_dir)
    path = os.path.join(bundle_dir, MANIFEST)
    try:
        text = read_regular_file(path, MAX_MANIFEST_BYTES).decode("utf-8")
        manifest = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except FileNotFoundError:
        raise VerificationError("Bundle %s has no %s." % (bundle_dir, MANIFEST))
    except (OSError, ValueError, RecursionError) as exc:
        raise VerificationError("Bundle manifest %s is unreadable or not strict JSON: %s." % (path, exc))
    if not isinstance(manifest, dict):
        raise VerificationError("Bundle manifest %s is not a JSON object." % path)
    return manifest


def schema_problem(version):
    """Why this agent cannot read a bundle of ``version``, or None if it can (same rule as the host)."""
    if type(version) is int and version == SCHEMA_VERSION:
        return None
    if type(version) is int and version < SCHEMA_VERSION:
        return (
            "its schema_version is %d but this agent reads %d: it was built by an older edgeship, whose "
            "bundle id did not cover the manifest. Rebuild it with `edgeship build` and deploy it again"
            % (version, SCHEMA_VERSION)
        )
    return "its schema_version is %r but this agent reads %d; deploy it with a matching edgeship" % (
        version,
        SCHEMA_VERSION,
    )


def verify_bundle(bundle_dir, name=None):
    """Return the manifest if every file matches its hash, none is missing or extra, the id fits
    the manifest, and the id equals ``name`` (the directory's own name unless given: ``install``
    verifies its ``<id>.partial`` extraction against the archive's folder name).

    All problems are collected before failing so the message names every offending file at once.
    """
    manifest = read_manifest(bundle_dir)
    schema = schema_problem(manifest.get("schema_version"))
    if schema:
        raise VerificationError("Bundle %s cannot be used: %s." % (bundle_dir, schema))
    problems = []
    expected = manifest.get("files")
    if not isinstance(expected, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in expected.items()
    ):
        problems.append("manifest 'files' is not a {path: sha256} object")
        expected = {}
    actual, scan_problems = scan_bundle(bundle_dir)
    problems.extend(scan_problems)
    for path in sorted(expected):
        if path not in actual:
            problems.append("%s is missing" % path)
        elif actual[path] != expected[path]:
            problems.append(
                "%s has sha256 %s... but the manifest says %s..." % (path, actual[path][:12], expected[path][:12])
            )
    for path in sorted(set(actual) - set(expected)):
        problems.append("%s is not listed in the manifest" % path)
    bundle_id = manifest.get("bundle_id")
    if compute_bundle_id(manifest) != bundle_id:
        problems.append("bundle_id %s does not match the manifest and its files" % bundle_id)
    if name is None:
        name = os.path.basename(os.path.normpath(bundle_dir))
    if bundle_id != name:
        problems.append("the directory is named %s but holds bundle %s (a bundle directory is named by its id)" % (name, bundle_id))
    if problems:
        raise VerificationError(
            "Bundle %s failed verification and must not be trusted: %s." % (bundle_dir, "; ".join(problems))
        )
    return manifest


def bundle_file(bundle_dir, manifest, rel):
    """Path of a file the manifest refers to, only if it is one of the verified files."""
    if not isinstance(rel, str) or rel not in manifest.get("files", {}):
        raise VerificationError("The manifest refers to %r, which is not one of its verified files." % (rel,))
    return os.path.join(bundle_dir, *rel.split("/"))


# ------------------------------------------------------------------------------------ installing


def _archive_error(tarball, exc):
    return VerificationError("Archive %s is corrupt or truncated: %s" % (tarball, exc), kind="bad_archive")


# ValueError: tarfile parses some pax/GNU header fields with int() and lets that escape.
_ARCHIVE_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError)
_DISK_FULL_ERRNOS = tuple(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)
MAX_NAME_BYTES = 255


def member_parts(name):
    """Split an archive member name into safe path components, or raise for unsafe names."""
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise VerificationError("Archive member %r has an absolute or non-POSIX path." % name, kind="unsafe_archive")
    if "\x00" in name:
        raise VerificationError("Archive member %r has a NUL byte in its name." % name, kind="unsafe_archive")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise VerificationError("Archive member %r escapes the bundle with '..'." % name, kind="unsafe_archive")
    if not parts:
        raise VerificationError("Archive member %r has an empty path." % name, kind="unsafe_archive")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in parts):
        raise VerificationError("Archive member %r has a name longer than %d bytes." % (name, MAX_NAME_BYTES), kind="unsafe_archive")
    return parts


def _member_type_problem(member):
    # Sparse first: tarfile reports GNU and pax sparse members as regular files too.
    if member.issparse() or member.type == tarfile.GNUTYPE_SPARSE:
        return "is a sparse file"
    if member.issym():
        return "is a symbolic link to %r" % member.linkname
    if member.islnk():
        return "is a hard link to %r" % member.linkname
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isfile() or member.isdir()):
        return "has an unsupported member type %r" % member.type
    return None


def plan_extraction(members):
    """Check every member before writing anything; return ``(bundle_id, [(member, parts)])``.

    Only regular files and directories are allowed, all under one top folder that is a bundle
    id, with no duplicates and no file standing where another member needs a directory.
    """
    if not members:
        raise VerificationError("The archive is empty.", kind="unsafe_archive")
    plan = []
    tops = set()
    seen = set()
    for member in members:
        parts = member_parts(member.name)
        problem = _member_type_problem(member)
        if problem:
            raise VerificationError("Archive member %r %s; refusing it." % (member.name, problem), kind="unsafe_archive")
        key = "/".join(parts)
        if key in seen:
            raise VerificationError("Archive member %r appears twice." % member.name, kind="unsafe_archive")
        seen.add(key)
        if len(parts) == 1 and not member.isdir():
            raise VerificationError("Archive member %r is a file outside the bundle folder." % member.name, kind="unsafe_archive")
        tops.add(parts[0])
        plan.append((member, parts))
    if len(tops) != 1:
        raise VerificationError(
            "The archive must hold exactly one top folder (the bundle id), found: %s." % ", ".join(sorted(tops)),
            kind="unsafe_archive",
        )
    bundle_id = tops.pop()
    if not BUNDLE_ID_RE.fullmatch(bundle_id):
        raise VerificationError("The archive's top folder %r is not a bundle id." % bundle_id, kind="unsafe_archive")
    files = set("/".join(parts) for member, parts in plan if member.isfile())
    for member, parts in plan:
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in files:
                raise VerificationError("Archive member %r lies below a file." % member.name, kind="unsafe_archive")
    return bundle_id, plan


class ArchiveLimits(object):
    """What ``install`` accepts from one archive (README "Archive limits"); sizes in bytes."""

    def __init__(self, members=DEFAULT_MAX_MEMBERS, file_bytes=DEFAULT_MAX_FILE_MB << 20,
                 total_bytes=DEFAULT_MAX_TOTAL_MB << 20, ratio=DEFAULT_MAX_RATIO):
        self.members = members
        self.file_bytes = file_bytes
        self.total_bytes = total_bytes
        self.ratio = ratio


def _mb(size):
    if size < 1048576:
        return "%.1f KB" % (size / 1024.0)
    return "%.1f MB" % (size / 1048576.0)


def _limit_error(message, flag):
    return VerificationError(
        "%s If the bundle is genuine, raise the limit with install %s." % (message, flag), kind="archive_limits"
    )


class BoundedStream(object):
    """The decompressed tar stream, refusing to go past ``limit`` bytes or to read more than
    ``MAX_READ_BYTES`` at once.

    tarfile reads a pax or GNU long-name header's whole data in one ``read`` before it returns
    the member, so a header claiming gigabytes would be decompressed into memory before
    ``read_members`` could look at it.
    """

    def __init__(self, stream, limit):
        self._stream = stream
        self._limit = limit

    def _refuse(self, what):
        return VerificationError(
            "The archive %s, beyond what the install limits allow (%s unpacked); no genuine bundle does. "
            "If it is one, raise --max-total-mb or --max-ratio." % (what, _mb(self._limit)),
            kind="archive_limits",
        )

    def read(self, size=-1):
        if size is None or size < 0 or size > MAX_READ_BYTES:
            raise self._refuse("asks to read %s at once" % ("everything" if size is None or size < 0 else _mb(size)))
        data = self._stream.read(size)
        if self._stream.tell() > self._limit:
            raise self._refuse("unpacks to more bytes than that")
        return data

    def seek(self, offset, whence=0):
        target = offset if whence == 0 else (self._stream.tell() + offset if whence == 1 else None)
        if target is None or target > self._limit:
            raise self._refuse("seeks past the end of what it may unpack")
        return self._stream.seek(target)

    def tell(self):
        return self._stream.tell()


def stream_limit(limits, archive_bytes):
    """Most decompressed bytes an archive within ``limits`` can need: its files plus headers."""
    content = min(limits.total_bytes, max(limits.ratio * archive_bytes, RATIO_FLOOR_BYTES))
    return int(content) + limits.members * HEADER_ALLOWANCE_BYTES + RATIO_FLOOR_BYTES


def read_members(tar, tarball, archive_bytes, limits):
    """All member headers, each checked against ``limits`` before the next one is read.

    tarfile decompresses a member's data to reach the next header, so refusing the first member
    over a limit (or of a type we never extract) keeps a bomb from costing more than the limits.
    Returns ``(members, total declared bytes of the regular files)``.
    """
    members = []
    total = 0
    while True:
        try:
            member = tar.next()
        except _ARCHIVE_READ_ERRORS as exc:
            raise _archive_error(tarball, exc)
        if member is None:
            return members, total
        members.append(member)
        if len(members) > limits.members:
            raise _limit_error("The archive has more than %d members." % limits.members, "--max-members")
        problem = _member_type_problem(member)
        if problem:
            raise VerificationError("Archive member %r %s; refusing it." % (member.name, problem), kind="unsafe_archive")
        if not member.isfile():
            continue
        if member.size > limits.file_bytes:
            raise _limit_error(
                "Archive member %r is %s, over the per-file limit of %s." % (member.name, _mb(member.size), _mb(limits.file_bytes)),
                "--max-file-mb",
            )
        total += member.size
        if total > limits.total_bytes:
            raise _limit_error(
                "The archive's files add up to more than the limit of %s." % _mb(limits.total_bytes), "--max-total-mb"
            )
        if total > RATIO_FLOOR_BYTES and total > limits.ratio * archive_bytes:
            raise _limit_error(
                "The archive's files add up to more than %g times the archive's %s (a decompression bomb?)."
                % (limits.ratio, _mb(archive_bytes)),
                "--max-ratio",
            )


def read_archive_manifest(tar, tarball, plan, bundle_id):
    """The archive's manifest, read into memory (size-capped) before anything is written."""
    member = None
    for candidate, parts in plan:
        if parts == [bundle_id, MANIFEST] and candidate.isfile():
            member = candidate
    if member is None:
        raise VerificationError("Archive %s has no %s/%s." % (tarball, bundle_id, MANIFEST))
    if member.size > MAX_MANIFEST_BYTES:
        raise VerificationError(
            "The archive's %s is %s; a manifest is never larger than %s." % (MANIFEST, _mb(member.size), _mb(MAX_MANIFEST_BYTES)),
            kind="archive_limits",
        )
    try:
        data = tar.extractfile(member).read()
    except _ARCHIVE_READ_ERRORS as exc:
        raise _archive_error(tarball, exc)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise VerificationError("The archive's %s is not UTF-8 JSON: %s." % (MANIFEST, exc), kind="bad_manifest")
    if not isinstance(manifest, dict):
        raise VerificationError("The archive's %s is not a JSON object." % MANIFEST, kind="bad_manifest")
    return manifest


def check_declared_sizes(manifest, plan):
    """``model.bytes`` and each ``extra_models[i].bytes`` must be the archive's size of that file."""
    sizes = dict(("/".join(parts[1:]), member.size) for member, parts in plan if member.isfile())
    entries = [("model", manifest.get("model"))]
    extra = manifest.get("extra_models")
    if isinstance(extra, list):
        entries.extend(("extra_models[%d]" % i, entry) for i, entry in enumerate(extra))
    for key, entry in entries:
        if not isinstance(entry, dict) or "bytes" not in entry:
            continue
        declared, rel = entry.get("bytes"), entry.get("file")
        if isinstance(declared, bool) or not isinstance(declared, int) or declared < 0 or not isinstance(rel, str):
            raise VerificationError(
                "Manifest %s needs 'file' (a path) and 'bytes' (an integer >= 0), got %r and %r." % (key, rel, declared),
                kind="bad_manifest",
            )
        if sizes.get(rel) != declared:
            raise VerificationError(
                "The manifest declares %s %r as %d bytes, but the archive holds %s."
                % (key, rel, declared, "no such file" if rel not in sizes else "%d bytes" % sizes[rel]),
                kind="size_mismatch",
            )


def _free_bytes(path):
    """Bytes an unprivileged process may still write below ``path``, or None where unknown."""
    try:
        info = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return info.f_bavail * info.f_frsize


def disk_full_error(releases_dir, needed):
    free = _free_bytes(releases_dir)
    return AgentError(
        "Not enough disk space in %s to install this bundle: it needs %s, %s free. Remove old releases or "
        "other files there and deploy again." % (releases_dir, _mb(needed), _mb(free) if free is not None else "unknown"),
        kind="disk_full",
    )


def _pid_alive(pid):
    if pid == os.getpid():
        return False  # a reused pid: this install has not created its own yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):
        return False
    except OSError:
        return True  # EPERM: alive, another user's
    return True


def remove_stale_broken(releases_dir):
    """Remove ``<id>.broken-<pid>`` folders left by an install killed while replacing a release.

    Only that exact name, only when its pid no longer runs; a symlink is unlinked, never followed.
    """
    for name in os.listdir(releases_dir):
        match = STALE_BROKEN_RE.match(name)
        if not match or _pid_alive(int(match.group(1))):
            continue
        path = os.path.join(releases_dir, name)
        try:
            if os.path.islink(path) or not os.path.isdir(path):
                os.unlink(path)
            else:
                shutil.rmtree(path)
        except OSError:
            pass  # still stale next time; never a reason to fail an install


def _fsync_dir(path):
    """Make a rename durable (SD cards lose power); not every platform can fsync a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_member(tar, tarball, member, out):
    """Copy one member's bytes, never more or fewer than its header says (a lying header aborts)."""
    try:
        source = tar.extractfile(member)
    except _ARCHIVE_READ_ERRORS as exc:
        raise _archive_error(tarball, exc)
    written = 0
    while True:
        try:
            chunk = source.read(min(1 << 20, member.size - written + 1))
        except _ARCHIVE_READ_ERRORS as exc:
            raise _archive_error(tarball, exc)
        if not chunk:
            break
        written += len(chunk)
        if written > member.size:
            break
        out.write(chunk)
    if written != member.size:
        raise VerificationError(
            "Archive member %r holds %s bytes but its header says %d." % (member.name, "more" if written > member.size else written, member.size),
            kind="bad_archive",
        )


def extract_plan(tar, tarball, plan, dest):
    """Write the planned members below ``dest`` ourselves, never through ``extractall``.

    Writing the bytes ourselves ignores the archive's owners, modes and times, and ``"xb"`` never
    follows anything that already exists. Read errors (corrupt archive) and write errors (full
    disk, exit 5 with kind ``disk_full``) are told apart because they need different answers.
    """
    needed = sum(member.size for member, _parts in plan if member.isfile())
    try:
        os.mkdir(dest)
        for member, parts in plan:
            target = os.path.join(dest, *parts[1:]) if len(parts) > 1 else dest
            if member.isdir():
                if not os.path.isdir(target):
                    os.makedirs(target)
                continue
            parent = os.path.dirname(target)
            if not os.path.isdir(parent):
                os.makedirs(parent)
            with open(target, "xb") as out:
                _copy_member(tar, tarball, member, out)
                out.flush()
                os.fsync(out.fileno())
    except OSError as exc:
        if exc.errno in _DISK_FULL_ERRNOS:
            shutil.rmtree(dest, ignore_errors=True)  # first, so the free space reported is real
            raise disk_full_error(os.path.dirname(dest) or ".", needed)
        raise AgentError("Cannot write the bundle to %s: %s" % (dest, exc), kind="install")
    for dirpath, _dirnames, _filenames in os.walk(dest):
        _fsync_dir(dirpath)


def _existing_release(final, bundle_id):
    """True if ``final`` already holds this verified bundle; False if it holds a broken copy."""
    if os.path.islink(final) or not os.path.isdir(final):
        raise AgentError("%s exists and is not a directory; refusing to replace it." % final, kind="install")
    try:
        manifest = verify_bundle(final)
    except VerificationError:
        return False
    return manifest.get("bundle_id") == bundle_id


def _remove_tree(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def install_bundle(tarball, releases_dir, limits=None):
    """Extract to ``<id>.partial``, verify, rename to ``<id>``; on any failure remove the partial.

    Everything that can be checked from the headers and the manifest (limits, member types,
    declared sizes, preprocessing, free space) is checked before the first byte is written.
    An existing release that verifies is reported as is (a redeploy is a no-op). An existing
    release that does not verify is replaced, but only after the new copy has verified.
    """
    limits = limits or ArchiveLimits()
    try:
        raw = open(tarball, "rb")
    except OSError as exc:
        raise AgentError("Cannot read archive %s: %s" % (tarball, exc.strerror or exc), kind="io")
    archive_bytes = os.fstat(raw.fileno()).st_size
    # gzip only: the host always ships .tar.gz, and every other decompressor is attack surface.
    unpacked = gzip.GzipFile(fileobj=raw, mode="rb")
    try:
        tar = tarfile.open(fileobj=BoundedStream(unpacked, stream_limit(limits, archive_bytes)), mode="r:")
    except BaseException as exc:
        unpacked.close()
        raw.close()
        if isinstance(exc, _ARCHIVE_READ_ERRORS):
            raise _archive_error(tarball, exc)
        raise
    with raw, unpacked, tar:
        members, needed = read_members(tar, tarball, archive_bytes, limits)
        bundle_id, plan = plan_extraction(members)
        archived = read_archive_manifest(tar, tarball, plan, bundle_id)
        check_declared_sizes(archived, plan)
        check_preprocessing(archived.get("preprocessing"))
        if not os.path.isdir(releases_dir):
            os.makedirs(releases_dir)
        remove_stale_broken(releases_dir)
        final = os.path.join(releases_dir, bundle_id)
        replace_broken = False
        if os.path.lexists(final):
            if _existing_release(final, bundle_id):
                return {"ok": True, "bundle_id": bundle_id, "path": os.path.abspath(final), "already_installed": True}
            replace_broken = True
        partial = final + ".partial"
        _remove_tree(partial)
        free = _free_bytes(releases_dir)
        if free is not None and free < needed:
            raise disk_full_error(releases_dir, needed)
        try:
            extract_plan(tar, tarball, plan, partial)
            manifest = verify_bundle(partial, bundle_id)
            if manifest.get("bundle_id") != bundle_id:
                raise VerificationError(
                    "The archive's folder is %s but its manifest says bundle_id %s."
                    % (bundle_id, manifest.get("bundle_id"))
                )
            if replace_broken:
                broken = "%s.broken-%d" % (final, os.getpid())
                os.rename(final, broken)
                try:
                    os.rename(partial, final)
                except BaseException:
                    os.rename(broken, final)
                    raise
                shutil.rmtree(broken, ignore_errors=True)
            else:
                os.rename(partial, final)
            _fsync_dir(releases_dir)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return {"ok": True, "bundle_id": bundle_id, "path": os.path.abspath(final), "already_installed": False}


# -------------------------------------------------------------------------------------- runtimes


def _distribution_version(*names):
    """Version from package metadata (Python >= 3.8), or None."""
    try:
        # importlib.metadata is new in 3.8; the ImportError below is 3.7's path (hence novermin)
        from importlib import metadata  # novermin
    except ImportError:
        return None
    for name in names:
        try:
            return metadata.version(name)
        except Exception:
            continue
    return None


def import_runtime(name):
    """Import one runtime; return ``(Interpreter class, version)``. Raises on any import problem."""
    if name == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter
        import ai_edge_litert

        version = _distribution_version("ai-edge-litert", "ai-edge-litert-nightly") or getattr(
            ai_edge_litert, "__version__", None
        )
    elif name == "tflite_runtime":
        from tflite_runtime.interpreter import Interpreter
        import tflite_runtime

        version = getattr(tflite_runtime, "__version__", None) or _distribution_version("tflite-runtime")
    elif name == "tensorflow":
        import tensorflow

        Interpreter = tensorflow.lite.Interpreter
        version = getattr(tensorflow, "__version__", None)
    elif name == "onnxruntime":
        import onnxruntime

        Interpreter = onnxruntime  # the module: OnnxInterpreter builds the session from it
        version = getattr(onnxruntime, "__version__", None) or _distribution_version("onnxruntime")
    else:
        raise ValueError("unknown runtime %r" % name)
    return Interpreter, str(version) if version is not None else "unknown"


def load_runtime(choice):
    """The first importable runtime in the fixed order (or exactly ``choice``); exit 4 if none."""
    order = RUNTIME_ORDER if choice in (None, "auto") else (choice,)
    failures = []
    for name in order:
        try:
            interpreter_class, version = import_runtime(name)
        except Exception as exc:  # a broken wheel can raise more than ImportError
            failures.append("%s (%s: %s)" % (name, type(exc).__name__, exc))
            continue
        return name, version, interpreter_class
    raise RuntimeMissingError("No TFLite runtime is importable; tried " + "; ".join(failures) + ".")


def probe_runtime_version(name):
    """Used by ``doctor`` in a child process: the runtime's version, raising if it won't import."""
    return import_runtime(name)[1]


# The small runtimes import safely and fast, so they are probed in this process; TensorFlow gets a
# child process because a broken build can kill the interpreter outright.
IN_PROCESS_PROBES = ("ai_edge_litert", "tflite_runtime", "onnxruntime")


def probe_runtimes(order=RUNTIME_ORDER, first_only=False):
    """Which runtimes import, each tried in its own child process, in ``order``.

    TensorFlow is tried in a child process because importing a broken build can kill the process
    (illegal instruction on older ARM cores); ``doctor`` must still report the runtimes that do work.
    With ``first_only`` probing stops at the first runtime that imports: importing TensorFlow
    costs seconds, and a deploy only needs to know that its preferred runtime works.
    """
    code = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('_edgeship_agent_probe', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "try:\n"
        "    version = mod.probe_runtime_version(sys.argv[2])\n"
        "except Exception:\n"
        "    version = None\n"
        "print(json.dumps({'version': version}))\n"
    )
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    versions = {}
    for name in order:
        version = None
        if name in IN_PROCESS_PROBES:
            try:
                version = probe_runtime_version(name)
            except Exception:
                version = None
            versions[name] = version
            if first_only and version:
                break
            continue
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, os.path.abspath(__file__), name],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=300,
                env=env,
            )
            lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
            if proc.returncode == 0 and lines:
                version = json.loads(lines[-1]).get("version")
        except (OSError, ValueError, subprocess.SubprocessError):
            version = None
        versions[name] = version
        if first_only and version:
            break
    return versions


def numpy_version():
    try:
        import numpy
    except Exception:
        return None
    return numpy.__version__


# ------------------------------------------------------------------------------ device probes


def safe_probe(func, *args):
    """Run a fingerprint probe; any failure means "unknown" (None), never a crashed profile."""
    try:
        return func(*args)
    except Exception:
        return None


def _read_text(path):
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        return handle.read()


def cpuinfo_fields(text):
    """First value of every ``key : value`` line of /proc/cpuinfo, keys lower-cased."""
    fields = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key and value and key not in fields:
            fields[key] = value
    return fields


# ARM's "CPU part" numbers for the cores found on common boards (implementer 0x41).
ARM_CORES = {
    "0xb76": "ARM1176", "0xc07": "Cortex-A7", "0xc08": "Cortex-A8", "0xc09": "Cortex-A9",
    "0xc0f": "Cortex-A15", "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd4b": "Cortex-A78C",
}


def cpu_model_from_cpuinfo(text, device_tree_model=None):
    """A human CPU/board name: "model name" on x86 and 32-bit ARM; on arm64 boards the
    "Model"/"Hardware" line (or the device tree) plus the core decoded from "CPU part"."""
    fields = cpuinfo_fields(text)
    if fields.get("model name"):
        return fields["model name"]
    board = fields.get("model") or device_tree_model or fields.get("hardware")
    core = None
    if fields.get("cpu implementer", "").lower() == "0x41":
        core = ARM_CORES.get(fields.get("cpu part", "").lower())
    processor = fields.get("processor")
    if processor and processor.isdigit():
        processor = None
    parts = [p for p in (board, core or processor or fields.get("cpu model")) if p]
    return " / ".join(parts) or None


def cpu_model():
    device_tree = safe_probe(lambda: _read_text("/proc/device-tree/model").strip("\x00\n ")) or None
    text = safe_probe(_read_text, "/proc/cpuinfo") or ""
    return cpu_model_from_cpuinfo(text, device_tree) or platform.processor() or None


def cpufreq(name):
    return _read_text("/sys/devices/system/cpu/cpu0/cpufreq/" + name).strip()


def cpu_governor():
    return safe_probe(cpufreq, "scaling_governor") or None


def cpu_frequency_mhz():
    for name in ("scaling_cur_freq", "cpuinfo_cur_freq"):
        value = safe_probe(cpufreq, name)
        if value:
            try:
                return round(int(value) / 1000.0, 1)
            except ValueError:
                continue
    return None


def temperature_c():
    """Hottest thermal zone in °C. Zones report milli-degrees, a few report degrees."""
    readings = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        try:
            value = float(_read_text(path).strip())
        except (OSError, ValueError):
            continue
        if abs(value) >= 1000:
            value /= 1000.0
        if -40.0 <= value <= 150.0:
            readings.append(value)
    return round(max(readings), 1) if readings else None


def decode_throttled(value):
    """Bits of the Raspberry Pi firmware's get_throttled word (low: now, 16-19: has occurred)."""

    def bit(n):
        return bool(value & (1 << n))

    return {
        "raw": "0x%x" % value,
        "under_voltage": bit(0),
        "frequency_capped": bit(1),
        "throttled": bit(2),
        "soft_temp_limit": bit(3),
        "ever_under_voltage": bit(16),
        "ever_frequency_capped": bit(17),
        "ever_throttled": bit(18),
        "ever_soft_temp_limit": bit(19),
    }


def throttling():
    """``vcgencmd get_throttled`` if present, else the firmware's sysfs file, else None."""
    binary = shutil.which("vcgencmd")
    if binary:
        try:
            out = subprocess.run(
                [binary, "get_throttled"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10
            ).stdout.decode("ascii", "replace")
            match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", out)
            if match:
                return decode_throttled(int(match.group(1), 0))
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    for path in glob.glob("/sys/devices/platform/soc*/*firmware*/get_throttled"):
        try:
            return decode_throttled(int(_read_text(path).strip(), 16))
        except (OSError, ValueError):
            continue
    return None


def is_termux():
    return "com.termux" in os.environ.get("PREFIX", "")


def glibc_version():
    """The C library's own glibc version ("2.31"), or None (musl, Android's bionic). The host's
    doctor needs it: tflite-runtime 2.12.0's and 2.14.0's ARM wheels need glibc 2.34, newer than
    Debian bullseye's. ``platform.libc_ver()`` would read the interpreter binary's symbols on 3.7."""
    parts = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
    return parts[1] if len(parts) == 2 and parts[0] == "glibc" else None


def os_name():
    """PRETTY_NAME from os-release; Termux reports Android and its release from ``getprop``."""
    if is_termux():
        release = None
        getprop = shutil.which("getprop")
        if getprop:
            try:
                release = subprocess.run(
                    [getprop, "ro.build.version.release"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10
                ).stdout.decode("utf-8", "replace").strip()
            except (OSError, subprocess.SubprocessError):
                release = None
        return "Android %s (Termux)" % release if release else "Android (Termux)"
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = _read_text(path)
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip("\"'") or None
    return ("%s %s" % (platform.system(), platform.release())).strip() or None


def device_fingerprint(emulated):
    return {
        "hostname": safe_probe(socket.gethostname),
        "machine": safe_probe(platform.machine) or None,
        "cpu_model": safe_probe(cpu_model),
        "cores": safe_probe(os.cpu_count),
        "governor": safe_probe(cpu_governor),
        "frequency_mhz": safe_probe(cpu_frequency_mhz),
        "temperature_c": safe_probe(temperature_c),
        "throttling": safe_probe(throttling),
        "os": safe_probe(os_name),
        "python": platform.python_version(),
        "emulated": bool(emulated),
    }


# ----------------------------------------------------------------------------------------- energy

_PMIC_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# " VDD_CORE_A current(7)=2.12500000A" and " VDD_CORE_V volt(15)=0.85000000V"
_PMIC_LINE_RE = re.compile(
    r"^\s*(?P<rail>\S+)_(?P<unit>[AV])\s+(?P<kind>current|volt)\(\d+\)=(?P<value>%s)(?P=unit)\s*$" % _PMIC_NUMBER
)


def parse_pmic_adc(text):
    """Board power from ``vcgencmd pmic_read_adc``: ``{"power_w", "rails"}``.

    The power is the sum of V x A over every rail printed with both a ``<RAIL>_A current(n)`` and a
    ``<RAIL>_V volt(n)`` line; voltage-only rails (``EXT5V_V``, ``BATT_V``) carry no current, so no
    power, and are left out. Raises ValueError saying why when no rail has both (a Pi 4's firmware
    answers "Command not registered").
    """
    amps, volts = {}, {}
    for line in text.splitlines():
        match = _PMIC_LINE_RE.match(line)
        if not match or (match.group("kind") == "current") != (match.group("unit") == "A"):
            continue
        (amps if match.group("unit") == "A" else volts)[match.group("rail")] = float(match.group("value"))
    rails = sorted(set(amps) & set(volts))
    if rails:
        return {"power_w": math.fsum(amps[rail] * volts[rail] for rail in rails), "rails": len(rails)}
    if amps or volts:
        raise ValueError("%s printed no rail with both a current and a voltage" % PMIC_SOURCE)
    said = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    raise ValueError("%s printed no PMIC readings%s" % (PMIC_SOURCE, (": %s" % said[:200]) if said else " (empty output)"))


def read_pmic_power(binary, timeout=PMIC_TIMEOUT_S):
    """One reading of the board's power in W; ValueError (saying why) when there is none.

    The command runs in its own session and the whole group is killed at ``timeout``, so a hung
    firmware call (or a child of it holding the pipe) cannot hold the profile."""
    try:
        proc = subprocess.Popen(
            [binary, "pmic_read_adc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
    except (OSError, ValueError) as exc:
        raise ValueError("%s could not run: %s" % (PMIC_SOURCE, exc))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)  # SIGKILL, to the whole session
        except OSError:
            proc.kill()
        proc.communicate()
        raise ValueError("%s did not answer within %.1f s" % (PMIC_SOURCE, timeout))
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        said = " / ".join(line.strip() for line in (text + err.decode("utf-8", "replace")).splitlines() if line.strip())
        raise ValueError("%s exited with status %d%s" % (PMIC_SOURCE, proc.returncode, (": %s" % said[:200]) if said else ""))
    return parse_pmic_adc(text)["power_w"]


class PowerSampler(object):
    """Reads the board's power every ``interval`` s in a daemon thread while the timed loop runs.

    It never raises: a failed reading is counted and its reason kept. :meth:`stop` waits at most
    one reading's timeout for the thread, and keeps only readings that started before it."""

    def __init__(self, binary, interval=PMIC_INTERVAL_S):
        self.binary = binary
        self.interval = interval
        self._readings = []
        self._failures = 0
        self._last_error = None
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeship-pmic-sampler")
        self._thread.daemon = True

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._halt.is_set():
            try:
                watts = read_pmic_power(self.binary)
            except Exception as exc:  # anything at all: the profile must not die of its power meter
                with self._lock:
                    self._failures += 1
                    self._last_error = str(exc) or type(exc).__name__
            else:
                with self._lock:
                    self._readings.append(watts)
            self._halt.wait(self.interval)

    def stop(self):
        """``(readings in W, failed readings, last failure's reason or None)``."""
        self._halt.set()
        self._thread.join(PMIC_TIMEOUT_S + 1.0)
        with self._lock:
            return list(self._readings), self._failures, self._last_error


class EnergyMeter(object):
    """The record's ``energy`` from the PMIC: idle power read just before the timed loop, load power
    sampled during it, ``(P_load - P_idle) x t / N`` per inference (README, "Energy").

    Without ``vcgencmd`` (or when its first idle reading fails) nothing is sampled, so the timed
    loop runs exactly as it would without the meter; :meth:`result` then gives the reason."""

    def __init__(self, warnings, binary=None, off=False):
        self.warnings = warnings
        self.binary = None if off else binary if binary is not None else shutil.which("vcgencmd")
        self.reason = (
            "energy sampling turned off (--no-energy)" if off
            else None if self.binary else "no vcgencmd on PATH (not a Raspberry Pi, or its firmware tools are missing)"
        )
        self.idle = []
        self.sampler = None
        self.energy = None

    def start(self):
        """Idle readings, then the sampler; called right before the timed loop."""
        if self.reason:
            return
        try:
            for i in range(PMIC_IDLE_READINGS):
                if i:
                    time.sleep(PMIC_INTERVAL_S)
                self.idle.append(read_pmic_power(self.binary))
        except ValueError as exc:
            if not self.idle:
                self.reason = str(exc)
                return
        try:
            self.sampler = PowerSampler(self.binary)
            self.sampler.start()
        except (RuntimeError, OSError) as exc:  # no thread to be had
            self.sampler = None
            self.reason = "could not start the power sampler: %s" % exc

    def stop(self, seconds, invokes):
        """Right after the timed loop: ``seconds`` it took, ``invokes`` it timed."""
        if self.sampler is None:
            return
        readings, failures, last_error = self.sampler.stop()
        self.sampler = None
        if not readings or not invokes or seconds <= 0:
            self.reason = "no %s reading completed during the %.2f s timed loop%s" % (
                PMIC_SOURCE, seconds, (": %s" % last_error) if last_error else "; time it longer (--min-seconds)"
            )
            return
        idle = math.fsum(self.idle) / len(self.idle)
        load = math.fsum(readings) / len(readings)
        if load <= idle:
            self.warnings.append(
                "Energy: board power during the timed loop (%.3f W) was not above idle (%.3f W); the model's "
                "draw is within the PMIC's noise, so energy.mj_per_inference is not meaningful." % (load, idle)
            )
        self.energy = {  # 9 significant digits: a tiny model's mJ would lose them to round(x, 6)
            "mj_per_inference": float("%.9g" % ((load - idle) * seconds / invokes * 1000.0)),
            "gross_mj_per_inference": float("%.9g" % (load * seconds / invokes * 1000.0)),
            "load_power_w": float("%.9g" % load),
            "idle_power_w": float("%.9g" % idle),
            "samples": len(readings),
            "idle_samples": len(self.idle),
            "failed_samples": failures,
            "seconds": round(seconds, 6),
            "invokes": invokes,
            "estimated": True,
            "source": PMIC_SOURCE,
        }

    def result(self):
        """``(energy object or None, reason it is None or None)``."""
        if self.energy is not None:
            return self.energy, None
        return None, self.reason or "energy was not measured"


# ----------------------------------------------------------------------------------------- memory


def _proc_status_kb(field):
    try:
        text = _read_text("/proc/self/status")
    except OSError:
        return None
    match = re.search(r"^%s:\s*(\d+)\s*kB" % field, text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _maxrss_mb():
    try:
        import resource
    except ImportError:
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    divisor = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB elsewhere
    return maxrss / divisor


def peak_rss_mb():
    """Process high-water mark: VmHWM from /proc, else getrusage's ru_maxrss."""
    kb = _proc_status_kb("VmHWM")
    value = kb / 1024.0 if kb is not None else _maxrss_mb()
    return round(value, 2) if value is not None else None


def current_rss_mb():
    """Resident size now (VmRSS); without /proc the peak so far is the best available bound."""
    kb = _proc_status_kb("VmRSS")
    value = kb / 1024.0 if kb is not None else _maxrss_mb()
    return round(value, 2) if value is not None else None


# -------------------------------------------------------------------------------------- statistics


def percentile(sorted_values, q):
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * (q / 100.0)
    lower = int(math.floor(position))
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


def summarize(samples):
    """mean, sample std (n - 1), min, max and p50/p90/p95/p99 of latency samples in ms."""
    ordered = sorted(samples)
    count = len(ordered)
    if not count:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None,
                "p50": None, "p90": None, "p95": None, "p99": None}
    mean = math.fsum(ordered) / count
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in ordered) / (count - 1)) if count > 1 else 0.0
    stats = {"count": count, "mean": mean, "std": std, "min": ordered[0], "max": ordered[-1]}
    for q in (50, 90, 95, 99):
        stats["p%d" % q] = percentile(ordered, q)
    return stats


def _ms(value):
    """Round to nanoseconds: perf_counter cannot resolve more, and JSON stays compact."""
    return None if value is None else round(value, 6)


# ------------------------------------------------------------------------------------ measurement


class CapturedStderr(object):
    """Redirect file descriptor 2 to a temporary file while the interpreter is built.

    The runtimes log from C++ straight to fd 2 (not ``sys.stderr``); capturing it is how we learn
    whether XNNPACK was applied, and it keeps stderr free for the one JSON error line. The log is
    handed back as a warning (or in the error message), so nothing is hidden; only a hard crash
    inside the runtime during these milliseconds would lose its last words.
    """

    def __init__(self):
        self.text = ""
        self._saved = None
        self._file = None

    def __enter__(self):
        try:
            sys.stderr.flush()
            self._file = tempfile.TemporaryFile()
            self._saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except (OSError, ValueError, AttributeError):
            self._saved = None
        return self

    def __exit__(self, *exc_info):
        if self._saved is None:
            return False
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False


def create_interpreter(interpreter_class, model_path, threads, warnings):
    """Build and allocate the interpreter; return ``(interpreter, init_ms, threads_used, delegate)``.

    ``threads_used`` is what we actually passed: None if this runtime's Interpreter has no
    ``num_threads`` (very old tf.lite). Only the successful attempt is timed.
    """
    attempts = [{"model_path": model_path, "num_threads": threads}, {"model_path": model_path}]
    last_error = None
    for kwargs in attempts:
        error = None
        with CapturedStderr() as captured:
            try:
                start = time.perf_counter()
                interpreter = interpreter_class(**kwargs)
                interpreter.allocate_tensors()
                init_ms = (time.perf_counter() - start) * 1000.0
            except Exception as exc:
                error = exc
        if error is not None:
            if isinstance(error, TypeError) and "num_threads" in str(error) and "num_threads" in kwargs:
                last_error = error
                continue
            log = captured.text.strip()
            raise AgentError(
                "Could not create the interpreter for %s: %s%s"
                % (model_path, error, ("; runtime log: " + log[-1000:]) if log else ""),
                kind="runtime_error",
            )
        threads_used = kwargs.get("num_threads")
        if threads_used is None:
            warnings.append("This runtime's Interpreter has no num_threads (%s); it chose its own thread count." % last_error)
        delegate = "xnnpack" if XNNPACK_LOG_RE.search(captured.text) else "default"
        if delegate == "default":
            warnings.append("Could not observe the runtime applying XNNPACK; delegate reported as 'default'.")
        other_lines = [
            line.strip() for line in captured.text.splitlines() if line.strip() and not XNNPACK_LOG_RE.search(line)
        ]
        if other_lines:
            warnings.append("runtime log while loading the model: " + " | ".join(other_lines)[-MAX_RUNTIME_LOG_CHARS:])
        return interpreter, init_ms, threads_used, delegate
    raise AgentError("Could not create the interpreter: %s" % last_error, kind="runtime_error")


def onnx_model_file(manifest):
    """The bundle's ONNX model (manifest ``extra_models`` entry with format onnx), or None."""
    for entry in manifest.get("extra_models") or []:
        if isinstance(entry, dict) and entry.get("format") == "onnx" and entry.get("file"):
            return entry["file"]
    return None


class OnnxInterpreter(object):
    """An onnxruntime session behind the few TFLite Interpreter methods the profiler calls, so
    latency and accuracy are measured by exactly the same code for both runtimes."""

    def __init__(self, ort, model_path, threads):
        import numpy as np

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
        self._inputs = self.session.get_inputs()
        self._outputs = self.session.get_outputs()
        self._feed = {}
        self._results = None
        dtypes = {"tensor(float)": np.float32}

        def detail(i, node):
            if node.type not in dtypes:
                raise AgentError("The ONNX model's %s is %s; only float32 is supported." % (node.name, node.type), kind="model")
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in node.shape]  # dynamic batch -> 1
            return {"index": i, "name": node.name, "shape": shape, "dtype": dtypes[node.type], "quantization": (0.0, 0)}

        self._input_details = [detail(i, n) for i, n in enumerate(self._inputs)]
        self._output_details = [detail(i, n) for i, n in enumerate(self._outputs)]

    def get_input_details(self):
        return self._input_details

    def get_output_details(self):
        return self._output_details

    def set_tensor(self, index, value):
        self._feed[self._inputs[index].name] = value

    def invoke(self):
        self._results = self.session.run(None, self._feed)

    def get_tensor(self, index):
        return self._results[index]


def create_onnx_interpreter(ort, model_path, threads):
    """Like :func:`create_interpreter` for onnxruntime: ``(interpreter, init_ms, threads, provider)``."""
    start = time.perf_counter()
    try:
        interpreter = OnnxInterpreter(ort, model_path, threads)
    except AgentError:
        raise
    except Exception as exc:
        raise AgentError("onnxruntime could not load %s: %s" % (model_path, exc), kind="runtime_error")
    init_ms = (time.perf_counter() - start) * 1000.0
    return interpreter, init_ms, threads, "CPUExecutionProvider"


FLOAT32_MAX = 3.4028234663852886e38


def _finite_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_preprocessing(preprocessing):
    """Refuse a ``preprocessing`` block that would feed NaN or inf to the model (``bad_manifest``).

    A NaN input gives no error from the runtime, just meaningless accuracy, so this runs before
    install and before inference. ``mean`` and ``std`` are one number or one per channel.
    """
    if preprocessing is None:
        return
    if not isinstance(preprocessing, dict):
        raise VerificationError("Manifest 'preprocessing' is not an object.", kind="bad_manifest")
    channels = preprocessing.get("channels")
    values = {}
    problems = []
    for key, default in (("scale", 1.0), ("mean", 0.0), ("std", 1.0)):
        value = preprocessing.get(key, default)
        items = value if key != "scale" and isinstance(value, list) else [value]
        if not items or not all(_finite_number(item) for item in items):
            problems.append("%s is %r, not a finite number%s" % (key, value, "" if key == "scale" else " (or one per channel)"))
        elif len(items) > 1 and isinstance(channels, int) and len(items) != channels:
            problems.append("%s has %d values for %d channels" % (key, len(items), channels))
        elif key == "std" and any(item == 0 for item in items):
            problems.append("std is %r, and dividing by 0 gives inf" % (value,))
        else:
            values[key] = [float(item) for item in items]
    if not problems:
        # The largest |input| the formula can produce must still be a finite float32.
        scale = values["scale"][0]
        extreme = max(abs((x * scale - m) / d) for x in (0.0, 255.0) for m in values["mean"] for d in values["std"])
        if not extreme <= FLOAT32_MAX:
            problems.append("(x * scale - mean) / std overflows float32 for uint8 x")
    if problems:
        raise VerificationError("Manifest preprocessing cannot be applied: %s." % "; ".join(problems), kind="bad_manifest")


def preprocess(np, images, preprocessing, input_detail):
    """uint8 NHWC images -> model input with the manifest's formula, float32 = (x*scale - mean)/std
    (computed in float64, rounded once), then quantized with the input tensor's scale and zero
    point (round, clip to the dtype) if the model takes integers."""
    check_preprocessing(preprocessing)
    scale = float(preprocessing.get("scale", 1.0))
    mean = np.asarray(preprocessing.get("mean", 0.0), dtype=np.float64)
    std = np.asarray(preprocessing.get("std", 1.0), dtype=np.float64)
    x = ((images.astype(np.float64) * scale - mean) / std).astype(np.float32)
    dtype = np.dtype(input_detail["dtype"])
    if dtype == np.float32:
        return x
    if dtype.kind in "iu":
        q_scale, zero_point = input_detail.get("quantization", (0.0, 0))
        if not q_scale:
            raise AgentError("The model's %s input has no quantization scale." % dtype.name, kind="model")
        info = np.iinfo(dtype)
        q = np.round(x.astype(np.float64) / float(q_scale) + float(zero_point))
        return np.clip(q, info.min, info.max).astype(dtype)
    raise AgentError("Unsupported model input dtype %s." % dtype.name, kind="model")


def _class_vector(array, what, rel):
    """(N,) or (N, 1) -> (N,): compared with an (N,) prediction vector, (N, 1) would broadcast to N x N."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise AgentError("Eval %s %s have shape %s; expected (N,) or (N, 1) class indices." % (what, rel, array.shape), kind="bundle")
    return array


def load_eval(np, bundle_dir, manifest, warnings):
    """Eval images (uint8 NHWC), labels, host predictions (optional) and class names."""
    eval_spec = manifest.get("eval") or {}
    images = np.load(bundle_file(bundle_dir, manifest, eval_spec.get("inputs")), allow_pickle=False)
    labels = np.load(bundle_file(bundle_dir, manifest, eval_spec.get("labels")), allow_pickle=False)
    host = None
    if eval_spec.get("host_predictions"):
        host = np.load(bundle_file(bundle_dir, manifest, eval_spec["host_predictions"]), allow_pickle=False)
    else:
        warnings.append("The bundle has no host predictions; agreement_with_host is null.")
    if images.dtype != np.uint8:
        raise AgentError("Eval images are %s, expected raw uint8." % images.dtype, kind="bundle")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) == 0:
        raise AgentError("Eval images have shape %s, expected a non-empty N,H,W,C array." % (images.shape,), kind="bundle")
    labels = _class_vector(labels, "labels", eval_spec.get("labels"))
    if host is not None:
        host = _class_vector(host, "host predictions", eval_spec.get("host_predictions"))
    if len(labels) != len(images) or (host is not None and len(host) != len(images)):
        raise AgentError("Eval images, labels and host predictions differ in length.", kind="bundle")
    if eval_spec.get("count") is not None and int(eval_spec["count"]) != len(images):
        warnings.append("The manifest says %s eval images, the bundle has %d." % (eval_spec["count"], len(images)))
    class_names = None
    if manifest.get("labels"):
        with open(bundle_file(bundle_dir, manifest, manifest["labels"]), "r", encoding="utf-8") as handle:
            class_names = [line.rstrip("\n") for line in handle if line.strip()]
    return images, labels.astype(np.int64), (host.astype(np.int64) if host is not None else None), class_names


def check_input_shape(images, preprocessing, input_detail):
    """The model must take one [1, H, W, C] image matching the eval images and the manifest."""
    shape = [int(v) for v in input_detail["shape"]]
    image_shape = [int(v) for v in images.shape[1:]]
    declared = [preprocessing.get("height"), preprocessing.get("width"), preprocessing.get("channels")]
    if len(shape) != 4 or shape[0] != 1 or shape[1:] != image_shape:
        raise AgentError(
            "Model input shape %s does not take one eval image of shape %s." % (shape, image_shape), kind="model"
        )
    if all(v is not None for v in declared) and [int(v) for v in declared] != image_shape:
        raise AgentError(
            "Manifest preprocessing says HxWxC %s but the eval images are %s." % (declared, image_shape), kind="bundle"
        )


def load_model(np, runtime_name, interpreter_class, model_path, threads, images, preprocessing, warnings):
    """Build the interpreter and feed-ready inputs: ``(interpreter, init_ms, threads_used, delegate,
    input_detail, output_detail, inputs)``, one [1, H, W, C] array per eval image."""
    if runtime_name == "onnxruntime":
        interpreter, init_ms, threads_used, delegate = create_onnx_interpreter(interpreter_class, model_path, threads)
    else:
        interpreter, init_ms, threads_used, delegate = create_interpreter(interpreter_class, model_path, threads, warnings)
    input_details = interpreter.get_input_details()
    output_details = interpreter.get_output_details()
    if len(input_details) != 1 or len(output_details) < 1:
        raise AgentError("Expected a model with one input and an output, got %d inputs." % len(input_details), kind="model")
    input_detail, output_detail = input_details[0], output_details[0]
    check_input_shape(images, preprocessing, input_detail)
    prepared = preprocess(np, images, preprocessing, input_detail)
    inputs = [np.ascontiguousarray(prepared[i : i + 1]) for i in range(len(prepared))]
    return interpreter, init_ms, threads_used, delegate, input_detail, output_detail, inputs


def timed_invoke(interpreter):
    start = time.perf_counter()
    interpreter.invoke()
    return (time.perf_counter() - start) * 1000.0


def measure_latency(interpreter, input_index, inputs, warmup, runs, min_seconds, meter=None):
    """First invoke, ``warmup`` untimed invokes, then :func:`timed_samples`. Images rotate so
    caches see realistic inputs. ``meter`` (an :class:`EnergyMeter`) reads idle power right before
    the timed loop and samples the board's power in its own thread while the loop runs."""
    first = warm_up(interpreter, input_index, inputs, warmup)
    if meter is None:
        return first, timed_samples(interpreter, input_index, inputs, runs, min_seconds)
    meter.start()
    start = time.perf_counter()
    samples = timed_samples(interpreter, input_index, inputs, runs, min_seconds)
    meter.stop(time.perf_counter() - start, len(samples))
    return first, samples


def warm_up(interpreter, input_index, inputs, warmup):
    """The first invoke (timed: it is often much slower) and ``warmup`` untimed ones; returns ms."""
    count = len(inputs)
    interpreter.set_tensor(input_index, inputs[0])
    first = timed_invoke(interpreter)
    for i in range(warmup):
        interpreter.set_tensor(input_index, inputs[(i + 1) % count])
        interpreter.invoke()
    return first


def timed_samples(interpreter, input_index, inputs, runs, min_seconds, offset=0):
    """Timed invokes (ms) until both ``runs`` samples and ``min_seconds`` have passed, cycling
    through ``inputs`` from ``offset``; GC is paused so a collection cannot land in a sample."""
    count = len(inputs)
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        i = offset
        while len(samples) < runs or time.perf_counter() - start < min_seconds:
            interpreter.set_tensor(input_index, inputs[i % count])
            samples.append(timed_invoke(interpreter))
            i += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def evaluate(np, interpreter, input_index, output_index, inputs, labels, host):
    """Top-1 over the eval subset and image-by-image agreement with the host's predictions."""
    predictions = []
    for sample in inputs:
        interpreter.set_tensor(input_index, sample)
        interpreter.invoke()
        predictions.append(int(np.argmax(interpreter.get_tensor(output_index).reshape(-1))))
    predictions = np.asarray(predictions, dtype=np.int64)
    result = {
        "top1": float(np.mean(predictions == labels)),
        "count": int(len(predictions)),
        "agreement_with_host": None,
        "disagreements": [],
    }
    if host is not None:
        result["agreement_with_host"] = float(np.mean(predictions == host))
        result["disagreements"] = [
            {"index": int(i), "label": int(labels[i]), "host": int(host[i]), "device": int(predictions[i])}
            for i in np.nonzero(predictions != host)[0]
        ]
    return result


# ------------------------------------------------------------------------ benchmark_model cross-check

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_KEY_VALUE_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(%s)" % _NUM)
_RUNNING_RE = re.compile(
    r"Running benchmark for (?:at least )?(\d+) iterations?(?: and at least (%s) seconds)?" % _NUM
)
_TIMINGS_RE = re.compile(r"Inference timings in us:\s*(.*)")
_TIMING_ITEM_RE = re.compile(r"^\s*(.+?):\s*(%s)\s*$" % _NUM)
_MEMORY_RE = re.compile(
    r"(Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\):\s*"
    r"init=(%s)\s*,?\s*overall=(%s)" % (_NUM, _NUM)
)
_OVERALL_PEAK_RE = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(%s)" % _NUM)
_INIT_SESSION_RE = re.compile(r"Initialized session in\s*(%s)\s*ms" % _NUM)
_THREADS_RE = re.compile(r"Num threads:\s*\[(\d+)\]")
_GRAPH_RE = re.compile(r"Graph:\s*\[(.*)\]")
_TIMING_KEYS = {"init": "init", "first inference": "first", "warmup (avg)": "warmup_avg", "inference (avg)": "inference_avg"}
# stat-line key -> our latency_ms key, in the order they appear in summary_ms
_STAT_KEYS = (("avg", "mean"), ("std", "std"), ("min", "min"), ("max", "max"), ("p5", "p5"), ("median", "p50"), ("p95", "p95"))


def _number(text):
    """A finite float, or None (JSON has no NaN)."""
    value = float(text)
    return value if math.isfinite(value) else None


def _snake(label):
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _parse_stat_line(line, header):
    """``count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]`` -> dict.

    Values are microseconds; every key but ``count`` gets a ``_us`` suffix to say so."""
    stats = dict(header or {})
    for key, value in _KEY_VALUE_RE.findall(line[line.index("count="):]):
        if key == "count":
            stats["count"] = int(float(value))
        else:
            stats[key + "_us"] = _number(value)
    return stats


def _summary_ms(timings, warmup, inference, init_session_ms):
    """The numbers to compare with our own latency_ms, in ms and under the same key names."""

    def ms(value):
        return None if value is None else round(value / 1000.0, 9)

    timings = timings or {}
    warmup = warmup or {}
    inference = inference or {}
    summary = {
        "init": ms(timings.get("init")) if timings.get("init") is not None else init_session_ms,
        "first": ms(timings.get("first")),
        "warmup_avg": ms(timings.get("warmup_avg")),
        "count": inference.get("count"),
        "mean": ms(timings.get("inference_avg")),
    }
    if summary["first"] is None:
        summary["first"] = ms(warmup.get("first_us", warmup.get("curr_us")))
    if summary["warmup_avg"] is None:
        summary["warmup_avg"] = ms(warmup.get("avg_us"))
    for key, name in _STAT_KEYS:
        if summary.get(name) is None:
            summary[name] = ms(inference.get(key + "_us"))
    return summary


def parse_benchmark_output(text):
    """Parse TFLite ``benchmark_model`` output in either style it prints.

    * classic summary lines: ``Inference timings in us: Init: .., First inference: ..,
      Warmup (avg): .., Inference (avg): ..`` and ``Peak memory footprint (MB): init=.. overall=..``
      (newer tools: ``Memory footprint delta from the start of the tool (MB): ..``);
    * stat-summarizer lines: ``count=50 first=.. curr=.. min=.. max=.. avg=.. std=..`` after each
      ``Running benchmark for at least N iterations and at least S seconds`` header; with two
      blocks the first is the warmup and the last the measured run.

    Log prefixes (``INFO:``, logcat's ``I tflite  :``) are ignored by searching within lines.
    Raises ValueError if neither style is present.
    """
    result = {
        "formats": [], "graph": None, "num_threads": None, "init_session_ms": None,
        "timings_us": None, "stats": [], "memory_mb": None,
    }
    header = None
    for line in text.splitlines():
        match = _RUNNING_RE.search(line)
        if match:
            header = {"min_iterations": int(match.group(1))}
            if match.group(2) is not None:
                header["min_seconds"] = _number(match.group(2))
            continue
        if re.search(r"\bcount=\d", line):
            result["stats"].append(_parse_stat_line(line, header))
            header = None
            continue
        match = _TIMINGS_RE.search(line)
        if match:
            timings = {}
            for item in match.group(1).split(","):
                item_match = _TIMING_ITEM_RE.match(item)
                if item_match:
                    label = item_match.group(1).strip().lower()
                    timings[_TIMING_KEYS.get(label, _snake(label))] = _number(item_match.group(2))
            result["timings_us"] = timings
            continue
        match = _MEMORY_RE.search(line)
        if match:
            memory = result["memory_mb"] or {}
            memory.update({
                "measure": "peak" if match.group(1).startswith("Peak") else "delta",
                "init": _number(match.group(2)),
                "overall": _number(match.group(3)),
            })
            result["memory_mb"] = memory
            continue
        match = _OVERALL_PEAK_RE.search(line)
        if match:
            memory = result["memory_mb"] or {}
            memory["overall_peak"] = _number(match.group(1))
            result["memory_mb"] = memory
            continue
        match = _INIT_SESSION_RE.search(line)
        if match:
            result["init_session_ms"] = _number(match.group(1))
            continue
        match = _THREADS_RE.search(line)
        if match and result["num_threads"] is None:
            result["num_threads"] = int(match.group(1))
            continue
        match = _GRAPH_RE.search(line)
        if match and result["graph"] is None:
            result["graph"] = match.group(1)
    if result["timings_us"] is not None:
        result["formats"].append("classic")
    if result["stats"]:
        result["formats"].append("stats")
    if not result["formats"]:
        raise ValueError("no benchmark_model timings found (neither 'Inference timings in us' nor 'count=' lines)")
    stats = result["stats"]
    warmup = stats[0] if len(stats) > 1 else None
    inference = stats[-1] if stats else None
    result["summary_ms"] = _summary_ms(result["timings_us"], warmup, inference, result["init_session_ms"])
    return result


def resolve_benchmark_model(spec, warnings):
    """``auto`` -> ``benchmark_model`` on PATH; a missing tool is a warning, never a failure."""
    if not spec:
        return None
    if spec == "auto":
        path = shutil.which("benchmark_model")
        if not path:
            warnings.append("benchmark_model is not on PATH; the cross-check was skipped.")
        return path
    if os.path.isfile(spec) and os.access(spec, os.X_OK):
        return os.path.abspath(spec)
    warnings.append("benchmark_model %s is not an executable file; the cross-check was skipped." % spec)
    return None


def run_benchmark_model(path, model_path, threads, warnings):
    """Run the official tool on the same model and threads; return its parsed output or None."""
    command = [path, "--graph=" + os.path.abspath(model_path), "--num_threads=%d" % threads]
    try:
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BENCHMARK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        warnings.append("benchmark_model did not finish within %d s; the cross-check was skipped." % BENCHMARK_TIMEOUT_S)
        return None
    except OSError as exc:
        warnings.append("benchmark_model could not be run (%s); the cross-check was skipped." % exc)
        return None
    output = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        warnings.append("benchmark_model exited with status %d." % proc.returncode)
    try:
        parsed = parse_benchmark_output(output)
    except ValueError as exc:
        warnings.append("benchmark_model output could not be parsed (%s); last output: %s" % (exc, output[-500:].strip()))
        return None
    parsed.update({"path": path, "command": command, "returncode": proc.returncode})
    return parsed


# --------------------------------------------------------------------------------------- commands


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def runtime_info(np, name, version, threads, threads_used):
    """The ``runtime`` object of a record: what measured, and with how many threads."""
    return {"name": name, "version": version, "numpy": np.__version__, "threads_requested": threads, "threads_used": threads_used}


def cmd_doctor(args):
    if args.prefer:
        order = tuple(name.strip() for name in args.prefer.split(",") if name.strip())
        unknown = [name for name in order if name not in RUNTIME_ORDER + EXTRA_RUNTIMES]
        if unknown:
            raise UsageError("--prefer names unknown runtimes: %s" % ", ".join(unknown))
        versions = probe_runtimes(order, first_only=True)
        selected = next((name for name in order if versions.get(name)), None)
    else:
        versions = probe_runtimes()
        if args.runtime == "auto":
            selected = next((name for name in RUNTIME_ORDER if versions.get(name)), None)
        else:
            selected = args.runtime if versions.get(args.runtime) else None
    return {
        "python": platform.python_version(),
        "numpy": numpy_version(),
        "runtimes": versions,
        "not_probed": [name for name in RUNTIME_ORDER if name not in versions],
        "selected_runtime": selected,
        "machine": safe_probe(platform.machine) or None,
        "os": safe_probe(os_name),
        "termux": is_termux(),
        "cores": safe_probe(os.cpu_count),
        "glibc": safe_probe(glibc_version),
    }


def cmd_verify(args):
    manifest = verify_bundle(args.bundle)
    return {"ok": True, "bundle_id": manifest["bundle_id"]}


def cmd_install(args):
    limits = ArchiveLimits(
        members=args.max_members,
        file_bytes=int(args.max_file_mb * 1048576),
        total_bytes=int(args.max_total_mb * 1048576),
        ratio=args.max_ratio,
    )
    return install_bundle(args.tarball, args.releases_dir, limits)


def cmd_parse_benchmark(args):
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, "r", encoding="utf-8", errors="replace") as handle:
                text = handle.read()
    except OSError as exc:
        raise AgentError("Cannot read %s: %s" % (args.file, exc), kind="io")
    try:
        return parse_benchmark_output(text)
    except ValueError as exc:
        raise AgentError("%s: %s" % (args.file, exc), kind="parse")


def choose_runtime(args, manifests, warnings):
    """``--runtime`` (onnxruntime only if every bundle ships an ONNX model), ``--threads`` and the
    ``--emulated`` warning, shared by profile and ab: ``(name, version, interpreter class, threads)``."""
    choice = args.runtime
    if choice == "onnxruntime" and not all(onnx_model_file(m) for m in manifests):
        warnings.append("--runtime onnxruntime, but the bundle ships no ONNX model; profiled model.tflite with a TFLite runtime.")
        choice = "auto"
    name, version, interpreter_class = load_runtime(choice)
    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    if args.emulated:
        warnings.append("Measured under emulation (--emulated): latencies do not represent the real device.")
    return name, version, interpreter_class, threads


def cmd_profile(args):
    """Verify, load, measure, evaluate; the record layout is fixed by the README."""
    started_at = utc_now()
    warnings = []
    manifest = verify_bundle(args.bundle)
    onnx_model = onnx_model_file(manifest)
    runtime_name, runtime_version, interpreter_class, threads = choose_runtime(args, [manifest], warnings)
    import numpy as np

    preprocessing = manifest.get("preprocessing") or {}
    images, labels, host, class_names = load_eval(np, args.bundle, manifest, warnings)
    model_rel = onnx_model if runtime_name == "onnxruntime" else (manifest.get("model") or {}).get("file")
    model_path = bundle_file(args.bundle, manifest, model_rel)

    gc.collect()
    baseline_rss = current_rss_mb()
    interpreter, init_ms, threads_used, delegate, input_detail, output_detail, inputs = load_model(
        np, runtime_name, interpreter_class, model_path, threads, images, preprocessing, warnings
    )
    outputs = int(np.prod(output_detail["shape"]))
    if class_names is not None and outputs != len(class_names):
        warnings.append("The model has %d outputs but labels.txt names %d classes." % (outputs, len(class_names)))

    meter = EnergyMeter(warnings, off=args.no_energy)
    first_ms, samples = measure_latency(
        interpreter, input_detail["index"], inputs, args.warmup, args.runs, args.min_seconds, meter
    )
    energy, energy_unavailable = meter.result()
    device = device_fingerprint(args.emulated)
    n = len(inputs) if args.eval_images is None else min(args.eval_images, len(inputs))
    accuracy = evaluate(
        np, interpreter, input_detail["index"], output_detail["index"], inputs[:n], labels[:n], None if host is None else host[:n]
    )
    peak_rss = peak_rss_mb()
    if device["governor"] not in (None, "performance"):
        warnings.append("CPU governor is %r, not 'performance'; latencies may vary with frequency scaling." % device["governor"])

    benchmark = None
    tool = resolve_benchmark_model(args.benchmark_model, warnings)
    if tool and runtime_name == "onnxruntime":
        warnings.append("benchmark_model measures .tflite files only; skipped for the ONNX model.")
    elif tool:
        benchmark = run_benchmark_model(tool, model_path, threads, warnings)

    stats = summarize(samples)
    latency = {"init": _ms(init_ms), "first": _ms(first_ms), "warmup_count": args.warmup, "samples": [_ms(s) for s in samples]}
    latency.update((key, _ms(value) if key != "count" else value) for key, value in stats.items())
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "bundle_id": manifest["bundle_id"],
        "profile": manifest.get("profile"),
        "target": args.target,
        "started_at": started_at,
        "finished_at": utc_now(),
        "device": device,
        "runtime": dict(runtime_info(np, runtime_name, runtime_version, threads, threads_used), delegate=delegate),
        "latency_ms": latency,
        "memory": {"peak_rss_mb": peak_rss, "baseline_rss_mb": baseline_rss},
        "energy": energy,
        "energy_unavailable": energy_unavailable,
        "accuracy": accuracy,
        "benchmark_model": benchmark,
        "warnings": warnings,
    }


# ------------------------------------------------------------------------------------- A/B timing

AB_ARMS = ("a", "b")
# get_throttled flags that describe the state *now*; the sticky ever_* bits only say "since boot".
THROTTLING_NOW = ("under_voltage", "frequency_capped", "throttled", "soft_temp_limit")


def device_state():
    """What can change the speed of a block: throttling word, hottest zone, cpu0 frequency."""
    return {
        "throttled": safe_probe(throttling),
        "temperature_c": safe_probe(temperature_c),
        "frequency_mhz": safe_probe(cpu_frequency_mhz),
    }


def ab_order(blocks):
    """Pair i runs A then B when i is even, B then A when odd: drift affects both arms alike."""
    return [(pair, arm) for pair in range(blocks) for arm in (AB_ARMS if pair % 2 == 0 else AB_ARMS[::-1])]


def throttle_detail(blocks):
    """Why the A/B is not clean, or None: a reading with a current throttling flag, or a
    throttling word that differs from the previous reading (something happened in between)."""
    findings = []
    previous = None
    for index, block in enumerate(blocks):
        for when in ("before", "after"):
            state = block[when]["throttled"]
            if not isinstance(state, dict):
                continue
            where = "block %d (pair %d, arm %s), %s" % (index, block["pair"], block["arm"], when)
            flags = [flag.replace("_", " ") for flag in THROTTLING_NOW if state.get(flag)]
            if flags:
                findings.append("%s: %s (get_throttled=%s)" % (where, ", ".join(flags), state.get("raw")))
            elif previous is not None and state.get("raw") != previous[1]:
                findings.append("%s: get_throttled changed from %s (%s) to %s" % (where, previous[1], previous[0], state.get("raw")))
            previous = (where, state.get("raw"))
    if not findings:
        return None
    more = len(findings) - 1
    return findings[0] + ("; %d more reading%s flagged" % (more, "s" if more > 1 else "") if more else "")


def _ab_arm(np, bundle_dir, manifest, runtime_name, interpreter_class, threads, warnings, label):
    """One arm, ready to time: its interpreter fed its own bundle's eval inputs."""
    arm_warnings = []
    images = load_eval(np, bundle_dir, manifest, arm_warnings)[0]
    model_rel = onnx_model_file(manifest) if runtime_name == "onnxruntime" else (manifest.get("model") or {}).get("file")
    interpreter, init_ms, threads_used, _delegate, input_detail, _output, inputs = load_model(
        np, runtime_name, interpreter_class, bundle_file(bundle_dir, manifest, model_rel), threads, images,
        manifest.get("preprocessing") or {}, arm_warnings,
    )
    warnings.extend("%s: %s" % (label, w) for w in arm_warnings)
    return {
        "interpreter": interpreter, "index": input_detail["index"], "inputs": inputs, "next": 0,
        "threads_used": threads_used,
        "summary": {"bundle_id": manifest["bundle_id"], "profile": manifest.get("profile"), "init_ms": _ms(init_ms)},
    }


def cmd_ab(args):
    """Interleaved A/B timing of two bundles in one process; the record layout is in the README."""
    started_at = utc_now()
    warnings = []
    manifests = {"a": verify_bundle(args.bundle_a), "b": verify_bundle(args.bundle_b)}
    runtime_name, runtime_version, interpreter_class, threads = choose_runtime(args, list(manifests.values()), warnings)
    import numpy as np

    arms = {}
    for name, bundle in (("a", args.bundle_a), ("b", args.bundle_b)):
        arms[name] = _ab_arm(np, bundle, manifests[name], runtime_name, interpreter_class, threads, warnings, name.upper())
    for arm in arms.values():
        warm_up(arm["interpreter"], arm["index"], arm["inputs"], args.warmup)
        arm["next"] = args.warmup + 1

    blocks = []
    for pair, name in ab_order(args.blocks):
        arm = arms[name]
        before = device_state()
        samples = timed_samples(arm["interpreter"], arm["index"], arm["inputs"], args.runs_per_block,
                                args.min_block_seconds, arm["next"])
        after = device_state()
        arm["next"] += len(samples)
        blocks.append({
            "pair": pair, "arm": name, "samples": [_ms(s) for s in samples],
            "p50": _ms(percentile(sorted(samples), 50)), "before": before, "after": after,
        })

    device = device_fingerprint(args.emulated)
    if device["governor"] not in (None, "performance"):
        warnings.append("CPU governor is %r, not 'performance'; latencies may vary with frequency scaling." % device["governor"])
    readings = [block[when]["throttled"] for block in blocks for when in ("before", "after")]
    if any(r is None for r in readings) and any(r is not None for r in readings):
        warnings.append("The throttling state could not be read at %d of %d readings." % (readings.count(None), len(readings)))
    detail = throttle_detail(blocks)
    used = {arm["threads_used"] for arm in arms.values()}
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "kind": "ab",
        "target": args.target,
        "started_at": started_at,
        "finished_at": utc_now(),
        "device": device,
        "runtime": runtime_info(np, runtime_name, runtime_version, threads, used.pop() if len(used) == 1 else None),
        "a": arms["a"]["summary"],
        "b": arms["b"]["summary"],
        "blocks": blocks,
        "throttled": detail is not None,
        "throttle_detail": detail,
        "warnings": warnings,
    }


# ------------------------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so errors stay one JSON line (exit 2)."""

    def error(self, message):
        raise UsageError("%s: %s" % (self.prog, message))


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, got %d" % value)
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative, got %d" % value)
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("must be a finite number >= 0, got %s" % text)
    return value


def _positive_float(text):
    value = _non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0, got %s" % text)
    return value


def build_parser():
    parser = _Parser(prog="agent.py", description="edgeship device agent (see device_agents/README.md).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    runtime_choices = ("auto",) + RUNTIME_ORDER + EXTRA_RUNTIMES

    def add(name, func, help_text):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(func=func)
        command.add_argument("--output", metavar="FILE", help="write the JSON here (atomically) instead of stdout")
        return command

    doctor = add("doctor", cmd_doctor, "report Python, numpy and which TFLite runtimes import")
    doctor.add_argument("--runtime", choices=runtime_choices, default="auto", help="runtime to report as selected")
    doctor.add_argument(
        "--prefer", metavar="A,B", help="probe only these runtimes, in this order, stopping at the first that imports"
    )

    verify = add("verify", cmd_verify, "check every bundle file against manifest.json")
    verify.add_argument("bundle", metavar="BUNDLE_DIR")

    install = add("install", cmd_install, "safely extract, verify and activate a bundle tarball")
    install.add_argument("tarball", metavar="TARBALL")
    install.add_argument("releases_dir", metavar="RELEASES_DIR")
    install.add_argument("--max-members", type=_positive_int, default=DEFAULT_MAX_MEMBERS,
                         help="most archive members accepted (default %d)" % DEFAULT_MAX_MEMBERS)
    install.add_argument("--max-file-mb", type=_positive_float, default=DEFAULT_MAX_FILE_MB,
                         help="largest file accepted, in MiB (default %d)" % DEFAULT_MAX_FILE_MB)
    install.add_argument("--max-total-mb", type=_positive_float, default=DEFAULT_MAX_TOTAL_MB,
                         help="most unpacked bytes accepted, in MiB (default %d)" % DEFAULT_MAX_TOTAL_MB)
    install.add_argument("--max-ratio", type=_positive_float, default=DEFAULT_MAX_RATIO,
                         help="most unpacked bytes per archive byte, above 1 MiB unpacked (default %g)" % DEFAULT_MAX_RATIO)

    profile = add("profile", cmd_profile, "verify a bundle, then measure latency, memory and accuracy")
    profile.add_argument("bundle", metavar="BUNDLE_DIR")
    profile.add_argument("--target", required=True, help="target name recorded in the profile")
    profile.add_argument("--threads", type=_positive_int, default=None, help="interpreter threads (default: all cores)")
    profile.add_argument("--runs", type=_positive_int, default=50, help="minimum timed invokes (default 50)")
    profile.add_argument("--min-seconds", type=_non_negative_float, default=1.0, help="minimum timed seconds (default 1)")
    profile.add_argument("--warmup", type=_non_negative_int, default=5, help="untimed invokes after the first (default 5)")
    profile.add_argument("--runtime", choices=runtime_choices, default="auto",
                         help="force one TFLite runtime, or onnxruntime to profile the bundle's model.onnx")
    profile.add_argument("--eval-images", type=_positive_int, default=None, metavar="N",
                         help="score accuracy on the first N eval images only (default: all); timing still cycles through all")
    profile.add_argument("--emulated", action="store_true", help="mark the device as emulated (e.g. qemu-user)")
    profile.add_argument("--no-energy", action="store_true",
                         help="do not sample vcgencmd pmic_read_adc during the timed loop (energy: null)")
    profile.add_argument("--benchmark-model", metavar="PATH|auto", default=None,
                         help="also run TFLite's benchmark_model on the same model; 'auto' looks on PATH")

    ab = add("ab", cmd_ab, "time two bundles in interleaved, counterbalanced blocks (ABBA) in one process")
    ab.add_argument("bundle_a", metavar="BUNDLE_A", help="the baseline release")
    ab.add_argument("bundle_b", metavar="BUNDLE_B", help="the candidate release")
    ab.add_argument("--target", required=True, help="target name recorded in the result")
    ab.add_argument("--blocks", type=_positive_int, default=8, help="pairs of blocks, AB then BA alternately (default 8)")
    ab.add_argument("--runs-per-block", type=_positive_int, default=30, help="minimum timed invokes per block (default 30)")
    ab.add_argument("--min-block-seconds", type=_non_negative_float, default=0.2,
                    help="minimum timed seconds per block (default 0.2)")
    ab.add_argument("--warmup", type=_non_negative_int, default=5, help="untimed invokes per model after the first (default 5)")
    ab.add_argument("--threads", type=_positive_int, default=None, help="interpreter threads for both (default: all cores)")
    ab.add_argument("--runtime", choices=runtime_choices, default="auto", help="one runtime for both models")
    ab.add_argument("--emulated", action="store_true", help="mark the device as emulated (e.g. qemu-user)")

    parse = add("parse-benchmark", cmd_parse_benchmark, "parse saved benchmark_model output (either format)")
    parse.add_argument("file", metavar="FILE", help="saved output, or - for stdin")
    return parser


def write_atomic(path, text):
    """tmp file in the same directory + fsync + os.replace: readers see the old or the new file."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class StdoutGuard(object):
    """Point fd 1 at stderr while commands run, so stray prints from runtimes or numpy can never
    corrupt the one JSON document; the document itself goes to the saved real stdout."""

    def __init__(self):
        self._saved = None

    def __enter__(self):
        try:
            sys.stdout.flush()
            self._saved = os.dup(1)
            os.dup2(2, 1)
        except (OSError, ValueError, AttributeError):
            self._saved = None
        return self

    def write(self, text):
        sys.stdout.flush()
        if self._saved is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        data = text.encode("utf-8")
        while data:
            written = os.write(self._saved, data)
            data = data[written:]

    def __exit__(self, *exc_info):
        if self._saved is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            os.dup2(self._saved, 1)
            os.close(self._saved)
        return False


def print_error(message, kind):
    """The failure contract: exactly one JSON line on stderr."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    sys.stderr.write(json.dumps({"error": message, "kind": kind}) + "\n")
    sys.stderr.flush()


def main(argv=None):
    """Parse (outside the stdout guard, so --help reaches stdout), run, emit, map errors to exits."""
    try:
        args = build_parser().parse_args(argv)
    except AgentError as exc:
        print_error(str(exc), exc.kind)
        return exc.exit_code
    with StdoutGuard() as stdout:
        try:
            result = args.func(args)
            text = json.dumps(result, indent=2, allow_nan=False) + "\n"
            if args.output:
                write_atomic(args.output, text)
            else:
                stdout.write(text)
            return EXIT_OK
        except AgentError as exc:
            print_error(str(exc), exc.kind)
            return exc.exit_code
        except KeyboardInterrupt:
            print_error("Interrupted.", "interrupted")
            return EXIT_OTHER
        except Exception as exc:
            print_error("%s: %s" % (type(exc).__name__, exc), "internal")
            return EXIT_OTHER


if __name__ == "__main__":
    sys.exit(main())
