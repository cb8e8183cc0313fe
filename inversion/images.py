"""Reading user images into [-1, 1] tensors, with a note for every conversion, and writing PNGs.

Anything a user may hand us is accepted when it can be made right and said so in a note: gray,
palette, RGBA (alpha dropped), CMYK, 16-bit gray (scaled to 8 bits), EXIF rotation, non-square
(centre-cropped) and wrong-sized (resized, Lanczos) images. Missing, unreadable or corrupt files
are errors that name the file.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mganprior.core.errors import InputError
from mganprior.core.files import atomic_path, describe_missing
from mganprior.core.pixels import from_uint8, to_uint8
from mganprior.core.weights import file_sha256

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclass
class LoadedImage:
    """An image ready for inversion: ``pixels`` uint8 ``[H, W, 3]`` at the requested size;
    ``sha256`` of the file it came from (a run refuses another file under a finished name)."""

    name: str
    path: Path
    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)
    sha256: str | None = None

    def tensor(self) -> torch.Tensor:
        """``[3, H, W]`` float in [-1, 1]."""
        return from_uint8(self.pixels)


def expand_image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expand to their image files (sorted, not recursive)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise InputError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"image {path} {describe_missing(path)}")
    if not found:
        raise InputError("no images given")
    return found


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        eight = np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8)
        notes.append(f"{mode} (16-bit) gray converted to 8-bit RGB")
        return Image.fromarray(eight).convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max() > 1.0 else 1.0
        eight = np.clip(np.round(values / scale * 255), 0, 255).astype(np.uint8)
        notes.append("floating-point gray converted to 8-bit RGB")
        return Image.fromarray(eight).convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        notes.append(f"{mode} image: alpha channel dropped")
    elif mode in ("L", "1"):
        notes.append("grayscale image converted to RGB")
    else:
        notes.append(f"{mode} image converted to RGB")
    return image.convert("RGB")


def load_image(path: str | Path, size: int, name: str | None = None) -> LoadedImage:
    """Read ``path`` as an RGB ``size`` x ``size`` image; conversions are listed in ``notes``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} {describe_missing(path)}")
    notes: list[str] = []
    with open_image(path, "image", notes) as opened:
        frames = getattr(opened, "n_frames", 1)
        if frames > 1:
            notes.append(f"has {frames} frames (animated or multi-page); the first was used")
        image = ImageOps.exif_transpose(opened)
        if image is not opened and opened.getexif().get(0x0112, 1) != 1:
            notes.append("rotated as its EXIF orientation says")
        image = _to_rgb(image, notes)
    width, height = image.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        notes.append(f"centre-cropped from {width}x{height} to {side}x{side}")
    if image.size != (size, size):
        notes.append(f"resized from {image.size[0]}x{image.size[1]} to {size}x{size}")
        image = image.resize((size, size), Image.LANCZOS)
    return LoadedImage(name or safe_name(path.stem), path, np.asarray(image, dtype=np.uint8).copy(),
                       notes, file_sha256(path))


@contextlib.contextmanager
def open_image(path: Path, what: str, notes: list[str] | None = None) -> Iterator[Image.Image]:
    """``Image.open`` + ``load`` with one-line errors naming ``path``: corrupt files, and
    decompression bombs (Pillow's limit of ``Image.MAX_IMAGE_PIXELS``); images between half and
    all of that limit load with a note (Pillow's warning)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                if notes is not None and any(issubclass(w.category,
                                                        Image.DecompressionBombWarning)
                                             for w in caught):
                    notes.append(f"very large image ({opened.size[0]}x{opened.size[1]} "
                                 "pixels; Pillow warns about decompression bombs at this size)")
                yield opened
    except Image.DecompressionBombError as err:
        raise InputError(f"{what} {path} is refused as a decompression bomb ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{what} {path} is corrupt or not an image ({err})") from None


def safe_name(stem: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return cleaned or "image"


def unique_names(paths: list[Path]) -> list[str]:
    """Safe, unique names from file stems (``face``, ``face-2``, ... on collisions), unique
    after sanitising whatever the input names: ``a b``, ``a_b`` and ``a_b-2`` become ``a_b``,
    ``a_b-2`` and ``a_b-2-2``."""
    names: list[str] = []
    taken: set[str] = set()
    for path in paths:
        base = name = safe_name(path.stem)
        count = 1
        while name in taken:
            count += 1
            name = f"{base}-{count}"
        taken.add(name)
        names.append(name)
    return names


def load_images(paths: Iterable[str | Path], size: int) -> list[LoadedImage]:
    """Expand folders and read every image (all are checked before any work starts)."""
    files = expand_image_paths(paths)
    return [load_image(path, size, name) for path, name in zip(files, unique_names(files),
                                                                 strict=True)]


def save_png(image: torch.Tensor | np.ndarray, path: str | Path) -> None:
    """Write one image (``[3, H, W]`` float in [-1, 1], or uint8 ``[H, W, 3]``) atomically."""
    path = Path(path)
    pixels = to_uint8(image[None])[0] if isinstance(image, torch.Tensor) else image
    with atomic_path(path, ".png") as tmp:
        Image.fromarray(pixels).save(tmp)
