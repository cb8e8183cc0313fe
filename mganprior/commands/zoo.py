"""``mganprior zoo`` (named models, or one generator's layers) and ``mganprior convert``."""

from __future__ import annotations

import argparse

from mganprior.commands.common import Command
from mganprior.core.errors import InputError


def add_zoo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a generator name: print its composable layers")
    parser.add_argument("--checkpoint", help="print the layers of a generator file instead")


def zoo(args: argparse.Namespace) -> int:
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


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="IN", help="the generator file")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument("--truncation-psi", type=float,
                        help="store this truncation in the config (style-based generators)")
    parser.add_argument("--half", action="store_true", help="store weights in float16")


def convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from inversion.generators.formats import load_generator_file, sniff_format
    from inversion.generators.saving import save_generator
    from mganprior.core.weights import file_sha256

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


COMMANDS = {
    "zoo": Command("list named generators, or one generator's layers", add_zoo_arguments, zoo),
    "convert": Command(
        "convert a generator file of any known format to .safetensors + .json",
        add_convert_arguments, convert,
        "Read a generator file of any known format (NVIDIA StyleGAN2 .pkl without running its "
        "code, rosinality .pt, official PGGAN .pth, tutorial DCGAN .pth) and write this "
        "project's format: weights that carry no code, and a JSON config beside them."),
}
