"""``mganprior attribute``: attribute a run directory's codes to classes and write the results.

Everything is loaded and checked before anything is written; the attribution directory is built
under a temporary name and swapped in whole (:class:`AttributionDirectory`), so a failed or
interrupted attribution leaves the previous one (or nothing) in place.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from analysis.attribution import (
    AttributionResult,
    AttributionSettings,
    attribute,
    check_compatible,
)
from analysis.attribution_files import AttributionDirectory
from core.errors import InputError
from inversion.losses import load_perceptual
from inversion.rundir import RunDirectory
from mganprior.zoo import load_generator, load_segmenter
from reports.figures import attribution_grid, class_histogram, code_class_heatmap, save_figure
from segmentation.labelmaps import read_label_maps
from segmentation.segmenters import vocabulary_from
from segmentation.vocabularies import SCENE_WORLD

# Mean |re-rendered x_inv - saved reconstruction.png| above this many 8-bit levels means the codes
# were not made with this generator (8-bit rounding alone gives about 0.25).
REPRODUCTION_TOLERANCE = 3.0
DEFAULT_LABEL_VOCABULARY = SCENE_WORLD.name


@dataclass
class SegmentationChoice:
    """Where the segmentation comes from: one of a zoo segmenter, an smp directory, label maps."""

    segmenter: str | None = None
    segmenter_dir: str | Path | None = None
    labels_dir: str | Path | None = None
    label_names: str | None = None  # vocabulary name or JSON list (labels, or an smp dir)
    segment: str = "reconstruction"
    resize_labels: bool = False

    def describe(self) -> str:
        if self.labels_dir is not None:
            return f"label maps in {self.labels_dir}"
        model = self.segmenter or self.segmenter_dir
        return f"segmenter {model} on the {self.segment}s"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def run_generator(config: dict, name: str | None, checkpoint: str | Path | None,
                  device: str | None, log: Callable[[str], None]):
    """The run's generator (by name or checkpoint path, sha256-checked) or the user's override."""
    recorded = config.get("generator") or {}
    psi = (recorded.get("config") or {}).get("truncation_psi")  # as the run used it
    if name is not None or checkpoint is not None:
        loaded = load_generator(name, checkpoint, device=device, truncation_psi=psi)
        if recorded.get("sha256") and loaded.info["sha256"] != recorded["sha256"]:
            log(f"note: this generator's sha256 differs from the one the run recorded "
                f"({recorded['sha256'][:12]}...); its reconstructions will be checked")
        return loaded
    if recorded.get("name"):
        loaded = load_generator(recorded["name"], device=device, truncation_psi=psi)
    elif recorded.get("checkpoint"):
        path = Path(recorded["checkpoint"])
        if not path.is_file():
            raise InputError(f"the run's generator file {path} is missing; pass --checkpoint "
                             "PATH (the same file) or --generator NAME")
        loaded = load_generator(checkpoint=path, device=device, truncation_psi=psi)
    else:
        raise InputError("the run's config.json names no generator; pass --generator or "
                         "--checkpoint")
    if recorded.get("sha256") and loaded.info["sha256"] != recorded["sha256"]:
        raise InputError(f"the run used generator {loaded.info['checkpoint']} with sha256 "
                         f"{recorded['sha256'][:12]}..., but that file is now "
                         f"{loaded.info['sha256'][:12]}...; pass --checkpoint with the original")
    return loaded


def _targets(run: RunDirectory, names: list[str]) -> torch.Tensor | None:
    if not all(run.image_file(name, "target").is_file() for name in names):
        return None
    return torch.stack([run.read_image(name, "target") for name in names])


def _out_dir(run: RunDirectory, out: str | Path | None) -> Path:
    out = Path(out) if out is not None else run.path / "attribution"
    if out.exists() and not out.is_dir():
        raise InputError(f"out {out} exists and is not a directory", field="out")
    if out.is_dir() and any(out.iterdir()) and not AttributionDirectory(out).exists():
        raise InputError(f"out {out} is not empty and holds no attribution; choose another "
                         "directory", field="out")
    return out


def attribute_run(run_dir: str | Path, choice: SegmentationChoice, *,
                  settings: AttributionSettings | None = None, out: str | Path | None = None,
                  generator: str | None = None, checkpoint: str | Path | None = None,
                  device: str | None = None, vgg_weights: str | Path | None = None,
                  image_figures: int | None = None, images_per_pass: int = 8,
                  progress: bool = True, log: Callable[[str], None] = _stderr,
                  ) -> tuple[AttributionResult, Path]:
    """Attribute the finished images of a run and write ``out`` (default ``RUN/attribution``):
    arrays, tables and figures (``figures/heatmap.png``, ``figures/histogram.png`` and
    ``figures/images/NAME.png`` for the first ``image_figures`` images, all by default)."""
    settings = settings or AttributionSettings()
    run = RunDirectory(run_dir)
    if not run.path.is_dir():
        raise InputError(f"run directory {run.path} does not exist")
    config = run.config()
    inversion = run.load_result()
    out = _out_dir(run, out)
    if image_figures is not None and image_figures < 0:
        raise InputError(f"image_figures must be >= 0, got {image_figures}",
                         field="image_figures")
    loaded = run_generator(config, generator, checkpoint, device, log)
    check_compatible(loaded.generator, inversion)
    targets = _targets(run, inversion.names)
    segmenter = labels = vocabulary = None
    if choice.labels_dir is not None:
        vocabulary = vocabulary_from(choice.label_names or DEFAULT_LABEL_VOCABULARY)
        labels = read_label_maps(choice.labels_dir, inversion.names,
                                 loaded.generator.resolution, choice.resize_labels)
    else:
        segmenter = load_segmenter(choice.segmenter, choice.segmenter_dir,
                                   labels=choice.label_names, device=loaded.generator.device)
    perceptual = None
    if settings.difference == "perceptual":
        status = load_perceptual("vgg16", vgg_weights)
        if status.module is None:
            raise InputError(f"difference perceptual needs VGG16 weights: {status.note}",
                             field="difference")
        perceptual = status.module
    result = attribute(loaded.generator, inversion, segmenter=segmenter, labels=labels,
                       vocabulary=vocabulary, segment=choice.segment, targets=targets,
                       settings=settings, perceptual=perceptual,
                       images_per_pass=images_per_pass, progress=progress,
                       segmentation_source=choice.describe())
    errors = result.reproduction_error
    if errors is not None and float(errors.max()) > REPRODUCTION_TOLERANCE:
        worst = int(errors.argmax())
        raise InputError(f"this generator does not reproduce the run's reconstructions (image "
                         f"{result.names[worst]}: mean difference {float(errors[worst]):.1f} "
                         "8-bit levels): it is not the generator the run used")
    result.extra = {"run": str(run.path), "generator": loaded.info.get("name") or
                    loaded.info.get("checkpoint"), "generator_sha256": loaded.info["sha256"],
                    "task": config.get("task", {}).get("name")}
    write_attribution(result, out, image_figures=image_figures, progress=progress)
    return result, out


def write_attribution(result: AttributionResult, out: str | Path,
                      image_figures: int | None = None, progress: bool = True) -> Path:
    """Arrays, tables and figures into ``out``, built beside it and swapped in whole."""
    with AttributionDirectory.building(out) as directory:
        directory.save(result)
        save_figure(code_class_heatmap(result), directory.figure("heatmap"))
        save_figure(class_histogram(result), directory.figure("histogram"))
        count = result.batch if image_figures is None else min(image_figures, result.batch)
        for i in tqdm(range(count), desc="figures", unit="img", disable=not progress,
                      leave=False):
            save_figure(attribution_grid(result, i), directory.image_figure(result.names[i]))
    return Path(out)
