"""StyleGAN (v1) against the StyleGAN2 of the same widths: seconds per multi-code iteration at
every cut, side by side in one run.

    python benchmarks/stylegan1.py [--resolution 64] [--images 4] [--codes 20] [--repeats 3]

Both generators are built at the same resolution, latent sizes and channel widths (those of the
trained ``bedroom-stylegan2-64``: 128, 128, 64, 32, 16), with random weights; targets are each
generator's own samples. One iteration is timed as the difference between runs of 13 and 3
iterations, divided by 10, so the run's set-up is left out.
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
from inversion.generators.stylegan1 import StyleGAN1Generator
from inversion.generators.stylegan2 import StyleGAN2Generator
from mganprior.core.devices import cpu_model, timed


def seconds_per_iteration(generator, targets, codes: int, layer: str, repeats: int) -> float:
    def run(iterations: int):
        # the joint iteration alone: the alpha warm-up would add its steps (a share that
        # differs by cut) to every iteration
        recipe = get_recipe("adam", "inversion").with_overrides(
            iterations=iterations, codes=codes, layer=layer, latent_space="w+", alpha_warmup=0)
        return invert(generator, targets, Inversion(), recipe,
                      seeds=list(range(len(targets))), options=QUIET)

    times = {n: statistics.median(timed(lambda n=n: run(n), generator.device)[1]
                                  for _ in range(repeats)) for n in (3, 13)}
    return (times[13] - times[3]) / 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--codes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    blocks = args.resolution.bit_length() - 2
    channels = [min(1024 // (4 << k), 128) for k in range(blocks)]
    torch.manual_seed(0)
    v1 = StyleGAN1Generator(resolution=args.resolution, z_dim=64, w_dim=64, channels=channels,
                            mapping_layers=4, mapping_width=64).eval()
    v2 = StyleGAN2Generator(resolution=args.resolution, z_dim=64, w_dim=64, channels=channels,
                            mapping_layers=4).eval()
    cpu = cpu_model()
    print(f"# {cpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.resolution} px, widths {channels}, B={args.images}, N={args.codes}, codes in "
          f"W+, median of {args.repeats}\n")
    print("| StyleGAN (v1) cut | s/iteration | StyleGAN2 cut | s/iteration |")
    print("|---|---|---|---|")
    rows = {}
    for family, generator in (("v1", v1), ("v2", v2)):
        targets = generator.sample(args.images, seed=1)
        rows[family] = [(layer.describe(), seconds_per_iteration(
            generator, targets, args.codes, layer.name, args.repeats))
            for layer in generator.layers[1:]]
    for i in range(max(len(rows["v1"]), len(rows["v2"]))):
        cells = []
        for family in ("v1", "v2"):
            name, seconds = rows[family][i] if i < len(rows[family]) else ("", None)
            cells += [name, f"{seconds:.4f}" if seconds is not None else ""]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
