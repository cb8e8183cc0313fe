"""``mganprior scenes``: scene-world images and their exact label maps as PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from mganprior.commands.common import Command
from mganprior.core.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", required=True, help="bedroom, conference_room, church_outdoor")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", required=True, help="folder for NAME.png and labels/NAME.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from inversion.images import save_png
    from mganprior.core.progress import progress_bar
    from mganprior.scenes.datasets import check_scene_request, iter_scenes
    from segmentation.vocabularies import SCENE_WORLD

    if args.count < 1:
        raise InputError(f"count must be at least 1, got {args.count}", field="count")
    check_scene_request(args.domain, args.size, args.start)  # before anything is written
    seeds = range(args.start, args.start + args.count)
    out = Path(args.out)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for seed, image, label in progress_bar(iter_scenes(args.domain, seeds, args.size),
                                           total=len(seeds), enabled=not args.quiet,
                                           unit="scene", desc=args.domain):
        name = f"{args.domain}-{seed:06d}"  # each scene is written before the next is rendered
        save_png(image, out / f"{name}.png")
        save_png(SCENE_WORLD.colorize(label), out / "labels" / f"{name}-color.png")
        save_png(label, out / "labels" / f"{name}.png")
    print(f"wrote {len(seeds)} {args.domain} scenes and label maps to {out}")
    return 0


COMMANDS = {"scenes": Command("render scene-world images and their exact label maps as PNGs",
                              add_arguments, run)}
