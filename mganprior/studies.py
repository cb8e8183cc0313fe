"""``mganprior layers`` and ``mganprior cross-domain``: resumable studies over a grid of cells.

The study directory's layout is owned by :class:`analysis.study_files.StudyDirectory`. A finished
cell is never recomputed; an interrupted one resumes at its first unfinished image, and several
processes given the same study share its images through the cells' claims.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from analysis.studies import (
    StudyCell,
    expand_grid,
    study_cost,
)
from analysis.study_files import StudyDirectory
from inversion.images import load_images, save_png
from inversion.losses import load_lpips, load_perceptual
from inversion.options import TuneSettings
from inversion.recipes import get_recipe
from inversion.runs import RunSettings, package_versions, run_inversion
from inversion.tasks import TASKS, make_task
from mganprior.attribution import SegmentationChoice, attribute_run
from mganprior.core.errors import InputError
from mganprior.core.progress import interactive, progress_bar
from mganprior.core.sharding import Shard, barrier
from mganprior.zoo import GENERATORS, LoadedGenerator, load_generator
from reports.figures import (
    FigureOutput,
    attribution_by_layer,
    image_table,
    metric_vs_codes,
    metric_vs_layer,
    save_figure,
)

GRID_IMAGES = 4  # images shown in reconstruction grids
LAYER_STUDY_TASKS = ("inversion", "colorization", "inpainting")  # the paper's layer-wise tasks
# The paper's bedroom figure: priors of other domains and of the same one (PGGAN and StyleGAN2)
CROSS_DOMAIN_PRIORS = ("digiface-dcgan64", "church-pggan64", "conference-pggan64",
                       "bedroom-pggan64", "bedroom-stylegan2-64")


@dataclass
class StudySpec:
    """What a study inverts: every (generator, task, layer, N) cell on the same images."""

    kind: str  # "layers" or "cross-domain"
    generators: list[str]  # zoo names or generator files
    tasks: list[str] = field(default_factory=lambda: ["inversion"])
    layers: str | list[str] = "all"
    codes: list[int] = field(default_factory=lambda: [20])
    iterations: int | None = None  # None: the recipe's
    recipe: str = "adam"
    seed: int = 0
    single_code: bool = True
    segmenter: str | None = None
    perceptual: str = "vgg16"
    vgg_weights: str | None = None
    batch_size: int = 8
    attribution_figures: int = 2
    latent_space: str = "z"
    truncation_psi: float | None = None
    baselines: list[str] | None = None  # latent spaces of the single-code baselines (None: z)
    tune: list[int] = field(default_factory=lambda: [0])  # tuning steps: a study axis
    tuning: dict[str, Any] = field(default_factory=dict)  # the other TuneSettings fields
    alpha_warmup: float | None = None  # None: the recipe's (recorded resolved in study.json)
    adam_beta2: float | None = None  # None: the recipe's (recorded resolved in study.json)

    def validate(self) -> None:
        if not self.generators:
            raise InputError("a study needs at least one generator")
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown:
            raise InputError(f"unknown task {unknown[0]!r}; tasks: {', '.join(TASKS)}")
        if self.iterations is not None and self.iterations < 1:
            raise InputError(f"iterations must be at least 1, got {self.iterations}",
                             field="iterations")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}",
                             field="batch_size")
        TuneSettings.from_fields(self.tuning)  # a bad tuning setting fails here, named
        if not self.tune or any(isinstance(t, bool) or not isinstance(t, int) or t < 0
                                for t in self.tune):
            raise InputError(f"tune must be tuning steps >= 0, got {self.tune}", field="tune")
        if self.baselines is not None and (not self.baselines or
                                           len(set(self.baselines)) != len(self.baselines)):
            raise InputError(f"baselines must name latent spaces once each, got "
                             f"{self.baselines}", field="baselines")


@dataclass
class StudyOutcome:
    out: Path
    cells: list[StudyCell]
    rows: list[dict[str, Any]]
    aggregates: list[dict[str, Any]]
    summary: dict[str, Any]
    ran: list[str] = field(default_factory=list)  # cells computed in this session


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def generator_label(source: str) -> str:
    return source if source in GENERATORS else Path(source).stem


def load_study_generator(source: str, device: str | None,
                         truncation_psi: float | None = None) -> LoadedGenerator:
    """A zoo name, or a path to a generator file."""
    if source in GENERATORS:
        return load_generator(source, device=device, truncation_psi=truncation_psi)
    if Path(source).is_file():
        return load_generator(checkpoint=source, device=device, truncation_psi=truncation_psi)
    raise InputError(f"generator {source!r} is neither a named generator "
                     f"({', '.join(GENERATORS)}) nor a generator file")


SAMPLE_CHUNK = 64  # generator samples made at once for a study's default images


def default_images(source: str, loaded: LoadedGenerator, count: int, folder: Path,
                   domain: str | None = None) -> tuple[Path, str]:
    """Write ``count`` default images to ``folder``: renders of ``domain`` (or of the scene
    generator's own domain), else samples of the generator itself. Returns the folder and what
    the images are."""
    from mganprior.scenes.datasets import HELD_OUT_SEED, iter_scenes

    if count < 1:
        raise InputError(f"count must be at least 1, got {count}", field="count")
    entry = GENERATORS.get(source)
    domain = domain or (entry.domain if entry is not None else None)
    folder.mkdir(parents=True, exist_ok=True)
    if domain is not None:  # streamed: each image is written before the next is made
        for seed, image, _ in iter_scenes(domain, range(HELD_OUT_SEED, HELD_OUT_SEED + count),
                                          loaded.generator.resolution):
            save_png(image, folder / f"{domain}-{seed}.png")
        return folder, f"held-out {domain} renders"
    for start in range(0, count, SAMPLE_CHUNK):  # up to 64 samples: the same as one batch
        images = loaded.generator.sample(min(SAMPLE_CHUNK, count - start), seed=2026 + start)
        for i, image in enumerate(images.cpu(), start):
            save_png(image, folder / f"sample-{i:03d}.png")
    return folder, f"samples of {generator_label(source)}"


def _study_record(spec: StudySpec, loaded: dict[str, LoadedGenerator], images: list,
                  cells: list[StudyCell], cost: int) -> dict[str, Any]:
    """What ``study.json`` remembers, checked again on resume."""
    settings = asdict(spec)
    # resolved, so a study begun under other recipe defaults is not resumed into mixed cells: one
    # value, or one per task where the tasks' recipes differ
    recipes = {task: get_recipe(spec.recipe, task).with_overrides(
        alpha_warmup=spec.alpha_warmup, adam_beta2=spec.adam_beta2) for task in spec.tasks}
    for name in ("alpha_warmup", "adam_beta2"):
        values = {task: getattr(recipe, name) for task, recipe in recipes.items()}
        settings[name] = (values[spec.tasks[0]] if len(set(values.values())) == 1
                          else values)
    if not any(spec.tune):  # untuned studies keep the record they always had
        del settings["tune"], settings["tuning"]
    else:  # every tuning setting, stated the same way whatever the caller left unset
        settings["tuning"] = {key: value for key, value in
                              TuneSettings.from_fields(spec.tuning).to_dict().items()
                              if key != "steps"}
    return {
        **settings, "generators": {label: g.info for label, g in loaded.items()},
        "images": [{"name": image.name, "source": str(image.path)} for image in images],
        "cells": [cell.key for cell in cells], "grid": [cell.to_dict() for cell in cells],
        "cost_image_iterations": cost, "versions": package_versions(),
        "device": str(next(iter(loaded.values())).generator.device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_study(spec: StudySpec, images: Sequence[str | Path], out: str | Path, *,
              device: str | None = None, max_cost: int | None = None, dry_run: bool = False,
              progress: bool = True, log: Callable[[str], None] = _stderr,
              shard: Shard | None = None, figures: FigureOutput | None = None,
              compile: bool = False) -> StudyOutcome:
    """Run (or resume) every cell of ``spec`` on ``images`` into ``out``; write tables and
    figures. ``max_cost`` caps the image-iterations still to compute; ``dry_run`` only plans;
    ``compile`` runs the inversions' generator under ``torch.compile``.

    With several shards, each inverts its share of every cell's images; the final pass
    (attributions, tables, figures) is done by rank 0 after the barrier under torchrun, and
    otherwise by whichever shard finds every cell finished."""
    shard = shard or Shard(0, 1)
    spec.validate()
    out = Path(out)
    study = StudyDirectory(out)
    study.check_usable()
    loaded = {generator_label(source): load_study_generator(source, device, spec.truncation_psi)
              for source in spec.generators}
    if len(loaded) != len(spec.generators):
        raise InputError("two generators share a name; give each once")
    cells = expand_grid({label: g.generator.in_space(spec.latent_space).layers
                         for label, g in loaded.items()}, spec.tasks,
                        spec.layers, spec.codes, spec.single_code, spec.latent_space,
                        {label: _baselines(g, spec) for label, g in loaded.items()}, spec.tune)
    by_resolution = {resolution: load_images(images, resolution) for resolution in
                     dict.fromkeys(g.generator.resolution for g in loaded.values())}
    names = [image.name for image in next(iter(by_resolution.values()))]
    iterations = {cell: _recipe(spec, cell).iterations + cell.tune for cell in cells}
    record = _study_record(spec, loaded, next(iter(by_resolution.values())), cells,
                           study_cost(cells, len(names), iterations))
    study.check_resumable(record)
    mine = shard.take(names)
    pending = [cell for cell in cells if not study.cell_done(cell, mine)]
    remaining = study_cost(pending, len(names), iterations)
    log(f"study: {len(cells)} cells x {len(names)} images "
        f"({record['cost_image_iterations']:,} image-iterations); {len(pending)} cells "
        f"({remaining:,} image-iterations) to compute")
    if max_cost is not None and remaining > max_cost:
        raise InputError(f"this study still needs {remaining:,} image-iterations "
                         f"({len(pending)} cells x {len(names)} images x iterations), above "
                         f"max_cost {max_cost:,}; use fewer layers, codes, images or "
                         "iterations, or raise max_cost")
    if dry_run:
        for cell in cells:
            log(f"  {'todo' if cell in pending else 'done'}  {cell.describe()}, "
                f"{iterations[cell]} iterations")
        return StudyOutcome(out, cells, [], [], {"dry_run": True, "pending": len(pending)})
    study.open(record)
    base = get_recipe(spec.recipe, spec.tasks[0])  # perceptual settings: the same for every task
    perceptual = load_perceptual(spec.perceptual, spec.vgg_weights, base.perceptual_layer,
                                 base.perceptual_size, base.perceptual_distance)
    lpips = load_lpips()
    warnings = [note for note in (perceptual.note, lpips.note) if note]
    ran, tables = [], None
    names_set = set(names)
    bar = progress_bar(cells, desc="cells", unit="cell", enabled=progress)
    for cell in bar:
        bar.set_postfix_str(cell.describe())
        g = loaded[cell.generator]
        if cell in pending:
            settings = RunSettings(g.generator, g.info, make_task(cell.task),
                                   _recipe(spec, cell), perceptual, lpips, seed=spec.seed,
                                   batch_size=spec.batch_size, progress=False,
                                   compile=compile, tune=TuneSettings.from_fields({**spec.tuning,
                                                                  "tune": cell.tune}))
            run_inversion(settings, by_resolution[g.generator.resolution], study.cell(cell).path,
                          config_extra={"study": str(out), "cell": cell.key},
                          log=lambda _message: None, shard=shard)
            ran.append(cell.key)
        if shard.count == 1:
            _attribute_cell(study, spec, cell, names_set)
            tables = study.rebuild_tables(warnings)  # after every cell
        if progress and not interactive():  # a log file: one line per cell
            log(f"cell done: {cell.describe()}")
    bar.close()
    barrier(shard)
    if shard.count > 1 and ((shard.distributed and not shard.leader) or
                            not all(study.cell_done(cell, names_set) for cell in cells)):
        tables = study.rebuild_tables(warnings)  # others are still at work: tables only
        return StudyOutcome(out, cells, tables.rows, tables.aggregates, tables.summary, ran)
    if shard.count > 1:  # the final pass: every cell is inverted
        for cell in cells:
            _attribute_cell(study, spec, cell, names_set)
    tables = study.rebuild_tables(warnings) if tables is None or shard.count > 1 else tables
    write_study_figures(study, spec.kind, spec.tasks, len(set(spec.codes)) > 1, cells,
                        tables.rows, tables.attribution, names, figures)
    return StudyOutcome(out, cells, tables.rows, tables.aggregates, tables.summary, ran)


def _attribute_cell(study: StudyDirectory, spec: StudySpec, cell: StudyCell,
                    names: set[str]) -> None:
    """Attribute a finished multi-code cell that has no attribution yet (with a segmenter)."""
    if spec.segmenter and not cell.single_code and study.cell_done(cell, names) and \
            not study.cell_attribution(cell).exists():
        attribute_run(study.cell(cell).path, SegmentationChoice(segmenter=spec.segmenter),
                      image_figures=spec.attribution_figures, progress=False,
                      log=lambda _message: None)


def _baselines(loaded: LoadedGenerator, spec: StudySpec) -> list[tuple[str, Any]]:
    """(latent space, layer 0 in it) of each single-code baseline this generator has."""
    spaces = spec.baselines or [spec.latent_space]
    generator = loaded.generator
    missing = [space for space in spaces if space not in generator.latent_spaces]
    if spec.baselines and missing:
        raise InputError(f"baselines {', '.join(missing)}: not a latent space of this "
                         f"{generator.family} generator; spaces: "
                         f"{', '.join(generator.latent_spaces)}", field="baselines")
    return [(space, generator.in_space(space).layers[0]) for space in spaces]


def _recipe(spec: StudySpec, cell: StudyCell):
    recipe = get_recipe(spec.recipe, cell.task).with_overrides(
        codes=cell.codes, layer=cell.layer.index, iterations=spec.iterations,
        latent_space=cell.latent_space, alpha_warmup=spec.alpha_warmup,
        adam_beta2=spec.adam_beta2)
    recipe.check_start()  # every cell is planned before the first runs
    return recipe


def write_study_figures(study: StudyDirectory, kind: str, tasks: list[str], several_codes: bool,
                        cells: list[StudyCell], rows: list[dict], attribution: list[dict],
                        names: list[str], figures: FigureOutput | None = None) -> None:
    """The study's figures from its tables: metric by layer (and by N when several N were
    swept), reconstruction grids of the first images, and attribution by layer."""
    if not rows:
        return
    hue = "generator" if kind == "cross-domain" else "task"
    if any(row.get("tune") for row in rows):  # tuned cells: their own curves
        rows = [{**row, "setting": f"{row[hue]} +tune {row['tune']}" if row.get("tune")
                 else row[hue]} for row in rows]
        hue = "setting"
    for metric in sorted({row["metric"] for row in rows}):
        save_figure(metric_vs_layer(rows, metric, hue=hue), study.figure(f"{metric}_vs_layer"),
                    figures)
        if several_codes:
            untuned = [row for row in rows if not row.get("tune")]  # N sweeps: untuned cells
            save_figure(metric_vs_codes(untuned, metric), study.figure(f"{metric}_vs_codes"),
                        figures)
    names = names[:GRID_IMAGES]
    if kind == "cross-domain":
        for name in names:
            save_figure(_cross_domain_grid(study, cells, name, tasks[0]),
                        study.figure(f"cross-domain-{name}"), figures)
    else:
        for task in tasks:
            save_figure(_layer_grid(study, cells, names, task), study.figure(f"grid-{task}"),
                        figures)
    for generator in dict.fromkeys(row["generator"] for row in attribution):
        for task in dict.fromkeys(row["task"] for row in attribution):
            subset = [row for row in attribution
                      if row["generator"] == generator and row["task"] == task]
            if subset:
                save_figure(attribution_by_layer(subset),
                            study.figure(f"attribution-{generator}-{task}"), figures)


def _column_label(cell: StudyCell, cells: list[StudyCell]) -> str:
    swept = len({c.codes for c in cells if not c.single_code}) > 1
    return f"{cell.label} N={cell.codes}" if swept and not cell.single_code else cell.label


def _layer_grid(study: StudyDirectory, cells: list[StudyCell], names: list[str], task: str):
    chosen = [c for c in cells if c.task == task]
    first = chosen[0]
    columns = ["target", "input"] + [_column_label(c, chosen) for c in chosen]
    table = {}
    for name in names:
        table[(name, "target")] = study.cell_image(first, name, "target")
        table[(name, "input")] = study.cell_image(first, name, "degraded")
        for cell in chosen:
            table[(name, _column_label(cell, chosen))] = study.cell_image(cell, name)
    return image_table(names, columns, table,
                       title=f"{task}: reconstructions by composing layer ({first.generator})")


def _cross_domain_grid(study: StudyDirectory, cells: list[StudyCell], name: str, task: str):
    chosen = [c for c in cells if c.task == task]
    generators = list(dict.fromkeys(c.generator for c in chosen))
    width = max(sum(c.generator == g for c in chosen) for g in generators)
    columns = ["target"] + [str(i) for i in range(width)]
    table, labels = {}, {}
    for g in generators:
        own = [c for c in chosen if c.generator == g]
        table[(g, "target")] = study.cell_image(own[0], name, "target")
        labels[(g, "target")] = "target"
        for i, cell in enumerate(own):
            table[(g, str(i))] = study.cell_image(cell, name)
            labels[(g, str(i))] = _column_label(cell, own)
    return image_table(generators, columns, table, cell_titles=labels, column_titles=False,
                       title=f"{name}: single code, then layers shallow to deep")
