"""The ``mganprior`` command: parses arguments, loads files, calls the library, writes files.

Each command lives in its own module under ``mganprior.commands`` and adds its arguments only
when it is the one chosen, so ``mganprior --help`` and ``mganprior invert --help`` stay light.
Flags of settings dataclasses are generated from their fields (``commands.common``), and library
errors name fields, which :func:`main` prints as the flags that set them.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

from mganprior.commands import MODULES
from mganprior.commands.common import FLAGS, Command, flag_for
from mganprior.core.errors import InputError

__all__ = ["COMMANDS", "FLAGS", "flag_for", "main"]


def _commands() -> dict[str, Command]:
    found: dict[str, Command] = {}
    for module in MODULES:
        found.update(importlib.import_module(f"mganprior.commands.{module}").COMMANDS)
    return found


COMMANDS: dict[str, Command] = _commands()


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser, with the arguments of the ``chosen`` command only (the others are listed
    with their one-line help)."""
    parser = argparse.ArgumentParser(
        prog="mganprior", description="Multi-code GAN prior inversion and interpretability.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (a bug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.description)
        if name == chosen:
            command.add_arguments(sub)
            parser.set_defaults(flag_of=flags_of(sub))
    return parser


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each setting a command's flags set, by field name, with its flag."""
    found: dict[str, str] = {}
    for action in parser._actions:
        flags = [option for option in action.option_strings if option.startswith("--")]
        if flags:
            found[action.dest] = flags[0]
            found.update({flag[2:].replace("-", "_"): flag for flag in flags})
    return found


def in_flags(message: str, flag_of: dict[str, str]) -> str:
    """A library message with the fields it names written as the flags that set them: names
    with an underscore where they stand as words (not inside quotes, paths or shapes), one-word
    names where they stand as a setting (opening parentheses, after "or", before NAME or
    PATH)."""
    for field in sorted(flag_of, key=len, reverse=True):
        flag = flag_of[field]
        if "_" in field:
            message = re.sub(rf"(?<![\w/.\"'\[-]){field}(?![\w/.\"'-])", flag, message)
        else:
            message = re.sub(rf"(?<=\()(?:{field})(?=[ )])", flag, message)
            message = re.sub(rf"(?<= or ){field}(?=\))", flag, message)
            message = re.sub(rf"(?<![\w/.-]){field} (NAME|PATH)\b", rf"{flag} \1", message)
    return message


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


def _run(args: argparse.Namespace) -> int:
    """The chosen command, inside this process's shard (and its share of the cores) when the
    command splits work."""
    from mganprior.core.sharding import current_shard, process_group, shard_device, thread_share

    run = COMMANDS[args.command].run
    if "shard" not in vars(args):
        return run(args)
    args.shard_info = current_shard(args.shard)
    share = thread_share(args.shard_info, args.local_processes, args.threads)
    if share is not None:
        import torch

        torch.set_num_threads(share)
    args.device = shard_device(args.shard_info, args.device)
    args.quiet = args.quiet or not args.shard_info.leader
    with process_group(args.shard_info):
        return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_chosen(argv)).parse_args(argv)
    previous = _stop_on_signals()
    try:
        return _run(args)
    except InputError as err:
        message = err.with_flag(flag_for(err.field)) if err.field else str(err)
        print(f"mganprior: error: {in_flags(message, getattr(args, 'flag_of', {}))}",
              file=sys.stderr)
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
