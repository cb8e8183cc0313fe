"""Tune and justify the ``adam`` recipe: reconstruction PSNR against iterations, side by side.

Targets: DigiFace samples (in-domain) and, when ``../shared/real-images`` exists, real bedroom and
church photos resized to 64 px (out of domain). Perceptual loss off (no VGG weights here), so the
loss is the pixel MSE and PSNR = 10 log10(4 / MSE) for images in [-1, 1] (before 8-bit rounding).

    python benchmarks/recipes.py [--iterations 500] [--configs "official;adam-lr=0.01,codes=20"]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import math
import time

import torch

from inversion.engine import InvertOptions, invert
from inversion.images import load_images
from inversion.recipes import get_recipe
from inversion.tasks import Inversion
from mganprior.zoo import load_generator

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-images"


def targets(generator, per_set: int) -> dict[str, torch.Tensor]:
    sets = {"digiface samples": generator.sample(per_set, seed=7)}
    for folder in ("bedroom", "church"):
        if (REAL / folder).is_dir():
            images = load_images([REAL / folder], generator.resolution)[:per_set]
            sets[f"real {folder}"] = torch.stack([image.tensor() for image in images])
    return sets


def configs(names: list[str], iterations: int):
    for name in names:
        kind, _, detail = name.partition("-")
        recipe = get_recipe("official" if kind == "official" else "adam", "inversion")
        overrides = {"iterations": iterations}
        for part in filter(None, detail.split(",")):
            key, _, value = part.partition("=")
            overrides[key] = value if key == "layer" else type(getattr(recipe, key))(value)
        yield name, recipe.with_overrides(**overrides)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--per-set", type=int, default=3)
    parser.add_argument("--checkpoints", default="50,100,200,300,500")
    parser.add_argument("--configs", default="official;adam-lr=0.01;adam-lr=0.03;adam-lr=0.1",
                        help="semicolon-separated; e.g. adam-lr=0.03,codes=20,layer=-1")
    args = parser.parse_args()
    generator = load_generator("digiface-dcgan64", device="cpu").generator
    sets = targets(generator, args.per_set)
    marks = [int(c) for c in args.checkpoints.split(",") if int(c) <= args.iterations]
    print(f"targets: {', '.join(f'{k} ({len(v)})' for k, v in sets.items())}")
    print("| config | set | " + " | ".join(f"{m} it" for m in marks) + " | s/it |")
    print("|---" * (len(marks) + 3) + "|")
    for name, recipe in configs(args.configs.split(";"), args.iterations):
        for set_name, images in sets.items():
            seeds = list(range(len(images)))
            started = time.perf_counter()
            result = invert(generator, images, Inversion(), recipe, seeds=seeds,
                            options=InvertOptions(trace_points=sys.maxsize, progress=False))
            seconds = (time.perf_counter() - started) / max(1, args.iterations)
            steps = result.trace_iterations
            cells = []
            for mark in marks:
                row = result.trace[steps.index(mark - 1)]
                cells.append(f"{sum(10 * math.log10(4 / v) for v in row.tolist()) / len(row):.2f}")
            print(f"| {name} | {set_name} | " + " | ".join(cells) + f" | {seconds:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
