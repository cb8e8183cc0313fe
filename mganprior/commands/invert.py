"""``mganprior invert``: images into a run directory. Every recipe field is a flag, generated
from :class:`inversion.recipes.Recipe`; unset flags keep the chosen recipe's value."""

from __future__ import annotations

import argparse
import sys

from mganprior.commands.common import (
    COMPILE_HELP,
    DEVICE_HELP,
    Command,
    add_generator_source,
    add_shard,
    add_view_flags,
    dataclass_flags,
    summary_line,
    values_of,
    view_of,
)
from mganprior.core.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from inversion.options import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_SEED,
        LPIPS_BACKBONES,
        LPIPS_METRIC_NET,
        PERCEPTUAL_BACKENDS,
        TASK_NAMES,
        TuneSettings,
    )
    from inversion.recipes import RECIPES, Recipe

    add_generator_source(parser)
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH",
                        help="image files or folders of images")
    parser.add_argument("--out", required=True, help="run directory (created or resumed)")
    parser.add_argument("--task", default=TASK_NAMES[0], choices=TASK_NAMES)
    parser.add_argument("--recipe", default="adam", choices=RECIPES,
                        help="defaults for every recipe setting below (default: %(default)s)")
    parser.add_argument("--truncation-psi", type=float,
                        help="pull w toward w_avg (style-based; default: the file's, usually 1)")
    add_view_flags(parser)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="images optimised together (default: %(default)s)")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the generator")
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    recipe = parser.add_argument_group("recipe settings (inversion.recipes.Recipe)")
    parser.set_defaults(recipe_fields=dataclass_flags(recipe, Recipe, skip=("name",),
                                                      unset="the recipe's"))
    tuning = parser.add_argument_group("generator tuning after the inversion "
                                       "(inversion.tuning.TuneSettings)")
    parser.set_defaults(tune_fields=dataclass_flags(tuning, TuneSettings))
    task = parser.add_argument_group("task options (default: the task's)")
    task.add_argument("--factor", type=int, help="super-resolution factor")
    task.add_argument("--antialias", action="store_true",
                      help="antialiased bilinear downsampling for super-resolution")
    task.add_argument("--mask", help="inpainting mask: center:F, random:P or a PNG (white = "
                      "known)")
    task.add_argument("--invert-mask", action="store_true",
                      help="the mask PNG marks holes in white (official mGANprior masks)")
    task.add_argument("--resize-mask", action="store_true",
                      help="resize a mask PNG of another size to the generator's")
    task.add_argument("--sigma", type=float, help="denoising noise std in 0-255 units")
    task.add_argument("--observed", action="store_true",
                      help="the images are already degraded; use them as observations")
    task.add_argument("--references", nargs="+", metavar="PATH",
                      help="with --observed: clean images (matched by name) for metrics")
    loss = parser.add_argument_group("perceptual loss")
    loss.add_argument("--perceptual", default=PERCEPTUAL_BACKENDS[0],
                      choices=PERCEPTUAL_BACKENDS)
    loss.add_argument("--vgg-weights", help="path to vgg16-397923af.pth (default: torch hub "
                      "cache)")
    metric = parser.add_argument_group("LPIPS metric")
    metric.add_argument("--lpips", default=LPIPS_METRIC_NET, choices=[*LPIPS_BACKBONES, "none"],
                        help="backbone of the LPIPS metric in results (default: %(default)s)")
    metric.add_argument("--lpips-weights", help="path to the backbone's torchvision file "
                        "(default: torch hub cache)")
    add_shard(parser)


def run(args: argparse.Namespace) -> int:
    from inversion.images import load_images
    from inversion.losses import load_lpips, load_perceptual
    from inversion.options import TuneSettings
    from inversion.recipes import get_recipe
    from inversion.runs import RunSettings, run_inversion
    from inversion.tasks import make_task
    from mganprior.core.sharding import barrier
    from mganprior.zoo import load_generator

    if args.references and not args.observed:
        raise InputError("references only make sense with --observed", field="references")
    recipe = get_recipe(args.recipe, args.task).with_overrides(
        **values_of(args, args.recipe_fields))
    task = make_task(args.task, factor=args.factor, antialias=args.antialias or None,
                     mask=args.mask, invert_mask=args.invert_mask or None,
                     resize_mask=args.resize_mask or None, sigma=args.sigma)
    loaded = load_generator(args.generator, args.checkpoint, device=args.device,
                            truncation_psi=args.truncation_psi, **view_of(args))
    generator = loaded.generator
    settings = RunSettings(generator, loaded.info, task, recipe, seed=args.seed,
                           batch_size=args.batch_size, observed=args.observed, bf16=args.bf16,
                           compile=args.compile,
                           progress=not args.quiet,
                           tune=TuneSettings(**values_of(args, args.tune_fields)))
    settings.config()  # a bad layer, carry rule or task option fails before anything is read
    task.check(generator.resolution)
    size = task.observation_size(generator.resolution) if args.observed else generator.resolution
    images = load_images(args.images, size)
    references = None
    if args.references:
        references = {image.name: image
                      for image in load_images(args.references, generator.resolution)}
    settings.perceptual = load_perceptual(args.perceptual, args.vgg_weights,
                                          recipe.perceptual_layer, recipe.perceptual_size,
                                          recipe.perceptual_distance)
    settings.lpips = load_lpips(args.lpips, args.lpips_weights)
    run_dir, summary = run_inversion(settings, images, args.out, references,
                                     config_extra={"command": " ".join(sys.argv)},
                                     shard=args.shard_info)
    barrier(args.shard_info)
    if args.shard_info.count > 1:
        if not args.shard_info.leader:
            return 0 if summary["failed"] == 0 else 1
        summary = run_dir.rebuild_index()  # the leader sums up every shard's images
    print(summary_line(summary))
    print(f"run directory: {run_dir.path}")
    return 0 if summary["failed"] == 0 else 1


COMMANDS = {"invert": Command(
    "invert images into a run directory (multi-code, single-code, or NVIDIA's projector)",
    add_arguments, run,
    "Invert images with N latent codes composed at a generator layer. Rerunning the same "
    "command on the same --out resumes; several processes given the same --out share the "
    "images.")}
