"""The run directory: everything a run produced, written atomically so a rerun resumes.

Layout::

    RUN/config.json          settings needed to reproduce the run (checked again on resume)
    RUN/results.jsonl        one line per finished image: image, status, psnr, ssim, loss, ...
    RUN/images/NAME/         target.png (when known), degraded.png, reconstruction.png,
                             output.png (when the task's output differs, e.g. colorization),
                             latents.safetensors (codes [N, Z], alphas [N, C], loss trace)
    RUN/summary.json         aggregates over results.jsonl, rewritten after every batch

An image's folder is written under a temporary name and renamed into place, then its line is added
to ``results.jsonl`` (rewritten through a temporary file and a rename). An interrupted run loses at
most the batch in flight; images already in ``results.jsonl`` are never recomputed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from inversion.engine import InversionResult
from inversion.errors import InputError
from inversion.files import atomic_write_bytes
from inversion.generators.base import Layer
from inversion.images import save_png
from inversion.metrics import from_uint8

# Settings that may change between a run and its resumption without changing the results' meaning.
VOLATILE_KEYS = ("created", "versions", "device", "batch_size", "command", "progress")


def json_safe(value: Any) -> Any:
    """Non-finite floats become None so the files stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, payload: Any) -> None:
    body = json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, body.encode())


