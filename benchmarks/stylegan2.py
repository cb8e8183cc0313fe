"""StyleGAN2: which carried-state rule to default to, which recipe per latent space, and the
seconds per iteration at every layer, all measured side by side in one run.

    python benchmarks/stylegan2.py --checkpoint ../shared/fixtures/stylegan2/stylegan2-tiny32.pkl
    python benchmarks/stylegan2.py --checkpoint GENERATOR --parts rules --layers b8,b16

Targets are the generator's own samples (exactly representable, so a rule that cannot reach them
shows it), or with ``--renders DOMAIN`` held-out scene-world renders (what a trained scene prior
is inverted on). Every arm runs the same images, seeds and iterations; PSNR is the mean over images.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import itertools
import platform
import statistics

import torch

from inversion import Inversion, get_recipe, invert
from inversion.engine import QUIET
from mganprior.core.devices import timed
from mganprior.zoo import load_generator


def mean_psnr(result) -> float:
    return statistics.fmean(m["psnr"] for m in result.metrics if m is not None)


def run(generator, targets, **overrides):
    recipe = get_recipe("adam", "inversion").with_overrides(**overrides)
    return invert(generator, targets, Inversion(), recipe, seeds=list(range(len(targets))),
                  references=targets, options=QUIET)


def rules_part(generator, targets, layers, codes, iterations) -> None:
    print(f"\n## carried-state rules: N={codes}, {iterations} iterations, mean PSNR (dB)")
    combos = list(itertools.product(("alpha", "mean", "drop"), ("latent", "mean", "alpha")))
    header = " | ".join(f"img={i}, styles={s}" for i, s in combos)
    print(f"| layer | {header} |")
    print("|---" * (len(combos) + 1) + "|")
    for name in layers:
        layer = generator.layer(name)
        cells = []
        for img, styles in combos:
            carry = f"styles={styles}" + (f",img={img}" if any(
                spec.name == "img" for spec in generator.carry_specs(layer)) else "")
            if img != "alpha" and "img" not in carry:
                cells.append("")
                continue
            result = run(generator, targets, codes=codes, layer=name, iterations=iterations,
                         carry=carry)
            cells.append(f"{mean_psnr(result):.2f}")
        print(f"| {layer.describe()} | " + " | ".join(cells) + " |")


def spaces_part(generator, targets, iterations, lrs, codes, layer) -> None:
    print(f"\n## latent spaces: {iterations} iterations, mean PSNR (dB) by learning rate")
    print("| setting | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |")
    print("|---" * (len(lrs) + 1) + "|")
    settings = [(f"single code, {space}", {"codes": 1, "layer": 0, "latent_space": space})
                for space in ("z", "w", "w+")]
    settings += [(f"N={codes} at {layer}, codes in {space}",
                  {"codes": codes, "layer": layer, "latent_space": space})
                 for space in ("z", "w")]
    for label, overrides in settings:
        scores = [mean_psnr(run(generator, targets, iterations=iterations, lr=lr, **overrides))
                  for lr in lrs]
        cells = [f"{score:.2f}" for score in scores]
        print(f"| {label} | " + " | ".join(cells) + " |")


def speed_part(generator, targets, codes, repeats=5) -> None:
    print(f"\n## seconds per iteration, B={len(targets)}, N={codes} (median of {repeats})")
    print("| layer | s/iteration |")
    print("|---|---|")
    for layer in generator.layers[1:]:
        # runs of 3 and 13 iterations: their difference / 10 leaves out the run's set-up
        times = {}
        for iterations in (3, 13):
            times[iterations] = statistics.median(
                timed(lambda layer=layer, iterations=iterations: run(
                    generator, targets, codes=codes, layer=layer.name, iterations=iterations),
                    generator.device)[1] for _ in range(repeats))
        print(f"| {layer.describe()} | {(times[13] - times[3]) / 10:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--codes", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--layers", default=None, help="default: every layer")
    parser.add_argument("--parts", default="rules,spaces,speed")
    parser.add_argument("--lrs", default="0.01,0.03,0.1")
    parser.add_argument("--renders", help="targets: held-out renders of this scene domain")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    generator = load_generator(checkpoint=args.checkpoint, device=args.device).generator
    if args.renders:
        from mganprior.core.pixels import from_uint8
        from mganprior.scenes.datasets import HELD_OUT_SEED, render_many

        images, _ = render_many(args.renders, range(HELD_OUT_SEED, HELD_OUT_SEED + args.images),
                                generator.resolution, progress=False)
        targets = from_uint8(images).to(generator.device)
    else:
        targets = generator.sample(args.images, seed=2026)
    print(f"{args.checkpoint}: {generator.family} {generator.resolution} px, torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    layers = args.layers.split(",") if args.layers else [layer.name for layer in
                                                         generator.layers[1:]]
    parts = args.parts.split(",")
    if "rules" in parts:
        rules_part(generator, targets, layers, args.codes, args.iterations)
    if "spaces" in parts:
        spaces_part(generator, targets, args.iterations,
                    [float(lr) for lr in args.lrs.split(",")], args.codes, layers[-1])
    if "speed" in parts:
        speed_part(generator, targets, args.codes)


if __name__ == "__main__":
    main()
