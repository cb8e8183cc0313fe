"""StyleGAN3 (T and R) against the StyleGAN2 of the same widths, and StyleGAN3's fast path against
its reference path: seconds per multi-code iteration at a spread of cuts, side by side in one run.

    python benchmarks/stylegan3.py [--resolution 32] [--width 64] [--images 4] [--codes 20]
                                   [--repeats 1] [--every 5]

The StyleGAN2 has NVIDIA's widths capped at ``--width`` (64 at every block at 32 px); the
StyleGAN3s are laid out by the paper's schedule with ``channel_max = width`` and ``channel_base =
8 * width`` (64 at the input down to 16 at the last layers; R with NVIDIA's doubling of both),
with random weights. Targets are each generator's own samples; codes in W+. One iteration is timed
as the difference between runs of 4 and 1 iterations, divided by 3, after a warm-up run, so the
run's set-up is left out. ``--every K`` times every K-th cut (and always the deepest). The fast
and reference paths also render the same codes, and the largest difference is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import statistics

import torch

from inversion import Inversion, get_recipe, invert
from inversion.engine import QUIET
from inversion.generators.stylegan2 import StyleGAN2Generator
from inversion.generators.stylegan3 import StyleGAN3Generator
from mganprior.core.devices import cpu_model, timed


def seconds_per_iteration(generator, targets, codes: int, layer: str, repeats: int) -> float:
    def run(iterations: int):
        # the joint iteration alone: the alpha warm-up would add its steps (a share that
        # differs by cut) to every iteration
        recipe = get_recipe("adam", "inversion").with_overrides(
            iterations=iterations, codes=codes, layer=layer, latent_space="w+", alpha_warmup=0)
        return invert(generator, targets, Inversion(), recipe,
                      seeds=list(range(len(targets))), options=QUIET)

    run(1)  # warm-up: first-call costs stay out of the figure
    times = {n: statistics.median(timed(lambda n=n: run(n), generator.device)[1]
                                  for _ in range(repeats)) for n in (1, 4)}
    return (times[4] - times[1]) / 3


def chosen(layers, every: int):
    picked = layers[1::every]
    return picked if picked[-1] == layers[-1] else [*picked, layers[-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--codes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    blocks = args.resolution.bit_length() - 2
    width = args.width
    channels = [min(32 * width // (4 << k), width) for k in range(blocks)]
    torch.manual_seed(0)
    generators = {
        "StyleGAN2": StyleGAN2Generator(resolution=args.resolution, z_dim=64, w_dim=64,
                                        channels=channels, mapping_layers=2).eval(),
        "StyleGAN3-T": StyleGAN3Generator.design(args.resolution, 64, 64,
                                                 channel_base=8 * width, channel_max=width,
                                                 config="t"),
        "StyleGAN3-R": StyleGAN3Generator.design(args.resolution, 64, 64,
                                                 channel_base=16 * width,
                                                 channel_max=2 * width, config="r"),
    }
    cpu = cpu_model()
    print(f"# {cpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.resolution} px, StyleGAN2 widths {channels}, B={args.images}, "
          f"N={args.codes}, codes in W+, median of {args.repeats}\n")
    z = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    for name in ("StyleGAN3-T", "StyleGAN3-R"):
        generator = generators[name]
        with torch.no_grad():
            fast = generator.use_fast_paths(True)(z)
            reference = generator.use_fast_paths(False)(z)
        generator.use_fast_paths(True)
        print(f"{name}: fast and reference paths differ by at most "
              f"{(fast - reference).abs().max().item():.2e} (images of std "
              f"{reference.std().item():.3f})")
    print("\n| generator | cut | s/iteration, fast path | s/iteration, reference path |")
    print("|---|---|---|---|")
    for name, generator in generators.items():
        targets = generator.sample(args.images, seed=1)
        for layer in chosen(generator.layers, args.every):
            cells = []
            for fast in (True, False):
                generator.use_fast_paths(fast)
                cells.append(seconds_per_iteration(generator, targets, args.codes, layer.name,
                                                   args.repeats))
            generator.use_fast_paths(True)
            print(f"| {name} | {layer.describe()} | {cells[0]:.3f} | {cells[1]:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
