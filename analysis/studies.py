"""Studies over a grid of inversions: which layer to compose at, how many codes, which generator.

A study is a list of :class:`StudyCell` (generator, task, composing layer, number of codes, latent
space); each cell is an ordinary run directory, so a study resumes cell by cell. A single-code
baseline is a cell at layer index 0 with one code: plain latent optimisation through the same
engine, in Z by default, and also in W and W+ for generators that have them (StyleGAN2).

This module holds the pure parts: expanding the grid, its cost, the tidy table built from finished
runs, and its aggregates. ``mganprior.studies`` runs the cells.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from inversion.generators.base import Layer, find_layer
from mganprior.core.errors import InputError

METRICS = ("psnr", "ssim", "lpips", "perceptual")
TABLE_COLUMNS = ("generator", "task", "layer", "layer_index", "layer_shape", "codes",
                 "resolution", "image", "metric", "value", "tune")
SINGLE_CODE = "single-code"


def space_folder(space: str) -> str:
    """A latent space as it appears in folder names (``w+`` is ``wplus``)."""
    return space.replace("+", "plus")


@dataclass(frozen=True)
class StudyCell:
    """One inversion setting of a study; ``layer.index == 0`` is a single-code baseline, in
    ``latent_space``; ``tune``: generator-tuning steps after the inversion (0: none)."""

    generator: str
    task: str
    layer: Layer
    codes: int
    latent_space: str = "z"
    tune: int = 0

    @property
    def single_code(self) -> bool:
        return self.layer.index == 0

    @property
    def label(self) -> str:
        """Column label in tables and figures: ``single-code`` (``single-code w``,
        ``single-code w+`` for baselines in other spaces) or the layer name."""
        tuned = f" +tune {self.tune}" if self.tune else ""
        if not self.single_code:
            return self.layer.name + tuned
        return (SINGLE_CODE if self.latent_space == "z" else
                f"{SINGLE_CODE} {self.latent_space}") + tuned

    @property
    def generator_folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.generator)

    @property
    def key(self) -> str:
        """Relative folder of the cell's run directory (stable across reruns)."""
        where = f"{self.layer.index:02d}-{self.layer.name}"
        if self.latent_space != "z":
            where = f"00-{space_folder(self.latent_space)}" if self.single_code else \
                f"{where}-{space_folder(self.latent_space)}"
        tuned = f"-tune{self.tune}" if self.tune else ""
        return f"{self.generator_folder}/{self.task}/{where}-n{self.codes}{tuned}"

    def describe(self) -> str:
        where = f"{self.latent_space} (single code)" if self.single_code else \
            f"{self.layer.name} {'x'.join(map(str, self.layer.shape))}"
        tuned = f", then {self.tune} tuning steps" if self.tune else ""
        return f"{self.generator} {self.task} N={self.codes} at {where}{tuned}"

    def to_dict(self) -> dict[str, Any]:
        return {"generator": self.generator, "task": self.task, "codes": self.codes,
                "layer": {"index": self.layer.index, "name": self.layer.name,
                          "shape": list(self.layer.shape)}, "latent_space": self.latent_space,
                **({"tune": self.tune} if self.tune else {})}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> StudyCell:
        layer = record["layer"]
        return cls(record["generator"], record["task"],
                   Layer(int(layer["index"]), layer["name"], tuple(layer["shape"])),
                   int(record["codes"]), record.get("latent_space", "z"),
                   int(record.get("tune", 0)))


def select_layers(layers: Sequence[Layer], spec: str | Sequence[str | int]) -> list[Layer]:
    """``"all"`` (every composable layer after z) or names / indices (negative from the deepest),
    shallow to deep, without repeats. ``layers`` is a generator's measured listing."""
    composable = list(layers[1:])
    if isinstance(spec, str):
        if spec == "all":
            return composable
        spec = [part.strip() for part in spec.split(",") if part.strip()]
    chosen: dict[int, Layer] = {}
    for key in spec:
        found = find_layer(layers, key)
        if found is None:
            listing = ", ".join(f"{layer.index} {layer.name}" for layer in layers)
            raise InputError(f"layer {key!r} is not a composable layer; layers: {listing}")
        chosen[found.index] = found
    return [chosen[index] for index in sorted(chosen)]


