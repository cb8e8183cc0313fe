"""Inverting a set of images into a run directory: batching, claiming, resuming, indexes.

Work is taken image by image through the run directory's claims, so any number of processes
given the same images (or overlapping ones) fill one run without doing an image twice. Each
image's initial codes and degradation depend only on the run seed and its name
(:func:`image_seed`), so the result does not depend on who inverted it, or in which batch.
"""

from __future__ import annotations

import platform
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from inversion import engine
from inversion.engine import InvertOptions, evaluate_metrics, invert
from inversion.generators.base import LayeredGenerator
from inversion.images import LoadedImage
from inversion.losses import LPIPSStatus, PerceptualStatus
from inversion.memory import check_tuning_fits, plan_memory, saved_bytes
from inversion.options import DEFAULT_BATCH_SIZE, DEFAULT_SEED, TuneSettings
from inversion.projector import LatentStats
from inversion.recipes import Recipe
from inversion.rundir import ImageRecord, RunDirectory
from inversion.tasks import Task
from inversion.tuning import state_bytes
from mganprior.core.errors import InputError
from mganprior.core.jsonio import read_json
from mganprior.core.progress import interactive, progress_bar
from mganprior.core.sharding import Shard

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
    lpips: LPIPSStatus = field(default_factory=lambda: LPIPSStatus(None))  # off
    seed: int = DEFAULT_SEED
    batch_size: int = DEFAULT_BATCH_SIZE
    observed: bool = False
    bf16: bool = False
    progress: bool = True
    compile: bool = False
    tune: TuneSettings = field(default_factory=TuneSettings)  # tune: 0 steps, off

    def config(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        generator = self.generator.in_space(self.recipe.latent_space)
        self.recipe.check_generator(self.generator)
        self.recipe.check_start()
        layer = self.recipe.resolve_layer(generator)
        perceptual_used = self.perceptual.module is not None
        recipe = self.recipe.for_run(generator, perceptual_used)
        return {
            "generator": self.generator_info,
            "task": self.task.to_dict(),
            "recipe": recipe.to_dict(),
            "loss": self.recipe.loss_name(perceptual_used),
            "carry": self.recipe.carry_rules(generator, layer),
            "codes": self.recipe.codes,
            "layer": {"index": layer.index, "name": layer.name, "shape": list(layer.shape)},
            "iterations": self.recipe.iterations,
            "seed": self.seed,
            "observed": self.observed,
            "bf16": self.bf16,
            "compile": self.compile,
            "perceptual": {"backend": self.perceptual.backend, "weights": self.perceptual.weights,
                           "distance": self.perceptual.distance, "note": self.perceptual.note},
            "lpips": self.lpips.describe(),
            "mask_convention": "1 = known pixel",
            "batch_size": self.batch_size,
            "device": str(self.generator.device),
            "threads": torch.get_num_threads(),
            "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({"tune": self.tune.to_dict()} if self.tune.enabled else {}),
            **(extra or {}),
        }


def plan_batch(settings: RunSettings, log: Callable[[str], None]) -> int:
    """The batch size that fits the device's free memory (``inversion.memory``); one image that
    does not fit is an InputError."""
    generator, task = settings.generator, settings.task
    size = task.observation_size(generator.resolution)
    ctx = task.context(generator.resolution, [0], generator.device)
    observation = torch.zeros(1, 3, size, size, device=generator.device)

    stand_in = None  # the memory of a w_avg start does not depend on its value
    if settings.recipe.needs_latent_stats:
        stand_in = LatentStats(torch.zeros(generator.w_dim), 1.0)

    one_step = replace(settings.tune, tune=1) if settings.tune.enabled else None
    measured: dict[tuple[int, bool], int] = {}

    def saved(codes: int, tuned: bool) -> int:
        if (codes, tuned) not in measured:
            # no warm-up: its steps hold less than an iteration (the tail over a held cut)
            recipe = settings.recipe.with_overrides(iterations=1, codes=codes, alpha_warmup=0.0)
            with saved_bytes() as total:
                engine.invert(generator, observation, task, recipe, seeds=[0], ctx=ctx,
                              perceptual=settings.perceptual.module, latent_stats=stand_in,
                              options=InvertOptions(bf16=settings.bf16, progress=False),
                              tune=one_step if tuned else None)
            measured[(codes, tuned)] = total[0]
        return measured[(codes, tuned)]

    def measure(codes: int) -> int:
        """One image's bytes: an inversion step, or a tuning step with the adapters' state
        (never both at once)."""
        if one_step is None:
            return saved(codes, False)
        return max(saved(codes, False), tuning(codes))

    def tuning(codes: int) -> int:
        return max(0, saved(codes, True) - saved(codes, False)) + tuning_state

    modules = [generator] + [m for m in (settings.perceptual.module, settings.lpips.module) if m]
    parameters = sum(t.numel() * t.element_size() for m in modules for t in m.parameters())
    if one_step is not None:  # a tuning that cannot fit one image is refused on its own
        viewed = generator.in_space(settings.recipe.latent_space)
        tuning_state = state_bytes(viewed, settings.recipe.resolve_layer(viewed), settings.tune)
        # the tuned copy each image is rendered through, and a reference-path copy for a
        # family whose fast path cannot run per image
        parameters += sum(t.numel() * t.element_size() for t in generator.parameters()) * (
            1 + (not generator.fast_paths_vmap))
        check_tuning_fits(tuning(settings.recipe.codes), generator.device, parameters)
    plan = plan_memory(measure, settings.recipe.codes, settings.batch_size, generator.device,
                       parameters)
    if plan.note:
        log(f"note: {plan.note}")
    return plan.batch_size


def noise_note(settings: RunSettings) -> str | None:
    """One line when a recipe that optimises noise maps where it can finds none to optimise."""
    recipe = settings.recipe
    generator = settings.generator.in_space(recipe.latent_space)
    if recipe.optimize_noise is None and \
            not recipe.optimizes_noise(generator, recipe.resolve_layer(generator)):
        return (f"note: a {generator.family} generator has no optimisable noise maps; recipe "
                f"{recipe.name} runs without them (the record says optimize_noise: false)")
    return None


def check_sources(run: RunDirectory, images: list[LoadedImage]) -> None:
    """Refuse images whose name a finished image already has, from a different file."""
    for image in images:
        if image.sha256 is None or not run.is_finished(image.name):
            continue
        record = read_json(run.image_file(image.name, "record"), "image record")
        recorded = record.get("source_sha256") if isinstance(record, dict) else None
        if recorded is not None and recorded != image.sha256:
            raise InputError(f"{run.path}: image {image.name} was inverted from another file "
                             f"({record.get('source')}); {image.path} has different content. "
                             "Rename it, or use another output directory")


def run_inversion(settings: RunSettings, images: list[LoadedImage], out_dir: str | Path,
                  references: dict[str, LoadedImage] | None = None,
                  config_extra: dict[str, Any] | None = None,
                  log: Callable[[str], None] = _stderr,
                  shard: Shard | None = None) -> tuple[RunDirectory, dict[str, Any]]:
    """Invert ``images`` (``shard``'s share of them) into ``out_dir``, skipping images that are
    finished there or that another process is working on.

    In observed mode the images are the degraded observations and ``references`` (by name) give
    clean images for metrics; otherwise the images are clean and the task degrades them.
    """
    if shard is not None:
        images = shard.take(images)
    _check_inputs(settings, images, references)
    existing = RunDirectory(out_dir)
    unfinished = [image for image in images if not existing.is_finished(image.name)]
    # the memory plan comes before anything is written (and only when there is work to do)
    batch_size = plan_batch(settings, log) if unfinished else settings.batch_size
    run = RunDirectory.open(out_dir, settings.config(config_extra), log=log)
    check_sources(run, images)
    pending = [image for image in images if not run.is_finished(image.name)]
    _announce(run, settings, images, pending, log)
    started = time.perf_counter()
    outer = progress_bar(total=len(pending), desc="images", unit="img",
                         enabled=settings.progress)
    batches, elsewhere, inverted = 0, 0, 0
    queue = list(pending)
    while queue:
        chunk, held, done = _claim_chunk(run, queue, batch_size)
        elsewhere += held
        outer.update(held + done)
        if not chunk:
            break
        try:
            batches += 1
            _invert_chunk(settings, run, chunk, references, log,
                          description=f"batch {batches}")
            inverted += len(chunk)
        finally:
            for image in chunk:
                run.claims.release(image.name, finished=run.is_finished(image.name))
        outer.update(len(chunk))
    outer.close()
    if elsewhere:
        log(f"{elsewhere} image(s) were in progress in another process; its records will "
            "complete the run")
    if not run.index_is_current():
        run.rebuild_index()
    summary = run.write_summary({"last_session_seconds": time.perf_counter() - started,
                                 "last_session_images": inverted})
    return run, summary


def _check_inputs(settings: RunSettings, images: list[LoadedImage],
                  references: dict[str, LoadedImage] | None) -> None:
    if settings.batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {settings.batch_size}",
                         field="batch_size")
    settings.task.check(settings.generator.resolution)
    if references is not None:
        missing = [img.name for img in images if img.name not in references]
        if missing:
            raise InputError(f"no reference image for {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''} (references match by name)")