@dataclass
class ImageRecord:
    """Extra per-image facts the run directory keeps beside the inversion result."""

    source: str
    notes: list[str]
    target: torch.Tensor | None  # clean image [3, H, W] when known
    metric_reference: str | None  # "clean", "reference", "observation" or None


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.results_path = self.path / "results.jsonl"
        self.summary_path = self.path / "summary.json"
        self.images_dir = self.path / "images"

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, config: dict[str, Any]) -> RunDirectory:
        """Create the run, or resume it when its stored config matches ``config``."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise InputError(f"--out {run.path} exists and is not a directory")
        if run.config_path.is_file():
            wanted = json.loads(json.dumps(json_safe(config)))
            differences = config_differences(run.config(), wanted)
            if differences:
                raise InputError(f"{run.path} holds a run with other settings ({differences}); "
                                 "use another --out or the same settings to resume")
            return run
        if run.path.is_dir() and any(run.path.iterdir()):
            raise InputError(f"--out {run.path} is not empty and holds no run (no config.json)")
        run.images_dir.mkdir(parents=True, exist_ok=True)
        write_json(run.config_path, config)
        return run

    def config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise InputError(f"{self.path} is not a run directory (no config.json)")
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{self.config_path} is not valid JSON ({err})") from None

    # -- results -------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        if not self.results_path.is_file():
            return []
        lines = self.results_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def finished(self) -> set[str]:
        return {record["image"] for record in self.records()}

    def write_batch(self, result: InversionResult, extras: list[ImageRecord]) -> list[dict]:
        """Write every image of ``result``, then add their lines to ``results.jsonl``."""
        records = []
        per_image_seconds = result.seconds / max(1, result.batch)
        for i, (name, extra) in enumerate(zip(result.names, extras, strict=True)):
            self._write_image(result, i, extra)
            failed = i in result.failures
            metrics = result.metrics[i] or {}
            records.append({
                "image": name, "status": "failed" if failed else "ok",
                "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"),
                "perceptual": metrics.get("perceptual"),
                "loss": float(result.losses[i]), "seconds": per_image_seconds,
                "metric_reference": extra.metric_reference if metrics else None,
                "seed": result.seeds[i], "layer": result.layer.name, "source": extra.source,
                "notes": extra.notes, **({"error": result.failures[i]} if failed else {}),
            })
        body = "".join(json.dumps(json_safe(r), allow_nan=False) + "\n"
                       for r in self.records() + records)
        atomic_write_bytes(self.results_path, body.encode())
        return records

    def _write_image(self, result: InversionResult, i: int, extra: ImageRecord) -> None:
        final = self.images_dir / result.names[i]
        partial = self.images_dir / f".partial-{result.names[i]}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        if extra.target is not None:
            save_png(extra.target, partial / "target.png")
        save_png(result.observations[i], partial / "degraded.png")
        save_png(result.reconstructions[i], partial / "reconstruction.png")
        if not torch.equal(result.outputs[i], result.reconstructions[i]):
            save_png(result.outputs[i], partial / "output.png")
        trace = result.trace[:, i] if result.trace.numel() else torch.empty(0)
        save_file({
            "codes": result.codes[i].contiguous(), "alphas": result.alphas[i].contiguous(),
            "trace_iterations": torch.tensor(result.trace_iterations, dtype=torch.int64),
            "trace_loss": trace.float().contiguous(),
        }, str(partial / "latents.safetensors"), metadata={
            "layer": result.layer.name, "layer_index": str(result.layer.index),
            "layer_shape": "x".join(map(str, result.layer.shape)), "fusion": result.fusion,
            "seed": str(result.seeds[i]),
        })
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)

    def write_summary(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        records = self.records()
        ok = [r for r in records if r["status"] == "ok"]
        summary: dict[str, Any] = {
            "images": len(records), "ok": len(ok), "failed": len(records) - len(ok),
            "seconds_total": sum(r["seconds"] for r in records),
        }
        for key in ("psnr", "ssim", "perceptual", "loss"):
            values = [r[key] for r in ok if r.get(key) is not None]
            if values:
                summary[f"{key}_mean"] = statistics.fmean(values)
                summary[f"{key}_std"] = statistics.pstdev(values)
        summary.update(extra or {})
        write_json(self.summary_path, summary)
        return summary

    # -- loading -------------------------------------------------------------------------------
    def load_result(self) -> InversionResult:
        """All finished images as one :class:`InversionResult` (failed images left out)."""
        config = self.config()
        records = [r for r in self.records() if r["status"] == "ok"]
        if not records:
            raise InputError(f"{self.path} has no finished images in results.jsonl")
        latents, images = [], {"reconstruction": [], "output": [], "degraded": []}
        layer = None
        for record in records:
            folder = self.images_dir / record["image"]
            path = folder / "latents.safetensors"
            if not path.is_file():
                raise InputError(f"{self.path}: image {record['image']} has no latents "
                                 f"({path.relative_to(self.path)} is missing)")
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                latents.append({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118
            layer = Layer(int(meta["layer_index"]), meta["layer"],
                          tuple(int(s) for s in meta["layer_shape"].split("x")))
            for kind in images:
                file = folder / f"{kind}.png"
                if kind == "output" and not file.is_file():
                    file = folder / "reconstruction.png"
                images[kind].append(read_png(file))
        trace_iterations = latents[0]["trace_iterations"].tolist()
        same_trace = all(len(x["trace_loss"]) == len(trace_iterations) for x in latents)
        return InversionResult(
            names=[r["image"] for r in records],
            codes=torch.stack([x["codes"] for x in latents]),
            alphas=torch.stack([x["alphas"] for x in latents]),
            layer=layer, fusion=config["recipe"]["fusion"], task=config["task"],
            recipe=config["recipe"], seeds=[r["seed"] for r in records],
            reconstructions=torch.stack(images["reconstruction"]),
            outputs=torch.stack(images["output"]), observations=torch.stack(images["degraded"]),
            losses=torch.tensor([r["loss"] for r in records]),
            trace_iterations=trace_iterations if same_trace else [],
            trace=(torch.stack([x["trace_loss"] for x in latents], dim=1) if same_trace
                   else torch.empty(0, len(records))),
            metrics=[{"psnr": r["psnr"], "ssim": r["ssim"]} if r.get("psnr") is not None
                     else None for r in records],
            seconds=sum(r["seconds"] for r in records))


def read_png(path: Path) -> torch.Tensor:
    """An image file as ``[3, H, W]`` in [-1, 1]; a missing file is an InputError naming it."""
    if not path.is_file():
        raise InputError(f"{path} is missing")
    with Image.open(path) as image:
        return from_uint8(np.asarray(image.convert("RGB")))


def config_differences(stored: dict[str, Any], wanted: dict[str, Any],
                       volatile: tuple[str, ...] = VOLATILE_KEYS) -> str:
    """The settings that differ, as ``key: stored vs wanted; ...`` ('' when none do)."""
    keys = sorted((set(stored) | set(wanted)) - set(volatile))
    changed = [f"{k}: {json.dumps(stored.get(k))} vs {json.dumps(wanted.get(k))}"
               for k in keys if stored.get(k) != wanted.get(k)]
    return "; ".join(changed)
