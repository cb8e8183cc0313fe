"""The ``mganprior`` console entry point: it sets the OpenMP wait policy before torch loads, then
runs the command line.

PyTorch's OpenMP threads spin while they wait for work. When another process shares the cores
(a study next to a training, the test suite, several shards on one machine) the spinning steals
the cores the other process needs: a tiny op took 8.7 ms instead of 16 us in a trial.
``GOMP_SPINCOUNT=20000`` bounds the spinning; ``benchmarks/threads.py`` measured it idle and
under contention (docs/benchmarks.md). A policy set by the user wins: their own
``GOMP_SPINCOUNT``, or an ``OMP_WAIT_POLICY`` (which a set ``GOMP_SPINCOUNT`` would override).

It also keeps big tensors' memory in the C heap between steps (``mganprior.core.heap``) unless the
user set the allocator.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from mganprior.core.heap import keep_big_blocks

WAIT_POLICY = {"GOMP_SPINCOUNT": "20000"}
USER_POLICY_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def apply_wait_policy(environ: MutableMapping[str, str]) -> None:
    """Set :data:`WAIT_POLICY` in ``environ`` unless it already names a wait policy."""
    if not any(name in environ for name in USER_POLICY_VARIABLES):
        environ.update(WAIT_POLICY)


def main() -> int:
    apply_wait_policy(os.environ)
    keep_big_blocks(os.environ)
    from mganprior.cli import main as run

    return run()
