"""An attribution on disk, owned by :class:`AttributionDirectory`: arrays, parameters, tables and
figures, readable without the models.

Layout of an attribution directory (by default ``RUN/attribution/``)::

    attribution.safetensors  differences [B, N, H, W] fp16, binary [B, N, H, W] uint8,
                             iou [B, N, K], assigned / ranks [B, N] int64, assigned_iou,
                             zeroed_fraction [B, N], segmentation [B, H, W] int64,
                             reconstructions (and targets) [B, H, W, 3] uint8
    attribution.json         names, vocabulary, settings, layer, fusion, source, summary
    attribution.csv          one row per (image, code): image, code, rank, class, iou,
                             alpha_zeroed_fraction, changed_fraction, mean_difference
    classes.csv              one row per class: codes, images_with_codes, images_present, mean_iou
    figures/heatmap.png, figures/histogram.png, figures/images/NAME.png

A directory is built beside its final name and swapped in whole (:meth:`AttributionDirectory.
building`), so a failed or interrupted attribution leaves the previous one, or nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from analysis.attribution import AttributionResult, AttributionSettings
from core.errors import InputError
from core.files import atomic_path, building_dir
from core.jsonio import read_csv, read_json, write_csv, write_json
from core.pixels import from_uint8, to_uint8
from inversion.generators.base import Layer
from segmentation.vocabularies import Vocabulary

ARRAYS, META, TABLE, CLASSES = ("attribution.safetensors", "attribution.json", "attribution.csv",
                                "classes.csv")
FIGURES = "figures"


def vocabulary_record(vocabulary: Vocabulary) -> dict[str, Any]:
    return {"name": vocabulary.name, "names": list(vocabulary.names),
            "colors": [list(c) for c in vocabulary.colors]}


def vocabulary_from_record(record: dict[str, Any]) -> Vocabulary:
    return Vocabulary(record["name"], tuple(record["names"]),
                      tuple(tuple(int(v) for v in c) for c in record["colors"]))


class AttributionDirectory:
    """The owner of the attribution layout."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / META).is_file()

    @classmethod
    @contextlib.contextmanager
    def building(cls, path: str | Path) -> Iterator[AttributionDirectory]:
        """A fresh directory that replaces ``path`` whole when the block succeeds."""
        path = Path(path)
        if path.is_dir() and any(path.iterdir()) and not cls(path).exists():
            raise InputError(f"{path} is not empty and holds no attribution ({META}); choose "
                             "another output directory", field="out")
        with building_dir(path) as partial:
            yield cls(partial)

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

    # -- write / read ----------------------------------------------------------------------------
    def save(self, result: AttributionResult) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
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
        with atomic_path(self.path / ARRAYS) as tmp:
            save_file({k: v.contiguous() for k, v in arrays.items()}, str(tmp))
        write_json(self.path / META, {
            "names": result.names, "vocabulary": vocabulary_record(result.vocabulary),
            "settings": result.settings.to_dict(),
            "segmentation_source": result.segmentation_source,
            "layer": {"index": result.layer.index, "name": result.layer.name,
                      "shape": list(result.layer.shape)},
            "fusion": result.fusion, "summary": result.summary(), "extra": result.extra,
        })
        write_csv(self.path / TABLE, result.records())
        write_csv(self.path / CLASSES, result.class_summary())

    def load(self) -> AttributionResult:
        """Read what :meth:`save` wrote; a missing or damaged file is named."""
        for name in (META, ARRAYS):
            if not (self.path / name).is_file():
                raise InputError(f"{self.path} is not an attribution directory ({name} is "
                                 "missing)")
        try:
            meta = json.loads((self.path / META).read_text())
            arrays = load_file(str(self.path / ARRAYS))
            layer = meta["layer"]
            return AttributionResult(
                names=list(meta["names"]),
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
                seconds=float(meta["summary"].get("seconds", 0.0)), extra=meta.get("extra", {}))
        except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, KeyError, TypeError,
                ValueError) as err:
            raise InputError(f"attribution in {self.path} is damaged ({type(err).__name__}: "
                             f"{err})") from None


def save_attribution(result: AttributionResult, directory: str | Path) -> Path:
    """Write ``result`` into ``directory`` (see :class:`AttributionDirectory`)."""
    AttributionDirectory(directory).save(result)
    return Path(directory)


def load_attribution(directory: str | Path) -> AttributionResult:
    return AttributionDirectory(directory).load()
