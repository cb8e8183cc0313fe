"""Speed, side by side in one run: the exact rewrites, bf16, the convergence stop, and how far
ahead of the official recipe the ``adam`` one is.

    python benchmarks/speed.py [--parts split,rewrites,bf16,converge,quality,tasks]

- ``split``: where one iteration's time and FLOPs go (B = 4, N = 20, each prior's default
  layer): the head (the B x N code batch) and the tail (the B fused cuts), forward and backward,
  as achieved GFLOP/s against this machine's fp32 matmul rate (a 2048^3 matmul), eager and
  under ``torch.compile`` (the share of time is of the eager iteration); besides the zoo's
  priors, a StyleGAN2 at the widths of StyleGAN2-ADA's 256 px models (random weights).

- ``rewrites``: seconds per iteration with the fast paths (PGGAN's fused upsample-conv, the
  DCGAN's folded BatchNorm and the multiply-and-sum fuse, StyleGAN2's shared convolution with
  styles on activations) against the plain ones, per family and layer (B = 4 images, N = 20
  codes), and the largest difference of the codes after 20 iterations.
- ``bf16``: speed and quality of ``--bf16`` against fp32 at equal iterations (300) on the demo's
  images (4 DigiFace samples; 4 held-out bedroom renders with the bedroom PGGAN and with the
  bedroom StyleGAN2).
- ``converge``: wall time and PSNR with the convergence stop (window 20, several tolerances)
  against 300 iterations without it, and whether the stop stays within 0.1 dB.
- ``quality``: iterations and wall time the ``adam`` recipe needs to reach the PSNR the official
  SGD recipe reaches after 1000 iterations, on DigiFace samples, on real bedroom photos with the
  DigiFace prior (``../shared/real-images/bedroom``), and on rendered bedrooms with the bedroom
  PGGAN and the bedroom StyleGAN2: the four ratios ``docs/benchmarks.md`` quotes, for alpha
  warm-ups and Adam second-moment decays (``QUALITY_SETTINGS``: the previous defaults and the
  recipe's), each with the PSNR and seconds of a 300-iteration run.
- ``tasks``: the restoration tasks (colorization, super-resolution, inpainting, denoising) on
  DigiFace samples and bedroom renders, with each task's own warm-up and beta2 against
  inversion's: the PSNR of the output to the clean image after 50 and 300 iterations.

Every figure is printed with the CPU model and its flags. The script runs under the command
line's heap policy (``mganprior.core.heap``), as users' runs do.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import math
import os
import statistics

import torch

from inversion.engine import InvertOptions, frozen, invert
from inversion.generators.base import compiled
from inversion.generators.stylegan2 import StyleGAN2Generator
from inversion.images import load_images
from inversion.metrics import image_metrics
from inversion.recipes import get_recipe
from inversion.tasks import Inversion, make_task
from mganprior.core.devices import matmul_rate, timed
from mganprior.core.heap import keep_big_blocks
from mganprior.zoo import load_generator

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-images"
# StyleGAN2's plain path (one modulated weight per sample) costs over a second an iteration at
# B x N = 80; three cuts show the trend (docs/stylegan.md has every cut).
REWRITE_LAYERS = {"stylegan2": ["b8", "b16", "b32"]}


def cpu() -> str:
    model, flags = "?", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = [f for f in line.split(":", 1)[1].split()
                         if f.startswith(("avx2", "avx512f", "avx512_bf16", "amx"))]
    except OSError:
        pass
    return f"{model} ({' '.join(sorted(set(flags)))}), {torch.get_num_threads()} threads"


def psnr_of(generator, targets, recipe, bf16=False) -> tuple[float, float, object]:
    """Mean PSNR (10 log10(4 / MSE), before 8-bit rounding) and the wall time."""
    result, seconds = timed(lambda: invert(generator, targets, Inversion(), recipe,
                                           seeds=list(range(len(targets))),
                                           options=InvertOptions(bf16=bf16, progress=False)),
                            generator.device)
    mse = (result.reconstructions - targets.cpu()).pow(2).flatten(1).mean(dim=1)
    return statistics.fmean(10 * math.log10(4 / max(m, 1e-12)) for m in mse.tolist()), \
        seconds, result


def scene_targets(generator, count: int) -> torch.Tensor:
    from mganprior.core.pixels import from_uint8
    from mganprior.scenes.datasets import HELD_OUT_SEED, render_many

    images, _ = render_many("bedroom", range(HELD_OUT_SEED, HELD_OUT_SEED + count),
                            generator.resolution, progress=False)
    return from_uint8(images).to(generator.device)


def split(priors) -> None:
    peak = matmul_rate()
    print(f"\n## one iteration split into head and tail, B=4, N=20 (fp32 matmul: {peak:.0f} "
          "GFLOP/s)")
    print("| prior | layer | part | GFLOP | s | GFLOP/s | of matmul rate | share of time |")
    print("|---|---|---|---|---|---|---|---|")
    for name, generator, targets in priors:
        layer = get_recipe("adam", "inversion").resolve_layer(generator)
        rows = _head_and_tail(generator, targets, layer)
        total = sum(seconds for _, seconds in rows.values())
        # torch.compile: the same FLOPs (counted eagerly), the compiled kernels' time
        fast = _head_and_tail(compiled(generator), targets, layer, flops=rows)
        for label, table in (("", rows), (", compiled", fast)):
            for part, (gflop, seconds) in table.items():
                print(f"| {name} | {layer.name} | {part}{label} | {gflop:.1f} | {seconds:.4f} | "
                      f"{gflop / seconds:.0f} | {gflop / seconds / peak:.0%} | "
                      f"{seconds / total:.0%} |")


def _head_and_tail(generator, targets, layer, codes: int = 20,
                   flops: dict[str, tuple[float, float]] | None = None
                   ) -> dict[str, tuple[float, float]]:
    """GFLOP and seconds of the head's and the tail's forward and backward (``flops``: the
    GFLOP already counted, for a compiled generator, whose kernels the counter cannot see)."""
    from torch.utils.flop_counter import FlopCounterMode

    from inversion.composition import code_cuts, fuse, initial_alphas

    z = torch.randn(len(targets), codes, generator.z_dim, device=targets.device,
                    requires_grad=True)
    cut = code_cuts(generator, z.detach(), layer)
    alphas = initial_alphas(len(targets), codes, cut.features.shape[-3], targets.device)
    # "mean" for anything carried (StyleGAN2): the tail costs the same under every rule
    fused = fuse(cut, alphas, rules={name: "mean" for name in cut.carry})
    features = fused.features.detach().requires_grad_()
    carry = {name: tensor.detach() for name, tensor in fused.carry.items()}

    def head():
        code_cuts(generator, z, layer).features.square().mean().backward()

    def tail():
        image = generator.tail(type(fused)(features, carry), layer)
        image.sub(targets).square().mean().backward()

    rows = {}
    with frozen(generator):  # as in the engine: no weight gradients
        for part, step in (("head", head), ("tail", tail)):
            if flops:  # compiled: never under the counter's dispatch mode, which dynamo skips
                gflop = flops[part][0]
                step()  # the compilation
            else:
                with FlopCounterMode(display=False) as counter:
                    step()
                gflop = counter.get_total_flops() / 1e9
            step()
            _, seconds = timed(lambda step=step: [step() for _ in range(5)], generator.device)
            rows[part] = (gflop, seconds / 5)
    return rows


def rewrites(priors) -> None:
    print("\n## exact rewrites (fast paths) vs plain, B=4, N=20")
    print("| prior | layer | plain s/it | fast s/it | speed-up | max code difference | "
          "plain dB | fast dB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, generator, targets in priors:
        for layer in REWRITE_LAYERS.get(generator.family,
                                        [layer.name for layer in generator.layers[1:]]):
            # no warm-up (its steps reuse head features computed once) and torch's beta2: with
            # 0.95, Adam amplifies the arms' rounding differences and hides whether they agree
            recipe = get_recipe("adam", "inversion").with_overrides(
                iterations=20, codes=20, layer=layer, alpha_warmup=0, adam_beta2=0.999)
            timings, codes, dbs = {}, {}, {}
            for fast in (False, True, False, True):  # interleaved, best of two
                generator.use_fast_paths(fast)
                dbs[fast], seconds, result = psnr_of(generator, targets, recipe)
                timings[fast] = min(timings.get(fast, math.inf), seconds / 20)
                codes[fast] = result.codes
            generator.use_fast_paths(True)
            # Adam's normalised step turns rounding-level gradient differences into steps of up
            # to lr where a gradient is near zero: codes drift apart, the PSNR does not
            gap = float((codes[True] - codes[False]).abs().max())
            print(f"| {name} | {layer} | {timings[False]:.4f} | {timings[True]:.4f} | "
                  f"{timings[False] / timings[True]:.2f}x | {gap:.1e} | {dbs[False]:.2f} | "
                  f"{dbs[True]:.2f} |")


def bf16(priors) -> None:
    print("\n## bf16 autocast vs fp32, 300 iterations, the adam recipe")
    print("| prior | fp32 dB | bf16 dB | fp32 SSIM | bf16 SSIM | fp32 s | bf16 s | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, generator, targets in priors:
        recipe = get_recipe("adam", "inversion").with_overrides(iterations=300)
        rows = {}
        for use in (False, True):
            dbs, seconds, result = psnr_of(generator, targets, recipe, bf16=use)
            ssim = statistics.fmean(m["ssim"] for m in image_metrics(result.reconstructions,
                                                                     targets.cpu()))
            rows[use] = (dbs, ssim, seconds)
        print(f"| {name} | {rows[False][0]:.2f} | {rows[True][0]:.2f} | {rows[False][1]:.3f} | "
              f"{rows[True][1]:.3f} | {rows[False][2]:.1f} | {rows[True][2]:.1f} | "
              f"{rows[False][2] / rows[True][2]:.2f}x |")


def converge(priors, tolerances=(1e-3, 3e-3, 1e-2, 3e-2)) -> None:
    print("\n## convergence stop (window 20) vs 300 iterations, by tolerance")
    print("| prior | tolerance | 300-it dB | stop dB | 300-it s | stop s | iterations at stop | "
          "within 0.1 dB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, generator, targets in priors:
        full = get_recipe("adam", "inversion").with_overrides(iterations=300)
        reference, full_s, _ = psnr_of(generator, targets, full)
        for tolerance in tolerances:
            stop = full.with_overrides(converge_window=20, converge_tolerance=tolerance)
            stopped_db, stop_s, result = psnr_of(generator, targets, stop)
            reached = "yes" if stopped_db >= reference - 0.1 else \
                f"no ({stopped_db - reference:+.2f})"
            print(f"| {name} | {tolerance:g} | {reference:.2f} | {stopped_db:.2f} | "
                  f"{full_s:.1f} | {stop_s:.1f} | {[s or 300 for s in result.stopped]} | "
                  f"{reached} |")


INVERSION = get_recipe("adam", "inversion")
# (alpha warm-up, Adam's beta2): the recipe before the warm-up, the previous default (warm-up 3,
# torch's beta2), and warm-ups with the recipe's beta2; the recipe's default among them
QUALITY_SETTINGS = ((0.0, 0.999), (3.0, 0.999), (0.0, INVERSION.adam_beta2),
                    (3.0, INVERSION.adam_beta2), (INVERSION.alpha_warmup, INVERSION.adam_beta2),
                    (5.0, INVERSION.adam_beta2))


def quality(digiface, bedroom_pggan, bedroom_stylegan2, settings=QUALITY_SETTINGS) -> None:
    print("\n## time to the official recipe's 1000-iteration PSNR (adam vs official SGD), by "
          f"alpha warm-up and Adam's beta2 (the recipe's default: {INVERSION.alpha_warmup:g} and "
          f"{INVERSION.adam_beta2:g})")
    print("| targets | official 1000 it dB | alpha warm-up | beta2 | adam iterations | "
          "official s | adam s | wall-time ratio | dB at 300 it | s at 300 it |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cases = [("DigiFace samples, digiface-dcgan64", digiface, digiface.sample(3, seed=7))]
    if (REAL / "bedroom").is_dir():
        photos = load_images([REAL / "bedroom"], digiface.resolution)[:3]
        cases.append(("real bedroom photos, digiface-dcgan64", digiface,
                      torch.stack([p.tensor() for p in photos])))
    cases.append(("rendered bedrooms, bedroom-pggan64", bedroom_pggan,
                  scene_targets(bedroom_pggan, 3)))
    cases.append(("rendered bedrooms, bedroom-stylegan2-64", bedroom_stylegan2,
                  scene_targets(bedroom_stylegan2, 3)))
    for label, generator, targets in cases:
        official = get_recipe("official", "inversion").with_overrides(
            iterations=1000, perceptual_lambda=0.0)
        goal, official_s, _ = psnr_of(generator, targets, official)
        for warmup, beta2 in settings:
            adam = INVERSION.with_overrides(perceptual_lambda=0.0, alpha_warmup=warmup,
                                            adam_beta2=beta2)
            needed = _first_reaching(generator, targets, adam, goal)
            at_300, seconds_300, _ = psnr_of(generator, targets,
                                             adam.with_overrides(iterations=300))
            reached = (f"{needed[0]} | {official_s:.1f} | {needed[1]:.2f} | "
                       f"{official_s / needed[1]:.0f}x" if needed else
                       f"> 300 | {official_s:.1f} | - | -")
            print(f"| {label} | {goal:.2f} | {warmup:g} | {beta2:g} | {reached} | "
                  f"{at_300:.2f} | {seconds_300:.1f} |", flush=True)


RESTORATIONS = ("colorization", "super-resolution", "inpainting", "denoising")


def tasks(digiface, bedroom_pggan) -> None:
    """The restoration tasks with their own warm-up and beta2 against inversion's: PSNR of the
    task's output to the clean image (what the faster fit does where the observation hides it)."""
    print("\n## restoration tasks: PSNR to the clean image, each task's alpha warm-up and beta2 "
          f"against inversion's ({INVERSION.alpha_warmup:g}, {INVERSION.adam_beta2:g}); "
          "3 images, pixel loss")
    print("| prior | task | task's warm-up, beta2 | 50 it dB | 300 it dB | inversion's: 50 it dB | "
          "300 it dB |")
    print("|---|---|---|---|---|---|---|")
    cases = [("digiface-dcgan64", digiface, digiface.sample(3, seed=7)),
             ("bedroom-pggan64", bedroom_pggan, scene_targets(bedroom_pggan, 3))]
    seeds = [0, 1, 2]
    for name, generator, clean in cases:
        for task_name in RESTORATIONS:
            task = make_task(task_name)
            ctx = task.context(generator.resolution, seeds, generator.device)
            observed = task.observe(clean, ctx)
            own = get_recipe("adam", task_name).with_overrides(perceptual_lambda=0.0)
            cells = []
            for recipe in (own, own.with_overrides(alpha_warmup=INVERSION.alpha_warmup,
                                                   adam_beta2=INVERSION.adam_beta2)):
                for iterations in (50, 300):
                    result = invert(generator, observed, task,
                                    recipe.with_overrides(iterations=iterations), seeds=seeds,
                                    ctx=ctx, references=clean,
                                    options=InvertOptions(progress=False))
                    cells.append(f"{statistics.fmean(m['psnr'] for m in result.metrics):.2f}")
            print(f"| {name} | {task_name} | {own.alpha_warmup:g}, {own.adam_beta2:g} | "
                  f"{' | '.join(cells)} |", flush=True)


