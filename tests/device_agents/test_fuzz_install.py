"""Fuzz the agent's ``install`` and ``verify`` with hostile archives and manifests (hypothesis).

Every input starts as a real bundle's archive (or directory) and gets a few hostile changes:
traversal names, links and special files, duplicates, bombs, lying sizes, sparse members, NaN and
other wrong manifest values, wrong ids and schemas, corrupt or non-gzip bytes. For every input:

* the agent either accepts or raises an ``AgentError`` with a kind: any other exception fails;
* nothing outside the releases directory changes (the sandbox around it is compared byte for byte);
* an accepted bundle re-verifies and holds exactly the content that was sealed under its id.

Generation is derandomized (fixed seed, no example database), so CI runs the same inputs each time.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import contextlib
import shutil
import signal
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.device_agents import tarballs
from tests.helpers.agent_runner import AGENT_PYTHON, MAIN_PYTHON, copy_bundle, load_agent_module, run_agent

INSTALL_EXAMPLES = 1500
VERIFY_EXAMPLES = 500
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
KINDS = {"verification", "unsafe_archive", "bad_archive", "archive_limits", "bad_manifest", "size_mismatch", "install"}
DEAD_PID = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1 if Path("/proc/sys/kernel/pid_max").exists() else 2**22 + 1
MIB = 1 << 20


class World:
    """The sandbox and the one genuine bundle every input is made from.

    ``sandbox/releases`` is where the agent may write; ``sandbox/outside`` holds files that
    traversal names and link targets aim at. ``known`` maps each id that was ever sealed to the
    content sealed under it.
    """

    def __init__(self, agent: Any, bundle: Path, root: Path):
        self.agent = agent
        self.root = root
        self.releases = root / "releases"
        self.outside = root / "outside"
        self.inputs = root / "inputs"
        for path in (self.releases, self.outside, self.inputs):
            path.mkdir()
        (self.outside / "secret").write_bytes(b"do not touch")
        (self.outside / "model.tflite").write_bytes((bundle / "model.tflite").read_bytes())
        self.bundle = copy_bundle(bundle, root / "template")
        self.bundle_id = bundle.name
        self.members = tarballs.bundle_members(self.bundle)
        self.known = {self.bundle_id: content_of_members(self.members)}
        self.installed = root / "installed"  # a verified install to seed "already there" states
        self.installed.mkdir()
        agent.install_bundle(self.write_input(tarballs.gz(tarballs.tar_bytes(self.members))), str(self.installed))
        self.baseline = snapshot(root, skip={self.releases, self.inputs})


    def write_input(self, data: bytes) -> str:
        path = self.inputs / "bundle.tar.gz"
        path.write_bytes(data)
        return str(path)

    def reset_releases(self) -> None:
        shutil.rmtree(self.releases)
        self.releases.mkdir()


def content_of_members(members: list) -> dict:
    files = {}
    for member, data in members:
        rel = member.name.split("/", 1)[1] if "/" in member.name else ""
        if member.isfile():
            files[rel] = json.loads(data) if rel == "manifest.json" else data
    return files


def content_of_dir(root: Path) -> dict:
    files = {}
    for path in root.rglob("*"):
        mode = path.lstat().st_mode
        assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), f"accepted bundle holds {path}, which is neither a file nor a directory"
        if stat.S_ISREG(mode):
            rel = path.relative_to(root).as_posix()
            files[rel] = json.loads(path.read_bytes()) if rel == "manifest.json" else path.read_bytes()
    return files


def snapshot(root: Path, skip: set) -> dict:
    """Everything under ``root`` except the ``skip`` trees: type, bytes or link target, mode."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                seen[rel] = ("file", info.st_mode, path.read_bytes())
            else:
                seen[rel] = ("other", info.st_mode)
    return seen