def _announce(run: RunDirectory, settings: RunSettings, images: list[LoadedImage],
              pending: list[LoadedImage], log: Callable[[str], None]) -> None:
    """One line per note: missing weights, noise maps, a resumption, converted images."""
    for note in (settings.perceptual.note, settings.lpips.note, noise_note(settings)):
        if note:
            log(note)
    if len(pending) < len(images):
        log(f"resuming {run.path}: {len(images) - len(pending)} of {len(images)} images done")
    for image in pending:
        for note in image.notes:
            log(f"note: {image.path}: {note}")


def _claim_chunk(run: RunDirectory, queue: list[LoadedImage], size: int
                 ) -> tuple[list[LoadedImage], int, int]:
    """Up to ``size`` images of ``queue`` this process claimed and that are still unfinished;
    how many it passed over because another process holds them, and because another process
    finished them meanwhile."""
    chunk, held, done = [], 0, 0
    while queue and len(chunk) < size:
        image = queue.pop(0)
        if not run.claims.try_claim(image.name):
            held += 1
            continue
        if run.is_finished(image.name):
            run.claims.release(image.name, finished=True)
            done += 1
            continue
        chunk.append(image)
    return chunk, held, done


def finished_line(record: dict[str, Any]) -> str:
    """One finished image in words, for logs that are files or pipes."""
    facts = [f"{name} {record[name]:{form}}" for name, form in
             (("psnr", ".2f"), ("ssim", ".3f"), ("lpips", ".3f"))
             if isinstance(record.get(name), int | float)]
    return f"inverted {record['image']}: {', '.join(facts) or 'no reference'}, " \
           f"{record.get('seconds', 0):.1f} s"


