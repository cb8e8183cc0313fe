"""Inverting a set of images into a run directory: batching, resuming, records and summary."""

from __future__ import annotations

import platform
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from inversion.engine import invert
from inversion.errors import InputError
from inversion.generators.base import LayeredGenerator
from inversion.images import LoadedImage
from inversion.losses import PerceptualStatus
from inversion.metrics import image_metrics
from inversion.recipes import Recipe
from inversion.rundir import ImageRecord, RunDirectory
from inversion.tasks import Task

VERSIONED = ("torch", "torchvision", "numpy", "scikit-image", "safetensors", "mganprior")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def image_seed(seed: int, name: str) -> int:
    """Per-image seed from the run seed and the image name, so resuming or re-batching a run
    gives every image the same initial codes and the same synthetic degradation."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**31 - 1)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class RunSettings:
    """Everything an inversion run needs besides its images."""

    generator: LayeredGenerator
    generator_info: dict[str, Any]
    task: Task
    recipe: Recipe
    perceptual: PerceptualStatus = field(default_factory=lambda: PerceptualStatus(None, "none"))
    seed: int = 0
    batch_size: int = 8
    observed: bool = False
    bf16: bool = False
    progress: bool = True

    def config(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        layer = self.recipe.resolve_layer(self.generator)
        recipe = self.recipe.to_dict() | {"layer": layer.name}
        if self.perceptual.module is None:
            recipe |= {"perceptual_lambda": 0.0}
        return {
            "generator": self.generator_info,
            "task": self.task.to_dict(),
            "recipe": recipe,
            "codes": self.recipe.codes,
            "layer": {"index": layer.index, "name": layer.name, "shape": list(layer.shape)},
            "iterations": self.recipe.iterations,
            "seed": self.seed,
            "observed": self.observed,
            "bf16": self.bf16,
            "perceptual": {"backend": self.perceptual.backend, "weights": self.perceptual.weights,
                           "note": self.perceptual.note},
            "mask_convention": "1 = known pixel",
            "batch_size": self.batch_size,
            "device": str(self.generator.device),
            "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }


def run_inversion(settings: RunSettings, images: list[LoadedImage], out_dir: str | Path,
                  references: dict[str, LoadedImage] | None = None,
                  config_extra: dict[str, Any] | None = None,
                  log: Callable[[str], None] = _stderr) -> tuple[RunDirectory, dict[str, Any]]:
    """Invert ``images`` into ``out_dir``, skipping images a previous run there finished.

    In observed mode the images are the degraded observations and ``references`` (by name) give
    clean images for metrics; otherwise the images are clean and the task degrades them.
    """
    generator, task, recipe = settings.generator, settings.task, settings.recipe
    if settings.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {settings.batch_size}")
    task.check(generator.resolution)
    if references is not None:
        missing = [img.name for img in images if img.name not in references]
        if missing:
            raise InputError(f"no reference image for {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''} (references match by name)")
    run = RunDirectory.open(out_dir, settings.config(config_extra))
    if settings.perceptual.note:
        log(settings.perceptual.note)
    done = run.finished()
    pending = [image for image in images if image.name not in done]
    if done:
        log(f"resuming {run.path}: {len(images) - len(pending)} of {len(images)} images done")
    for image in pending:
        for note in image.notes:
            log(f"note: {image.path}: {note}")
    device = generator.device
    started = time.perf_counter()
    outer = tqdm(total=len(pending), desc="images", unit="img", disable=not settings.progress)
    for start in range(0, len(pending), settings.batch_size):
        chunk = pending[start:start + settings.batch_size]
        names = [image.name for image in chunk]
        seeds = [image_seed(settings.seed, name) for name in names]
        ctx = task.context(generator.resolution, seeds, device)
        given = torch.stack([image.tensor() for image in chunk]).to(device)
        if settings.observed:
            clean = None
            observations = task.accept(given, ctx)
            refs = (torch.stack([references[n].tensor() for n in names])
                    if references is not None else None)
        else:
            clean = given
            observations = task.observe(clean, ctx)
            refs = clean
        result = invert(generator, observations, task, recipe, seeds=seeds, names=names,
                        ctx=ctx, references=refs, perceptual=settings.perceptual.module,
                        bf16=settings.bf16, progress=settings.progress,
                        description=f"batch {start // settings.batch_size + 1}"
                                    f"/{-(-len(pending) // settings.batch_size)}")
        if refs is None:  # metrics where the observation lives
            viewed = task.view(result.outputs.to(device), ctx).cpu()
            result.metrics = [None if i in result.failures else m for i, m in
                              enumerate(image_metrics(viewed, result.observations))]
        reference_kind = ("clean" if not settings.observed else
                          "reference" if references is not None else "observation")
        extras = [ImageRecord(str(image.path), image.notes,
                              clean[i].cpu() if clean is not None else
                              (references[image.name].tensor() if references else None),
                              reference_kind) for i, image in enumerate(chunk)]
        for record in run.write_batch(result, extras):
            if record["status"] == "failed":
                log(f"failed: {record['image']}: {record['error']}")
        run.write_summary()
        outer.update(len(chunk))
    outer.close()
    elapsed = time.perf_counter() - started
    summary = run.write_summary({"last_session_seconds": elapsed,
                                 "last_session_images": len(pending)})
    return run, summary
