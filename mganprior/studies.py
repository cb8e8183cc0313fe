"""``mganprior layers`` and ``mganprior cross-domain``: resumable studies over a grid of cells.

A study directory::

    OUT/study.json           the study's settings and image list (checked again on resume)
    OUT/inputs/              default images, when the study rendered or sampled them
    OUT/cells/GEN/TASK/LL-LAYER-nN/   one run directory per cell (and its attribution/)
    OUT/layers.csv           tidy: generator, task, layer, layer_index, layer_shape, codes,
                             resolution, image, metric, value
    OUT/attribution.csv      per cell and class: codes assigned, their mean IoU (with a segmenter)
    OUT/summary.json         cells and their status, aggregates, best layers, warnings
    OUT/figures/             metric vs layer (and vs N), reconstruction grids, attribution by layer

A finished cell is never recomputed; an interrupted one resumes at its first unfinished batch.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from analysis.attribution_files import META as ATTRIBUTION_META
from analysis.attribution_files import write_csv
from analysis.studies import (
    TABLE_COLUMNS,
    StudyCell,
    aggregate,
    best_cells,
    expand_grid,
    study_cost,
    tidy_rows,
)
from inversion.errors import InputError
from inversion.images import LoadedImage, load_images, save_png
from inversion.losses import load_perceptual
from inversion.recipes import get_recipe
from inversion.rundir import RunDirectory, config_differences, write_json
from inversion.runs import RunSettings, package_versions, run_inversion
from inversion.tasks import TASKS, make_task
from mganprior.attribution import SegmentationChoice, attribute_run
from mganprior.zoo import GENERATORS, LoadedGenerator, load_generator
from reports.figures import (
    attribution_by_layer,
    image_table,
    metric_vs_codes,
    metric_vs_layer,
    save_figure,
)

STUDY_FILE = "study.json"
VOLATILE = ("created", "versions", "device", "batch_size", "attribution_figures", "max_cost",
            "progress")
GRID_IMAGES = 4  # images shown in reconstruction grids


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

    def validate(self) -> None:
        if not self.generators:
            raise InputError("a study needs at least one generator")
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown:
            raise InputError(f"unknown task {unknown[0]!r}; tasks: {', '.join(TASKS)}")
        if self.iterations is not None and self.iterations < 1:
            raise InputError(f"--iterations must be at least 1, got {self.iterations}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")


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


def load_study_generator(source: str, device: str | None) -> LoadedGenerator:
    """A zoo name, or a path to a generator file."""
    if source in GENERATORS:
        return load_generator(source, device=device)
    if Path(source).is_file():
        return load_generator(checkpoint=source, device=device)
    raise InputError(f"generator {source!r} is neither a named generator "
                     f"({', '.join(GENERATORS)}) nor a generator file")


def default_images(source: str, loaded: LoadedGenerator, count: int, folder: Path,
                   domain: str | None = None) -> tuple[Path, str]:
    """Write ``count`` default images to ``folder``: renders of ``domain`` (or of the scene
    generator's own domain), else samples of the generator itself. Returns the folder and what
    the images are."""
    from scenes.datasets import HELD_OUT_SEED, render_many

    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")
    entry = GENERATORS.get(source)
    domain = domain or (entry.domain if entry is not None else None)
    folder.mkdir(parents=True, exist_ok=True)
    if domain is not None:
        images, _ = render_many(domain, range(HELD_OUT_SEED, HELD_OUT_SEED + count),
                                loaded.generator.resolution, progress=False)
        for i, image in enumerate(images):
            save_png(image, folder / f"{domain}-{HELD_OUT_SEED + i}.png")
        return folder, f"held-out {domain} renders"
    for i, image in enumerate(loaded.generator.sample(count, seed=2026).cpu()):
        save_png(image, folder / f"sample-{i:03d}.png")
    return folder, f"samples of {generator_label(source)}"


def check_study_dir(out: Path) -> None:
    """``out`` can hold a study: absent, empty, only default inputs, or a study already."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if out.is_dir() and not (out / STUDY_FILE).is_file() and \
            any(p.name != "inputs" for p in out.iterdir()):
        raise InputError(f"--out {out} is not empty and holds no study ({STUDY_FILE})")


def _check_study_file(out: Path, record: dict[str, Any]) -> None:
    check_study_dir(out)
    path = out / STUDY_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path} is not valid JSON ({err})") from None
        differences = config_differences(stored, json.loads(json.dumps(record)), VOLATILE)
        if differences:
            raise InputError(f"{out} holds a study with other settings ({differences}); use "
                             "another --out or the same settings to resume")


