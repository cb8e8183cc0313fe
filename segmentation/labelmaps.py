"""Reading label maps: single-channel PNGs whose pixel values are class indices (255 =
unlabelled), named like the images they label (``mganprior scenes`` writes them this way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mganprior.core.errors import InputError

INDEX_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")


def read_label_map(path: str | Path, size: int | None = None, resize: bool = False) -> np.ndarray:
    """``[H, W]`` int64 class indices. A map of another size than ``size`` is an error unless
    ``resize`` (nearest neighbour, so no new labels appear)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label map {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in INDEX_MODES:
                raise InputError(f"label map {path} is a {image.mode} image; label maps are "
                                 "single-channel PNGs whose values are class indices")
            if size is not None and image.size != (size, size):
                if not resize:
                    raise InputError(f"label map {path} is {image.size[0]}x{image.size[1]} but "
                                     f"the images are {size}x{size} (pass --resize-labels to "
                                     "resize it, nearest neighbour)")
                image = image.resize((size, size), Image.NEAREST)
            return np.asarray(image).astype(np.int64)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"label map {path} is corrupt or not an image ({err})") from None


def read_label_maps(directory: str | Path, names: list[str], size: int,
                    resize: bool = False) -> torch.Tensor:
    """``[B, H, W]`` from ``directory/NAME.png`` for every name (all checked before use)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"label folder {directory} does not exist")
    missing = [name for name in names if not (directory / f"{name}.png").is_file()]
    if missing:
        raise InputError(f"no label map for {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} in {directory} (expected "
                         f"{directory / (missing[0] + '.png')})")
    return torch.from_numpy(np.stack([read_label_map(directory / f"{name}.png", size, resize)
                                      for name in names]))
