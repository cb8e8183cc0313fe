"""``--compile`` (the generator's head and tail under ``torch.compile``) against eager, per family,
at the demo's settings: what compiling costs, what it saves per iteration, and after how many
iterations it pays.

    python benchmarks/compile.py [--images 4] [--iterations 20] [--priors NAME,...]

For each prior (the DigiFace DCGAN, the bedroom PGGAN and StyleGAN2, a random-weight StyleGAN3-T
at 32 px, 64 channels, codes in W+, and with ``--priors stylegan2-256`` a random-weight StyleGAN2
at the widths of StyleGAN2-ADA's paper256 configuration, not in the default set for its cost),
one inversion of ``--images`` images with the ``adam`` recipe (its default layer, 20 codes,
alpha warm-up included) runs eager twice and compiled three times, in that order, in one
process. The first compiled run compiles with an empty inductor cache (``compile s`` is its
excess over the last run); the second, after ``torch._dynamo.reset()``, retraces with inductor's
disk cache filled, as a later process would; seconds per iteration come from the second eager
and the last compiled run (the recipe's warm-up steps counted in). ``pays after`` is the cold
compile time over the time saved per iteration; ``demo`` is the iterations the demo runs with
that prior. The script runs under the command line's heap policy (``mganprior.core.heap``), as
users' runs do.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import math
import os
import tempfile

# an empty inductor cache: the first compiled run pays the whole compilation
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="mganprior-compile-")

import torch

from inversion import Inversion, get_recipe, invert
from inversion.engine import InvertOptions
from inversion.generators.stylegan2 import StyleGAN2Generator
from inversion.generators.stylegan3 import StyleGAN3Generator
from mganprior.core.devices import cpu_model, timed
from mganprior.core.heap import keep_big_blocks
from mganprior.demo import DEFAULT
from mganprior.zoo import load_generator

DEMO_ITERATIONS = {"digiface-dcgan64": DEFAULT.face_iterations,
                   "bedroom-pggan64": DEFAULT.bedroom_iterations,
                   "bedroom-stylegan2-64": DEFAULT.bedroom_iterations}
# --priors name -> (table label, the generator); all but stylegan2-256 run by default
PRIORS = {
    **{name: (name, lambda name=name: load_generator(name).generator) for name in DEMO_ITERATIONS},
    "stylegan3-t": ("StyleGAN3-T 32 px (random)", lambda: StyleGAN3Generator.design(
        32, 64, 64, channel_base=512, channel_max=64, config="t")),
    "stylegan2-256": ("StyleGAN2-256, paper256 widths (random)",
                      lambda: StyleGAN2Generator(resolution=256).eval()),
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / (a - b).pow(2).mean()))


def compare(generator, targets, recipe) -> dict[str, float]:
    """Eager twice, then compiled three times: from an empty cache, after ``dynamo.reset`` with
    inductor's disk cache filled, and again (steady)."""
    seeds = list(range(len(targets)))
    seconds, results = {}, {}
    for compiled, reset in ((False, False), (False, False), (True, True), (True, True),
                            (True, False)):
        if reset:
            torch._dynamo.reset()
        result, took = timed(lambda compiled=compiled: invert(
            generator, targets, Inversion(), recipe, seeds=seeds,
            options=InvertOptions(progress=False, compile=compiled)), generator.device)
        seconds.setdefault(compiled, []).append(took)
        results[compiled] = result.reconstructions
    steady = seconds[True][2]
    return {"eager": seconds[False][1] / recipe.iterations,
            "compiled": steady / recipe.iterations,
            "compile": seconds[True][0] - steady, "cached": seconds[True][1] - steady,
            "eager dB": psnr(results[False], targets.cpu()),
            "compiled dB": psnr(results[True], targets.cpu())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--priors", default=",".join(p for p in PRIORS if p != "stylegan2-256"),
                        help=f"comma-separated, of {', '.join(PRIORS)} (default %(default)s)")
    args = parser.parse_args()
    heap = keep_big_blocks(os.environ)
    print(f"# {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"B={args.images}, N=20, {args.iterations} iterations per run; the CLI's heap policy "
          f"{'on' if heap else 'off'}\n")
    torch.manual_seed(0)
    chosen = args.priors.split(",")
    unknown = sorted(set(chosen) - set(PRIORS))
    if unknown:
        parser.error(f"unknown priors {', '.join(unknown)}; choose from {', '.join(PRIORS)}")
    priors = {}
    for name in chosen:
        label, build = PRIORS[name]
        priors[label] = build()
    print("| prior | eager s/it | compiled s/it | speed-up | compile s | compile s, disk cache "
          "filled | pays after (it) | demo it | pays in the demo | eager dB | compiled dB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, generator in priors.items():
        space = "w+" if isinstance(generator, StyleGAN3Generator) else "z"
        recipe = get_recipe("adam", "inversion").with_overrides(
            iterations=args.iterations, perceptual_lambda=0.0, latent_space=space)
        targets = generator.sample(args.images, seed=5)
        row = compare(generator, targets, recipe)
        saved = row["eager"] - row["compiled"]
        pays = row["compile"] / saved if saved > 0 else math.inf
        demo = DEMO_ITERATIONS.get(name)
        print(f"| {name} | {row['eager']:.3f} | {row['compiled']:.3f} | "
              f"{row['eager'] / row['compiled']:.2f}x | {row['compile']:.0f} | "
              f"{row['cached']:.0f} | "
              f"{'never' if math.isinf(pays) else f'{pays:.0f}'} | {demo or '-'} | "
              f"{'-' if demo is None else 'yes' if demo >= pays else 'no'} | "
              f"{row['eager dB']:.2f} | {row['compiled dB']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
