"""The ``mganprior`` console entry point: it sets the OpenMP wait policy before torch loads, then
runs the command line.

PyTorch's OpenMP threads spin while they wait for work. When another process shares the cores
(a study next to a training, the test suite, several shards on one machine) the spinning steals
the cores the other process needs: a tiny op took 8.7 ms instead of 16 us in a trial.
``GOMP_SPINCOUNT=20000`` bounds the spinning; ``benchmarks/threads.py`` measured it idle and
under contention (docs/benchmarks.md). A value set by the user wins.
"""

from __future__ import annotations

import os

WAIT_POLICY = {"GOMP_SPINCOUNT": "20000"}


def main() -> int:
    for key, value in WAIT_POLICY.items():
        os.environ.setdefault(key, value)
    from mganprior.cli import main as run

    return run()