def same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def same_content(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(same_json(a[k], b[k]) if k == "manifest.json" else a[k] == b[k] for k in a)


# ------------------------------------------------------------------------------- manifest values

NASTY_VALUES = [
    float("nan"), float("inf"), float("-inf"), 0, -1, 1e308, 10**400, True, None, "x", "", [], {}, [0.0, float("nan")],
    "0123456789abcdef", "0123456789abcdef\n", "../../outside", 2, 1, 3, "2", 2.0,
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
MANIFEST_PATHS = [
    ("preprocessing", "scale"), ("preprocessing", "mean"), ("preprocessing", "std"), ("preprocessing",), ("bundle_id",),
    ("schema_version",), ("files",), ("model", "bytes"), ("model", "file"), ("model",), ("eval", "labels"),
    ("eval", "inputs"), ("eval", "count"), ("labels",), ("profile",), ("extra_models",), ("new_key",),
]


def edit_manifest(draw: Callable, data: dict) -> dict:
    """One wrong value at one place of ``data`` (a copy is changed)."""
    data = json.loads(json.dumps(data))
    keys = draw(st.sampled_from(MANIFEST_PATHS))
    if keys == ("files",):
        files = data.get("files")
        if not isinstance(files, dict) or not files:
            data["files"] = {}
            return data
        victim = draw(st.sampled_from(sorted(files)))
        action = draw(st.sampled_from(["drop", "digest", "add", "escape", "not-a-dict"]))
        if action == "drop":
            del files[victim]
        elif action == "digest":
            files[victim] = "0" * 64
        elif action == "add":
            files["eval/extra.npy"] = files[victim]
        elif action == "escape":
            files["../outside/secret"] = files.pop(victim)
        else:
            data["files"] = sorted(files)
        return data
    value = draw(st.sampled_from(NASTY_VALUES) | json_values)
    target = data
    for key in keys[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[keys[-1]] = value
    return data


def raw_manifest(draw: Callable) -> bytes:
    return draw(
        st.sampled_from([b"", b"not json", b"[]", b'"a string"', b"\xff\xfe{}", b"[" * 50000, b"{" * 20 + b"}" * 20, b"NaN"])
        | st.binary(max_size=64)
        | st.builds(lambda v: json.dumps(v).encode(), json_values)
    )


# --------------------------------------------------------------------------------- member edits

ZEROS = {size: bytes(size * MIB) for size in (2, 5)}


def _name(draw: Callable, world: World, top: str) -> str:
    outside = str(world.outside)
    return draw(
        st.sampled_from(
            [
                "../evil", f"{top}/../../evil", f"{top}/../evil", f"{outside}/evil", f"{top}\\..\\..\\evil", "C:evil",
                f"{top}/./../../evil", "./../evil", f"{top}//..//..//evil", "..", f"{top}/..", f"{top}/eval/../../evil",
                f"{top}/model.tflite", f"{top}/manifest.json", f"{top}/eval", f"{top}/model.tflite/inner", "evil",
                f"{top}/x" * 60, f"{top}/" + "n" * 300, f"{top}/evil", f"{top}/eval/new.npy", f"{top}/caf\u00e9", f"{top}/a\x01b",
            ]
        )
        | st.text(min_size=1, max_size=20).map(lambda t: f"{top}/{t}")
    )


MEMBER_TYPES = [
    tarfile.REGTYPE, tarfile.CONTTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
    tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.GNUTYPE_SPARSE, b"Z", b"V",
]


def add_hostile(draw: Callable, world: World, members: list, top: str) -> list:
    kind = draw(st.sampled_from(MEMBER_TYPES))
    link = draw(st.sampled_from([str(world.outside), str(world.outside / "secret"), "../../outside", f"{top}/model.tflite", "/etc/passwd", ""]))
    data = draw(st.binary(max_size=32)) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE) else b""
    member = tarballs.info(_name(draw, world, top), kind, data, link)
    if kind == tarfile.REGTYPE and draw(st.booleans()):
        member.pax_headers = {"GNU.sparse.map": draw(st.sampled_from(["0,4", "x,y", "1", ""])), "GNU.sparse.size": "4096"}
    position = draw(st.integers(0, len(members)))
    return members[:position] + [(member, data or None)] + members[position:]


def duplicate(draw: Callable, world: World, members: list, top: str) -> list:
    member, data = draw(st.sampled_from(members))
    if member.isfile() and draw(st.booleans()):
        return members + [tarballs.file_member(member.name, draw(st.binary(max_size=64)))]
    return members + [(member, data)]


def bomb(draw: Callable, world: World, members: list, top: str) -> list:
    return members + [tarballs.file_member(f"{top}/eval/padding.bin", ZEROS[draw(st.sampled_from(sorted(ZEROS)))])]


def flip(draw: Callable, world: World, members: list, top: str) -> list:
    files = [i for i, (member, data) in enumerate(members) if member.isfile() and data]
    index = draw(st.sampled_from(files))
    member, data = members[index]
    changed = bytearray(data)
    changed[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return members[:index] + [tarballs.file_member(member.name, bytes(changed))] + members[index + 1 :]


def drop(draw: Callable, world: World, members: list, top: str) -> list:
    index = draw(st.integers(0, len(members) - 1))
    return members[:index] + members[index + 1 :]


def shuffle(draw: Callable, world: World, members: list, top: str) -> list:
    return draw(st.permutations(members))


def manifest_value(draw: Callable, world: World, members: list, top: str) -> list:
    name = f"{top}/manifest.json"
    if not any(member.name == name for member, _ in members):
        return members
    try:
        data = tarballs.manifest_of(members)
    except (ValueError, RecursionError):  # an earlier edit left no JSON
        data = None
    if draw(st.booleans()) or not isinstance(data, dict):
        return tarballs.replace_data(members, name, raw_manifest(draw))
    data = edit_manifest(draw, data)
    return tarballs.replace_data(members, name, json.dumps(data).encode())


def rename_top(draw: Callable, world: World, members: list, top: str) -> list:
    new = draw(
        st.sampled_from([top + "\n", top.upper(), top[:-1], "..", ".", "", f"{top}/{top}", str(world.outside), "0123456789abcdef"])
        | st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)
    )
    return [(tarballs.info(new + m.name[len(top):], m.type, d or b"", m.linkname), d) for m, d in members]


MEMBER_EDITS = [add_hostile, duplicate, bomb, flip, drop, shuffle, manifest_value, rename_top]


# ---------------------------------------------------------------------------------- byte edits


def serialize(draw: Callable, members: list) -> bytes:
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
    try:
        raw = tarballs.tar_bytes(members, fmt)
    except ValueError:  # USTAR cannot hold long or non-ASCII names
        raw = tarballs.tar_bytes(members, tarfile.PAX_FORMAT)
    edit = draw(st.sampled_from(["none"] * 6 + ["lie", "truncate", "flip", "append", "prepend", "plain", "bz2", "xz", "random", "longname"]))
    if edit == "lie":
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            count = len(tar.getmembers())
        index = draw(st.integers(0, count - 1))
        raw = tarballs.lie_about_size(raw, index, draw(st.sampled_from([0, 1, 511, 513, 4096, 2**33, 8**11 - 1]) | st.integers(0, 10**6)))
    elif edit == "plain":
        return raw
    elif edit == "bz2":
        return bz2.compress(raw)
    elif edit == "xz":
        return lzma.compress(raw)
    elif edit == "random":
        return draw(st.binary(max_size=2048))
    elif edit == "longname":
        header = tarfile.TarInfo("././@LongLink")
        header.type = tarfile.GNUTYPE_LONGNAME
        header.size = len(ZEROS[5])
        raw = header.tobuf(tarfile.GNU_FORMAT) + ZEROS[5] + raw
    data = tarballs.gz(raw, level=draw(st.sampled_from([1, 6, 9])))
    if edit == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif edit == "flip":
        data = bytearray(data)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4)):
            data[position] ^= 0xFF
        data = bytes(data)
    elif edit == "append":
        data += draw(st.binary(min_size=1, max_size=600)) if draw(st.booleans()) else gzip.compress(b"\0" * 1024)
    elif edit == "prepend":
        data = draw(st.binary(min_size=1, max_size=16)) + data
    return data


