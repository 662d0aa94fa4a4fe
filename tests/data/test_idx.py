"""The IDX reader on the real Fashion-MNIST files and on crafted, corrupted files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.idx import read_idx
from pipeline.errors import DataError
from tests.helpers.idx_files import idx_bytes, write_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "t10k-labels-idx1-ubyte.gz").is_file(), reason="Debian package dataset-fashion-mnist not installed"
)


def one_paragraph(message: str) -> bool:
    return "\n" not in message and message.strip() == message and len(message) > 20


@needs_fmnist
def test_real_fashion_mnist_files() -> None:
    labels = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    images = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    # Real photos of clothes: dark background, bright garments, full byte range used.
    assert images.min() == 0 and images.max() == 255
    assert 50 < images.mean() < 100
    train_labels = read_idx(FMNIST / "train-labels-idx1-ubyte.gz")
    assert np.bincount(train_labels).tolist() == [6000] * 10


@pytest.mark.parametrize("compress", [False, True])
def test_crafted_uint8_roundtrip(tmp_path: Path, compress: bool) -> None:
    array = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4)
    path = write_idx(tmp_path / ("a.gz" if compress else "a"), array, compress)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (5, 3, 4)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_crafted_other_dtypes_are_big_endian_decoded(tmp_path: Path, dtype) -> None:
    array = (np.arange(12).reshape(3, 4) * 37 - 100).astype(dtype)
    out = read_idx(write_idx(tmp_path / "x", array))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = tmp_path / "labels-without-gz-suffix"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


def _expect(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert one_paragraph(message), message
    return message


def test_truncated_data_names_expected_and_found_bytes(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((10, 4, 4), dtype=np.uint8))
    path = tmp_path / "images"
    path.write_bytes(data[: 16 + 100])
    _expect(path, "truncated", "expected 160 bytes", "found 100", "10x4x4")


def test_truncated_gz_with_valid_stream_of_short_data(tmp_path: Path) -> None:
    # A compressed file that decompresses fine but holds too little data (a truncated original).
    data = idx_bytes(np.zeros((60000, 28, 28), dtype=np.uint8))[: 16 + 1000]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data))
    _expect(path, "expected 47040000 bytes", "found 1000")


def test_trailing_bytes_are_a_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(8, dtype=np.uint8)) + b"\x00\x01")
    _expect(path, "longer than its header says", "expected 8 bytes", "found 10")


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    _expect(path, "magic number", "89504e47")


def test_unknown_dtype_code(tmp_path: Path) -> None:
    path = tmp_path / "odd"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + (3).to_bytes(4, "big") + b"abc")
    _expect(path, "unknown dtype code 0x07")


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short-header"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + (10).to_bytes(4, "big"))
    _expect(path, "inside its header", "need 16 header bytes", "found 8")


def test_too_short_for_any_header(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    _expect(path, "too short")


def test_zero_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "scalar"
    path.write_bytes(bytes([0, 0, 0x08, 0]))
    _expect(path, "0 dimensions")


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    compressed = gzip.compress(idx_bytes(np.arange(4000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    _expect(path, "truncated gzip")


def test_gzip_crc_error(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8))))
    compressed[-8] ^= 0xFF  # first byte of the CRC32 trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(compressed))
    _expect(path, "corrupt gzip", "CRC")


def test_gzip_corrupt_deflate_data(tmp_path: Path) -> None:
    payload = np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8)
    compressed = bytearray(gzip.compress(idx_bytes(payload)))
    for i in range(20, 60):
        compressed[i] = 0xFF
    path = tmp_path / "garbled.gz"
    path.write_bytes(bytes(compressed))
    _expect(path, "gzip")


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "nope.gz", "does not exist")
