"""Per-image throughput of batched inversion vs one image at a time, same settings, one run.

    python benchmarks/inversion.py [--images 8] [--iterations 30] [--device cpu] [--codes 30]

Both arms run the same recipe on the same images with the same seeds; the batched arm sends all
images through one optimisation (B x N codes in one head pass), the other loops over images.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import platform

import torch

from inversion import Inversion, get_recipe, invert
from inversion.engine import QUIET, InvertOptions
from mganprior.core.devices import timed
from mganprior.zoo import load_generator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--codes", type=int, default=None)
    parser.add_argument("--layer", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    loaded = load_generator("digiface-dcgan64", device=args.device)
    generator = loaded.generator
    device = generator.device
    recipe = get_recipe("adam", "inversion").with_overrides(
        iterations=args.iterations, codes=args.codes, layer=args.layer)
    layer = recipe.resolve_layer(generator)
    images = generator.sample(args.images, seed=99)
    seeds = list(range(args.images))

    def batched():
        return invert(generator, images, Inversion(), recipe, seeds=seeds,
                      options=InvertOptions(bf16=args.bf16, progress=False))

    def one_by_one():
        return [invert(generator, images[i:i + 1], Inversion(), recipe, seeds=[seeds[i]],
                       options=InvertOptions(bf16=args.bf16, progress=False))
                for i in range(args.images)]

    timed(lambda: invert(generator, images[:1], Inversion(), recipe.with_overrides(iterations=2),
                         seeds=[0], options=QUIET), device)  # warm-up
    together, batched_s = timed(batched, device)
    alone, looped_s = timed(one_by_one, device)
    worst = max((together.codes[i] - alone[i].codes[0]).abs().max().item()
                for i in range(args.images))
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, "
                    f"{torch.get_num_threads()} threads")
    print(f"machine: {machine}; torch {torch.__version__}")
    print(f"digiface-dcgan64, {args.images} images, N={recipe.codes} codes at {layer.name} "
          f"{'x'.join(map(str, layer.shape))}, {args.iterations} iterations, "
          f"{'bf16' if args.bf16 else 'fp32'}")
    print(f"one image at a time: {looped_s / args.images:.3f} s/image "
          f"({looped_s / args.iterations / args.images * 1000:.1f} ms per image-iteration)")
    print(f"batched ({args.images} images): {batched_s / args.images:.3f} s/image "
          f"({batched_s / args.iterations / args.images * 1000:.1f} ms per image-iteration)")
    print(f"speed-up of batching: {looped_s / batched_s:.2f}x "
          f"(max |codes difference| between arms: {worst:.1e})")


if __name__ == "__main__":
    main()
