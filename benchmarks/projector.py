"""Multi-code inversion (with and without noise optimisation) against NVIDIA's projector in W and
W+, at equal iterations, on the same images, side by side in one run; and the seconds per
iteration of each.

    python benchmarks/projector.py [--generator bedroom-stylegan2-64] [--iterations 100 300]
        [--renders 4] [--photos ../shared/real-images/bedroom] [--layer b32.conv0] [--codes 20]
        [--only projector]

Images: ``--renders`` held-out renders of the generator's domain and every photo in ``--photos``
(resized to the generator's resolution). Metrics are those every run records (PSNR, SSIM on
8-bit images; LPIPS where AlexNet's weights are on disk, else null). The projector uses
LPIPS-VGG where VGG16's weights are on disk, else pixel MSE; the multi-code recipe is ``adam``
(pixel MSE, plus VGG16 L1 where the weights exist). Wall time is the whole inversion of the set.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import statistics
import tempfile

import torch

from inversion import Inversion, get_recipe, invert
from inversion.engine import QUIET
from inversion.images import load_images
from inversion.losses import load_lpips, load_perceptual
from inversion.projector import estimate_latent_stats
from mganprior.core.devices import cpu_model
from mganprior.studies import default_images
from mganprior.zoo import load_generator


def methods(layer: str, codes: int) -> dict[str, object]:
    projector = get_recipe("projector", "inversion")
    adam = get_recipe("adam", "inversion").with_overrides(codes=codes, layer=layer)
    return {
        "projector, W (noise maps optimised)": projector,
        "projector, W+ (noise maps optimised)": projector.with_overrides(latent_space="w+"),
        f"multi-code, {codes} codes at {layer}": adam,
        f"multi-code, {codes} codes at {layer}, noise maps optimised":
            adam.with_overrides(optimize_noise=True),
    }


def mean(values: list[float | None]) -> str:
    kept = [v for v in values if v is not None]
    return f"{statistics.fmean(kept):.3f}" if kept else "null"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="bedroom-stylegan2-64")
    parser.add_argument("--iterations", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--renders", type=int, default=4)
    parser.add_argument("--photos", default=str(Path(__file__).resolve().parents[2] / "shared"
                                                / "real-images" / "bedroom"))
    parser.add_argument("--layer", default="b32.conv0")
    parser.add_argument("--codes", type=int, default=20)
    parser.add_argument("--only", help="run the methods whose name contains this text")
    args = parser.parse_args()
    loaded = load_generator(args.generator, device="cpu")
    generator = loaded.generator
    size = generator.resolution
    sets = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder, what = default_images(args.generator, loaded, args.renders, Path(scratch))
        sets[what] = load_images([folder], size)
    if Path(args.photos).is_dir():
        sets[f"real photos ({Path(args.photos).name})"] = load_images([args.photos], size)
    vgg = load_perceptual("vgg16")
    lpips = load_lpips()
    stats = estimate_latent_stats(generator)
    cpu = cpu_model()
    print(f"# {args.generator}, {torch.get_num_threads()} threads, {cpu}")
    for note in (vgg.note, lpips.note):
        if note:
            print(f"# {note}")
    print("| images | method | iterations | PSNR (dB) | SSIM | LPIPS | wall (s) | s / it |")
    print("|---|---|---|---|---|---|---|---|")
    for label, images in sets.items():
        targets = torch.stack([image.tensor() for image in images])
        seeds = list(range(len(images)))
        for name, recipe in methods(args.layer, args.codes).items():
            if args.only and args.only not in name:
                continue
            for iterations in args.iterations:
                distance = recipe.perceptual_distance
                perceptual = load_perceptual("vgg16", size=recipe.perceptual_size,
                                             distance=distance).module
                result = invert(generator, targets, Inversion(),
                                recipe.with_overrides(iterations=iterations), seeds=seeds,
                                references=targets, perceptual=perceptual,
                                latent_stats=stats, lpips=lpips.module, options=QUIET)
                rows = [m for m in result.metrics if m is not None]
                psnr = [m["psnr"] for m in rows]
                print(f"| {label} | {name} | {iterations} | {statistics.fmean(psnr):.2f} ± "
                      f"{statistics.pstdev(psnr):.2f} | {mean([m['ssim'] for m in rows])} | "
                      f"{mean([m['lpips'] for m in rows])} | {result.seconds:.1f} | "
                      f"{result.seconds / iterations:.3f} |", flush=True)


if __name__ == "__main__":
    main()
