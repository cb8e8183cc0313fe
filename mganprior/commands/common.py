"""What the command modules share: the command record, flag names, flags generated from
settings dataclasses, and option groups several commands take. Light to import."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mganprior.core.errors import InputError

# Library fields whose flag is not ``--`` + the field name with dashes.
FLAGS = {"ema_half_life_images": "--ema-half-life", "generator_override": "--generator",
         "labels_dir": "--labels", "label_names": "--label-names", "code_sets": "--codes"}
SCALES_HELP = ("CSAIL segmenters: multi-scale inference as CSAIL's evaluation runs it: csail "
               "(the folder's test scales, else 300,375,450,525,600), or short sides such as "
               "300,450 (default: one pass at the image's size)")
DEVICE_HELP = "cpu, cuda, cuda:N (default: cuda if available)"
COMPILE_HELP = ("torch.compile the generator's head and tail: tens of seconds to compile, paid "
                "back only in long runs (docs/benchmarks.md has the table)")


@dataclass(frozen=True)
class Command:
    """A command: its one-line help, its description, what adds its arguments (called only
    when it is the chosen command) and what runs it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


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


def dataclass_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                    skip: Iterable[str] = (), unset: str | None = None) -> list[str]:
    """One flag per field of ``cls`` made with ``mganprior.core.settings.option``: its help and
    choices from the field, its type from the annotation (bool: ``--x/--no-x``). With ``unset``
    every flag defaults to None (the caller keeps the object's value) and the help says
    ``(default: UNSET)``; otherwise the flag defaults to the field's default. Returns the field
    names, the ``dest`` of each flag."""
    names = []
    fields = [item for item in dataclasses.fields(cls)
              if item.name not in skip and "help" in item.metadata]
    for item in fields:
        kind = str(item.type)
        value = None if unset is not None else default(cls, item.name)
        shown = unset if unset is not None else "%(default)s"
        text = item.metadata["help"]
        for other in fields:  # the other settings a help text names, as their flags
            if "_" in other.name:
                text = re.sub(rf"\b{other.name}\b", flag_for(other.name), text)
        options: dict[str, Any] = {"dest": item.name, "default": value,
                                   "help": f"{text} (default: {shown})"}
        if item.metadata.get("choices"):
            options["choices"] = item.metadata["choices"]
        if kind.startswith("bool"):
            options["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("int"):
            options["type"] = int
        elif kind.startswith("float"):
            options["type"] = float
        parser.add_argument(flag_for(item.name), **options)
        names.append(item.name)
    return names


def values_of(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


def int_list(text: str, field: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{field} must be comma-separated integers, got {text!r}",
                         field=field) from None


def add_shard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard", metavar="I/K", help="do share I of K of the images (job "
                        "arrays, several machines on one filesystem); under torchrun the "
                        "ranks decide, and SLURM_ARRAY_TASK_ID/COUNT when set (docs/scaling.md)")
    parser.add_argument("--local-processes", type=int, metavar="N",
                        help="with --shard: how many of the K processes share this machine; "
                        "each then takes 1/N of its cores (torchrun and SLURM say it "
                        "themselves)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads of this process "
                        "(default: all cores for one process, its share for several)")


def add_generator_source(parser: argparse.ArgumentParser, required: bool = True) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--generator", help="a named generator (see `mganprior zoo`)")
    source.add_argument("--checkpoint", help="a generator file in any known format "
                        "(.safetensors + .json, official PGGAN / tutorial DCGAN .pth, NVIDIA "
                        ".pkl, ...)")


def summary_line(summary: dict) -> str:
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


def add_view_flags(parser: argparse.ArgumentParser) -> None:
    """The generator's class and, for StyleGAN3, its input transform."""
    parser.add_argument("--label", type=int, help="the class a conditional generator makes "
                        "(attribute and edit reuse the run's)")
    parser.add_argument("--rotate", type=float, metavar="DEGREES",
                        help="StyleGAN3: turn the image by rotating its input (as NVIDIA's "
                        "gen_images.py --rotate)")
    parser.add_argument("--translate", metavar="X,Y",
                        help="StyleGAN3: shift the image by moving its input (as NVIDIA's "
                        "gen_images.py --translate)")


def view_of(args: argparse.Namespace) -> dict:
    """``load_generator``'s view settings from :func:`add_view_flags`'s flags."""
    transform = None
    if args.rotate is not None or args.translate is not None:
        from inversion.generators.stylegan3 import input_transform

        shift = (0.0, 0.0)
        if args.translate is not None:
            parts = args.translate.split(",")
            try:
                shift = tuple(float(p) for p in parts)
            except ValueError:
                shift = ()
            if len(shift) != 2 or not all(math.isfinite(v) for v in shift):
                raise InputError(f"translate must be two numbers X,Y, got {args.translate!r}",
                                 field="translate")
        rotate = args.rotate or 0.0
        if not math.isfinite(rotate):
            raise InputError(f"rotate must be a finite angle in degrees, got {rotate}",
                             field="rotate")
        transform = input_transform(shift, rotate)
    return {"label": args.label, "input_transform": transform}


def add_figure_flags(parser: argparse.ArgumentParser) -> None:
    """Vector figures for papers beside the PNGs (``reports.output.FigureOutput``)."""
    from reports.output import COLUMN_WIDTHS, FIGURE_FORMATS

    parser.add_argument("--figure-formats", default="png", metavar="FORMATS",
                        help=f"figure files to write, comma-separated from "
                        f"{', '.join(FIGURE_FORMATS)} (PNG always; default %(default)s)")
    parser.add_argument("--figure-width", default="double", metavar="WIDTH",
                        help="print width of PDF and SVG figures: "
                        + ", ".join(f"{k} ({v} in)" for k, v in COLUMN_WIDTHS.items())
                        + " or inches (default %(default)s)")


def figure_output(args: argparse.Namespace):
    """:func:`add_figure_flags`'s flags as a ``FigureOutput``."""
    from reports.output import FigureOutput

    return FigureOutput(args.figure_formats, args.figure_width)