def run_study(spec: StudySpec, images: Sequence[str | Path], out: str | Path, *,
              device: str | None = None, max_cost: int | None = None, dry_run: bool = False,
              progress: bool = True, log: Callable[[str], None] = _stderr) -> StudyOutcome:
    """Run (or resume) every cell of ``spec`` on ``images`` into ``out``; write tables and
    figures. ``max_cost`` caps the image-iterations still to compute; ``dry_run`` only plans."""
    spec.validate()
    out = Path(out)
    check_study_dir(out)
    loaded = {generator_label(source): load_study_generator(source, device)
              for source in spec.generators}
    if len(loaded) != len(spec.generators):
        raise InputError("two generators share a name; give each once")
    cells = expand_grid({label: g.generator.layers for label, g in loaded.items()}, spec.tasks,
                        spec.layers, spec.codes, spec.single_code)
    by_resolution: dict[int, list[LoadedImage]] = {}
    for g in loaded.values():
        resolution = g.generator.resolution
        if resolution not in by_resolution:
            by_resolution[resolution] = load_images(images, resolution)
    names = [image.name for image in next(iter(by_resolution.values()))]
    iterations = {cell: _recipe(spec, cell).iterations for cell in cells}
    record = {
        **asdict(spec), "generators": {label: g.info for label, g in loaded.items()},
        "images": [{"name": image.name, "source": str(image.path)}
                   for image in next(iter(by_resolution.values()))],
        "cells": [cell.key for cell in cells],
        "cost_image_iterations": study_cost(cells, len(names), iterations),
        "versions": package_versions(), "device": str(next(iter(loaded.values())).generator
                                                       .device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _check_study_file(out, record)
    pending = [cell for cell in cells if not _cell_done(out, cell, names)]
    remaining = study_cost(pending, len(names), iterations)
    log(f"study: {len(cells)} cells x {len(names)} images "
        f"({record['cost_image_iterations']:,} image-iterations); {len(pending)} cells "
        f"({remaining:,} image-iterations) to compute")
    if max_cost is not None and remaining > max_cost:
        raise InputError(f"this study still needs {remaining:,} image-iterations "
                         f"({len(pending)} cells x {len(names)} images x iterations), above "
                         f"--max-cost {max_cost:,}; use fewer layers, codes, images or "
                         "iterations, or raise --max-cost")
    if dry_run:
        for cell in cells:
            log(f"  {'todo' if cell in pending else 'done'}  {cell.describe()}, "
                f"{iterations[cell]} iterations")
        return StudyOutcome(out, cells, [], [], {"dry_run": True, "pending": len(pending)})
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / STUDY_FILE, record)
    perceptual = load_perceptual(spec.perceptual, spec.vgg_weights)
    warnings = [perceptual.note] if perceptual.note else []
    ran, tables = [], None
    bar = tqdm(cells, desc="cells", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.describe())
        g = loaded[cell.generator]
        cell_dir = out / "cells" / cell.key
        if cell in pending:
            settings = RunSettings(g.generator, g.info, make_task(cell.task),
                                   _recipe(spec, cell), perceptual, seed=spec.seed,
                                   batch_size=spec.batch_size, progress=False)
            run_inversion(settings, by_resolution[g.generator.resolution], cell_dir,
                          config_extra={"study": str(out), "cell": cell.key},
                          log=lambda _message: None)
            ran.append(cell.key)
        if spec.segmenter and not cell.single_code and \
                not (cell_dir / "attribution" / ATTRIBUTION_META).is_file():
            attribute_run(cell_dir, SegmentationChoice(segmenter=spec.segmenter),
                          image_figures=spec.attribution_figures, progress=False,
                          log=lambda _message: None)
        tables = _write_tables(out, spec, cells, loaded, names, warnings)  # after every cell
    bar.close()
    rows, aggregates, summary, attribution = \
        tables or _write_tables(out, spec, cells, loaded, names, warnings)
    _write_figures(out, spec, cells, rows, attribution, by_resolution)
    return StudyOutcome(out, cells, rows, aggregates, summary, ran)


def _recipe(spec: StudySpec, cell: StudyCell):
    return get_recipe(spec.recipe, cell.task).with_overrides(
        codes=cell.codes, layer=cell.layer.index, iterations=spec.iterations)


def _cell_done(out: Path, cell: StudyCell, names: list[str]) -> bool:
    run = RunDirectory(out / "cells" / cell.key)
    return run.config_path.is_file() and set(names) <= run.finished()


def _write_tables(out: Path, spec: StudySpec, cells: list[StudyCell],
                  loaded: dict[str, LoadedGenerator], names: list[str],
                  warnings: list[str]) -> tuple[list[dict], list[dict], dict[str, Any],
                                                list[dict]]:
    """Rebuild layers.csv, attribution.csv and summary.json from the cells; return the tidy
    rows, their aggregates, the summary and the attribution rows."""
    rows: list[dict[str, Any]] = []
    attribution_rows: list[dict[str, Any]] = []
    statuses, notes = [], list(warnings)
    for cell in cells:
        run = RunDirectory(out / "cells" / cell.key)
        records = run.records()
        failed = [r["image"] for r in records if r["status"] != "ok"]
        if failed:
            notes.append(f"{cell.describe()}: {len(failed)} image(s) failed "
                         f"({', '.join(failed[:3])})")
        resolution = loaded[cell.generator].generator.resolution
        rows.extend(tidy_rows(cell, records, resolution))
        statuses.append({"cell": cell.key, "description": cell.describe(),
                         "status": "done" if {r["image"] for r in records} >= set(names)
                         else "partial" if records else "pending",
                         "images_ok": len(records) - len(failed),
                         "seconds": sum(r["seconds"] for r in records)})
        attribution_rows.extend(_attribution_rows(run.path / "attribution", cell))
    for label, g in loaded.items():
        folder = next(c.generator_folder for c in cells if c.generator == label)
        resized = sorted({note for image in load_notes(out, folder) for note in image})
        if resized:
            notes.append(f"{label} ({g.generator.resolution} px): images "
                         f"{'; '.join(resized)}")
    aggregates = aggregate(rows)
    best = best_cells(aggregates)
    summary = {
        "kind": spec.kind, "generators": list(loaded), "tasks": spec.tasks,
        "images": names, "cells": statuses,
        "done": sum(s["status"] == "done" for s in statuses), "total": len(statuses),
        "aggregates": aggregates,
        "best_layer_by_psnr": [{"generator": g, "task": t, "layer": row["layer"],
                                "codes": row["codes"], "psnr": row["mean"]}
                               for (g, t), row in best.items()],
        "warnings": notes,
    }
    write_csv(out / "layers.csv", rows, TABLE_COLUMNS)
    if attribution_rows:
        write_csv(out / "attribution.csv", attribution_rows)
    write_json(out / "summary.json", summary)
    return rows, aggregates, summary, attribution_rows


def load_notes(out: Path, folder: str) -> list[list[str]]:
    """Resizing notes the study's runs recorded for one generator's images (by cell folder)."""
    notes = []
    for results in (out / "cells").glob(f"{folder}/*/*/results.jsonl"):
        for line in results.read_text().splitlines():
            if line.strip():
                notes.append([n for n in json.loads(line).get("notes", []) if "resized" in n])
    return notes


def _attribution_rows(directory: Path, cell: StudyCell) -> list[dict[str, Any]]:
    path = directory / ATTRIBUTION_META
    if not path.is_file():
        return []
    summary = json.loads(path.read_text())["summary"]
    total = max(1, summary["images"] * summary["codes_per_image"])
    return [{"generator": cell.generator, "task": cell.task, "layer": cell.label,
             "layer_index": cell.layer.index, "codes": cell.codes, "class": name,
             "codes_assigned": count, "share": count / total}
            for name, count in summary["classes"].items()]


def _write_figures(out: Path, spec: StudySpec, cells: list[StudyCell], rows: list[dict],
                   attribution: list[dict], by_resolution: dict[int, list[LoadedImage]]) -> None:
    if not rows:
        return
    figures = out / "figures"
    hue = "generator" if spec.kind == "cross-domain" else "task"
    for metric in sorted({row["metric"] for row in rows}):
        save_figure(metric_vs_layer(rows, metric, hue=hue), figures / f"{metric}_vs_layer.png")
        if len(set(spec.codes)) > 1:
            save_figure(metric_vs_codes(rows, metric), figures / f"{metric}_vs_codes.png")
    names = [image.name for image in next(iter(by_resolution.values()))][:GRID_IMAGES]
    if spec.kind == "cross-domain":
        for name in names:
            save_figure(_cross_domain_grid(out, cells, name, spec.tasks[0]),
                        figures / f"cross-domain-{name}.png")
    else:
        for task in spec.tasks:
            save_figure(_layer_grid(out, cells, names, task), figures / f"grid-{task}.png")
    for generator in dict.fromkeys(row["generator"] for row in attribution):
        for task in dict.fromkeys(row["task"] for row in attribution):
            subset = [row for row in attribution
                      if row["generator"] == generator and row["task"] == task]
            if subset:
                save_figure(attribution_by_layer(subset),
                            figures / f"attribution-{generator}-{task}.png")


def _cell_image(out: Path, cell: StudyCell, name: str, kind: str = "output") -> Path | None:
    folder = out / "cells" / cell.key / "images" / name
    for candidate in ([kind, "reconstruction"] if kind == "output" else [kind]):
        path = folder / f"{candidate}.png"
        if path.is_file():
            return path
    return None


def _column_label(cell: StudyCell, cells: list[StudyCell]) -> str:
    swept = len({c.codes for c in cells if not c.single_code}) > 1
    return f"{cell.label} N={cell.codes}" if swept and not cell.single_code else cell.label


def _layer_grid(out: Path, cells: list[StudyCell], names: list[str], task: str):
    chosen = [c for c in cells if c.task == task]
    first = chosen[0]
    columns = ["target", "input"] + [_column_label(c, chosen) for c in chosen]
    table = {}
    for name in names:
        table[(name, "target")] = _cell_image(out, first, name, "target")
        table[(name, "input")] = _cell_image(out, first, name, "degraded")
        for cell in chosen:
            table[(name, _column_label(cell, chosen))] = _cell_image(out, cell, name)
    return image_table(names, columns, table,
                       title=f"{task}: reconstructions by composing layer ({first.generator})")


def _cross_domain_grid(out: Path, cells: list[StudyCell], name: str, task: str):
    chosen = [c for c in cells if c.task == task]
    generators = list(dict.fromkeys(c.generator for c in chosen))
    width = max(sum(c.generator == g for c in chosen) for g in generators)
    columns = ["target"] + [str(i) for i in range(width)]
    table, labels = {}, {}
    for g in generators:
        own = [c for c in chosen if c.generator == g]
        table[(g, "target")] = _cell_image(out, own[0], name, "target")
        labels[(g, "target")] = "target"
        for i, cell in enumerate(own):
            table[(g, str(i))] = _cell_image(out, cell, name)
            labels[(g, str(i))] = _column_label(cell, own)
    return image_table(generators, columns, table, cell_titles=labels, column_titles=False,
                       title=f"{name}: single code, then layers shallow to deep")
