"""``mganprior index`` (rebuild indexes from the image folders) and ``mganprior report`` (one
self-contained HTML page)."""

from __future__ import annotations

import argparse
import sys

from mganprior.commands.common import (
    Command,
    add_figure_flags,
    default,
    figure_output,
    summary_line,
)
from mganprior.core.errors import InputError


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="DIR", help="run or study directories")


def index(args: argparse.Namespace) -> int:
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
            print(f"{run.path}: {summary_line(summary)}")
        else:
            raise InputError(f"{raw} is neither a run (config.json) nor a study (study.json)",
                             field="paths")
    return 0


def add_figures_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="DIR",
                        help="run, study, attribution or edit directories")
    add_figure_flags(parser)


def figures(args: argparse.Namespace) -> int:
    from mganprior.figures import redraw

    output = figure_output(args)
    for raw in args.paths:
        count = redraw(raw, output)
        print(f"{raw}: {count} figures redrawn as {', '.join(output.formats)}")
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    from reports.html import build_report

    parser.add_argument("paths", nargs="+", metavar="DIR")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--title", default=default(build_report, "title"))
    parser.add_argument("--max-gallery", type=int, default=default(build_report, "max_gallery"),
                        help="images per run shown in the gallery (default %(default)s)")
    parser.add_argument("--attribution-images", type=int,
                        default=default(build_report, "attribution_images"),
                        help="difference-map grids per attribution (default %(default)s)")


def report(args: argparse.Namespace) -> int:
    from reports.html import write_report

    for name in ("max_gallery", "attribution_images"):
        if getattr(args, name) < 0:
            raise InputError(f"{name} must be >= 0, got {getattr(args, name)}", field=name)
    out = write_report(args.paths, args.out, title=args.title, max_gallery=args.max_gallery,
                       attribution_images=args.attribution_images)
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


COMMANDS = {
    "index": Command(
        "rebuild the indexes of runs and studies from their image folders",
        add_index_arguments, index,
        "Rewrite results.jsonl and summary.json of each run (and every cell's, and the tables of "
        "each study) from the per-image folders, which are the source of truth. Use it after "
        "processes were killed, or to read a run written by an older version."),
    "figures": Command(
        "redraw the figures of runs, studies, attributions and edits as PNG, PDF or SVG",
        add_figures_arguments, figures,
        "Redraw every figure of the directories given from what they stored (nothing is "
        "recomputed), in the chosen formats and print width: vector files for a paper, text "
        "kept as text."),
    "report": Command(
        "one self-contained HTML page from runs, studies and attributions",
        add_report_arguments, report,
        "Write one HTML file (images inline, no network) with a section for each run "
        "directory, study directory or attribution directory given."),
}
