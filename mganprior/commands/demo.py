"""``mganprior demo``: the whole mission at reduced settings (``mganprior.demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mganprior.commands.common import DEVICE_HELP, Command

DEFAULT_DEMO_OUT = "runs/demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_DEMO_OUT)
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from mganprior.demo import run_demo

    run_demo(Path(args.out), device=args.device, progress=not args.quiet)
    return 0


COMMANDS = {"demo": Command("run the embedded end-to-end demo", add_arguments, run)}
