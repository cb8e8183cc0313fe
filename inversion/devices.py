"""Device selection: CUDA when available, else the CPU; never ``.cuda()`` in library code."""

from __future__ import annotations

import torch

from inversion.errors import InputError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, else CPU. Asking for CUDA without one is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device!r} is not a torch device (try cpu, cuda, cuda:1)") \
            from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use cpu")
    return resolved
