"""The ``mganprior`` command: parses arguments, loads files, calls the library, writes files.

Defaults and choices come from the library's dataclasses and constants (never restated here), and
library errors name fields, which :func:`main` prints as the flags that set them.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import inspect
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from analysis.attribution import (
    DIFFERENCES,
    RELATIVE_MODES,
    SEGMENT_SOURCES,
    AttributionSettings,
)
from analysis.editing import MODES as EDIT_MODES
from analysis.editing import EditSettings
from core.errors import InputError
from core.sharding import barrier, current_shard, process_group, shard_device
from inversion.composition import FUSIONS
from inversion.losses import (
    LPIPS_BACKBONES,
    LPIPS_METRIC_NET,
    PERCEPTUAL_BACKENDS,
    PERCEPTUAL_DISTANCES,
    VGG_LAYERS,
)
from inversion.recipes import ALPHA_MODES, INITS, OPTIMIZERS, RECIPES
from inversion.runs import RunSettings
from inversion.tasks import TASKS, Denoising, Inpainting, SuperResolution
from mganprior.studies import CROSS_DOMAIN_PRIORS, LAYER_STUDY_TASKS
from training.gan import ARCHITECTURES, train_config_class

# The paper's cross-domain experiment: bedrooms through face, church, conference and bedroom priors.
DEFAULT_DEMO_OUT = "runs/demo"
# Library fields whose flag is not ``--`` + the field name with dashes.
SCALES_HELP = ("CSAIL segmenters: multi-scale inference as CSAIL's evaluation runs it: csail "
               "(the folder's test scales, else 300,375,450,525,600), or short sides such as "
               "300,450 (default: one pass at the image's size)")
FLAGS = {"ema_half_life_images": "--ema-half-life", "generator_override": "--generator",
         "labels_dir": "--labels", "label_names": "--label-names", "code_sets": "--codes"}


def flag_for(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def default(owner: type | Callable[..., Any], name: str) -> Any:
    """A dataclass field's default, or a function parameter's."""
    if dataclasses.is_dataclass(owner):
        for item in dataclasses.fields(owner):
            if item.name == name:
                if item.default_factory is not dataclasses.MISSING:
                    return item.default_factory()
                return item.default
        raise KeyError(name)
    return inspect.signature(owner).parameters[name].default


def _build_parser() -> argparse.ArgumentParser:
    from mganprior.studies import StudySpec
    from reports.html import build_report
    from training.loop import DEFAULT_CHECKPOINT_EVERY
    from training.segmenter import SegmenterTrainConfig

    parser = argparse.ArgumentParser(
        prog="mganprior",
        description="Multi-code GAN prior inversion and interpretability.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (a bug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    zoo = commands.add_parser("zoo", help="list named generators, or one generator's layers")
    zoo.add_argument("name", nargs="?", help="a generator name: print its composable layers")
    zoo.add_argument("--checkpoint", help="print the layers of a generator file instead")

    convert = commands.add_parser(
        "convert", help="convert a generator file of any known format to .safetensors + .json",
        description="Read a generator file of any known format (NVIDIA StyleGAN2 .pkl without "
                    "running its code, rosinality .pt, official PGGAN .pth, tutorial DCGAN "
                    ".pth) and write this project's format: weights that carry no code, and a "
                    "JSON config beside them.")
    convert.add_argument("source", metavar="IN", help="the generator file")
    convert.add_argument("--out", required=True, help="the .safetensors file to write")
    convert.add_argument("--truncation-psi", type=float,
                         help="store this truncation in the config (StyleGAN2)")
    convert.add_argument("--half", action="store_true", help="store the weights in fp16")

    invert = commands.add_parser(
        "invert", help="invert images with a multi-code GAN prior into a run directory",
        description="Invert images with N latent codes composed at a generator layer. "
                    "Rerunning the same command on the same --out resumes; several processes "
                    "given the same --out share the images.")
    source = invert.add_mutually_exclusive_group(required=True)
    source.add_argument("--generator", help="a named generator (see `mganprior zoo`)")
    source.add_argument("--checkpoint", help="a generator file in any known format "
                        "(.safetensors + .json, official PGGAN / tutorial DCGAN .pth, ...)")
    invert.add_argument("--images", nargs="+", required=True, metavar="PATH",
                        help="image files or folders of images")
    invert.add_argument("--out", required=True, help="run directory (created or resumed)")
    invert.add_argument("--task", default="inversion", choices=list(TASKS))
    invert.add_argument("--recipe", default="adam", choices=RECIPES,
                        help="defaults for everything below (default: %(default)s)")
    invert.add_argument("--codes", type=int, help="number of latent codes N (1 with --layer 0: "
                        "plain single-code optimisation)")
    invert.add_argument("--layer", help="composing layer: name or index from `mganprior zoo "
                        "NAME` (negative counts from the deepest)")
    invert.add_argument("--iterations", type=int, help="iterations (with --converge-window: "
                        "the most)")
    invert.add_argument("--converge-window", type=int,
                        help="every W iterations, stop images whose best loss fell by less than "
                        "--converge-tolerance (relative) over the last W (default 0: off)")
    invert.add_argument("--converge-tolerance", type=float,
                        help="relative improvement below which an image has converged "
                        "(default 0.001)")
    invert.add_argument("--lr", type=float)
    invert.add_argument("--optimizer", choices=OPTIMIZERS)
    invert.add_argument("--fusion", choices=FUSIONS,
                        help="sum: F = sum alpha_n F_n; mean: the official (1/N) sum")
    invert.add_argument("--init", choices=INITS, help="initial codes")
    invert.add_argument("--optimize-noise", action=argparse.BooleanOptionalAction,
                        help="optimise per-image noise maps beside the codes (StyleGAN2; "
                        "default: the recipe's, on for the projector where the generator has "
                        "them)")
    invert.add_argument("--alphas", choices=ALPHA_MODES,
                        help="train or fix the channel weights (auto: fixed only for the "
                        "single-code baseline, one code at layer 0)")
    invert.add_argument("--carry", help="fusion rule of each tensor the cut carries besides the "
                        "features, NAME=RULE[,NAME=RULE] (see `mganprior zoo NAME`)")
    invert.add_argument("--latent-space", help="where codes live, for generators with more "
                        "than one (StyleGAN2: z, w, w+; default z)")
    invert.add_argument("--truncation-psi", type=float,
                        help="pull w toward w_avg (StyleGAN2; default: the file's, usually 1)")
    invert.add_argument("--seed", type=int, default=default(RunSettings, "seed"))
    invert.add_argument("--batch-size", type=int, default=default(RunSettings, "batch_size"),
                        help="images optimised together (default: %(default)s)")
    invert.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if "
                        "available)")
    invert.add_argument("--bf16", action="store_true", help="bf16 autocast for the generator")
    task = invert.add_argument_group("task options")
    task.add_argument("--factor", type=int, help="super-resolution factor (default "
                      f"{default(SuperResolution, 'factor')})")
    task.add_argument("--antialias", action="store_true",
                      help="antialiased bilinear downsampling for super-resolution")
    task.add_argument("--mask", help="inpainting mask: center:F, random:P or a PNG (white = "
                      f"known; default {default(Inpainting, 'mask')})")
    task.add_argument("--invert-mask", action="store_true",
                      help="the mask PNG marks holes in white (official mGANprior masks)")
    task.add_argument("--resize-mask", action="store_true",
                      help="resize a mask PNG of another size to the generator's")
    task.add_argument("--sigma", type=float, help="denoising noise std in 0-255 units "
                      f"(default {default(Denoising, 'sigma'):g})")
    task.add_argument("--observed", action="store_true",
                      help="the images are already degraded; use them as observations")
    task.add_argument("--references", nargs="+", metavar="PATH",
                      help="with --observed: clean images (matched by name) for metrics")
    loss = invert.add_argument_group("perceptual loss")
    loss.add_argument("--perceptual", default="vgg16", choices=PERCEPTUAL_BACKENDS)
    loss.add_argument("--vgg-weights", help="path to vgg16-397923af.pth (default: torch hub "
                      "cache)")
    loss.add_argument("--perceptual-layer", choices=list(VGG_LAYERS))
    loss.add_argument("--perceptual-lambda", type=float)
    loss.add_argument("--perceptual-size", type=int, help="resize side for VGG (default: "
                      "recipe's)")
    loss.add_argument("--perceptual-distance", choices=PERCEPTUAL_DISTANCES,
                      help="l1: VGG16 feature L1 (mGANprior); lpips: LPIPS-VGG (NVIDIA's "
                      "projector; its recipe's default)")
    metric = invert.add_argument_group("LPIPS metric")
    metric.add_argument("--lpips", default=LPIPS_METRIC_NET,
                        choices=[*LPIPS_BACKBONES, "none"],
                        help="backbone of the LPIPS metric in results (default: %(default)s)")
    metric.add_argument("--lpips-weights", help="path to the backbone's torchvision file "
                        "(default: torch hub cache)")
    invert.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_shard(invert)

    attr = commands.add_parser(
        "attribute", help="attribute each code of a run to a semantic class (alpha ablation)",
        description="For every image and code: zero the code's alpha entries above the "
                    "threshold, re-render, binarise the difference map and intersect it with a "
                    "segmentation; the class with the best IoU is the code's class. Writes "
                    "RUN_DIR/attribution (or --out): arrays, attribution.csv, classes.csv and "
                    "figures.")
    attr.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from `mganprior "
                      "invert`")
    seg_source = attr.add_mutually_exclusive_group(required=True)
    seg_source.add_argument("--segmenter", help="a named segmenter (see `mganprior zoo`)")
    seg_source.add_argument("--segmenter-dir", help="a segmenter folder in a known format "
                            "(smp save_pretrained)")
    seg_source.add_argument("--labels", metavar="DIR", help="ground-truth label maps: "
                            "DIR/IMAGE.png, single-channel class indices (255 = unlabelled)")
    attr.add_argument("--label-names", help="vocabulary of --labels or of a --segmenter-dir "
                      "that does not name its classes: a name (scene-world, ade20k-150, "
                      "celebamask-hq-19) or a JSON list of class names (default for --labels: "
                      "scene-world)")
    attr.add_argument("--segmenter-scales", help=SCALES_HELP)
    attr.add_argument("--segment", default="reconstruction", choices=SEGMENT_SOURCES,
                      help="which image the segmenter sees (default: %(default)s)")
    attr.add_argument("--resize-labels", action="store_true",
                      help="resize label maps of another size (nearest neighbour)")
    settings = AttributionSettings()
    attr.add_argument("--threshold", type=float, default=settings.threshold,
                      help="zero alpha entries above this (default %(default)s, the paper's)")
    attr.add_argument("--relative", default=settings.relative, choices=RELATIVE_MODES,
                      help="codes: the threshold is a multiple of 1/N; quantile: the threshold "
                      "is a per-code quantile of alpha in (0, 1)")
    attr.add_argument("--binarize", default=settings.binarize, metavar="otsu|quantile:Q|fixed:T",
                      help="how difference maps become regions (default: %(default)s)")
    attr.add_argument("--difference", default=settings.difference, choices=DIFFERENCES,
                      help="pixel: channel-mean |x_inv - x'|; perceptual: VGG16 feature "
                      "distance (needs --vgg-weights or the torch hub cache)")
    attr.add_argument("--vgg-weights", help="path to vgg16-397923af.pth")
    attr.add_argument("--min-iou", type=float, default=settings.min_iou,
                      help="codes whose best IoU is lower stay unassigned (default %(default)s)")
    attr.add_argument("--min-difference", type=float, default=settings.min_difference,
                      help="smallest change that counts, in [-1, 1] units (default: half an "
                      "8-bit level)")
    attr.add_argument("--generator", dest="generator_override",
                      help="use this named generator instead of the run's")
    attr.add_argument("--checkpoint", help="use this generator file instead of the run's")
    attr.add_argument("--out", help="attribution directory (default: RUN_DIR/attribution)")
    attr.add_argument("--image-figures", type=int, default=None,
                      help="per-image figures for the first N images (default: all)")
    attr.add_argument("--batch-size", type=int, default=default(RunSettings, "batch_size"),
                      help="images whose N ablations go through the generator together")
    attr.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if "
                      "available)")
    attr.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_shard(attr)

    layers = commands.add_parser(
        "layers", help="layer-wise (and codes-count) study: invert the same images at every "
        "composing layer, for several tasks",
        description="Invert the same images at every composing layer (and every N in --codes) "
                    "for each task, plus the single-code baseline. Each cell is a run "
                    "directory; rerunning the same command resumes and never recomputes a "
                    "finished cell. Writes layers.csv, summary.json and figures.")
    layer_source = layers.add_mutually_exclusive_group(required=True)
    layer_source.add_argument("--generator", help="a named generator (see `mganprior zoo`)")
    layer_source.add_argument("--checkpoint", help="a generator file")
    layers.add_argument("--tasks", default=",".join(LAYER_STUDY_TASKS),
                        help="comma-separated tasks (default: %(default)s)")
    _add_study_options(layers, StudySpec, default_images="renders of a scene generator's "
                       "domain, or samples of the generator")

    cross = commands.add_parser(
        "cross-domain", help="invert the same (bedroom) images with several generators at "
        "every layer",
        description="The paper's cross-domain experiment: invert the same images with each "
                    "generator at each composing layer, plus each generator's single-code "
                    "baseline. Images are resized to each generator's resolution (the summary "
                    "says so). Resumable like `layers`.")
    cross.add_argument("--generators", default=",".join(CROSS_DOMAIN_PRIORS),
                       help="comma-separated zoo names or generator files (default: "
                       "%(default)s)")
    cross.add_argument("--task", default="inversion", choices=list(TASKS))
    _add_study_options(cross, StudySpec, default_images="rendered scene-world bedrooms")

    directions = commands.add_parser(
        "directions", help="find semantic directions of a generator (SeFa, InterFaceGAN) or "
        "check a boundary file",
        description="sefa: closed-form directions from the weight of the first layer acting on "
                    "the latent (no data). interfacegan: sample latents, score them with an "
                    "attribute (brightness, or class:NAME with a segmenter), fit a linear SVM "
                    "between the top and bottom fraction. file: check an InterFaceGAN .npy "
                    "boundary against the generator. Each direction is written as the official "
                    ".npy (1, d) plus a .json sidecar.")
    directions.add_argument("method", choices=["sefa", "interfacegan", "file"])
    directions.add_argument("boundary", nargs="?", help="with file: the .npy boundary")
    direction_source = directions.add_mutually_exclusive_group(required=True)
    direction_source.add_argument("--generator", help="a named generator")
    direction_source.add_argument("--checkpoint", help="a generator file")
    directions.add_argument("--out", required=True, help="folder for the .npy + .json files")
    directions.add_argument("--count", type=int, default=5, help="sefa: directions to keep "
                            "(default %(default)s)")
    directions.add_argument("--layers", default="all", help="sefa on StyleGAN2: style layers "
                            "(all, or indices / names such as b8.conv0)")
    directions.add_argument("--attribute", help="interfacegan: brightness or class:NAME")
    directions.add_argument("--segmenter", help="interfacegan with class:NAME: a named segmenter")
    directions.add_argument("--segmenter-dir", help="... or a segmenter folder")
    directions.add_argument("--label-names", help="class names of a --segmenter-dir that does "
                            "not name them")
    directions.add_argument("--segmenter-scales", help=SCALES_HELP)
    directions.add_argument("--samples", type=int, default=5000,
                            help="interfacegan: latents to score (default %(default)s)")
    directions.add_argument("--fraction", type=float, default=0.02,
                            help="interfacegan: top and bottom share kept (default %(default)s)")
    directions.add_argument("--space", help="z or w (interfacegan default z; file: from the "
                            "name, ..._w_boundary.npy is w)")
    directions.add_argument("--condition", nargs="+", default=[], metavar="NPY",
                            help="interfacegan: project out up to two boundaries")
    directions.add_argument("--name", help="interfacegan: the direction's name")
    directions.add_argument("--seed", type=int, default=0)
    directions.add_argument("--device", default=None)

    edit = commands.add_parser(
        "edit", help="edit a run's inverted images along a direction",
        description="Move the codes of every finished image of a run along a direction (all "
                    "codes together, the official mGANprior edit, and each code alone), render "
                    "every step, and with a segmenter measure each class's share per frame. "
                    "Writes frames, strips, animated GIFs, edits.csv and figures.")
    edit.add_argument("run_dir", metavar="RUN_DIR")
    edit.add_argument("--direction", required=True, help="a .npy direction (`mganprior "
                      "directions`, or an InterFaceGAN boundary)")
    edit_defaults = EditSettings()
    edit.add_argument("--steps", type=int, default=edit_defaults.steps,
                      help="steps from start to end (default %(default)s)")
    edit.add_argument("--range", type=float, default=edit_defaults.range,
                      help="symmetric sweep: t from -range to +range (default %(default)s)")
    edit.add_argument("--start", type=float, help="first t (with --end; InterFaceGAN's "
                      "start_distance); overrides --range")
    edit.add_argument("--end", type=float, help="last t (with --start; InterFaceGAN's "
                      "end_distance)")
    edit.add_argument("--mode", default=edit_defaults.mode, choices=EDIT_MODES,
                      help="offset: codes + t d; absolute: Z/W codes at signed distance t from "
                      "the boundary (InterFaceGAN's linear_interpolate; W+ codes move by t d "
                      "there too)")
    edit.add_argument("--codes", default=edit_defaults.code_sets,
                      help="code sets: all, each (one at a time), or indices joined by + "
                      "(default %(default)s)")
    edit.add_argument("--segmenter", help="a named segmenter for class shares per frame")
    edit.add_argument("--segmenter-dir", help="... or a segmenter folder")
    edit.add_argument("--label-names", help="class names of a --segmenter-dir")
    edit.add_argument("--segmenter-scales", help=SCALES_HELP)
    edit.add_argument("--target", help="the class the edit is meant to change (curves, "
                      "monotonicity)")
    edit.add_argument("--generator", dest="generator_override",
                      help="use this named generator instead of the run's")
    edit.add_argument("--checkpoint", help="use this generator file instead of the run's")
    edit.add_argument("--out", help="edit directory (default RUN_DIR/edits/DIRECTION)")
    edit.add_argument("--device", default=None)
    edit.add_argument("--quiet", action="store_true")

    index = commands.add_parser(
        "index", help="rebuild the indexes of runs and studies from their image folders",
        description="Rewrite results.jsonl and summary.json of each run (and every cell's, and "
                    "the tables of each study) from the per-image folders, which are the "
                    "source of truth. Use it after processes were killed, or to read a run "
                    "written by an older version.")
    index.add_argument("paths", nargs="+", metavar="DIR", help="run or study directories")

    report = commands.add_parser(
        "report", help="one self-contained HTML page from runs, studies and attributions",
        description="Write one HTML file (images inline, no network) with a section for each "
                    "run directory, study directory or attribution directory given.")
    report.add_argument("paths", nargs="+", metavar="DIR")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument("--title", default=default(build_report, "title"))
    report.add_argument("--max-gallery", type=int, default=default(build_report, "max_gallery"),
                        help="images per run shown in the gallery (default %(default)s)")
    report.add_argument("--attribution-images", type=int,
                        default=default(build_report, "attribution_images"),
                        help="difference-map grids per attribution (default %(default)s)")

    scenes = commands.add_parser(
        "scenes", help="render scene-world images and their exact label maps as PNGs")
    scenes.add_argument("--domain", required=True, help="bedroom, conference_room, church_outdoor")
    scenes.add_argument("--count", type=int, default=16)
    scenes.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    scenes.add_argument("--size", type=int, default=64)
    scenes.add_argument("--out", required=True, help="folder for NAME.png and labels/NAME.png")
    scenes.add_argument("--quiet", action="store_true", help="no progress bar")

    gan = commands.add_parser(
        "train-generator", help="train a PGGAN- or StyleGAN2-architecture generator on a scene "
        "domain",
        description="Train a generator on rendered scenes. Checkpoints every "
                    "--checkpoint-every steps; rerunning the same command resumes. Unset "
                    "options take the chosen architecture's defaults (training.gan, "
                    "training.stylegan2).")
    gan.add_argument("--architecture", default=ARCHITECTURES[0], choices=ARCHITECTURES)
    gan.add_argument("--domain", required=True, help="bedroom, conference_room, church_outdoor")
    gan.add_argument("--out", required=True)
    gan.add_argument("--images", type=int, default=20000, help="rendered training scenes")
    gan.add_argument("--iterations", type=int)
    gan.add_argument("--batch", type=int)
    gan.add_argument("--resolution", type=int)
    gan.add_argument("--z-dim", type=int)
    gan.add_argument("--channels", help="widths from 4 px up to the resolution, comma separated")
    gan.add_argument("--lr", type=float)
    gan.add_argument("--r1-gamma", type=float)
    gan.add_argument("--r1-every", type=int, help="lazy R1: penalty every N steps")
    gan.add_argument("--ema-half-life", type=float,
                     help="EMA half-life of the generator weights, in images")
    gan.add_argument("--w-dim", type=int, help="StyleGAN2: size of w")
    gan.add_argument("--mapping-layers", type=int, help="StyleGAN2: layers of the mapping")
    gan.add_argument("--mixing-prob", type=float, help="StyleGAN2: style-mixing probability")
    gan.add_argument("--pl-weight", type=float,
                     help="StyleGAN2: path-length regularisation weight (0: off)")
    gan.add_argument("--seed", type=int)
    gan.add_argument("--checkpoint-every", type=int, default=DEFAULT_CHECKPOINT_EVERY)
    _add_training_io(gan)

    seg = commands.add_parser(
        "train-segmenter", help="train the scene-world segmenter (segmentation-models-pytorch)",
        description="Train an smp model from scratch on rendered scenes of every domain; "
                    "writes OUT/model (save_pretrained) and reports held-out IoU.")
    seg_defaults = SegmenterTrainConfig()
    seg.add_argument("--out", required=True)
    seg.add_argument("--domains", default="all", help="comma-separated domains (default all)")
    seg.add_argument("--images-per-domain", type=int, default=8000)
    seg.add_argument("--validation-per-domain", type=int, default=300)
    seg.add_argument("--size", type=int, default=64)
    seg.add_argument("--architecture", default=seg_defaults.architecture)
    seg.add_argument("--encoder", default=seg_defaults.encoder)
    seg.add_argument("--iterations", type=int, default=seg_defaults.iterations)
    seg.add_argument("--batch", type=int, default=seg_defaults.batch)
    seg.add_argument("--lr", type=float, default=seg_defaults.lr)
    seg.add_argument("--no-augment", action="store_true")
    seg.add_argument("--dice-weight", type=float, default=seg_defaults.dice_weight,
                     help="add this times a multiclass Dice loss to the cross-entropy")
    seg.add_argument("--init-from", default=None,
                     help="start from a saved smp model directory of the same architecture")
    seg.add_argument("--seed", type=int, default=seg_defaults.seed)
    seg.add_argument("--checkpoint-every", type=int, default=DEFAULT_CHECKPOINT_EVERY)
    _add_training_io(seg)

    demo = commands.add_parser("demo", help="run the embedded end-to-end demo")
    demo.add_argument("--out", default=DEFAULT_DEMO_OUT)
    demo.add_argument("--device", default=None)
    demo.add_argument("--quiet", action="store_true")
    return parser


def _add_study_options(parser: argparse.ArgumentParser, spec: type, default_images: str) -> None:
    parser.add_argument("--images", nargs="+", metavar="PATH",
                        help=f"image files or folders (default: --count {default_images}, "
                        "written to OUT/inputs)")
    parser.add_argument("--count", type=int, default=4, help="default images to make "
                        "(default %(default)s)")
    parser.add_argument("--layers", default=default(spec, "layers"),
                        help="all, or comma-separated layer names / indices from `mganprior "
                        "zoo NAME` (default %(default)s)")
    parser.add_argument("--codes", default=",".join(map(str, default(spec, "codes"))),
                        help="N, or a comma-separated sweep such as 1,5,10,20,30 (default "
                        "%(default)s)")
    parser.add_argument("--no-single-code", action="store_true",
                        help="leave out the single-code baselines")
    parser.add_argument("--baselines", help="latent spaces of the single-code baselines, "
                        "comma-separated (StyleGAN2: z,w,w+; default: --latent-space)")
    parser.add_argument("--iterations", type=int, help="per cell (default: the recipe's)")
    parser.add_argument("--recipe", default=default(spec, "recipe"), choices=RECIPES)
    parser.add_argument("--seed", type=int, default=default(spec, "seed"))
    parser.add_argument("--segmenter", help="attribute every multi-code cell's codes with this "
                        "named segmenter (per-layer class summary)")
    parser.add_argument("--attribution-figures", type=int,
                        default=default(spec, "attribution_figures"),
                        help="per-image attribution figures per cell (default %(default)s)")
    parser.add_argument("--perceptual", default=default(spec, "perceptual"),
                        choices=PERCEPTUAL_BACKENDS)
    parser.add_argument("--latent-space", default=default(spec, "latent_space"),
                        help="where codes live (StyleGAN2: z, w, w+; default %(default)s)")
    parser.add_argument("--truncation-psi", type=float,
                        help="pull w toward w_avg (StyleGAN2; default: the file's, usually 1)")
    parser.add_argument("--vgg-weights", help="path to vgg16-397923af.pth")
    parser.add_argument("--out", required=True, help="study directory (created or resumed)")
    parser.add_argument("--max-cost", type=int, help="refuse to start when more than this many "
                        "image-iterations remain")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the cells and the cost, compute nothing")
    parser.add_argument("--batch-size", type=int, default=default(spec, "batch_size"),
                        help="images optimised together (default %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if "
                        "available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_shard(parser)


def _add_shard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard", metavar="I/K", help="do share I of K of the images (job "
                        "arrays, several machines on one filesystem); under torchrun the "
                        "ranks decide, and SLURM_ARRAY_TASK_ID/COUNT when set (docs/scaling.md)")


def _add_training_io(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if "
                        "available)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--cache", default=None, help="folder to keep rendered datasets in")
    parser.add_argument("--quiet", action="store_true")


def _int_list(text: str, field: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{field} must be comma-separated integers, got {text!r}",
                         field=field) from None


def _scenes(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from inversion.images import save_png
    from scenes.datasets import check_scene_request, iter_scenes
    from segmentation.vocabularies import SCENE_WORLD

    if args.count < 1:
        raise InputError(f"count must be at least 1, got {args.count}", field="count")
    check_scene_request(args.domain, args.size, args.start)  # before anything is written
    seeds = range(args.start, args.start + args.count)
    out = Path(args.out)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for seed, image, label in tqdm(iter_scenes(args.domain, seeds, args.size), total=len(seeds),
                                   disable=args.quiet, unit="scene", desc=args.domain):
        name = f"{args.domain}-{seed:06d}"  # each scene is written before the next is rendered
        save_png(image, out / f"{name}.png")
        save_png(SCENE_WORLD.colorize(label), out / "labels" / f"{name}-color.png")
        save_png(label, out / "labels" / f"{name}.png")
    print(f"wrote {len(seeds)} {args.domain} scenes and label maps to {out}")
    return 0


def _train_generator(args: argparse.Namespace) -> int:
    from core.devices import resolve_device
    from scenes.render import get_domain
    from scenes.train import train_scene_generator

    get_domain(args.domain)
    given = {"resolution": args.resolution, "z_dim": args.z_dim, "iterations": args.iterations,
             "batch": args.batch, "lr": args.lr, "r1_gamma": args.r1_gamma,
             "r1_every": args.r1_every, "ema_half_life_images": args.ema_half_life,
             "seed": args.seed, "channels": _int_list(args.channels, "channels")
             if args.channels else None, "w_dim": args.w_dim,
             "mapping_layers": args.mapping_layers, "mixing_prob": args.mixing_prob,
             "pl_weight": args.pl_weight}
    config_class = train_config_class(args.architecture)
    fields = {item.name for item in dataclasses.fields(config_class)}
    unknown = sorted(k for k, v in given.items() if v is not None and k not in fields)
    if unknown:
        raise InputError(f"architecture {args.architecture} takes no {', '.join(unknown)}",
                         field="architecture")
    config = config_class(**{k: v for k, v in given.items() if v is not None})
    result = train_scene_generator(args.domain, args.out, config, images=args.images,
                                   device=resolve_device(args.device), workers=args.workers,
                                   cache=args.cache, checkpoint_every=args.checkpoint_every,
                                   progress=not args.quiet)
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; generator: "
          f"{result.out_dir / 'generator.safetensors'}")
    return 0


def _train_segmenter(args: argparse.Namespace) -> int:
    from core.devices import resolve_device
    from scenes.render import DOMAINS
    from scenes.train import train_scene_segmenter
    from training.segmenter import SegmenterTrainConfig

    domains = list(DOMAINS) if args.domains == "all" else args.domains.split(",")
    config = SegmenterTrainConfig(architecture=args.architecture, encoder=args.encoder,
                                  iterations=args.iterations, batch=args.batch, lr=args.lr,
                                  augment=not args.no_augment, dice_weight=args.dice_weight,
                                  init_from=args.init_from, seed=args.seed)
    result = train_scene_segmenter(args.out, config, domains=domains,
                                   images_per_domain=args.images_per_domain,
                                   validation_per_domain=args.validation_per_domain,
                                   size=args.size, device=resolve_device(args.device),
                                   workers=args.workers, cache=args.cache,
                                   checkpoint_every=args.checkpoint_every,
                                   progress=not args.quiet)
    if result.validation is not None:
        print(f"held-out mean IoU {result.validation.mean:.3f}, pixel accuracy "
              f"{result.validation.pixel_accuracy:.3f}")
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; segmenter: "
          f"{result.out_dir / 'model'}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from mganprior.zoo import GENERATORS, SEGMENTERS, load_generator

    if args.name is None and args.checkpoint is None:
        width = max(len(name) for name in [*GENERATORS, *SEGMENTERS])
        print("generators:")
        for entry in GENERATORS.values():
            print(f"  {entry.name:<{width}}  {entry.description}")
        print("segmenters:")
        for name, description in SEGMENTERS.items():
            print(f"  {name:<{width}}  {description}")
        return 0
    generator = load_generator(args.name, args.checkpoint, device="cpu").generator
    print(generator.describe())
    for layer in generator.layers:
        specs = generator.carry_specs(layer)
        carried = "; carries " + ", ".join(
            f"{spec.name} ({'/'.join(spec.rules)}, default {spec.default}: {spec.doc})"
            for spec in specs) if specs else ""
        print(layer.describe() + carried)
    return 0


def _invert(args: argparse.Namespace) -> int:
    from inversion.images import load_images
    from inversion.losses import load_lpips, load_perceptual
    from inversion.recipes import get_recipe
    from inversion.runs import run_inversion
    from inversion.tasks import make_task
    from mganprior.zoo import load_generator

    if args.references and not args.observed:
        raise InputError("references only make sense with --observed", field="references")
    recipe = get_recipe(args.recipe, args.task).with_overrides(
        codes=args.codes, layer=args.layer, iterations=args.iterations, lr=args.lr,
        optimizer=args.optimizer, fusion=args.fusion, init=args.init, alphas=args.alphas,
        carry=args.carry, latent_space=args.latent_space, perceptual_layer=args.perceptual_layer,
        converge_window=args.converge_window, converge_tolerance=args.converge_tolerance,
        perceptual_lambda=args.perceptual_lambda, perceptual_size=args.perceptual_size,
        perceptual_distance=args.perceptual_distance, optimize_noise=args.optimize_noise)
    task = make_task(args.task, factor=args.factor, antialias=args.antialias or None,
                     mask=args.mask, invert_mask=args.invert_mask or None,
                     resize_mask=args.resize_mask or None, sigma=args.sigma)
    loaded = load_generator(args.generator, args.checkpoint, device=args.device,
                            truncation_psi=args.truncation_psi)
    generator = loaded.generator
    settings = RunSettings(generator, loaded.info, task, recipe, seed=args.seed,
                           batch_size=args.batch_size, observed=args.observed, bf16=args.bf16,
                           progress=not args.quiet)
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
    run, summary = run_inversion(settings, images, args.out, references,
                                 config_extra={"command": " ".join(sys.argv)},
                                 shard=args.shard_info)
    barrier(args.shard_info)
    if args.shard_info.count > 1:
        if not args.shard_info.leader:
            return 0 if summary["failed"] == 0 else 1
        summary = run.rebuild_index()  # the leader sums up every shard's images
    print(_summary_line(summary))
    print(f"run directory: {run.path}")
    return 0 if summary["failed"] == 0 else 1


def _summary_line(summary: dict) -> str:
    parts = [f"{summary['ok']}/{summary['images']} images inverted"]
    if "psnr_mean" in summary:
        parts.append(f"PSNR {summary['psnr_mean']:.2f} ± {summary['psnr_std']:.2f} dB")
    if "ssim_mean" in summary:
        parts.append(f"SSIM {summary['ssim_mean']:.3f}")
    if summary.get("lpips_mean") is not None:
        parts.append(f"LPIPS {summary['lpips_mean']:.3f}")
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed (see results.jsonl)")
    return ", ".join(parts)


def _attribute(args: argparse.Namespace) -> int:
    from mganprior.attribution import SegmentationChoice, attribute_run

    if args.batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {args.batch_size}",
                         field="batch_size")
    if args.segment == "target" and args.labels:
        raise InputError("segment target needs a segmenter; --labels are used as they are",
                         field="segment")
    settings = AttributionSettings(threshold=args.threshold, relative=args.relative,
                                   binarize=args.binarize, difference=args.difference,
                                   min_iou=args.min_iou, min_difference=args.min_difference)
    choice = SegmentationChoice(segmenter=args.segmenter, segmenter_dir=args.segmenter_dir,
                                scales=args.segmenter_scales,
                                labels_dir=args.labels, label_names=args.label_names,
                                segment=args.segment, resize_labels=args.resize_labels)
    result, out = attribute_run(
        args.run_dir, choice, settings=settings, out=args.out, generator=args.generator_override,
        checkpoint=args.checkpoint, device=args.device, vgg_weights=args.vgg_weights,
        image_figures=args.image_figures, images_per_pass=args.batch_size,
        shard=args.shard_info, progress=not args.quiet)
    summary = result.summary()
    top = ", ".join(f"{name} {count}" for name, count in summary["classes"].items()
                    if name != "unassigned")
    print(f"{summary['codes_assigned']}/{result.batch * result.codes} codes of {result.batch} "
          f"images assigned ({top or 'none'}); {summary['codes_unassigned']} unassigned")
    print(f"attribution: {out}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from analysis.study_files import StudyDirectory
    from mganprior.studies import StudySpec, default_images, load_study_generator, run_study

    if args.command == "layers":
        generators = [args.generator or args.checkpoint]
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        domain = None
    else:
        generators = [g.strip() for g in args.generators.split(",") if g.strip()]
        tasks = [args.task]
        domain = "bedroom"
    spec = StudySpec(kind=args.command, generators=generators, tasks=tasks,
                     layers=args.layers, codes=_int_list(args.codes, "codes"),
                     iterations=args.iterations, recipe=args.recipe, seed=args.seed,
                     single_code=not args.no_single_code, segmenter=args.segmenter,
                     perceptual=args.perceptual, vgg_weights=args.vgg_weights,
                     batch_size=args.batch_size, attribution_figures=args.attribution_figures,
                     latent_space=args.latent_space, truncation_psi=args.truncation_psi,
                     baselines=[b.strip() for b in args.baselines.split(",") if b.strip()]
                     if args.baselines else None)
    spec.validate()
    images = args.images
    study = StudyDirectory(args.out)
    if images is None:
        study.check_usable()
        first = load_study_generator(generators[0], args.device, args.truncation_psi)
        folder, what = default_images(generators[0], first, args.count, study.inputs, domain)
        images = [folder]
        print(f"images: {args.count} default images in {folder} ({what})", file=sys.stderr)
    outcome = run_study(spec, images, study.path, device=args.device, max_cost=args.max_cost,
                        dry_run=args.dry_run, progress=not args.quiet, shard=args.shard_info)
    if args.dry_run:
        return 0
    summary = outcome.summary
    for best in summary["best_layer_by_psnr"]:
        singles = [f"{row['layer']} {row['mean']:.2f} dB" for row in outcome.aggregates
                   if row["generator"] == best["generator"] and row["task"] == best["task"]
                   and row["layer_index"] == 0 and row["metric"] == "psnr"
                   and row["mean"] is not None]
        baseline = f" ({', '.join(singles)})" if singles else ""
        print(f"{best['generator']} {best['task']}: best layer {best['layer']} "
              f"N={best['codes']}, PSNR {best['psnr']:.2f} dB{baseline}")
    for warning in summary["warnings"]:
        print(f"note: {warning}", file=sys.stderr)
    print(f"{summary['done']}/{summary['total']} cells done; study: {outcome.out} "
          f"(layers.csv, summary.json, figures/)")
    if summary["done"] < summary["total"]:  # this process did its share; others hold the rest
        print("note: the other cells' images are in progress in another process; its tables "
              "will be complete when it finishes (or run `mganprior index` then)",
              file=sys.stderr)
    return 1 if sum(cell.get("failed", 0) for cell in summary["cells"]) else 0


def _convert(args: argparse.Namespace) -> int:
    import torch

    from core.weights import file_sha256
    from inversion.generators.formats import load_generator_file, sniff_format
    from inversion.generators.saving import save_generator

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise InputError(f"out must end in .safetensors, got {out}", field="out")
    fmt, _ = sniff_format(args.source)
    generator = load_generator_file(args.source)
    if args.truncation_psi is not None:
        generator = generator.with_truncation(args.truncation_psi)
    save_generator(generator, out, dtype=torch.float16 if args.half else None)
    print(f"read {args.source} ({fmt.name}, {generator.family}, {generator.resolution} px, "
          f"{len(generator.layers) - 1} composable layers); wrote {out} and "
          f"{out.with_suffix('.json').name} (sha256 {file_sha256(out)[:12]}...)")
    return 0


def _directions(args: argparse.Namespace) -> int:
    from mganprior.editing import find_directions
    from mganprior.zoo import load_generator, load_segmenter

    if (args.method == "file") != (args.boundary is not None):
        raise InputError("boundary: give a .npy file with `directions file`, and only then",
                         field="boundary")
    loaded = load_generator(args.generator, args.checkpoint, device=args.device)
    segmenter = None
    if args.segmenter or args.segmenter_dir:
        segmenter = load_segmenter(args.segmenter, args.segmenter_dir, labels=args.label_names,
                                   device=loaded.generator.device, scales=args.segmenter_scales)
    paths = find_directions(args.method, loaded, args.out, count=args.count,
                            layers=args.layers, attribute=args.attribute, segmenter=segmenter,
                            samples=args.samples, fraction=args.fraction, space=args.space,
                            conditions=args.condition, name=args.name, boundary=args.boundary,
                            seed=args.seed)
    for path in paths:
        meta = json.loads(path.with_suffix(".json").read_text())
        facts = ", ".join(f"{key} {meta[key]:.4g}" for key in ("eigenvalue", "accuracy")
                          if isinstance(meta.get(key), float))
        print(f"{path} ({meta['source']}, space {meta['space']}{', ' + facts if facts else ''})")
    return 0


def _edit(args: argparse.Namespace) -> int:
    from mganprior.editing import edit_run

    settings = EditSettings(steps=args.steps, range=args.range, mode=args.mode,
                            start=args.start, end=args.end, code_sets=args.codes)
    result, out = edit_run(args.run_dir, args.direction, settings, segmenter=args.segmenter,
                           segmenter_dir=args.segmenter_dir, label_names=args.label_names,
                           segmenter_scales=args.segmenter_scales,
                           target=args.target, out=args.out,
                           generator=args.generator_override, checkpoint=args.checkpoint,
                           device=args.device, progress=not args.quiet)
    print(f"{len(result.names)} images x {len(result.code_sets)} code sets x "
          f"{len(result.ts)} steps along {result.direction.name}; edits: {out}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from analysis.study_files import StudyDirectory
    from inversion.rundir import RunDirectory

    for raw in args.paths:
        study, run = StudyDirectory(raw), RunDirectory(raw)
        if study.exists():
            tables = study.rebuild_tables()
            summary = tables.summary
            print(f"{study.path}: {summary['done']}/{summary['total']} cells done, "
                  f"{len(tables.rows)} table rows")
        elif run.is_run():
            problems: list[str] = []
            summary = run.rebuild_index(problems=problems)
            for problem in problems:
                print(f"mganprior: note: {run.path}/{problem}", file=sys.stderr)
            print(f"{run.path}: {_summary_line(summary)}")
        else:
            raise InputError(f"{raw} is neither a run (config.json) nor a study (study.json)",
                             field="paths")
    return 0


def _report(args: argparse.Namespace) -> int:
    from reports.html import write_report

    for name in ("max_gallery", "attribution_images"):
        if getattr(args, name) < 0:
            raise InputError(f"{name} must be >= 0, got {getattr(args, name)}", field=name)
    out = write_report(args.paths, args.out, title=args.title, max_gallery=args.max_gallery,
                       attribution_images=args.attribution_images)
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mganprior.demo import run_demo

    run_demo(Path(args.out), device=args.device, progress=not args.quiet)
    return 0


def _stop_on_signals() -> dict[int, Any]:
    """Make SIGTERM (sent by ``timeout``, container stops and SLURM), and SIGINT even in a
    background job (where shells ignore it), raise KeyboardInterrupt, so commands save what
    they have before they exit. Returns the handlers they replace."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT),
                signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    return previous


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "zoo": _zoo, "invert": _invert, "attribute": _attribute, "layers": _study,
    "cross-domain": _study, "index": _index, "convert": _convert, "directions": _directions,
    "edit": _edit, "report": _report, "demo": _demo,
    "scenes": _scenes, "train-generator": _train_generator, "train-segmenter": _train_segmenter,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    previous = _stop_on_signals()
    try:
        if "shard" not in vars(args):
            return HANDLERS[args.command](args)
        args.shard_info = current_shard(args.shard)
        args.device = shard_device(args.shard_info, args.device)
        args.quiet = args.quiet or not args.shard_info.leader
        with process_group(args.shard_info):
            return HANDLERS[args.command](args)
    except InputError as err:
        message = err.with_flag(flag_for(err.field)) if err.field else str(err)
        print(f"mganprior: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mganprior: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a read-only or missing folder: say where, in one line
        where = f"{err.filename}: " if err.filename else ""
        hint = (" (what was finished before is intact; free space and rerun to resume)"
                if err.errno == errno.ENOSPC else "")
        print(f"mganprior: error: {where}{err.strerror or err}{hint}", file=sys.stderr)
        return 2
    except Exception as err:  # anything else is a bug: one line, the traceback under --debug
        if args.debug:
            raise
        reason = " ".join(str(err).split())[:300]
        print(f"mganprior: internal error (a bug, please report it with this line): "
              f"{type(err).__name__}: {reason} while running `mganprior {args.command}`; rerun "
              "with --debug for the traceback", file=sys.stderr)
        return 3
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
