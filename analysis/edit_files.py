"""Edits on disk, owned by :class:`EditDirectory`.

Layout of an edit directory::

    edits.json           the direction (name, space, source, eigenvalue or accuracy, generator
                         sha256), the settings, code sets, steps, vocabulary, target class, the
                         run it edits, and the per-edit summary
    edits.csv            tidy: image, code_set, t, class, fraction (with a segmenter)
    summary.csv          per (image, code set): changed pixels, target change, monotone, largest
                         other change
    edits.safetensors    frames uint8 [B, S, T, H, W, 3], changed [B, S, H, W], fractions
                         [B, S, T, K], moving [S, N], ts [T]
    strips/NAME.png      one row per code set, one column per step
    animations/NAME.gif  the first code set's edit, there and back
    figures/             curves.png, disentanglement.png, changed-NAME.png

It is built beside its final name and swapped in whole, like an attribution directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from analysis.attribution_files import vocabulary_from_record, vocabulary_record
from analysis.directions import Direction
from analysis.editing import EditResult, EditSettings
from mganprior.core.errors import InputError
from mganprior.core.files import WholeDirectory, atomic_path
from mganprior.core.jsonio import read_json, write_csv, write_json
from mganprior.core.pixels import from_uint8, to_uint8

META, TABLE, SUMMARY, ARRAYS = "edits.json", "edits.csv", "summary.csv", "edits.safetensors"


def pixel_grid(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[rows, columns, H, W, 3]`` -> one uint8 image ``[rows*H, columns*W, 3]``."""
    rows, columns, h, w, _ = frames.shape
    return frames.transpose(0, 2, 1, 3, 4).reshape(rows * h, columns * w, 3)


class EditDirectory(WholeDirectory):
    """The owner of the edit layout."""

    MARKER, HOLDS = META, "edits"

    def strip(self, image: str) -> Path:
        return self.path / "strips" / f"{image}.png"

    def animation(self, image: str) -> Path:
        return self.path / "animations" / f"{image}.gif"

    def figure(self, name: str) -> Path:
        return self.path / "figures" / f"{name}.png"

    def meta(self) -> dict[str, Any]:
        meta = read_json(self.path / META, "edits")
        if not isinstance(meta, dict):
            raise InputError(f"{self.path / META} is not a JSON object")
        return meta

    def save(self, result: EditResult, target: str | None = None,
             extra: dict[str, Any] | None = None) -> None:
        """Arrays, tables, strips and animations of ``result``."""
        import imageio.v3 as iio

        self.path.mkdir(parents=True, exist_ok=True)
        batch, sets, steps = result.frames.shape[:3]
        pixels = to_uint8(result.frames.flatten(0, 2)).reshape(batch, sets, steps,
                                                              *result.frames.shape[-2:], 3)
        arrays = {"frames": torch.from_numpy(pixels), "changed": result.changed.float(),
                  "moving": result.moving.to(torch.uint8), "ts": result.ts.float()}
        if result.fractions is not None:
            arrays["fractions"] = result.fractions.float()
        with atomic_path(self.path / ARRAYS) as tmp:
            save_file({k: v.contiguous() for k, v in arrays.items()}, str(tmp))
        for b, name in enumerate(result.names):
            self.strip(name).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.strip(name), ".png") as tmp:
                Image.fromarray(pixel_grid(pixels[b])).save(tmp)
            self.animation(name).parent.mkdir(parents=True, exist_ok=True)
            sequence = np.concatenate([pixels[b, 0], pixels[b, 0, ::-1][1:-1]])
            with atomic_path(self.animation(name), ".gif") as tmp:
                iio.imwrite(tmp, sequence, extension=".gif", duration=150, loop=0)
        direction = result.direction
        write_json(self.path / META, {
            "names": result.names, "code_sets": result.code_sets, "ts": result.ts.tolist(),
            "settings": result.settings.to_dict(), "target": target,
            "direction": {"name": direction.name, "space": direction.space,
                          "source": direction.source, "meta": direction.meta,
                          "vector": direction.vector.tolist()},
            "vocabulary": vocabulary_record(result.vocabulary) if result.vocabulary else None,
            "segmentation_source": result.segmentation_source,
            "summary": result.summary(target), "extra": {**result.extra, **(extra or {})},
        })
        write_csv(self.path / TABLE, result.records(), ("image", "code_set", "t", "class",
                                                         "fraction"))
        write_csv(self.path / SUMMARY, result.summary(target))

    def load(self) -> EditResult:
        for name in (META, ARRAYS):
            if not (self.path / name).is_file():
                raise InputError(f"{self.path} is not an edit directory ({name} is missing)")
        try:
            meta = self.meta()
            arrays = load_file(str(self.path / ARRAYS))
            frames = arrays["frames"]
            direction = meta["direction"]
            return EditResult(
                names=list(meta["names"]),
                direction=Direction(direction["name"], np.asarray(direction["vector"]),
                                    direction["space"], direction["source"],
                                    direction.get("meta", {})),
                settings=EditSettings(**meta["settings"]), code_sets=list(meta["code_sets"]),
                moving=arrays["moving"].bool(), ts=arrays["ts"],
                frames=from_uint8(frames.flatten(0, 2)).reshape(*frames.shape[:3], 3,
                                                                *frames.shape[3:5]),
                changed=arrays["changed"],
                vocabulary=vocabulary_from_record(meta["vocabulary"])
                if meta.get("vocabulary") else None,
                fractions=arrays.get("fractions"),
                segmentation_source=meta.get("segmentation_source"),
                extra=meta.get("extra", {}))
        except (json.JSONDecodeError, SafetensorError, KeyError, TypeError, ValueError) as err:
            raise InputError(f"edits in {self.path} are damaged ({type(err).__name__}: {err})") \
                from None
