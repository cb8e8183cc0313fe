"""What generator tuning buys after a multi-code inversion, on real photos, at equal iterations.

For each case (a prior and a set of real photos, resized to its 64 px) and each setting, one
run of the library on the same images, side by side:

- ``multi-code``: the ``adam`` recipe (N = 20 at its layer) for T iterations;
- ``multi-code + tune PART rank R lr LR``: the same for T/2 iterations, then T/2 tuning steps
  with each setting of ``--grid`` (locality on at its default);
- ``single-code + tune (PTI)``: one code at layer 0 (W for StyleGAN2, z otherwise) for T/2
  iterations, then T/2 steps on the whole generator's full weights at PTI's rate 3e-4.

It prints PSNR and SSIM against the photo (LPIPS where its weights exist), wall seconds per image,
how far random samples moved (mean |change| in 8-bit levels), and editability: the mean change an
edit along the prior's first SeFa direction (a seeded random one where SeFa's space is not the
codes', StyleGAN2's z) makes at t = +-3 (8-bit levels), tuned over untuned (1.0: tuning kept
the edit's strength). ``bedroom-inpainting`` fits the photo outside a centred hole and scores
the whole image against the photo, and the hole alone (hole PSNR): where tuning overfits the
known pixels, the hole shows it.

    python benchmarks/tuning.py [--iterations 300] [--images 4] [--cases faces,bedroom-pggan]
                                [--grid default,all:0:3e-4,tail:4:1e-2:1.0]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import math
import platform
import statistics
import time

import numpy as np
import torch

from analysis.directions import Direction, latent_size, sefa_directions
from analysis.editing import EditSettings, edit
from inversion.engine import InvertOptions, invert
from inversion.images import load_images
from inversion.losses import load_lpips
from inversion.options import TuneSettings
from inversion.recipes import get_recipe
from inversion.tasks import make_task
from mganprior.core.devices import cpu_model
from mganprior.zoo import load_generator

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-images"
CASES = {  # name: (prior, photos, task)
    "faces": ("digiface-dcgan64", "face", "inversion"),
    "bedroom-pggan": ("bedroom-pggan64", "bedroom", "inversion"),
    "bedroom-stylegan2": ("bedroom-stylegan2-64", "bedroom", "inversion"),
    "bedroom-via-faces": ("digiface-dcgan64", "bedroom", "inversion"),
    "bedroom-inpainting": ("bedroom-pggan64", "bedroom", "inpainting"),  # a centred hole
}
EDIT_RANGE = 3.0


def parse_grid(text: str) -> list[TuneSettings]:
    """``PART:RANK:LR[:LOCALITY],...`` (``default``: the library's defaults); steps are set
    per run."""
    grid = []
    for item in text.split(","):
        if item == "default":
            grid.append(TuneSettings())
            continue
        part, rank, lr, *locality = item.split(":")
        grid.append(TuneSettings(tune_part=part, tune_rank=int(rank), tune_lr=float(lr),
                                 **({"tune_locality": float(locality[0])} if locality else {})))
    return grid


def settings(iterations: int, grid: list[TuneSettings], generator):
    half = iterations // 2
    multi = get_recipe("adam", "inversion")
    single_space = "w" if "w" in generator.latent_spaces else "z"
    single = multi.with_overrides(codes=1, layer=0, latent_space=single_space)
    chosen = {"multi-code": (multi.with_overrides(iterations=iterations), None)}
    for tune in grid:
        label = (f"multi-code + tune {tune.tune_part} rank {tune.tune_rank} lr {tune.tune_lr:g} "
                 f"locality {tune.tune_locality:g}")
        chosen[label] = (multi.with_overrides(iterations=half),
                         dataclasses.replace(tune, tune=iterations - half))
    chosen["single-code + tune all rank 0 lr 0.0003 (PTI)"] = (
        single.with_overrides(iterations=half),
        TuneSettings(tune=iterations - half, tune_part="all", tune_rank=0, tune_lr=3e-4))
    return chosen


def hole_psnr(outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> str:
    """PSNR (dB) over the unknown pixels only (inpainting's hole), on the 8-bit images."""
    if mask is None:
        return "-"
    hole = (mask.cpu() < 0.5).expand_as(targets)
    quantised = [((t + 1) * 127.5).round() for t in (outputs.cpu(), targets.cpu())]
    mse = float(((quantised[0] - quantised[1])[hole] ** 2).mean())
    return f"{10 * math.log10(255 ** 2 / mse):.2f}"


def edit_direction(generator, space: str) -> Direction:
    """The prior's first SeFa direction where it lives in the codes' space, else a seeded
    random unit direction of that space (StyleGAN2's z codes)."""
    direction = sefa_directions(generator.in_space(space), count=1)[0]
    if direction.space == space:
        return direction
    vector = np.random.default_rng(0).standard_normal(latent_size(generator, space))
    return Direction("random", vector / np.linalg.norm(vector), space, "file")


def edit_strength(generator, result) -> float:
    """Mean change (8-bit levels) an edit along ``edit_direction`` makes at +-3."""
    space = result.recipe.get("latent_space", "z")
    direction = edit_direction(generator, space)
    frames = edit(generator, result, direction,
                  EditSettings(steps=3, range=EDIT_RANGE, code_sets="all"), progress=False).frames
    return float((frames[:, 0, [0, 2]] - frames[:, 0, 1:2]).abs().mean() * 127.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--grid", default="default,all:0:3e-4",
                        help="tuning settings after T/2 multi-code iterations, "
                             "PART:RANK:LR[:LOCALITY],... "
                             "(default: the library's defaults)")
    args = parser.parse_args()
    if not REAL.is_dir():
        sys.exit(f"needs the shared real photos in {REAL}")
    lpips = load_lpips()
    print(f"# {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"python {platform.python_version()}; T = {args.iterations} iterations in all; "
          f"{args.images} photos per case; LPIPS: {lpips.describe()}")
    print("| case | setting | PSNR | SSIM | LPIPS | hole PSNR | s / image | random samples "
          "moved | edit strength kept |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        prior, photos, task_name = CASES[case]
        generator = load_generator(prior).generator
        images = load_images([REAL / photos], generator.resolution)[:args.images]
        targets = torch.stack([image.tensor() for image in images])
        seeds = list(range(len(images)))
        task = make_task(task_name)
        ctx = task.context(generator.resolution, seeds, generator.device)
        observations = task.observe(targets, ctx)
        for label, (recipe, tune) in settings(args.iterations, parse_grid(args.grid),
                                              generator).items():
            started = time.perf_counter()
            result = invert(generator, observations, task, recipe, seeds=seeds, ctx=ctx,
                            references=targets, lpips=lpips.module,
                            options=InvertOptions(progress=False), tune=tune)
            seconds = (time.perf_counter() - started) / len(images)
            metrics = [m for m in result.metrics if m is not None]
            psnr = statistics.fmean(m["psnr"] for m in metrics)
            ssim = statistics.fmean(m["ssim"] for m in metrics)
            scores = [m["lpips"] for m in metrics if m.get("lpips") is not None]
            moved = kept = "-"
            if tune is not None:
                moved = f"{statistics.fmean(f['sample_change'] for f in result.tuning):.1f}"
                before = edit_strength(generator, dataclasses.replace(result, adapters=None))
                after = edit_strength(generator, result)
                kept = f"{after / before:.2f}"
            task_note = "" if task_name == "inversion" else f", {task_name}"
            where = f"{case} ({prior}, real {photos}{task_note})"
            lpips_text = f"{statistics.fmean(scores):.3f}" if scores else "-"
            print(f"| {where} | {label} | {psnr:.2f} | {ssim:.3f} | {lpips_text} | "
                  f"{hole_psnr(result.outputs, targets, ctx.mask)} | ", end="")
            print(f"{seconds:.1f} | {moved} | {kept} |", flush=True)


if __name__ == "__main__":
    main()
