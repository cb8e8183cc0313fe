"""8-bit pixels and [-1, 1] float images: the two conversions every package needs."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` in [-1, 1] to ``[B, H, W, 3]`` uint8 (clamped, rounded)."""
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_uint8(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``[B, H, W, 3]`` or ``[H, W, 3]`` uint8 to float images in [-1, 1], channels first.

    A tensor stays on its device (training banks index uint8 images on the GPU).
    """
    if not isinstance(pixels, torch.Tensor):
        pixels = torch.tensor(np.asarray(pixels))
    tensor = pixels.float() / 127.5 - 1
    return tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor.permute(0, 3, 1, 2)
