"""Device selection: CUDA when available, else the CPU; never ``.cuda()`` in library code."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from mganprior.core.errors import InputError

T = TypeVar("T")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, else CPU. Asking for CUDA without one is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a torch device (try cpu, cuda, cuda:1)",
                         field="device") \
            from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: CUDA is not available on this machine; use cpu",
                         field="device")
    return resolved


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``fn()`` and its wall time in seconds, waiting for queued CUDA work at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - started


def matmul_rate() -> float:
    """GFLOP/s of a 2048^3 fp32 matmul on the CPU, the best of three rounds of five: what this
    machine's cores sustain at best, the reference benchmarks state rates against."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    seconds = min(timed(lambda: [a @ b for _ in range(5)], torch.device("cpu"))[1]
                  for _ in range(3))
    return 5 * 2 * 2048 ** 3 / seconds / 1e9


def cpu_model() -> str:
    """The CPU's model name, for benchmark headers (the platform's word where Linux's is absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
