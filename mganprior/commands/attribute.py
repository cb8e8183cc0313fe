"""``mganprior attribute``: each code of a run attributed to a semantic class. The procedure's
settings are flags generated from :class:`analysis.attribution.AttributionSettings`."""

from __future__ import annotations

import argparse

from mganprior.commands.common import (
    COMPILE_HELP,
    DEVICE_HELP,
    SCALES_HELP,
    Command,
    add_figure_flags,
    add_shard,
    dataclass_flags,
    figure_output,
    values_of,
)
from mganprior.core.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from analysis.attribution import SEGMENT_SOURCES, AttributionSettings
    from inversion.options import DEFAULT_BATCH_SIZE

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from `mganprior "
                        "invert`")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--segmenter", help="a named segmenter (see `mganprior zoo`)")
    source.add_argument("--segmenter-dir", help="a segmenter folder in a known format (smp "
                        "save_pretrained, transformers, CSAIL)")
    source.add_argument("--labels", metavar="DIR", help="ground-truth label maps: "
                        "DIR/IMAGE.png, single-channel class indices (255 = unlabelled)")
    parser.add_argument("--label-names", help="vocabulary of --labels or of a --segmenter-dir "
                        "that does not name its classes: a name (scene-world, ade20k-150, "
                        "celebamask-hq-19) or a JSON list of class names (default for --labels: "
                        "scene-world)")
    parser.add_argument("--segmenter-scales", help=SCALES_HELP)
    parser.add_argument("--segment", default=SEGMENT_SOURCES[0], choices=SEGMENT_SOURCES,
                        help="which image the segmenter sees (default: %(default)s)")
    parser.add_argument("--resize-labels", action="store_true",
                        help="resize label maps of another size (nearest neighbour)")
    procedure = parser.add_argument_group("attribution settings "
                                          "(analysis.attribution.AttributionSettings)")
    parser.set_defaults(settings_fields=dataclass_flags(procedure, AttributionSettings))
    parser.add_argument("--vgg-weights", help="path to vgg16-397923af.pth")
    parser.add_argument("--generator", dest="generator_override",
                        help="use this named generator instead of the run's")
    parser.add_argument("--checkpoint", help="use this generator file instead of the run's")
    parser.add_argument("--out", help="attribution directory (default: RUN_DIR/attribution)")
    parser.add_argument("--image-figures", type=int, default=None,
                        help="per-image figures for the first N images (default: all)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="images whose N ablations go through the generator together")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_shard(parser)
    add_figure_flags(parser)


def run(args: argparse.Namespace) -> int:
    from analysis.attribution import AttributionSettings
    from mganprior.attribution import SegmentationChoice, attribute_run

    if args.batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {args.batch_size}",
                         field="batch_size")
    if args.segment == "target" and args.labels:
        raise InputError("segment target needs a segmenter; --labels are used as they are",
                         field="segment")
    settings = AttributionSettings(**values_of(args, args.settings_fields))
    choice = SegmentationChoice(segmenter=args.segmenter, segmenter_dir=args.segmenter_dir,
                                scales=args.segmenter_scales,
                                labels_dir=args.labels, label_names=args.label_names,
                                segment=args.segment, resize_labels=args.resize_labels)
    result, out = attribute_run(
        args.run_dir, choice, settings=settings, out=args.out, generator=args.generator_override,
        checkpoint=args.checkpoint, device=args.device, vgg_weights=args.vgg_weights,
        image_figures=args.image_figures, images_per_pass=args.batch_size,
        shard=args.shard_info, figures=figure_output(args), progress=not args.quiet,
        compile=args.compile)
    summary = result.summary()
    top = ", ".join(f"{name} {count}" for name, count in summary["classes"].items()
                    if name != "unassigned")
    print(f"{summary['codes_assigned']}/{result.batch * result.codes} codes of {result.batch} "
          f"images assigned ({top or 'none'}); {summary['codes_unassigned']} unassigned")
    print(f"attribution: {out}")
    return 0


COMMANDS = {"attribute": Command(
    "attribute each code of a run to a semantic class (alpha ablation)", add_arguments, run,
    "For every image and code: zero the code's alpha entries above the threshold, re-render, "
    "binarise the difference map and intersect it with a segmentation; the class with the best "
    "IoU is the code's class. Writes RUN_DIR/attribution (or --out): arrays, attribution.csv, "
    "classes.csv and figures.")}