def draw_limits(draw: Callable, agent: Any) -> Any:
    if draw(st.integers(0, 4)):
        return None  # the defaults, most of the time
    return agent.ArchiveLimits(
        members=draw(st.integers(1, 30)),
        file_bytes=draw(st.integers(1, 100_000)),
        total_bytes=draw(st.integers(1, 200_000)),
        ratio=draw(st.floats(0.01, 50)),
    )


PRE_STATES = ["empty"] * 6 + ["installed", "damaged", "partial-link", "final-link", "stale-broken-link"]


def seed_releases(world: World, state: str) -> None:
    final = world.releases / world.bundle_id
    if state in ("installed", "damaged"):
        shutil.copytree(world.installed / world.bundle_id, final)
        if state == "damaged":
            (final / "model.tflite").write_bytes(b"damaged")
    elif state == "partial-link":
        (world.releases / f"{world.bundle_id}.partial").symlink_to(world.outside)
    elif state == "final-link":
        final.symlink_to(world.outside)
    elif state == "stale-broken-link":
        (world.releases / f"{world.bundle_id}.broken-{DEAD_PID}").symlink_to(world.outside)


def forge(draw: Callable, world: World) -> tuple:
    """A consistently resealed variant (a new valid id) or the genuine bundle, to edit further."""
    if draw(st.integers(0, 3)):
        return list(world.members), world.bundle_id
    change = edit_manifest(draw, tarballs.manifest_of(world.members))
    try:
        members = tarballs.resealed_members(world.agent, world.members, lambda m: (m.clear(), m.update(change)))
    except ValueError:  # NaN and infinity cannot be sealed into an id
        return list(world.members), world.bundle_id
    top = members[0][0].name
    world.known.setdefault(top, content_of_members(members))
    return members, top


