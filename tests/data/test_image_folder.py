"""Image folders: PNG and JPEG, grey and colour, any size; and every way a folder can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.image_folder import load_image_folder
from pipeline.errors import DataError


def solid(path: Path, size: tuple[int, int], color, mode: str) -> Path:
    """A uniform image: resizing keeps its value exactly, so expected pixels are known."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    solid(root / "bird" / "a.png", (10, 14), 200, "L")  # grey PNG, 10 wide x 14 high
    solid(root / "bird" / "b.jpg", (40, 30), (200, 200, 200), "RGB")  # colour JPEG, neutral grey
    solid(root / "apple" / "red.png", (28, 28), (255, 0, 0), "RGB")
    solid(root / "apple" / "sub" / "green.jpeg", (9, 9), (0, 255, 0), "RGB")  # nested, .jpeg
    solid(root / "apple" / "alpha.png", (5, 5), (0, 0, 255, 0), "RGBA")  # fully transparent
    solid(root / "cat" / "c.PNG", (64, 48), 30, "L")  # upper-case suffix
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored
    solid(root / ".hidden" / "x.png", (4, 4), 0, "L")  # hidden folder: not a class
    return root


def test_grey_output(folder: Path) -> None:
    data = load_image_folder(folder, 16, 12, 1)
    assert data.class_names == ["apple", "bird", "cat"]
    assert data.images.shape == (6, 16, 12, 1) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert data.files == ["apple/alpha.png", "apple/red.png", "apple/sub/green.jpeg", "bird/a.png", "bird/b.jpg", "cat/c.PNG"]
    means = data.images.reshape(6, -1).mean(axis=1)
    assert means[0] == 0  # transparent blue composited onto black
    assert means[1] == 76  # pure red -> ITU-R 601 luma (299*255 + 500) // 1000
    assert abs(means[2] - 150) <= 1  # pure green -> 150 (JPEG may be off by one)
    assert means[3] == 200
    assert abs(means[4] - 200) <= 1
    assert means[5] == 30


def test_rgb_output(folder: Path) -> None:
    data = load_image_folder(folder, 8, 8, 3)
    assert data.images.shape == (6, 8, 8, 3)
    red = data.images[data.files.index("apple/red.png")]
    assert (red[..., 0] == 255).all() and (red[..., 1:] == 0).all()
    grey = data.images[data.files.index("bird/a.png")]
    assert (grey == 200).all()  # grey replicated to three channels


def test_resize_is_bilinear_to_height_by_width(tmp_path: Path) -> None:
    root = tmp_path / "r"
    gradient = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (20, 1))  # 20 high, 40 wide
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    Image.fromarray(gradient).save(root / "a" / "g.png")
    Image.fromarray(gradient[::-1, ::-1]).save(root / "b" / "g.png")
    data = load_image_folder(root, 10, 20, 1)
    expected = np.asarray(Image.fromarray(gradient).resize((20, 10), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(data.images[0, ..., 0], expected)
    assert data.images[0, 0, 0, 0] < data.images[0, 0, -1, 0]  # width axis kept left-to-right


def test_sixteen_bit_png_keeps_top_byte(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name, value in (("a", 0x8000), ("b", 0xFFFF)):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), value, dtype=np.uint16)).save(root / name / "x.png")
    data = load_image_folder(root, 4, 4, 1)
    assert data.images[0].max() == 128 and data.images[1].min() == 255


def test_hash_follows_bytes(folder: Path) -> None:
    first = load_image_folder(folder, 8, 8, 1).sha256
    assert load_image_folder(folder, 12, 12, 3).sha256 == first  # raw bytes, not the converted arrays
    solid(folder / "cat" / "c.PNG", (64, 48), 31, "L")
    assert load_image_folder(folder, 8, 8, 1).sha256 != first


def test_empty_class_folder(folder: Path) -> None:
    (folder / "empty").mkdir()
    with pytest.raises(DataError) as info:
        load_image_folder(folder, 8, 8, 1)
    assert str(folder / "empty") in str(info.value)
    assert "no PNG or JPEG images" in str(info.value)


def test_class_folder_with_only_other_files_says_so(folder: Path) -> None:
    (folder / "docs").mkdir()
    (folder / "docs" / "readme.bmp").write_bytes(b"BM")
    with pytest.raises(DataError, match=r"docs has no PNG or JPEG images \(it holds 1 other file\(s\), e.g. readme.bmp\)"):
        load_image_folder(folder, 8, 8, 1)


def test_corrupt_image_is_named(folder: Path) -> None:
    bad = folder / "bird" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError) as info:
        load_image_folder(folder, 8, 8, 1)
    assert str(bad) in str(info.value) and "cannot be decoded" in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_jpeg_is_named(folder: Path, tmp_path: Path) -> None:
    source = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(source)
    bad = folder / "cat" / "cut.jpg"
    bad.write_bytes(source.read_bytes()[:600])
    with pytest.raises(DataError, match="cut.jpg"):
        load_image_folder(folder, 8, 8, 1)


def test_no_class_folders(tmp_path: Path) -> None:
    solid(tmp_path / "loose.png", (4, 4), 0, "L")
    with pytest.raises(DataError, match="has no class sub-folders"):
        load_image_folder(tmp_path, 8, 8, 1)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing", 8, 8, 1)
