"""Image quality metrics on the 8-bit images a user would save (scikit-image implementations)."""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mganprior.core.pixels import to_uint8


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two uint8 images; identical images give ``inf``."""
    if np.array_equal(image, reference):
        return math.inf
    return float(peak_signal_noise_ratio(reference, image, data_range=255))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of two uint8 ``[H, W, 3]`` images (7x7 windows; smaller images use their size;
    NaN below 3 px, where SSIM is undefined)."""
    side = min(image.shape[0], image.shape[1])
    if side < 3:
        return math.nan
    window = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(reference, image, data_range=255, channel_axis=-1,
                                       win_size=window))


def image_metrics(images: torch.Tensor, references: torch.Tensor) -> list[dict[str, float]]:
    """Per-image ``{"psnr", "ssim"}`` between two batches in [-1, 1]."""
    ours, theirs = to_uint8(images), to_uint8(references)
    return [{"psnr": psnr(a, b), "ssim": ssim(a, b)} for a, b in zip(ours, theirs, strict=True)]