def _invert_chunk(settings: RunSettings, run: RunDirectory, chunk: list[LoadedImage],
                  references: dict[str, LoadedImage] | None, log: Callable[[str], None],
                  description: str) -> None:
    """Invert one batch of claimed images and write their folders and index lines."""
    generator, task = settings.generator, settings.task
    device = generator.device
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
    recipe = settings.recipe
    stats = run.latent_stats(generator) if recipe.needs_latent_stats else None
    result = invert(generator, observations, task, recipe, seeds=seeds, names=names,
                    ctx=ctx, references=refs, perceptual=settings.perceptual.module,
                    latent_stats=stats, lpips=settings.lpips.module,
                    options=InvertOptions(bf16=settings.bf16, progress=settings.progress,
                                          description=description, compile=settings.compile),
                    tune=settings.tune)
    if refs is None:  # metrics where the observation lives
        viewed = task.view(result.outputs.to(device), ctx)
        metrics = evaluate_metrics(viewed, result.observations.to(device), None,
                                   settings.lpips.module)
        result.metrics = [None if i in result.failures else m for i, m in enumerate(metrics)]
    reference_kind = ("clean" if not settings.observed else
                      "reference" if references is not None else "observation")
    extras = [ImageRecord(str(image.path), image.notes,
                          clean[i].cpu() if clean is not None else
                          (references[image.name].tensor() if references else None),
                          reference_kind, image.sha256) for i, image in enumerate(chunk)]
    for record in run.write_batch(result, extras):
        if record["status"] == "failed":
            log(f"failed: {record['image']}: {record['error']}")
        elif settings.progress and not interactive():  # a log file: one line per image
            log(finished_line(record))
