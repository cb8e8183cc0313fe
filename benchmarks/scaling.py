"""Throughput of one process against several on one run directory, measured side by side.

    python benchmarks/scaling.py [--images 8] [--processes 2] [--iterations 60]

Every arm inverts the same images with the same settings into a fresh run directory: one process
with ``--threads`` threads, then ``--processes`` uncoordinated processes with one thread each
(claims split the images). The script prints images per second for each arm and the ratio, with
the CPU it ran on. On a CUDA machine, pass ``--device cuda`` and ``--bf16`` to add nothing but
the device (the GPU figures of docs/benchmarks.md use `benchmarks/gpu.py`).
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
from mganprior.core.devices import cpu_model
from mganprior.zoo import load_generator

REPO = Path(__file__).resolve().parents[1]


def arm(processes: int, threads: int, images: Path, out: Path, args: argparse.Namespace) -> float:
    command = [sys.executable, "-m", "mganprior", "invert", "--generator", args.generator,
               "--images", str(images), "--out", str(out), "--iterations", str(args.iterations),
               "--batch-size", str(args.batch_size), "--perceptual", "none", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    running = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for process in running:
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(err)
    return args.images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generator", default="digiface-dcgan64")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generator = load_generator(args.generator, device="cpu").generator
        (root / "images").mkdir()
        for i, image in enumerate(generator.sample(args.images, seed=7)):
            save_png(image, root / "images" / f"s{i:03d}.png")
        one = arm(1, args.threads, root / "images", root / "one", args)
        many = arm(args.processes, 1, root / "images", root / "many", args)
    print(f"{cpu_model()}, {os.cpu_count()} cores; {args.generator}, {args.images} images, "
          f"{args.iterations} iterations, batch {args.batch_size}")
    print(f"1 process x {args.threads} threads: {one:.3f} images/s")
    print(f"{args.processes} processes x 1 thread: {many:.3f} images/s "
          f"({many / one:.2f}x)")


if __name__ == "__main__":
    main()