def expand_grid(generator_layers: dict[str, Sequence[Layer]], tasks: Sequence[str],
                layers: str | Sequence[str | int] = "all", codes: Sequence[int] = (20,),
                single_code: bool = True, latent_space: str = "z",
                baselines: Mapping[str, Sequence[tuple[str, Layer]]] | None = None,
                tunes: Sequence[int] = (0,)) -> list[StudyCell]:
    """Every (generator, task, layer, N) cell, generators and tasks in the given order, the
    single-code baselines first, then layers shallow to deep, N ascending. ``generator_layers``
    are listings in ``latent_space``, where multi-code cells put their codes; ``baselines`` gives
    a generator's single-code baselines as (latent space, its layer 0) pairs; by default one, in
    ``latent_space``. Every cell comes once per ``tunes`` entry (generator-tuning steps)."""
    if not tasks:
        raise InputError("a study needs at least one task")
    if not codes or any(n < 1 for n in codes):
        raise InputError(f"codes must be positive integers, got {list(codes)}", field="codes")
    if not tunes or any(t < 0 for t in tunes):
        raise InputError(f"tune must be steps >= 0, got {list(tunes)}", field="tune")
    baselines = baselines or {}
    cells: list[StudyCell] = []
    for generator, listing in generator_layers.items():
        chosen = select_layers(listing, layers)
        own = baselines.get(generator, [(latent_space, listing[0])])
        for task in tasks:
            if single_code:
                cells += [StudyCell(generator, task, layer, 1, space) for space, layer in own]
            for layer in chosen:
                for n in sorted(set(codes)):
                    cell = StudyCell(generator, task, layer, 1 if layer.index == 0 else n,
                                     latent_space)
                    if cell not in cells:
                        cells.append(cell)
    return [replace(cell, tune=steps) for cell in cells for steps in sorted(set(tunes))]


def study_cost(cells: Sequence[StudyCell], images: int,
               iterations: int | Mapping[StudyCell, int]) -> int:
    """Image-iterations (cells x images x iterations): the study's size, before per-layer
    differences in cost. ``iterations`` is one number or one per cell."""
    if isinstance(iterations, int):
        return len(cells) * images * iterations
    return sum(iterations[cell] for cell in cells) * images


def tidy_rows(cell: StudyCell, records: Iterable[dict[str, Any]],
              resolution: int) -> list[dict[str, Any]]:
    """One row per (image, metric) of a cell's finished images (failed images have no rows)."""
    rows = []
    for record in records:
        if record.get("status") != "ok":
            continue
        for metric in METRICS:
            value = record.get(metric)
            if value is None:
                continue
            rows.append({
                "generator": cell.generator, "task": cell.task, "layer": cell.label,
                "layer_index": cell.layer.index,
                "layer_shape": "x".join(map(str, cell.layer.shape)), "codes": cell.codes,
                "resolution": resolution, "image": record["image"], "metric": metric,
                "value": float(value), "tune": cell.tune,
            })
    return rows


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, standard deviation (population), min and max per (generator, task, layer, codes,
    tuning, metric), in first-seen order. Infinite PSNRs (exact reconstructions) are left out of
    means."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        key = (row["generator"], row["task"], row["layer"], row["layer_index"], row["codes"],
               int(row.get("tune") or 0), row["metric"])
        groups[key].append(row["value"])
    out = []
    for (generator, task, layer, index, codes, tune, metric), values in groups.items():
        finite = [v for v in values if v == v and abs(v) != float("inf")]
        out.append({
            "generator": generator, "task": task, "layer": layer, "layer_index": index,
            "codes": codes, "tune": tune, "metric": metric, "images": len(values),
            "mean": statistics.fmean(finite) if finite else None,
            "std": statistics.pstdev(finite) if finite else None,
            "min": min(finite) if finite else None, "max": max(finite) if finite else None,
        })
    return out


def best_cells(aggregates: Iterable[dict[str, Any]], metric: str = "psnr",
               higher_is_better: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (generator, task): the multi-code cell with the best mean ``metric``."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in aggregates:
        if row["metric"] != metric or row["mean"] is None or row["layer_index"] == 0:
            continue
        key = (row["generator"], row["task"])
        current = best.get(key)
        better = current is None or (row["mean"] > current["mean"] if higher_is_better
                                     else row["mean"] < current["mean"])
        if better:
            best[key] = row
    return best
