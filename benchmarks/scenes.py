"""Scene rendering speed on one core vs what GAN training consumes, measured in one run.

    python benchmarks/scenes.py [--scenes 200] [--size 64]

Prints images per second of the renderer per domain (one process, one thread) and the images per
second one training step of the committed generator settings consumes (batch 16, widths
128-128-64-32-16, one thread), and their ratio: above 1, rendering cannot be the bottleneck even
if it ran inline on the same core (it does not: datasets are rendered once, then cached).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import platform
import tempfile
import time

import torch

from mganprior.scenes.datasets import render_many
from mganprior.scenes.render import DOMAINS
from mganprior.training.gan import GANTrainConfig, ImageBank, train_gan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          "1 thread")
    rates = {}
    images = None
    for domain in DOMAINS:
        start = time.perf_counter()
        images, _ = render_many(domain, range(args.scenes), args.size, progress=False)
        rates[domain] = args.scenes / (time.perf_counter() - start)
        print(f"render {domain:<16} {rates[domain]:7.1f} images/s")
    config = GANTrainConfig(resolution=args.size, z_dim=128, channels=[128, 128, 64, 32, 16],
                            iterations=args.steps, batch=16, r1_every=16)
    with tempfile.TemporaryDirectory() as out:
        result = train_gan(ImageBank(images, torch.device("cpu")), config, out,
                           device=torch.device("cpu"), progress=False,
                           checkpoint_every=10 ** 9)
    consumed = config.batch * result.steps / result.seconds
    print(f"GAN training consumes {consumed:7.1f} images/s "
          f"({result.seconds / result.steps:.2f} s per step)")
    slowest = min(rates.values())
    print(f"ratio slowest renderer / training consumption: {slowest / consumed:.1f}x")


if __name__ == "__main__":
    main()