def _first_reaching(generator, targets, recipe, goal: float) -> tuple[int, float] | None:
    """An iteration count whose PSNR reaches ``goal``, and its seconds: the first value of a coarse
    grid that does, refined to the first count that does between the grid value before it and
    that one (PSNR need not rise with every iteration: a count below the grid's miss is not
    tried)."""
    grid = (3, 5, 7, 10, 13, 16, 20, 25, 30, 35, 40, 50, 60, 70, 85, 100, 130, 160, 200, 300)
    below = 0
    for iterations in grid:
        dbs, seconds, _ = psnr_of(generator, targets, recipe.with_overrides(
            iterations=iterations))
        if dbs >= goal:
            for fewer in range(below + 1, iterations):
                dbs, fewer_seconds, _ = psnr_of(generator, targets, recipe.with_overrides(
                    iterations=fewer))
                if dbs >= goal:
                    return fewer, fewer_seconds
            return iterations, seconds
        below = iterations
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="split,rewrites,bf16,converge,quality,tasks")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    heap = keep_big_blocks(os.environ)  # as the command line runs (mganprior.core.heap)
    print(f"machine: {cpu()}; torch {torch.__version__}; the CLI's heap policy "
          f"{'on' if heap else 'off (not glibc 2.33+, or the allocator set by the user)'}")
    digiface = load_generator("digiface-dcgan64", device=args.device).generator
    bedroom = load_generator("bedroom-pggan64", device=args.device).generator
    stylegan2 = load_generator("bedroom-stylegan2-64", device=args.device).generator
    priors = [("digiface-dcgan64", digiface, digiface.sample(4, seed=2026)),
              ("bedroom-pggan64", bedroom, scene_targets(bedroom, 4)),
              ("bedroom-stylegan2-64", stylegan2, scene_targets(stylegan2, 4))]
    parts = args.parts.split(",")
    if "split" in parts:
        # StyleGAN2-ADA's 256 px widths (512 channels up to 32 px, then 256, 128, 64), random
        # weights: what users' StyleGAN2s cost
        wide = StyleGAN2Generator(resolution=256).eval().to(bedroom.device)
        split([*priors, ("StyleGAN2-256, paper256 widths (random)", wide,
                         torch.rand(4, 3, 256, 256, device=bedroom.device) * 2 - 1)])
    if "rewrites" in parts:
        rewrites(priors)
    if "bf16" in parts:
        bf16(priors)
    if "converge" in parts:
        converge(priors)
    if "quality" in parts:
        quality(digiface, bedroom, stylegan2)
    if "tasks" in parts:
        tasks(digiface, bedroom)


if __name__ == "__main__":
    main()