class Hung(Exception):
    """Not an OSError (as TimeoutError is), so no ``except OSError`` in the agent can swallow it."""


@contextlib.contextmanager
def hang_guard(seconds: float = 10.0):
    """A call that blocks (say, opening a FIFO) fails its example instead of stalling the suite."""

    def expire(signum, frame):
        raise Hung(f"the agent call did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def world(tiny_bundle_int8: Path, tmp_path_factory: pytest.TempPathFactory):
    agent = load_agent_module()
    shm = Path("/dev/shm")  # tmpfs: fsync is free, so a thousand installs stay quick
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("fuzz")
    root = Path(tempfile.mkdtemp(prefix="edgeship-fuzz-", dir=parent))
    try:
        yield World(agent, tiny_bundle_int8, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def check_accepted(world: World, path: Path, bundle_id: str) -> None:
    assert path.name == bundle_id and bundle_id in world.known, f"accepted an id nobody sealed: {bundle_id!r}"
    assert world.agent.verify_bundle(str(path))["bundle_id"] == bundle_id
    assert same_content(content_of_dir(path), world.known[bundle_id]), f"accepted {bundle_id} with other content"


def test_fuzz_install(world: World) -> None:
    outcomes: dict = {}

    @settings(FUZZ, max_examples=INSTALL_EXAMPLES)
    @given(st.data())
    def install_one(data: st.DataObject) -> None:
        draw = data.draw
        world.reset_releases()
        members, top = forge(draw, world)
        for edit in draw(st.lists(st.sampled_from(MEMBER_EDITS), max_size=3)):
            members = edit(draw, world, members, top)
        tarball = world.write_input(serialize(draw, members))
        limits = draw_limits(draw, world.agent)
        state = draw(st.sampled_from(PRE_STATES))
        seed_releases(world, state)
        before = set(os.listdir(world.releases))
        try:
            with hang_guard():
                result = world.agent.install_bundle(tarball, str(world.releases), limits)
        except world.agent.AgentError as exc:
            assert exc.kind in KINDS and str(exc), (exc.kind, str(exc))
            assert exc.kind != "install" or state == "final-link", str(exc)  # only a release we must not replace
            assert set(os.listdir(world.releases)) <= before, "a refused install left something in releases/"
            outcome = exc.kind
        else:
            assert set(os.listdir(world.releases)) - before <= {result["bundle_id"]}
            check_accepted(world, Path(result["path"]), result["bundle_id"])
            outcome = "accepted"
        assert snapshot(world.root, skip={world.releases, world.inputs}) == world.baseline, "wrote outside releases/"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    install_one()
    print("install outcomes:", outcomes)
    assert sum(outcomes.values()) >= INSTALL_EXAMPLES
    assert outcomes.get("accepted", 0) > 0 and len(outcomes) >= 6  # the inputs reached both sides and many checks


VERIFY_EDITS = ["manifest", "raw-manifest", "flip", "delete", "extra", "symlink", "fifo", "hardlink", "empty-dir", "dir-for-file", "rename"]


def _verify_edit(draw: Callable, world: World, bundle: Path) -> Path:
    edit = draw(st.sampled_from(VERIFY_EDITS))
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        return bundle
    victim = draw(st.sampled_from(files))
    try:
        return _apply_verify_edit(draw, world, bundle, edit, victim)
    except OSError:  # an earlier edit took what this one needs (e.g. the eval folder)
        return bundle


def _replace(path: Path, data: bytes) -> None:
    """A new file in place of ``path``: writing through an earlier edit's link would change the target."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _apply_verify_edit(draw: Callable, world: World, bundle: Path, edit: str, victim: Path) -> Path:
    if edit == "manifest":
        path = bundle / "manifest.json"
        try:  # an earlier edit may have removed it, broken it or made it a FIFO
            data = json.loads(path.read_bytes()) if stat.S_ISREG(path.lstat().st_mode) else None
        except (OSError, ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            _replace(path, json.dumps(edit_manifest(draw, data)).encode())
    elif edit == "raw-manifest":
        _replace(bundle / "manifest.json", raw_manifest(draw))
    elif edit == "flip":
        data = bytearray(victim.read_bytes())
        data[draw(st.integers(0, len(data) - 1))] ^= 0x01
        _replace(victim, bytes(data))
    elif edit == "delete":
        victim.unlink()
    elif edit == "extra":
        _replace(bundle / draw(st.sampled_from(["extra.bin", "eval/extra.npy", ".hidden"])), b"extra")
    elif edit in ("symlink", "hardlink"):
        target = draw(st.sampled_from([world.outside / "secret", world.outside / "model.tflite", bundle / "model.tflite"]))
        victim.unlink()
        (victim.symlink_to if edit == "symlink" else victim.hardlink_to)(target)
    elif edit == "fifo":
        victim.unlink()
        os.mkfifo(victim)
    elif edit == "empty-dir":
        (bundle / "eval" / "empty").mkdir(exist_ok=True)
    elif edit == "dir-for-file":
        victim.unlink()
        victim.mkdir()
    else:
        bundle = bundle.rename(bundle.with_name(draw(st.sampled_from(["0123456789abcdef", world.bundle_id.upper(), "x"]))))
    return bundle


def test_fuzz_verify(world: World) -> None:
    outcomes: dict = {}

    @settings(FUZZ, max_examples=VERIFY_EXAMPLES)
    @given(st.data())
    def verify_one(data: st.DataObject) -> None:
        draw = data.draw
        world.reset_releases()
        bundle = Path(shutil.copytree(world.bundle, world.releases / world.bundle_id))
        for _ in range(draw(st.integers(1, 3))):
            bundle = _verify_edit(draw, world, bundle)
        before = snapshot(world.releases, skip=set())
        try:
            with hang_guard():
                manifest = world.agent.verify_bundle(str(bundle))
        except world.agent.VerificationError as exc:
            assert exc.kind and str(exc)
            outcome = "refused"
        else:
            check_accepted(world, bundle, manifest["bundle_id"])
            outcome = "accepted"
        assert snapshot(world.releases, skip=set()) == before, "verify changed the bundle"
        assert snapshot(world.root, skip={world.releases, world.inputs}) == world.baseline
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    verify_one()
    print("verify outcomes:", outcomes)
    assert sum(outcomes.values()) >= VERIFY_EXAMPLES and outcomes.get("refused", 0) > VERIFY_EXAMPLES // 2


# --------------------------------------------------------------------------- through the real CLI


def _cli_cases(world: World) -> dict:
    top = world.bundle_id
    base = world.members
    link = tarballs.info(f"{top}/evil", tarfile.SYMTYPE, linkname=str(world.outside / "secret"))
    nan = tarballs.manifest_of(base)
    nan["preprocessing"]["mean"] = float("nan")
    last = len(base) - 1
    return {
        "traversal": (tarballs.gz(tarballs.tar_bytes(base + [tarballs.file_member(f"{top}/../../evil", b"x")])), "unsafe_archive"),
        "symlink": (tarballs.gz(tarballs.tar_bytes(base + [(link, None)])), "unsafe_archive"),
        "bomb": (tarballs.gz(tarballs.tar_bytes(base + [tarballs.file_member(f"{top}/pad", ZEROS[5])]), 9), "archive_limits"),
        "nan": (tarballs.gz(tarballs.tar_bytes(tarballs.replace_data(base, f"{top}/manifest.json", json.dumps(nan).encode()))), "bad_manifest"),
        "lying-size": (tarballs.gz(tarballs.lie_about_size(tarballs.tar_bytes(base), last, base[-1][0].size + 99999)), "bad_archive"),
        "huge-size": (tarballs.gz(tarballs.lie_about_size(tarballs.tar_bytes(base), last, 2**33)), "archive_limits"),
        "not-gzip": (tarballs.tar_bytes(base), "bad_archive"),
    }


@pytest.mark.parametrize("case", ["traversal", "symlink", "bomb", "nan", "lying-size", "huge-size", "not-gzip"])
def test_hostile_archives_through_the_cli(world: World, case: str) -> None:
    data, kind = _cli_cases(world)[case]
    world.reset_releases()
    python = AGENT_PYTHON if AGENT_PYTHON.exists() else MAIN_PYTHON
    result = run_agent("install", world.write_input(data), world.releases, python=python)
    assert result.returncode == 3 and result.stdout == ""
    assert result.error["kind"] == kind, result.error
    assert list(world.releases.iterdir()) == []
    assert snapshot(world.root, skip={world.releases, world.inputs}) == world.baseline


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_verify_never_opens_a_manifest_that_is_not_a_regular_file(world: World, tmp_path: Path, kind: str) -> None:
    """Found by the fuzz: opening a FIFO manifest blocked verify forever; a link could point at /dev/zero."""
    bundle = copy_bundle(world.bundle, tmp_path)
    (bundle / "manifest.json").unlink()
    if kind == "fifo":
        os.mkfifo(bundle / "manifest.json")
    else:
        (bundle / "manifest.json").symlink_to("/dev/zero")
    result = run_agent("verify", bundle, timeout=30)
    assert result.returncode == 3 and result.error["kind"] == "verification"
    assert "manifest.json is unreadable" in result.error["error"]
