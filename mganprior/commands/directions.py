"""``mganprior directions`` (SeFa, InterFaceGAN, or a boundary file) and ``mganprior edit``
(a run's images moved along a direction). Edit settings are flags generated from
:class:`analysis.editing.EditSettings`."""

from __future__ import annotations

import argparse
import json

from mganprior.commands.common import (
    DEVICE_HELP,
    SCALES_HELP,
    Command,
    add_figure_flags,
    add_generator_source,
    add_view_flags,
    dataclass_flags,
    default,
    figure_output,
    values_of,
    view_of,
)
from mganprior.core.errors import InputError


def add_directions_arguments(parser: argparse.ArgumentParser) -> None:
    from mganprior.editing import DIRECTION_METHODS, find_directions

    parser.add_argument("method", choices=DIRECTION_METHODS)
    parser.add_argument("boundary", nargs="?", help="with file: the .npy boundary")
    add_generator_source(parser)
    parser.add_argument("--out", required=True, help="folder for the .npy + .json files")
    parser.add_argument("--count", type=int, default=default(find_directions, "count"),
                        help="sefa: directions to keep (default %(default)s)")
    parser.add_argument("--layers", default=default(find_directions, "layers"),
                        help="sefa on style-based generators: style layers (all, or indices / "
                        "names such as b8.conv0; default %(default)s)")
    parser.add_argument("--attribute", help="interfacegan: brightness or class:NAME")
    parser.add_argument("--segmenter", help="interfacegan with class:NAME: a named segmenter")
    parser.add_argument("--segmenter-dir", help="... or a segmenter folder")
    parser.add_argument("--label-names", help="class names of a --segmenter-dir that does not "
                        "name them")
    parser.add_argument("--segmenter-scales", help=SCALES_HELP)
    parser.add_argument("--samples", type=int, default=default(find_directions, "samples"),
                        help="interfacegan: latents to score (default %(default)s)")
    parser.add_argument("--fraction", type=float, default=default(find_directions, "fraction"),
                        help="interfacegan: top and bottom share kept (default %(default)s)")
    parser.add_argument("--space", help="z or w (interfacegan default z; file: from the name, "
                        "..._w_boundary.npy is w)")
    parser.add_argument("--condition", nargs="+", default=[], metavar="NPY",
                        help="interfacegan: project out up to two boundaries")
    parser.add_argument("--name", help="interfacegan: the direction's name")
    parser.add_argument("--seed", type=int, default=default(find_directions, "seed"))
    add_view_flags(parser)
    parser.add_argument("--device", default=None, help=DEVICE_HELP)


def directions(args: argparse.Namespace) -> int:
    from mganprior.editing import find_directions
    from mganprior.zoo import load_generator, load_segmenter

    if (args.method == "file") != (args.boundary is not None):
        raise InputError("boundary: give a .npy file with `directions file`, and only then",
                         field="boundary")
    loaded = load_generator(args.generator, args.checkpoint, device=args.device,
                            **view_of(args))
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


def add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    from analysis.editing import EditSettings

    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--direction", required=True, help="a .npy direction (`mganprior "
                        "directions`, or an InterFaceGAN boundary)")
    sweep = parser.add_argument_group("edit settings (analysis.editing.EditSettings)")
    parser.set_defaults(settings_fields=dataclass_flags(sweep, EditSettings))
    parser.add_argument("--segmenter", help="a named segmenter for class shares per frame")
    parser.add_argument("--segmenter-dir", help="... or a segmenter folder")
    parser.add_argument("--label-names", help="class names of a --segmenter-dir")
    parser.add_argument("--segmenter-scales", help=SCALES_HELP)
    parser.add_argument("--target", help="the class the edit is meant to change (curves, "
                        "monotonicity)")
    parser.add_argument("--generator", dest="generator_override",
                        help="use this named generator instead of the run's")
    parser.add_argument("--checkpoint", help="use this generator file instead of the run's")
    parser.add_argument("--out", help="edit directory (default RUN_DIR/edits/DIRECTION)")
    add_figure_flags(parser)
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--quiet", action="store_true")


def edit(args: argparse.Namespace) -> int:
    from analysis.editing import EditSettings
    from mganprior.editing import edit_run

    settings = EditSettings(**values_of(args, args.settings_fields))
    result, out = edit_run(args.run_dir, args.direction, settings, segmenter=args.segmenter,
                           segmenter_dir=args.segmenter_dir, label_names=args.label_names,
                           segmenter_scales=args.segmenter_scales,
                           target=args.target, out=args.out,
                           generator=args.generator_override, checkpoint=args.checkpoint,
                           device=args.device, figures=figure_output(args),
                           progress=not args.quiet)
    print(f"{len(result.names)} images x {len(result.code_sets)} code sets x "
          f"{len(result.ts)} steps along {result.direction.name}; edits: {out}")
    return 0


COMMANDS = {
    "directions": Command(
        "find semantic directions of a generator (SeFa, InterFaceGAN) or check a boundary file",
        add_directions_arguments, directions,
        "sefa: closed-form directions from the weight of the first layer acting on the latent "
        "(no data). interfacegan: sample latents, score them with an attribute (brightness, or "
        "class:NAME with a segmenter), fit a linear SVM between the top and bottom fraction. "
        "file: check an InterFaceGAN .npy boundary against the generator. Each direction is "
        "written as the official .npy (1, d) plus a .json sidecar."),
    "edit": Command(
        "edit a run's inverted images along a direction", add_edit_arguments, edit,
        "Move the codes of every finished image of a run along a direction (all codes "
        "together, the official mGANprior edit, and each code alone), render every step, and "
        "with a segmenter measure each class's share per frame. Writes frames, strips, animated "
        "GIFs, edits.csv and figures."),
}
