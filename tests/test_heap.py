"""The entry point's heap policy (``mganprior.core.heap``), each case in a fresh process: the C
heap's settings are per process and cannot be undone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mganprior.core.heap import heap_info, user_chose_allocator

pytestmark = pytest.mark.skipif(heap_info() is None,
                                reason="the C library has no mallopt/mallinfo2 (not glibc 2.33+)")
ROOT = Path(__file__).resolve().parents[1]

# A 64 MB tensor, then what glibc says: blocks mmapped for it, and free heap bytes once it is gone.
PROBE = """
import json, os, sys
from mganprior.core.heap import heap_free_bytes, heap_info, keep_big_blocks
if sys.argv[1] == "policy":
    applied = keep_big_blocks(os.environ)
elif sys.argv[1] == "entry":  # the console script, as a user starts it
    from mganprior import entry
    sys.argv = ["mganprior", "--help"]
    try:
        entry.main()
    except SystemExit:
        pass
    applied = None
else:
    applied = False
import torch
before = heap_info().hblks
big = torch.ones(16 * 2**20)
mmapped = heap_info().hblks - before
del big
print(json.dumps({"applied": applied, "mmapped": mmapped, "free": heap_free_bytes()}))
"""


def glibc_default_environment(**settings: str) -> dict[str, str]:
    """This environment without any allocator setting of the user's, plus ``settings``."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    assert not user_chose_allocator(clean)
    return clean | settings


def run(script: str, *args: str, **settings: str) -> dict | list:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=glibc_default_environment(**settings))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_big_blocks_stay_in_the_heap_under_the_policy():
    default, kept = run(PROBE, "default"), run(PROBE, "policy")
    assert default["mmapped"] >= 1 and default["free"] < 64 * 2**20  # mmapped, given back
    assert kept["applied"] and kept["mmapped"] == 0 and kept["free"] >= 64 * 2**20


def test_the_console_entry_point_sets_the_policy():
    started = run(PROBE, "entry")
    assert started["mmapped"] == 0 and started["free"] >= 64 * 2**20


def test_a_users_allocator_settings_win():
    chosen = run(PROBE, "policy", MALLOC_ARENA_MAX="2")
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
def resident():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before, resident_before = available_bytes(torch.device("cpu")), resident()
big = torch.ones(128 * 2**20)  # 512 MB, touched
del big
after, resident_after = available_bytes(torch.device("cpu")), resident()
print(json.dumps([before, after, resident_before, resident_after]))
"""
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc/self/status")
    before, after, resident_before, resident_after = run(script)
    assert resident_after - resident_before > 256 * 2**20  # the process kept the memory
    assert abs(after - before) < 256 * 2**20  # and the plan still counts it as free
