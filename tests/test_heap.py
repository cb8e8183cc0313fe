"""The entry point's heap policy (``mganprior.core.heap``), each case in a fresh process: the C
heap's settings are per process and cannot be undone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mganprior.core.heap import heap_info, user_chose_allocator

pytestmark = pytest.mark.skipif(heap_info() is None,
                                reason="the C library has no mallopt/mallinfo2 (not glibc 2.33+)")

# A 64 MB tensor, then what glibc says: blocks mmapped for it, and free heap bytes once it is gone.
PROBE = """
import json, os, sys
from mganprior.core.heap import heap_free_bytes, heap_info, keep_big_blocks
applied = keep_big_blocks(os.environ) if sys.argv[1] == "policy" else False
import torch
before = heap_info().hblks
big = torch.ones(16 * 2**20)
mmapped = heap_info().hblks - before
del big
print(json.dumps({"applied": applied, "mmapped": mmapped, "free": heap_free_bytes()}))
"""


def probe(arm: str, **environ: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | environ
    out = subprocess.run([sys.executable, "-c", PROBE, arm], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_big_blocks_stay_in_the_heap_under_the_policy():
    default, kept = probe("default"), probe("policy")
    assert default["mmapped"] >= 1 and default["free"] < 64 * 2**20  # mmapped, given back
    assert kept["applied"] and kept["mmapped"] == 0 and kept["free"] >= 64 * 2**20


def test_a_users_allocator_settings_win():
    chosen = probe("policy", MALLOC_ARENA_MAX="2")
    assert not chosen["applied"] and chosen["mmapped"] >= 1
    assert user_chose_allocator({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    assert user_chose_allocator({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1024"})
    assert not user_chose_allocator({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2", "PATH": "/bin"})


def test_memory_the_heap_keeps_still_counts_as_free():
    """The memory plan must not shrink batches because earlier steps' memory stayed in the
    process: available_bytes adds the heap's free blocks to what the system reports."""
    script = """
import json, os
from mganprior.core.heap import keep_big_blocks
keep_big_blocks(os.environ)
import torch
from inversion.memory import available_bytes
def system():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
before, system_before = available_bytes(torch.device("cpu")), system()
big = torch.ones(128 * 2**20)  # 512 MB, touched
del big
after, system_after = available_bytes(torch.device("cpu")), system()
print(json.dumps([before, after, system_before, system_after]))
"""
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True).stdout
    before, after, system_before, system_after = json.loads(out.splitlines()[-1])
    assert system_before - system_after > 256 * 2**20  # the system sees the memory kept
    assert abs(after - before) < 256 * 2**20  # the plan still counts it
