"""A folder of images, one sub-folder per class: the way most people hold their own data.

``root/<class name>/**/*.png|jpg|jpeg``; class names are the sorted sub-folder names, so label
numbers are stable from run to run. Images of any size, grey or colour, are converted to the
profile's channels and resized to (height, width) here, once, with PIL bilinear: the rest of the
pipeline (and the device) only ever sees uint8 NHWC of the model's input size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import DataError
from pipeline.fsutil import canonical_json, sha256_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass
class ImageFolderData:
    """All images of the folder (not yet split), uint8 NHWC, with int64 labels."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    files: list[str] = field(default_factory=list)  # posix paths relative to the root, in array order
    sha256: str = ""


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def list_class_folders(root: Path) -> list[Path]:
    """Sorted non-hidden sub-directories of ``root``; each is one class."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a directory.")
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if not folders:
        raise DataError(
            f"Image folder {root} has no class sub-folders; put the images of each class in its own "
            f"sub-folder (e.g. {root}/cat/*.png, {root}/dog/*.png)."
        )
    return folders


def list_images(folder: Path) -> list[Path]:
    """PNG/JPEG files under a class folder (recursively, hidden files skipped), sorted by path."""
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and _visible(p, folder)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to "L" (channels=1) or "RGB" (channels=3).

    16-bit grey keeps its top 8 bits; transparent pixels are composited onto black, so the result
    never depends on whatever colour happens to be stored under alpha 0.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image, dtype=np.int64)
        image = Image.fromarray(np.clip(array >> 8, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L" if channels == 1 else "RGB")


def decode_image(data: bytes, path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """Bytes of one PNG/JPEG -> uint8 (height, width, channels); DataError naming ``path`` if corrupt."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)  # phone photos: honour the EXIF orientation
            image.load()
            image = _to_mode(image, channels)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"Image {path} cannot be decoded ({exc}); remove or replace the file.") from None
    return array[..., np.newaxis] if channels == 1 else array


def load_image_folder(root: Path, height: int, width: int, channels: int) -> ImageFolderData:
    """Read every image under ``root`` into memory at the profile's size and channels."""
    root = Path(root)
    folders = list_class_folders(root)
    class_names = [folder.name for folder in folders]
    per_class: list[list[Path]] = []
    for folder in folders:
        files = list_images(folder)
        if not files:
            others = sorted(p.name for p in folder.rglob("*") if p.is_file())
            hint = f" (it holds {len(others)} other file(s), e.g. {others[0]})" if others else ""
            raise DataError(
                f"Class folder {folder} has no PNG or JPEG images{hint}; every class needs images, "
                "so add some or remove the folder."
            )
        per_class.append(files)
    total = sum(len(files) for files in per_class)
    images = np.empty((total, height, width, channels), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    relative: list[str] = []
    hashes: dict[str, str] = {}
    i = 0
    for label, files in enumerate(per_class):
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise DataError(f"Image {path} cannot be read: {exc.strerror or exc}.") from None
            images[i] = decode_image(data, path, height, width, channels)
            labels[i] = label
            rel = path.relative_to(root).as_posix()
            relative.append(rel)
            hashes[rel] = sha256_bytes(data)
            i += 1
    digest = sha256_bytes(canonical_json(hashes).encode())
    return ImageFolderData(images, labels, class_names, relative, digest)
