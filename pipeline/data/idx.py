"""Read IDX files (the MNIST container format), gzip-compressed or raw, into numpy.

Format: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the data in big-endian C order. Every way a file can be wrong (truncated download,
wrong file, corrupt gzip stream) becomes a :class:`DataError` that names the file and says what is
wrong, because "cannot reshape array of size 1000" is no help to someone holding a broken download.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(path: Path) -> bytes:
    """The file's payload, decompressed if it is gzip (detected by content, not by name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist.") from None
    except OSError as exc:
        raise DataError(f"IDX file {path} cannot be read: {exc.strerror or exc}.") from None
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(
            f"IDX file {path} is a truncated gzip file (the compressed stream ends early after {len(raw)} bytes); "
            "download or reinstall it again."
        ) from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"IDX file {path} is a corrupt gzip file ({exc}); download or reinstall it again.") from None


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode an uncompressed IDX payload; ``path`` is only used in error messages."""
    if len(data) < 4:
        raise DataError(f"IDX file {path} is too short to be an IDX file: {len(data)} bytes, the header alone needs 4.")
    zero1, zero2, code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0:
        raise DataError(
            f"IDX file {path} does not start with the IDX magic number (first bytes {data[:4].hex()}, "
            "expected 0000 then a dtype code and a dimension count); it is not an MNIST-format file."
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(f"IDX file {path} has unknown dtype code 0x{code:02x} in its header (known: {known}).")
    if ndim == 0:
        raise DataError(f"IDX file {path} declares 0 dimensions; an IDX data file needs at least one.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"IDX file {path} is truncated inside its header: {ndim} dimensions need {header} header bytes, "
            f"found {len(data)}."
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        shape = "x".join(str(d) for d in dims)
        what = "truncated" if found < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: its header declares shape {shape} of {dtype.name}, so expected "
            f"{expected} bytes of data, found {found}."
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a native-endian numpy array."""
    path = Path(path)
    return parse_idx(read_idx_bytes(path), path)
