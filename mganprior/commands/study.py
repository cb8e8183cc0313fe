"""``mganprior layers`` (the layer-wise study) and ``mganprior cross-domain`` (the paper's
cross-domain experiment): many runs, resumable cell by cell."""

from __future__ import annotations

import argparse
import sys

from mganprior.commands.common import (
    COMPILE_HELP,
    DEVICE_HELP,
    Command,
    add_figure_flags,
    add_shard,
    dataclass_flags,
    default,
    figure_output,
    int_list,
    values_of,
)


def add_layers_arguments(parser: argparse.ArgumentParser) -> None:
    from mganprior.commands.common import add_generator_source
    from mganprior.studies import LAYER_STUDY_TASKS

    add_generator_source(parser)
    parser.add_argument("--tasks", default=",".join(LAYER_STUDY_TASKS),
                        help="comma-separated tasks (default: %(default)s)")
    add_study_options(parser, "renders of a scene generator's domain, or samples of the "
                      "generator")


def add_cross_domain_arguments(parser: argparse.ArgumentParser) -> None:
    from inversion.options import TASK_NAMES
    from mganprior.studies import CROSS_DOMAIN_PRIORS

    parser.add_argument("--generators", default=",".join(CROSS_DOMAIN_PRIORS),
                        help="comma-separated zoo names or generator files (default: "
                        "%(default)s)")
    parser.add_argument("--task", default=TASK_NAMES[0], choices=TASK_NAMES)
    add_study_options(parser, "rendered scene-world bedrooms")


def add_study_options(parser: argparse.ArgumentParser, default_images: str) -> None:
    from inversion.options import PERCEPTUAL_BACKENDS, TuneSettings
    from inversion.recipes import RECIPES
    from mganprior.studies import StudySpec as spec

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
                        "comma-separated (StyleGAN: z,w,w+; default: --latent-space)")
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
                        help="where codes live (StyleGAN: z, w, w+; default %(default)s)")
    parser.add_argument("--truncation-psi", type=float,
                        help="pull w toward w_avg (style-based; default: the file's, usually 1)")
    parser.add_argument("--vgg-weights", help="path to vgg16-397923af.pth")
    parser.add_argument("--out", required=True, help="study directory (created or resumed)")
    parser.add_argument("--max-cost", type=int, help="refuse to start when more than this many "
                        "image-iterations remain")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the cells and the cost, compute nothing")
    parser.add_argument("--batch-size", type=int, default=default(spec, "batch_size"),
                        help="images optimised together (default %(default)s)")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    parser.add_argument("--alpha-warmup", type=float, default=None,
                        help="alpha-only steps per iteration before the iterations (default: "
                             "the recipe's; 0: none, as studies made before 2026-12-05)")
    parser.add_argument("--adam-beta2", type=float, default=None,
                        help="Adam's decay of the squared gradient's running mean (default: "
                             "the recipe's; 0.999 with --alpha-warmup 3: the adam recipe's "
                             "inversion before its second change on 2026-12-05)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    tuning = parser.add_argument_group("generator tuning (a study axis)")
    tuning.add_argument("--tune", default="0", help="tuning steps after each cell's inversion, "
                        "or a comma-separated sweep such as 0,200: every cell comes once per "
                        "value (default %(default)s: none)")
    parser.set_defaults(tune_fields=dataclass_flags(tuning, TuneSettings, skip=("tune",)))
    add_shard(parser)
    add_figure_flags(parser)


def run(args: argparse.Namespace) -> int:
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
                     layers=args.layers, codes=int_list(args.codes, "codes"),
                     iterations=args.iterations, recipe=args.recipe, seed=args.seed,
                     single_code=not args.no_single_code, segmenter=args.segmenter,
                     perceptual=args.perceptual, vgg_weights=args.vgg_weights,
                     batch_size=args.batch_size, attribution_figures=args.attribution_figures,
                     latent_space=args.latent_space, truncation_psi=args.truncation_psi,
                     baselines=[b.strip() for b in args.baselines.split(",") if b.strip()]
                     if args.baselines else None, tune=int_list(args.tune, "tune"),
                     tuning=values_of(args, args.tune_fields), alpha_warmup=args.alpha_warmup,
                     adam_beta2=args.adam_beta2)
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
                        dry_run=args.dry_run, progress=not args.quiet, shard=args.shard_info,
                        figures=figure_output(args), compile=args.compile)
    if args.dry_run:
        return 0
    report_outcome(outcome)
    return 1 if sum(cell.get("failed", 0) for cell in outcome.summary["cells"]) else 0


def report_outcome(outcome) -> None:
    """The best layer per generator and task (beside the single-code baselines), warnings, and
    how many cells are done."""
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


COMMANDS = {
    "layers": Command(
        "layer-wise (and codes-count) study: invert the same images at every composing layer, "
        "for several tasks", add_layers_arguments, run,
        "Invert the same images at every composing layer (and every N in --codes) for each "
        "task, plus the single-code baseline. Each cell is a run directory; rerunning the same "
        "command resumes and never recomputes a finished cell. Writes layers.csv, summary.json "
        "and figures."),
    "cross-domain": Command(
        "invert the same (bedroom) images with several generators at every layer",
        add_cross_domain_arguments, run,
        "The paper's cross-domain experiment: invert the same images with each generator at "
        "each composing layer, plus each generator's single-code baseline. Images are resized "
        "to each generator's resolution (the summary says so). Resumable like `layers`."),
}
