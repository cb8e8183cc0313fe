"""``mganprior attribute``: attribute a run directory's codes to classes and write the results.

Everything is loaded and checked before anything is written; the attribution directory is built
under a temporary name and swapped in whole (:class:`AttributionDirectory`), so a failed or
interrupted attribution leaves the previous one (or nothing) in place.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.attribution import (
    AttributionAggregate,
    AttributionResult,
    AttributionSettings,
    attribute,
    check_compatible,
)
from analysis.attribution_files import (
    PARTS,
    RECORD_COLUMNS,
    TABLE,
    AttributionDirectory,
    header_of,
)
from inversion.generators.base import LayeredGenerator
from inversion.losses import VGGPerceptual, load_perceptual
from inversion.rundir import RunDirectory
from mganprior.core.errors import InputError
from mganprior.core.jsonio import append_csv
from mganprior.core.progress import progress_bar
from mganprior.core.sharding import Shard, barrier
from mganprior.zoo import load_generator, load_segmenter
from reports.figures import (
    FigureOutput,
    attribution_grid,
    class_histogram,
    code_class_heatmap,
    save_figure,
)
from segmentation.labelmaps import read_label_maps
from segmentation.segmenters import Segmenter, vocabulary_from
from segmentation.vocabularies import SCENE_WORLD, Vocabulary

# Mean |re-rendered x_inv - saved reconstruction.png| above this many 8-bit levels means the codes
# were not made with this generator (8-bit rounding alone gives about 0.25).
REPRODUCTION_TOLERANCE = 3.0
DEFAULT_LABEL_VOCABULARY = SCENE_WORLD.name


@dataclass
class SegmentationChoice:
    """Where the segmentation comes from: one of a zoo segmenter, an smp directory, label maps."""

    segmenter: str | None = None
    segmenter_dir: str | Path | None = None
    scales: str | None = None  # multi-scale inference of a CSAIL segmenter folder
    labels_dir: str | Path | None = None
    label_names: str | None = None  # vocabulary name or JSON list (labels, or an smp dir)
    segment: str = "reconstruction"
    resize_labels: bool = False

    def describe(self) -> str:
        if self.labels_dir is not None:
            return f"label maps in {self.labels_dir}"
        model = self.segmenter or self.segmenter_dir
        scales = f" at scales {self.scales}" if self.scales not in (None, "", "1") else ""
        return f"segmenter {model}{scales} on the {self.segment}s"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def run_generator(config: dict, name: str | None, checkpoint: str | Path | None,
                  device: str | None, log: Callable[[str], None]):
    """The run's generator (by name or checkpoint path, sha256-checked) or the user's override."""
    recorded = config.get("generator") or {}
    used = recorded.get("config") or {}  # truncation and class as the run used them
    view = {"truncation_psi": used.get("truncation_psi"), "label": used.get("label"),
            "input_transform": used.get("input_transform")}
    if name is not None or checkpoint is not None:
        loaded = load_generator(name, checkpoint, device=device, **view)
        if recorded.get("sha256") and loaded.info["sha256"] != recorded["sha256"]:
            log(f"note: this generator's sha256 differs from the one the run recorded "
                f"({recorded['sha256'][:12]}...); its reconstructions will be checked")
        return loaded
    if recorded.get("name"):
        loaded = load_generator(recorded["name"], device=device, **view)
    elif recorded.get("checkpoint"):
        path = Path(recorded["checkpoint"])
        if not path.is_file():
            raise InputError(f"the run's generator file {path} is missing; give checkpoint "
                             "PATH (the same file) or generator NAME")
        loaded = load_generator(checkpoint=path, device=device, **view)
    else:
        raise InputError("the run's config.json names no generator; give generator NAME or "
                         "checkpoint PATH")
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
    return AttributionDirectory.check_target(out if out is not None else
                                             run.path / "attribution")


PART_IMAGES = 64  # images per part: what one process holds in memory at a time
SHARDS = ".attribution-shards"


def attribute_run(run_dir: str | Path, choice: SegmentationChoice, *,
                  settings: AttributionSettings | None = None, out: str | Path | None = None,
                  generator: str | None = None, checkpoint: str | Path | None = None,
                  device: str | None = None, vgg_weights: str | Path | None = None,
                  image_figures: int | None = None, images_per_pass: int = 8,
                  part_images: int = PART_IMAGES, shard: Shard | None = None,
                  figures: FigureOutput | None = None, progress: bool = True,
                  log: Callable[[str], None] = _stderr, compile: bool = False,
                  ) -> tuple[AttributionAggregate, Path]:
    """Attribute the finished images of a run and write ``out`` (default ``RUN/attribution``):
    parts, tables and figures (``figures/heatmap.png``, ``figures/histogram.png`` and
    ``figures/images/NAME.png`` for the first ``image_figures`` images, all by default; PDF and
    SVG beside them as ``figures`` asks).

    Images go ``part_images`` at a time, each part written as it is done, so memory does not
    grow with the run. With several shards, each attributes its share into
    ``RUN/.attribution-shards/I-of-K`` and the last to finish (rank 0 under torchrun, after the
    barrier) merges them into ``out``. Returns the aggregate (what the tables are made of)."""
    settings = settings or AttributionSettings()
    shard = shard or Shard(0, 1)
    run = RunDirectory(run_dir)
    names = _finished_names(run)
    config = run.config()
    out = _out_dir(run, out)
    _check_counts(image_figures=image_figures, part_images=part_images)
    loaded = run_generator(config, generator, checkpoint, device, log)
    check_compatible(loaded.generator, run.load_result(names[:1], loaded.generator))
    segmenter, vocabulary = _segmentation(choice, names, loaded.generator)
    perceptual = _perceptual(settings, vgg_weights)
    extra = {"run": str(run.path), "generator": loaded.info.get("name") or
             loaded.info.get("checkpoint"), "generator_sha256": loaded.info["sha256"],
             "task": config.get("task", {}).get("name")}
    figured = set(names if image_figures is None else names[:image_figures])
    mine = shard.take(names)
    target = out if shard.count == 1 else run.path / SHARDS / f"{shard.index}-of-{shard.count}"
    aggregate = None
    with AttributionDirectory.building(target) as directory:
        header = None
        starts = range(0, len(mine), part_images)
        for part, start in enumerate(progress_bar(starts, desc="attributing", unit="part",
                                                  enabled=progress and len(starts) >= 2)):
            chunk = mine[start:start + part_images]
            inversion = run.load_result(chunk, loaded.generator)
            labels = (read_label_maps(choice.labels_dir, chunk, loaded.generator.resolution,
                                      choice.resize_labels) if choice.labels_dir else None)
            result = attribute(loaded.generator, inversion, segmenter=segmenter, labels=labels,
                               vocabulary=vocabulary, segment=choice.segment,
                               targets=_targets(run, chunk), settings=settings,
                               perceptual=perceptual, images_per_pass=images_per_pass,
                               progress=progress and len(starts) < 2,
                               segmentation_source=choice.describe(), compile=compile)
            _check_reproduction(result)
            result.extra = extra
            directory.save_part(result, part)
            if aggregate is None:
                aggregate, header = result.aggregate(), header_of(result)
            else:
                aggregate.add(result)
            for i, name in enumerate(result.names):
                if name in figured:
                    save_figure(attribution_grid(result, i), directory.image_figure(name),
                                figures)
        directory.finish(aggregate, header, mine)
        if shard.count == 1:
            summary_figures(directory, aggregate, figures)
    if shard.count == 1:
        return aggregate, out
    barrier(shard)
    if shard.distributed and not shard.leader:
        return aggregate, out
    merged = merge_shards(run.path / SHARDS, shard.count, out, names, figures)
    return (merged, out) if merged is not None else (aggregate, out)


def _finished_names(run: RunDirectory) -> list[str]:
    if not run.path.is_dir():
        raise InputError(f"run directory {run.path} does not exist")
    names = [r["image"] for r in run.folder_records() if r.get("status") == "ok"]
    if not names:
        raise InputError(f"{run.path} has no finished images")
    return names


def _check_counts(image_figures: int | None, part_images: int) -> None:
    if image_figures is not None and image_figures < 0:
        raise InputError(f"image_figures must be >= 0, got {image_figures}",
                         field="image_figures")
    if part_images < 1:
        raise InputError(f"part_images must be at least 1, got {part_images}",
                         field="part_images")


def _segmentation(choice: SegmentationChoice, names: list[str], generator: LayeredGenerator
                  ) -> tuple[Segmenter | None, Vocabulary | None]:
    """The segmenter, or (for label maps, every one checked before any work) the vocabulary."""
    if choice.labels_dir is None:
        return load_segmenter(choice.segmenter, choice.segmenter_dir, labels=choice.label_names,
                              device=generator.device, scales=choice.scales), None
    vocabulary = vocabulary_from(choice.label_names or DEFAULT_LABEL_VOCABULARY)
    read_label_maps(choice.labels_dir, names, generator.resolution, choice.resize_labels)
    return None, vocabulary


def _perceptual(settings: AttributionSettings, vgg_weights: str | Path | None
                ) -> VGGPerceptual | None:
    if settings.difference != "perceptual":
        return None
    status = load_perceptual("vgg16", vgg_weights)
    if status.module is None:
        raise InputError(f"difference perceptual needs VGG16 weights: {status.note}",
                         field="difference")
    return status.module


def _check_reproduction(result: AttributionResult) -> None:
    errors = result.reproduction_error
    if errors is not None and float(errors.max()) > REPRODUCTION_TOLERANCE:
        worst = int(errors.argmax())
        raise InputError(f"this generator does not reproduce the run's reconstructions (image "
                         f"{result.names[worst]}: mean difference {float(errors[worst]):.1f} "
                         "8-bit levels): it is not the generator the run used")


def summary_figures(directory: AttributionDirectory, aggregate: AttributionAggregate,
                    figures: FigureOutput | None = None) -> None:
    save_figure(code_class_heatmap(aggregate), directory.figure("heatmap"), figures)
    save_figure(class_histogram(aggregate), directory.figure("histogram"), figures)


def merge_shards(folder: Path, count: int, out: Path, names: list[str],
                 figures: FigureOutput | None = None) -> AttributionAggregate | None:
    """When all ``count`` shard attributions exist in ``folder``, merge them into ``out`` (parts
    renumbered, tables joined, aggregates added, figures redrawn) and remove them; None when
    some shard has not finished."""
    shards = [AttributionDirectory(folder / f"{i}-of-{count}") for i in range(count)]
    if not all(shard.exists() for shard in shards):
        return None
    metas = [shard.meta() for shard in shards]
    keys = ("settings", "segmentation_source", "layer", "fusion", "vocabulary")
    if any(meta.get(key) != metas[0].get(key) for meta in metas for key in keys):
        raise InputError(f"the shard attributions in {folder} were made with other settings; "
                         "remove that folder and attribute again")
    aggregate = shards[0].aggregate()
    for shard in shards[1:]:
        aggregate.merge(shard.aggregate())
    with AttributionDirectory.building(out) as directory:
        index = 0
        for shard in shards:
            for part in shard.parts():
                (directory.path / PARTS).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(part, directory.path / PARTS / f"{index:05d}.safetensors")
                index += 1
            rows = shard.table()
            if rows:
                append_csv(directory.path / TABLE, rows, RECORD_COLUMNS)
            drawn = shard.path / "figures" / "images"
            if drawn.is_dir():
                shutil.copytree(drawn, directory.path / "figures" / "images",
                                dirs_exist_ok=True)
        header = {key: metas[0][key] for key in ("settings", "segmentation_source", "layer",
                                                 "fusion", "extra")}
        directory.finish(aggregate, header, names)
        summary_figures(directory, aggregate, figures)
    shutil.rmtree(folder, ignore_errors=True)
    return aggregate
