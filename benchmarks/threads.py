"""The OpenMP wait policy: seconds for the same small inversion under each policy, idle or with a
second copy running at the same time (contention), measured side by side in one run; and, with
``--shards``, two local shards against one process.

    python benchmarks/threads.py [--contention]
    python benchmarks/threads.py --shards [--images 8]

``--shards``: the same images inverted by one process with one thread, one process with every
core, and two processes ``--shard I/2 --local-processes 2`` started together (each takes half the
cores), wall time from the first start to the last exit.

Each arm runs ``mganprior invert`` on 4 DigiFace samples (20 codes, 30 iterations) in a fresh
process with the policy in its environment; with ``--contention`` two copies run at once and
the slower one's time counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import subprocess
import tempfile
import time

from inversion.images import save_png
from mganprior.zoo import load_generator

REPO = Path(__file__).resolve().parents[1]
POLICIES = {"default (spin)": {}, "GOMP_SPINCOUNT=20000": {"GOMP_SPINCOUNT": "20000"},
            "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}


def timed_runs(policy: dict[str, str], copies: int, images: Path, root: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(policy)
    started = time.perf_counter()
    processes = [subprocess.Popen(
        [sys.executable, "-c", "from mganprior.cli import main; raise SystemExit(main())",
         "invert", "--generator", "digiface-dcgan64", "--images", str(images), "--out",
         str(root / f"run-{time.monotonic_ns()}-{i}"), "--iterations", "30",
         "--perceptual", "none", "--quiet"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL) for i in range(copies)]
    for process in processes:
        process.wait()
    return time.perf_counter() - started


def sharded(arms: list[list[str]], images: Path, root: Path) -> float:
    """Seconds from starting every process of ``arms`` (extra flags each) to the last exit;
    they share one run directory, as shards do."""
    out = root / f"run-{time.monotonic_ns()}"
    started = time.perf_counter()
    processes = [subprocess.Popen(
        [sys.executable, "-m", "mganprior", "invert", "--generator", "digiface-dcgan64",
         "--images", str(images), "--out", str(out), "--iterations", "30", "--batch-size", "4",
         "--perceptual", "none", "--quiet", *flags], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL) for flags in arms]
    for process in processes:
        if process.wait():
            raise SystemExit(f"an arm failed: {process.args}")
    return time.perf_counter() - started


CORES = len(os.sched_getaffinity(0))
SHARD_ARMS = {
    "one process, 1 thread": [["--threads", "1"]],
    "one process, every core": [[]],
    "two shards, --local-processes 2": [["--shard", f"{i}/2", "--local-processes", "2"]
                                        for i in range(2)],
    "two shards, every core each (before)": [["--shard", f"{i}/2", "--threads", str(CORES)]
                                             for i in range(2)],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contention", action="store_true")
    parser.add_argument("--shards", action="store_true")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").mkdir()
        samples = load_generator("digiface-dcgan64").generator.sample(args.images, 3)
        for i, image in enumerate(samples):
            save_png(image, root / "images" / f"f{i}.png")
        if args.shards:
            print(f"{args.images} images, {CORES} cores; best of "
                  f"{args.repeats} (seconds, process start included)")
            base = None
            for name, arms in SHARD_ARMS.items():
                seconds = min(sharded(arms, root / "images", root) for _ in range(args.repeats))
                base = base or seconds
                print(f"{name:<38} {seconds:7.2f} s  ({base / seconds:.2f}x the first)")
            return
        copies = 2 if args.contention else 1
        print(f"{'two copies at once' if args.contention else 'one process alone'}, "
              f"{os.cpu_count()} cores; best of {args.repeats} (seconds, process start "
              "included)")
        base = None
        for name, policy in POLICIES.items():
            seconds = min(timed_runs(policy, copies, root / "images", root)
                          for _ in range(args.repeats))
            base = base or seconds
            print(f"{name:<26} {seconds:7.2f} s  ({base / seconds:.2f}x)")


if __name__ == "__main__":
    main()
