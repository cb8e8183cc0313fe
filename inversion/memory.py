"""How much memory a batch of inversions needs, measured before the run starts.

**Basis.** One optimisation step keeps, for the backward pass, the tensors autograd saves during
the forward pass. We measure exactly those (``torch.autograd.graph.saved_tensors_hooks``, each
storage counted once) for one iteration of one image with one code and with two codes, and
extrapolate linearly: ``bytes(B, N) = B * (base + N * per_code)``, plus the parameters. The head
runs once per code and the tail once per image, so the step is linear in N and in B; the
measurement covers the generator, the task's view and the perceptual network as configured.

The budget is what the device has free: CUDA's free memory, or on the CPU the smaller of
``MemAvailable`` and the cgroup's remaining limit (containers, SLURM), plus what the process's
heap holds free (the entry point keeps freed memory there: ``mganprior.core.heap``). A batch
that does not fit is shrunk with a note; a single image that does not fit is refused in one line,
before any file is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from mganprior.core.errors import InputError
from mganprior.core.heap import heap_free_bytes

HEADROOM = 0.8  # use at most this share of what is free


@dataclass(frozen=True)
class MemoryPlan:
    per_image: int  # bytes one image needs (all its codes)
    available: int | None  # bytes free on the device (None: unknown)
    batch_size: int  # images per batch that fit (at most the requested batch)
    note: str | None = None


@contextlib.contextmanager
def saved_bytes() -> Iterator[list[int]]:
    """Sum (into the yielded one-element list) the bytes of every storage autograd saves. Each
    is held until the block ends, so a storage freed and another made at its address count
    as two."""
    total, seen, held = [0], set(), []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.device)
        if key not in seen:
            seen.add(key)
            held.append(storage)
            total[0] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield total


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (None when it cannot be told)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    budgets = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                budgets.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text().strip())
            budgets.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(budgets) + heap_free_bytes() if budgets else None


def gigabytes(count: float) -> str:
    return f"{count / 2**30:.2f} GB"


def check_fits(needed: int, what: str, field: str, advice: str) -> None:
    """Refuse, before anything is allocated, work whose ``needed`` bytes exceed the usable share
    of the free CPU memory (nothing to check where that cannot be told)."""
    available = available_bytes(torch.device("cpu"))
    if available is not None and needed > HEADROOM * available:
        raise InputError(f"{field}: {what} need about {gigabytes(needed)}, more than the "
                         f"{gigabytes(HEADROOM * available)} usable of {gigabytes(available)} "
                         f"free; {advice}", field=field)


def _room(device: torch.device, parameters: int, available: int | None
          ) -> tuple[float, int] | None:
    """The bytes usable for work on ``device`` once ``parameters`` are held, and the bytes free
    (``available`` when given); None where free memory cannot be told."""
    available = available_bytes(device) if available is None else available
    return None if available is None else (HEADROOM * available - parameters, available)


def check_tuning_fits(per_image: int, device: torch.device, parameters: int,
                      available: int | None = None) -> None:
    """Refuse a generator tuning whose one image (its adapters, their gradients and Adam
    moments, one step's saved activations: ``per_image`` bytes) does not fit."""
    room = _room(device, parameters, available)
    if room is None:
        return
    budget, available = room
    if per_image > budget:
        raise InputError(f"tune: tuning one image needs about {gigabytes(per_image)} (its "
                         f"adapters with their Adam state and one step's activations, "
                         f"measured), more than the {gigabytes(budget)} usable of "
                         f"{gigabytes(available)} free on {device}; use a lower tune_rank, "
                         "tune_part tail, or more memory", field="tune")


def plan_memory(measure, codes: int, batch_size: int, device: torch.device,
                parameters: int, available: int | None = None) -> MemoryPlan:
    """``measure(n)``: the bytes one iteration of one image with ``n`` codes saves. Returns how
    many images per batch fit, or raises InputError when not even one does."""
    one, two = measure(1), measure(2)
    per_code = max(0, two - one)
    per_image = one + (codes - 1) * per_code
    room = _room(device, parameters, available)
    if room is None:
        return MemoryPlan(per_image, None, batch_size)
    budget, available = room
    if per_image > budget:
        raise InputError(f"codes: {codes} codes need about {gigabytes(per_image)} per image for "
                         f"one optimisation step (measured with 1 and 2 codes), more than the "
                         f"{gigabytes(budget)} usable of {gigabytes(available)} free on "
                         f"{device}; use fewer codes, a shallower layer, or more memory",
                         field="codes")
    fits = max(1, int(budget // per_image))
    if fits >= batch_size:
        return MemoryPlan(per_image, available, batch_size)
    return MemoryPlan(per_image, available, fits,
                      note=f"batch size lowered from {batch_size} to {fits}: each image needs "
                           f"about {gigabytes(per_image)} and {gigabytes(available)} are free")
