"""The C heap's policy for big tensors (glibc), which the entry point sets, and the memory it keeps.

glibc serves every block over its mmap threshold (128 KB, rising with use to at most 32 MB) with
a fresh ``mmap`` and returns it to the system on ``free``, and it trims freed memory at the top
of the heap. An inversion allocates and frees the same large activations at every step, so each
step pays the kernel's page faults again: on a 2-core VM an elementwise pass over a fresh 42 MB
tensor took 36 ms instead of a few. :func:`keep_big_blocks` serves big blocks from the heap and
keeps what is freed for the next step (``benchmarks/heap.py``, docs/benchmarks.md: 1.3x on the
head of a StyleGAN2 at the StyleGAN2-ADA 256 px widths; on whole inversions with the zoo's
small priors, gains within the spread of runs). The cost is that the process keeps at least its
peak memory until it exits (fragmentation can add to it); :func:`heap_free_bytes` tells the
memory plan how much of it is free for reuse.

A setting the user made wins: any ``MALLOC_*`` variable, glibc malloc tunables, or an allocator
in ``LD_PRELOAD`` (jemalloc, tcmalloc) leaves the heap alone; so do C libraries without
``mallopt``/``mallinfo2`` (macOS, musl, glibc before 2.33, Windows).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_MAX = -4
KEEP_FREED = 2**31 - 1  # the largest trim threshold mallopt takes: never trim


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None
    return libc


def user_chose_allocator(environ: Mapping[str, str]) -> bool:
    """Whether the environment already sets the C allocator's behaviour."""
    return (any(name.startswith("MALLOC_") for name in environ)
            or "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")
            or "malloc" in environ.get("LD_PRELOAD", ""))


def keep_big_blocks(environ: Mapping[str, str]) -> bool:
    """Serve big blocks from the heap instead of fresh mmaps and never trim it, unless
    ``environ`` sets the allocator itself; whether both settings are now in force. (glibc still
    maps requests over 64 MB made from threads other than the main one, which runs CPU
    autograd.)"""
    libc = None if user_chose_allocator(environ) else _glibc()
    if libc is None:
        return False
    no_mmap = libc.mallopt(M_MMAP_MAX, 0)
    no_trim = libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED)
    return bool(no_mmap) and bool(no_trim)


def heap_info() -> _MallInfo2 | None:
    """glibc's account of the heap (None where the C library gives none)."""
    libc = _glibc()
    return None if libc is None else libc.mallinfo2()


def heap_free_bytes() -> int:
    """Bytes the process's heap holds free for its next allocations (0 where unknown): memory
    the system counts as used but this process can fill without asking for more. A total over
    free chunks, not the largest one: fragmented, it can hold less in one block."""
    info = heap_info()
    return 0 if info is None else int(info.fordblks)
