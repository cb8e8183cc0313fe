"""An attribution on disk: arrays, parameters and the tidy tables, readable without the models.

Layout of an attribution directory (by default ``RUN/attribution/``)::

    attribution.safetensors  differences [B, N, H, W] fp16, binary [B, N, H, W] uint8,
                             iou [B, N, K], assigned / ranks [B, N] int64, assigned_iou,
                             zeroed_fraction [B, N], segmentation [B, H, W] int64,
                             reconstructions (and targets) [B, H, W, 3] uint8
    attribution.json         names, vocabulary, settings, layer, fusion, source, summary
    attribution.csv          one row per (image, code): image, code, rank, class, iou,
                             alpha_zeroed_fraction, changed_fraction, mean_difference
    classes.csv              one row per class: codes, images_with_codes, images_present, mean_iou
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from analysis.attribution import AttributionResult, AttributionSettings
from inversion.errors import InputError
from inversion.files import atomic_path, atomic_write_bytes
from inversion.generators.base import Layer
from inversion.metrics import from_uint8, to_uint8
from inversion.rundir import write_json
from segmentation.vocabularies import Vocabulary

ARRAYS, META, TABLE, CLASSES = ("attribution.safetensors", "attribution.json", "attribution.csv",
                                "classes.csv")


def csv_text(rows: list[dict[str, Any]],
             columns: tuple[str, ...] | list[str] | None = None) -> str:
    """CSV with ``columns`` (default: the first row's keys) as header; '' with neither."""
    buffer = io.StringIO()
    fieldnames = list(columns) if columns is not None else list(rows[0]) if rows else []
    if fieldnames:
        writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | Path, rows: list[dict[str, Any]],
              columns: tuple[str, ...] | list[str] | None = None) -> None:
    """:func:`csv_text`, written atomically."""
    atomic_write_bytes(path, csv_text(rows, columns).encode())


def save_attribution(result: AttributionResult, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "differences": result.differences.half(), "binary": result.binary.to(torch.uint8),
        "iou": result.iou.float(), "assigned": result.assigned, "ranks": result.ranks,
        "assigned_iou": result.assigned_iou.float(),
        "zeroed_fraction": result.zeroed_fraction.float(), "segmentation": result.segmentation,
        "reconstructions": torch.from_numpy(to_uint8(result.reconstructions)),
    }
    if result.targets is not None:
        arrays["targets"] = torch.from_numpy(to_uint8(result.targets))
    if result.reproduction_error is not None:
        arrays["reproduction_error"] = result.reproduction_error.float()
    with atomic_path(directory / ARRAYS) as tmp:
        save_file({k: v.contiguous() for k, v in arrays.items()}, str(tmp))
    vocabulary = result.vocabulary
    write_json(directory / META, {
        "names": result.names,
        "vocabulary": {"name": vocabulary.name, "names": list(vocabulary.names),
                       "colors": [list(c) for c in vocabulary.colors]},
        "settings": result.settings.to_dict(), "segmentation_source": result.segmentation_source,
        "layer": {"index": result.layer.index, "name": result.layer.name,
                  "shape": list(result.layer.shape)},
        "fusion": result.fusion, "summary": result.summary(), "extra": result.extra,
    })
    write_csv(directory / TABLE, result.records())
    write_csv(directory / CLASSES, result.class_summary())
    return directory


def load_attribution(directory: str | Path) -> AttributionResult:
    """Read what :func:`save_attribution` wrote; a missing or damaged file is named."""
    directory = Path(directory)
    for name in (META, ARRAYS):
        if not (directory / name).is_file():
            raise InputError(f"{directory} is not an attribution directory ({name} is missing)")
    try:
        meta = json.loads((directory / META).read_text())
        arrays = load_file(str(directory / ARRAYS))
        layer = meta["layer"]
        vocab = meta["vocabulary"]
        return AttributionResult(
            names=list(meta["names"]),
            vocabulary=Vocabulary(vocab["name"], tuple(vocab["names"]),
                                  tuple(tuple(c) for c in vocab["colors"])),
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
        raise InputError(f"attribution in {directory} is damaged ({type(err).__name__}: "
                         f"{err})") from None
