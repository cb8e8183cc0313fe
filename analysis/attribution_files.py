"""An attribution on disk, owned by :class:`AttributionDirectory`: arrays, parameters, tables and
figures, readable without the models.

Layout of an attribution directory (by default ``RUN/attribution/``)::

    parts/NNNNN.safetensors  a part of the images (its names in the metadata): differences
                             [b, N, H, W] fp16, binary [b, N, H, W] uint8, iou [b, N, K],
                             assigned / ranks [b, N] int64, assigned_iou, zeroed_fraction
                             [b, N], segmentation [b, H, W] int64, reconstructions (and
                             targets) [b, H, W, 3] uint8
    attribution.json         names, vocabulary, settings, layer, fusion, source, the aggregate
                             (counts and sums over every part) and its summary
    attribution.csv          one row per (image, code): image, code, rank, class, iou,
                             alpha_zeroed_fraction, changed_fraction, mean_difference
    classes.csv              one row per class: codes, images_with_codes, images_present, mean_iou
    figures/heatmap.png, figures/histogram.png, figures/images/NAME.png

A directory is built beside its final name and swapped in whole (:meth:`AttributionDirectory.
building`), so a failed or interrupted attribution leaves the previous one, or nothing. Parts are
written as they are computed and the tables and summary figures come from the aggregate, so an
attribution of any number of images holds one part in memory at a time.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from analysis.attribution import AttributionAggregate, AttributionResult, AttributionSettings
from inversion.generators.base import Layer
from mganprior.core.errors import InputError
from mganprior.core.files import WholeDirectory, atomic_path
from mganprior.core.jsonio import append_csv, read_csv, read_json, write_csv, write_json
from mganprior.core.pixels import from_uint8, to_uint8
from segmentation.vocabularies import Vocabulary

META, TABLE, CLASSES, PARTS = ("attribution.json", "attribution.csv", "classes.csv", "parts")
FIGURES = "figures"


def vocabulary_record(vocabulary: Vocabulary) -> dict[str, Any]:
    return {"name": vocabulary.name, "names": list(vocabulary.names),
            "colors": [list(c) for c in vocabulary.colors]}


def vocabulary_from_record(record: dict[str, Any]) -> Vocabulary:
    return Vocabulary(record["name"], tuple(record["names"]),
                      tuple(tuple(int(v) for v in c) for c in record["colors"]))


class AttributionDirectory(WholeDirectory):
    """The owner of the attribution layout."""

    MARKER, HOLDS = META, "attribution"

    # -- files -----------------------------------------------------------------------------------
    def figure(self, name: str) -> Path:
        return self.path / FIGURES / f"{name}.png"

    def image_figure(self, image: str) -> Path:
        return self.path / FIGURES / "images" / f"{image}.png"

    def table(self) -> list[dict[str, str]]:
        """``attribution.csv`` rows (strings)."""
        return read_csv(self.path / TABLE)

    def meta(self) -> dict[str, Any]:
        """``attribution.json``: names, vocabulary, settings, layer, summary (no arrays)."""
        meta = read_json(self.path / META, "attribution")
        if not isinstance(meta, dict):
            raise InputError(f"{self.path / META} is not a JSON object")
        return meta

    def summary(self) -> dict[str, Any]:
        return self.meta().get("summary", {})

    def vocabulary(self) -> Vocabulary:
        try:
            return vocabulary_from_record(self.meta()["vocabulary"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"attribution in {self.path} is damaged ({err})") from None

    # -- write ---------------------------------------------------------------------------------
    def parts(self) -> list[Path]:
        return sorted((self.path / PARTS).glob("*.safetensors"))

    def save_part(self, result: AttributionResult, index: int) -> None:
        """One part's arrays (``parts/INDEX.safetensors``) and its rows of ``attribution.csv``."""
        arrays = {
            "differences": result.differences.half(), "binary": result.binary.to(torch.uint8),
            "iou": result.iou.float(), "assigned": result.assigned, "ranks": result.ranks,
            "assigned_iou": result.assigned_iou.float(),
            "zeroed_fraction": result.zeroed_fraction.float(),
            "segmentation": result.segmentation,
            "reconstructions": torch.from_numpy(to_uint8(result.reconstructions)),
        }
        if result.targets is not None:
            arrays["targets"] = torch.from_numpy(to_uint8(result.targets))
        if result.reproduction_error is not None:
            arrays["reproduction_error"] = result.reproduction_error.float()
        (self.path / PARTS).mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path / PARTS / f"{index:05d}.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in arrays.items()}, str(tmp),
                      metadata={"names": json.dumps(result.names),
                                "seconds": str(result.seconds)})
        append_csv(self.path / TABLE, result.records(), RECORD_COLUMNS)

    def finish(self, aggregate: AttributionAggregate, header: dict[str, Any],
               names: list[str]) -> None:
        """``attribution.json`` (``header``: settings, layer, fusion, source, extra; plus the
        names, the vocabulary, the aggregate and its summary) and ``classes.csv``."""
        write_json(self.path / META, {
            **header, "names": names, "vocabulary": vocabulary_record(aggregate.vocabulary),
            "summary": aggregate.summary(), "aggregate": aggregate.to_dict(),
            "parts": len(self.parts())})
        write_csv(self.path / CLASSES, aggregate.class_rows())
        if not (self.path / TABLE).is_file():
            write_csv(self.path / TABLE, [], RECORD_COLUMNS)

    def save(self, result: AttributionResult) -> None:
        """A whole result as one part."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.save_part(result, 0)
        self.finish(result.aggregate(), header_of(result), result.names)

    # -- read ------------------------------------------------------------------------------------
    def aggregate(self) -> AttributionAggregate:
        meta = self.meta()
        try:
            return AttributionAggregate.from_dict(vocabulary_from_record(meta["vocabulary"]),
                                                  meta["aggregate"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"attribution in {self.path} is damaged ({type(err).__name__}: "
                             f"{err})") from None

    def load(self, images: int | None = None) -> AttributionResult:
        """The attribution (or its first ``images`` images) as one result; a missing or damaged
        file is named."""
        if not (self.path / META).is_file():
            raise InputError(f"{self.path} is not an attribution directory ({META} is missing)")
        paths = self.parts()
        if not paths:
            raise InputError(f"{self.path} is not an attribution directory (no parts)")
        try:
            meta = self.meta()
            results = []
            for path in paths:
                results.append(self._part(meta, path))
                if images is not None and sum(r.batch for r in results) >= images:
                    break
            result = results[0] if len(results) == 1 else concatenate(results)
            if images is not None and result.batch > images:
                result = select(result, slice(0, images))
            return result
        except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, KeyError, TypeError,
                ValueError) as err:
            raise InputError(f"attribution in {self.path} is damaged ({type(err).__name__}: "
                             f"{err})") from None

    def _part(self, meta: dict[str, Any], path: Path) -> AttributionResult:
        arrays = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            part = handle.metadata() or {}
        layer = meta["layer"]
        return AttributionResult(
            names=json.loads(part["names"]),
            vocabulary=vocabulary_from_record(meta["vocabulary"]),
            settings=AttributionSettings(**meta["settings"]),
            segmentation_source=meta["segmentation_source"],
            layer=Layer(layer["index"], layer["name"], tuple(layer["shape"])),
            fusion=meta["fusion"],
            reconstructions=from_uint8(arrays["reconstructions"]),
            segmentation=arrays["segmentation"], differences=arrays["differences"].float(),
            binary=arrays["binary"].bool(), iou=arrays["iou"], assigned=arrays["assigned"],
            assigned_iou=arrays["assigned_iou"], zeroed_fraction=arrays["zeroed_fraction"],
            ranks=arrays["ranks"],
            targets=from_uint8(arrays["targets"]) if "targets" in arrays else None,
            reproduction_error=arrays.get("reproduction_error"),
            seconds=float(part.get("seconds", 0.0)), extra=meta.get("extra", {}))


RECORD_COLUMNS = ("image", "code", "rank", "class", "iou", "alpha_zeroed_fraction",
                  "changed_fraction", "mean_difference")


def header_of(result: AttributionResult) -> dict[str, Any]:
    """What every part of one attribution shares, for ``attribution.json``."""
    return {"settings": result.settings.to_dict(),
            "segmentation_source": result.segmentation_source,
            "layer": {"index": result.layer.index, "name": result.layer.name,
                      "shape": list(result.layer.shape)},
            "fusion": result.fusion, "extra": result.extra}


def select(result: AttributionResult, index: slice) -> AttributionResult:
    """The images ``index`` of a result."""
    per_image = {name: getattr(result, name)[index] for name in (
        "reconstructions", "segmentation", "differences", "binary", "iou", "assigned",
        "assigned_iou", "zeroed_fraction", "ranks")}
    return replace(result, names=result.names[index], **per_image,
                   targets=result.targets[index] if result.targets is not None else None,
                   reproduction_error=result.reproduction_error[index]
                   if result.reproduction_error is not None else None)


def concatenate(results: list[AttributionResult]) -> AttributionResult:
    """Parts of one attribution as one result."""
    first = results[0]
    joined = {name: torch.cat([getattr(r, name) for r in results]) for name in (
        "reconstructions", "segmentation", "differences", "binary", "iou", "assigned",
        "assigned_iou", "zeroed_fraction", "ranks")}
    optional = {name: torch.cat([getattr(r, name) for r in results])
                if all(getattr(r, name) is not None for r in results) else None
                for name in ("targets", "reproduction_error")}
    return replace(first, names=[n for r in results for n in r.names], **joined, **optional,
                   seconds=sum(r.seconds for r in results))


def save_attribution(result: AttributionResult, directory: str | Path) -> Path:
    """Write ``result`` into ``directory`` (see :class:`AttributionDirectory`)."""
    AttributionDirectory(directory).save(result)
    return Path(directory)


def load_attribution(directory: str | Path) -> AttributionResult:
    return AttributionDirectory(directory).load()
