"""A study on disk, owned by :class:`StudyDirectory`.

Layout::

    OUT/study.json           the study's settings and image list (checked again on resume)
    OUT/inputs/              default images, when the study rendered or sampled them
    OUT/cells/GEN/TASK/LL-LAYER-nN/   one run directory per cell (and its attribution/)
    OUT/layers.csv           tidy: generator, task, layer, layer_index, layer_shape, codes,
                             resolution, image, metric, value
    OUT/attribution.csv      per cell and class: codes assigned, their share (with a segmenter)
    OUT/summary.json         cells and their status, aggregates, best layers, warnings
    OUT/figures/             metric vs layer (and vs N), reconstruction grids, attribution by layer

Every cell is an ordinary run directory, read and written through :class:`RunDirectory`; the
tables are indexes rebuilt from the cells (under a lock, so several processes working on one study
never interleave them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.attribution_files import AttributionDirectory
from analysis.studies import TABLE_COLUMNS, StudyCell, aggregate, best_cells, tidy_rows
from inversion.rundir import RunDirectory
from mganprior.core.claims import locked
from mganprior.core.errors import InputError
from mganprior.core.jsonio import read_csv, read_json, write_csv, write_json
from mganprior.core.resume import check_resume

STUDY_FILE, TABLE, ATTRIBUTION_TABLE, SUMMARY = ("study.json", "layers.csv", "attribution.csv",
                                                 "summary.json")
# Settings that may change between a study and its resumption.
VOLATILE = ("created", "versions", "device", "batch_size", "attribution_figures", "max_cost",
            "progress")
ATTRIBUTION_COLUMNS = ("generator", "task", "layer", "layer_index", "codes", "class",
                       "codes_assigned", "share", "color")


@dataclass
class StudyTables:
    """What :meth:`StudyDirectory.rebuild_tables` wrote."""

    rows: list[dict[str, Any]]  # layers.csv
    aggregates: list[dict[str, Any]]
    summary: dict[str, Any]
    attribution: list[dict[str, Any]]  # attribution.csv


class StudyDirectory:
    """The owner of the study layout."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.study_path = self.path / STUDY_FILE
        self.inputs = self.path / "inputs"
        self.figures = self.path / "figures"

    def exists(self) -> bool:
        return self.study_path.is_file()

    def check_usable(self) -> None:
        """The folder can hold a study: absent, empty, only default inputs, or a study."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path} exists and is not a directory", field="out")
        if self.path.is_dir() and not self.exists() and \
                any(p.name not in ("inputs", ".locks") for p in self.path.iterdir()):
            raise InputError(f"{self.path} is not empty and holds no study ({STUDY_FILE})",
                             field="out")

    def check_resumable(self, record: dict[str, Any]) -> None:
        """Refuse a stored study with other settings (before anything is written)."""
        self.check_usable()
        if self.exists():
            check_resume(self.study(), record, what="study", where=self.path,
                         may_change=VOLATILE)

    def open(self, record: dict[str, Any]) -> None:
        """Create the study (write ``study.json``) or check that it may be resumed."""
        self.check_usable()
        self.path.mkdir(parents=True, exist_ok=True)
        with locked(self.path / ".locks" / "study.lock"):
            if self.exists():
                check_resume(self.study(), record, what="study", where=self.path,
                             may_change=VOLATILE)
            write_json(self.study_path, record)

    def study(self) -> dict[str, Any]:
        study = read_json(self.study_path, "study settings")
        if not isinstance(study, dict):
            raise InputError(f"{self.study_path} is not a JSON object")
        return study

    # -- cells -----------------------------------------------------------------------------------
    def cell(self, cell: StudyCell | str) -> RunDirectory:
        key = cell.key if isinstance(cell, StudyCell) else cell
        return RunDirectory(self.path / "cells" / key)

    def cell_attribution(self, cell: StudyCell | str) -> AttributionDirectory:
        return AttributionDirectory(self.cell(cell).path / "attribution")

    def cell_done(self, cell: StudyCell, names: Iterable[str]) -> bool:
        run = self.cell(cell)
        return run.is_run() and set(names) <= run.finished()

    def cell_image(self, cell: StudyCell, name: str, kind: str = "output") -> Path | None:
        """A cell's PNG of one image (``output`` falls back to the reconstruction), or None."""
        path = self.cell(cell).image_file(name, kind)
        return path if path.is_file() else None

    # -- tables (indexes over the cells) ---------------------------------------------------------
    def write_tables(self, rows: list[dict[str, Any]], attribution_rows: list[dict[str, Any]],
                     summary: dict[str, Any]) -> None:
        with locked(self.path / ".locks" / "study.lock"):
            write_csv(self.path / TABLE, rows, TABLE_COLUMNS)
            if attribution_rows:
                write_csv(self.path / ATTRIBUTION_TABLE, attribution_rows, ATTRIBUTION_COLUMNS)
            write_json(self.path / SUMMARY, summary)

    def table(self) -> list[dict[str, str]]:
        """``layers.csv`` rows (strings)."""
        return read_csv(self.path / TABLE)

    def summary(self) -> dict[str, Any]:
        summary = read_json(self.path / SUMMARY, "study summary")
        if not isinstance(summary, dict):
            raise InputError(f"{self.path / SUMMARY} is not a JSON object")
        return summary

    def cells(self) -> list[StudyCell]:
        """The study's grid, as ``study.json`` records it."""
        try:
            return [StudyCell.from_dict(record) for record in self.study()["grid"]]
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{self.study_path} has no readable grid ({err}); it was written "
                             "by an older version") from None

    def rebuild_tables(self, warnings: Iterable[str] = ()) -> StudyTables:
        """Rebuild ``layers.csv``, ``attribution.csv`` and ``summary.json`` from the cells
        (every cell's own index is brought up to date first)."""
        study = self.study()
        cells = self.cells()
        names = [image["name"] for image in study.get("images", [])]
        rows: list[dict[str, Any]] = []
        attribution: list[dict[str, Any]] = []
        statuses, notes = [], list(warnings)
        resized: dict[str, set[str]] = {}
        resolutions: dict[str, int] = {}
        for cell in cells:
            run = self.cell(cell)
            if run.is_run() and not run.index_is_current():
                run.rebuild_index()
            records = run.records(notes)
            resized.setdefault(cell.generator, set()).update(
                note for record in records for note in record.get("notes", [])
                if "resized" in note)
            failed = [r["image"] for r in records if r.get("status") != "ok"]
            if failed:
                notes.append(f"{cell.describe()}: {len(failed)} image(s) failed "
                             f"({', '.join(failed[:3])})")
            if run.is_run():
                resolutions[cell.generator] = int(run.config()["generator"]["resolution"])
            rows.extend(tidy_rows(cell, records, resolutions.get(cell.generator, 0)))
            statuses.append({"cell": cell.key, "description": cell.describe(),
                             "status": "done" if {r["image"] for r in records} >= set(names)
                             else "partial" if records else "pending",
                             "images_ok": len(records) - len(failed), "failed": len(failed),
                             "seconds": sum(float(r.get("seconds") or 0) for r in records)})
            attribution.extend(attribution_rows(self, cell))
        for label in dict.fromkeys(cell.generator for cell in cells):
            if resized.get(label):
                notes.append(f"{label} ({resolutions.get(label, '?')} px): images "
                             f"{'; '.join(sorted(resized[label]))}")
        aggregates = aggregate(rows)
        summary = {
            "kind": study.get("kind"), "generators": list(dict.fromkeys(c.generator
                                                                        for c in cells)),
            "tasks": study.get("tasks"), "images": names, "cells": statuses,
            "done": sum(s["status"] == "done" for s in statuses), "total": len(statuses),
            "aggregates": aggregates,
            "best_layer_by_psnr": [{"generator": g, "task": t, "layer": row["layer"],
                                    "codes": row["codes"], "psnr": row["mean"]}
                                   for (g, t), row in best_cells(aggregates).items()],
            "warnings": notes,
        }
        self.write_tables(rows, attribution, summary)
        return StudyTables(rows, aggregates, summary, attribution)

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"

    def figure_files(self, pattern: str) -> list[Path]:
        return sorted(self.figures.glob(pattern)) if self.figures.is_dir() else []


def attribution_rows(study: StudyDirectory, cell: StudyCell) -> list[dict[str, Any]]:
    """One row per class of a cell's attribution summary (none when it has no attribution),
    with the class colour from the attribution's own vocabulary."""
    attribution = study.cell_attribution(cell)
    if not attribution.exists():
        return []
    summary = attribution.summary()
    vocabulary = attribution.vocabulary()
    colors = dict(zip(vocabulary.names, vocabulary.colors, strict=True))
    total = max(1, summary["images"] * summary["codes_per_image"])
    return [{"generator": cell.generator, "task": cell.task, "layer": cell.label,
             "layer_index": cell.layer.index, "codes": cell.codes, "class": name,
             "codes_assigned": count, "share": count / total,
             "color": "#{:02x}{:02x}{:02x}".format(*colors[name]) if name in colors else ""}
            for name, count in summary["classes"].items()]
