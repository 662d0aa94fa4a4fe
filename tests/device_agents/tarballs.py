"""Build bundle archives member by member, including ones no honest tar writer produces.

The install tests and the fuzz test start from a real bundle's members and change them: an extra
hostile member, a header that lies about its size, a sparse member, a rewritten manifest.
"""

from __future__ import annotations

import gzip
import inspect
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Callable, Optional

MANIFEST = "manifest.json"

Member = tuple[tarfile.TarInfo, Optional[bytes]]


def info(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = linkname
    member.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    member.size = len(data) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE) else 0
    return member


def file_member(name: str, data: bytes) -> Member:
    return info(name, data=data), data


def bundle_members(bundle: Path, top: Optional[str] = None) -> list[Member]:
    """Every directory and file of ``bundle`` under the top folder ``top`` (default: its name)."""
    top = top or bundle.name
    members: list[Member] = [(info(top, tarfile.DIRTYPE), None)]
    for path in sorted(bundle.rglob("*")):
        name = f"{top}/{path.relative_to(bundle).as_posix()}"
        members.append((info(name, tarfile.DIRTYPE), None) if path.is_dir() else file_member(name, path.read_bytes()))
    return members


def replace_data(members: list[Member], name: str, data: bytes) -> list[Member]:
    """``members`` with the file ``name`` holding ``data`` instead (its header size follows)."""
    return [file_member(name, data) if member.name == name else (member, old) for member, old in members]


def manifest_of(members: list[Member]) -> dict:
    return json.loads(next(data for member, data in members if member.name.endswith("/manifest.json") and data is not None))


def tar_bytes(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None and member.size else None)
    return buffer.getvalue()


def gz(raw: bytes, level: int = 6) -> bytes:
    return gzip.compress(raw, compresslevel=level, mtime=0)


def lie_about_size(raw: bytes, index: int, size: int) -> bytes:
    """Uncompressed tar ``raw`` whose ``index``-th member header claims ``size`` bytes (checksum fixed)."""
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        offset = tar.getmembers()[index].offset
    header = bytearray(raw[offset : offset + tarfile.BLOCKSIZE])
    if size < 8**11:
        header[124:136] = b"%011o\0" % size
    else:  # GNU base-256 for sizes octal cannot hold
        header[124:136] = bytes([0x80]) + size.to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return raw[:offset] + bytes(header) + raw[offset + tarfile.BLOCKSIZE :]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def seal(agent: Any, manifest: dict, files: dict) -> dict:
    """``manifest`` with ``files`` and the id the agent's own ``compute_bundle_id`` gives them.

    Schema 1 hashed the files alone, schema 2 the canonical manifest; asking the agent keeps these
    tests independent of which contract it implements.
    """
    data = {key: value for key, value in manifest.items() if key != "bundle_id"}
    data.update(files=files, schema_version=agent.SCHEMA_VERSION)
    data = json.loads(json.dumps(data))
    by_files = list(inspect.signature(agent.compute_bundle_id).parameters)[0] == "files"
    data["bundle_id"] = agent.compute_bundle_id(files if by_files else data)
    return data


def reseal(agent: Any, bundle: Path, change: Optional[Callable[[dict], Any]] = None) -> Path:
    """Re-hash ``bundle`` after its files (and, with ``change``, its manifest) were edited: a
    consistently sealed bundle renamed to its new id, as the host's writer would make it."""
    data = json.loads((bundle / MANIFEST).read_text())
    if change:
        change(data)
    files, problems = agent.scan_bundle(str(bundle))
    assert not problems, problems
    data = seal(agent, data, files)
    bundle = bundle.rename(bundle.with_name(data["bundle_id"]))
    (bundle / MANIFEST).write_text(json.dumps(data))
    return bundle


def resealed_members(agent: Any, members: list[Member], change: Callable[[dict], Any]) -> list[Member]:
    """Archive members whose manifest got ``change`` and was sealed again, top folder renamed to the new id."""
    old = members[0][0].name.split("/")[0]
    data = manifest_of(members)
    change(data)
    data = seal(agent, data, data["files"])
    new = data["bundle_id"]
    renamed = []
    for member, payload in members:
        name = new + member.name[len(old):]
        if name == f"{new}/{MANIFEST}":
            renamed.append(file_member(name, json.dumps(data).encode()))
        else:
            renamed.append((info(name, member.type, payload or b""), payload))
    return renamed
