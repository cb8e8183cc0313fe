"""``mganprior demo``: the embedded end-to-end job on a fresh machine (no network, CPU is enough).

For now: sample faces from the real DigiFace DCGAN prior, invert them with multi-code composition
and with the single-code baseline, and print both scores and where the run directories are.
"""

from __future__ import annotations

import sys
from pathlib import Path

from inversion.images import load_images, save_png
from inversion.losses import load_perceptual
from inversion.recipes import get_recipe
from inversion.runs import RunSettings, run_inversion
from inversion.tasks import Inversion
from mganprior.zoo import load_generator

DEMO_GENERATOR = "digiface-dcgan64"
DEMO_IMAGES = 6
DEMO_SEED = 2026


def run_demo(out: Path, device: str | None = None, progress: bool = True) -> dict[str, dict]:
    loaded = load_generator(DEMO_GENERATOR, device=device)
    generator = loaded.generator
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(generator.sample(DEMO_IMAGES, seed=DEMO_SEED).cpu()):
        save_png(image, inputs / f"face{i}.png")
    images = load_images([inputs], generator.resolution)
    perceptual = load_perceptual("vgg16")
    multi = get_recipe("adam", "inversion")
    runs = {
        f"multi-code (N={multi.codes}, layer {multi.resolve_layer(generator).name})": multi,
        "single-code (N=1, layer z)": multi.with_overrides(codes=1, layer=0),
    }
    summaries = {}
    for (label, recipe), folder in zip(runs.items(), ["multi-code", "single-code"], strict=True):
        print(f"demo: {label}, {recipe.iterations} iterations", file=sys.stderr)
        settings = RunSettings(generator, loaded.info, Inversion(), recipe, perceptual,
                               seed=0, batch_size=DEMO_IMAGES, progress=progress)
        run, summary = run_inversion(settings, images, out / folder,
                                     config_extra={"command": "mganprior demo"})
        summaries[label] = summary | {"path": str(run.path)}
    print(f"\nDigiFace DCGAN prior, {DEMO_IMAGES} sampled faces ({inputs}):")
    for label, summary in summaries.items():
        print(f"  {label:<40} PSNR {summary['psnr_mean']:6.2f} dB  "
              f"SSIM {summary['ssim_mean']:.3f}  -> {summary['path']}")
    return summaries
