"""The ``mganprior`` command: parses arguments, loads files, calls the library, writes files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from inversion.errors import InputError
from inversion.recipes import RECIPES
from inversion.tasks import TASKS


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mganprior",
        description="Multi-code GAN prior inversion and interpretability.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    zoo = commands.add_parser("zoo", help="list named generators, or one generator's layers")
    zoo.add_argument("name", nargs="?", help="a generator name: print its composable layers")
    zoo.add_argument("--checkpoint", help="print the layers of a generator file instead")

    invert = commands.add_parser(
        "invert", help="invert images with a multi-code GAN prior into a run directory",
        description="Invert images with N latent codes composed at a generator layer. "
                    "Rerunning the same command on the same --out resumes.")
    source = invert.add_mutually_exclusive_group(required=True)
    source.add_argument("--generator", help="a named generator (see `mganprior zoo`)")
    source.add_argument("--checkpoint", help="a generator file (.safetensors + .json, or an "
                        "official PGGAN / tutorial DCGAN .pth)")
    invert.add_argument("--images", nargs="+", required=True, metavar="PATH",
                        help="image files or folders of images")
    invert.add_argument("--out", required=True, help="run directory (created or resumed)")
    invert.add_argument("--task", default="inversion", choices=list(TASKS))
    invert.add_argument("--recipe", default="adam", choices=RECIPES,
                        help="defaults for everything below (default: adam)")
    invert.add_argument("--codes", type=int, help="number of latent codes N (1 with --layer 0: "
                        "plain single-code optimisation)")
    invert.add_argument("--layer", help="composing layer: name or index from `mganprior zoo "
                        "NAME` (negative counts from the deepest)")
    invert.add_argument("--iterations", type=int)
    invert.add_argument("--lr", type=float)
    invert.add_argument("--optimizer", choices=["sgd", "adam"])
    invert.add_argument("--fusion", choices=["sum", "mean"],
                        help="sum: F = sum alpha_n F_n; mean: the official (1/N) sum")
    invert.add_argument("--init", choices=["normal", "zero"], help="initial codes")
    invert.add_argument("--seed", type=int, default=0)
    invert.add_argument("--batch-size", type=int, default=8, help="images optimised together")
    invert.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if "
                        "available)")
    invert.add_argument("--bf16", action="store_true", help="bf16 autocast for the generator")
    task = invert.add_argument_group("task options")
    task.add_argument("--factor", type=int, help="super-resolution factor (default 4)")
    task.add_argument("--antialias", action="store_true",
                      help="antialiased bilinear downsampling for super-resolution")
    task.add_argument("--mask", help="inpainting mask: center:F, random:P or a PNG (white = "
                      "known; default center:0.5)")
    task.add_argument("--invert-mask", action="store_true",
                      help="the mask PNG marks holes in white (official mGANprior masks)")
    task.add_argument("--resize-mask", action="store_true",
                      help="resize a mask PNG of another size to the generator's")
    task.add_argument("--sigma", type=float, help="denoising noise std in 0-255 units "
                      "(default 25)")
    task.add_argument("--observed", action="store_true",
                      help="the images are already degraded; use them as observations")
    task.add_argument("--references", nargs="+", metavar="PATH",
                      help="with --observed: clean images (matched by name) for metrics")
    loss = invert.add_argument_group("perceptual loss")
    loss.add_argument("--perceptual", default="vgg16", choices=["vgg16", "none"])
    loss.add_argument("--vgg-weights", help="path to vgg16-397923af.pth (default: torch hub "
                      "cache)")
    loss.add_argument("--perceptual-layer", choices=["relu3_3", "conv4_3"])
    loss.add_argument("--perceptual-lambda", type=float)
    loss.add_argument("--perceptual-size", type=int, help="resize side for VGG (default: "
                      "recipe's)")
    invert.add_argument("--quiet", action="store_true", help="no progress bars")

    demo = commands.add_parser("demo", help="run the embedded end-to-end demo")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--device", default=None)
    demo.add_argument("--quiet", action="store_true")
    return parser


def _zoo(args: argparse.Namespace) -> int:
    from mganprior.zoo import GENERATORS, load_generator

    if args.name is None and args.checkpoint is None:
        width = max(len(name) for name in GENERATORS)
        print("generators:")
        for entry in GENERATORS.values():
            print(f"  {entry.name:<{width}}  {entry.description}")
        return 0
    loaded = load_generator(args.name, args.checkpoint, device="cpu")
    for layer in loaded.generator.layers:
        print(layer.describe())
    return 0


def _invert(args: argparse.Namespace) -> int:
    from inversion.images import load_images
    from inversion.losses import load_perceptual
    from inversion.recipes import get_recipe
    from inversion.runs import RunSettings, run_inversion
    from inversion.tasks import make_task
    from mganprior.zoo import load_generator

    if args.references and not args.observed:
        raise InputError("--references only makes sense with --observed")
    recipe = get_recipe(args.recipe, args.task).with_overrides(
        codes=args.codes, layer=args.layer, iterations=args.iterations, lr=args.lr,
        optimizer=args.optimizer, fusion=args.fusion, init=args.init,
        perceptual_layer=args.perceptual_layer, perceptual_lambda=args.perceptual_lambda,
        perceptual_size=args.perceptual_size)
    task = make_task(args.task, factor=args.factor, antialias=args.antialias or None,
                     mask=args.mask, invert_mask=args.invert_mask or None,
                     resize_mask=args.resize_mask or None, sigma=args.sigma)
    loaded = load_generator(args.generator, args.checkpoint, device=args.device)
    generator = loaded.generator
    recipe.resolve_layer(generator)  # bad --layer / task options fail before any file is written
    task.check(generator.resolution)
    size = task.observation_size(generator.resolution) if args.observed else generator.resolution
    images = load_images(args.images, size)
    references = None
    if args.references:
        references = {image.name: image
                      for image in load_images(args.references, generator.resolution)}
    perceptual = load_perceptual(args.perceptual, args.vgg_weights, recipe.perceptual_layer,
                                 recipe.perceptual_size)
    settings = RunSettings(generator, loaded.info, task, recipe, perceptual, seed=args.seed,
                           batch_size=args.batch_size, observed=args.observed, bf16=args.bf16,
                           progress=not args.quiet)
    run, summary = run_inversion(settings, images, args.out, references,
                                 config_extra={"command": " ".join(sys.argv)})
    print(_summary_line(summary))
    print(f"run directory: {run.path}")
    return 0 if summary["failed"] == 0 else 1


def _summary_line(summary: dict) -> str:
    parts = [f"{summary['ok']}/{summary['images']} images inverted"]
    if "psnr_mean" in summary:
        parts.append(f"PSNR {summary['psnr_mean']:.2f} ± {summary['psnr_std']:.2f} dB")
    if "ssim_mean" in summary:
        parts.append(f"SSIM {summary['ssim_mean']:.3f}")
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed (see results.jsonl)")
    return ", ".join(parts)


def _demo(args: argparse.Namespace) -> int:
    from mganprior.demo import run_demo

    run_demo(Path(args.out), device=args.device, progress=not args.quiet)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    handlers = {"zoo": _zoo, "invert": _invert, "demo": _demo}
    try:
        return handlers[args.command](args)
    except InputError as err:
        print(f"mganprior: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mganprior: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
