"""The run directory: everything a run produced, written so that many processes can fill it.

Layout::

    RUN/config.json          settings needed to reproduce the run (checked again on resume)
    RUN/images/NAME/         record.json (the image's result line), target.png (when known),
                             degraded.png, reconstruction.png, output.png (when the task's output
                             differs, e.g. colorization), latents.safetensors (codes [N, Z],
                             alphas [N, C], extra latents, loss trace); with generator tuning
                             also tuning.safetensors (the image's adapters or weight delta)
                             and untuned.png (the output before tuning)
    RUN/results.jsonl        index: one line per finished image, appended as images finish
    RUN/summary.json         index: aggregates over the records
    RUN/.locks/              run.lock and index.lock (short sections), claims/NAME.lock (held
                             by the process working on NAME)

**The image folder is the source of truth.** It is built under a hidden temporary name, with its
``record.json``, and renamed into place in one step: an image is finished exactly when its folder
holds ``record.json``. ``results.jsonl`` and ``summary.json`` are indexes: lines are appended
under a lock (never the whole file rewritten per batch), and :meth:`RunDirectory.rebuild_index`
recreates both from the folders at any time.

**Many writers.** A process claims an image (:mod:`core.claims`) before it works on it, checks
that it is still unfinished, and releases it once the folder is in place. Two processes given the
same images therefore split them; a killed process's claims vanish with it, so a rerun finishes
exactly the missing images. An interrupted run loses at most the images in flight.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from safetensors.torch import save_file

from inversion.engine import InversionResult
from inversion.generators.base import Layer, LayeredGenerator
from inversion.images import safe_name, save_png
from inversion.projector import LatentStats, estimate_latent_stats
from inversion.tuning import Adapters, adapted_shapes
from mganprior.core.claims import Claims, locked
from mganprior.core.errors import InputError
from mganprior.core.files import atomic_write_bytes
from mganprior.core.jsonio import json_line, read_json, read_jsonl, write_json
from mganprior.core.pixels import from_uint8
from mganprior.core.resume import check_resume, settings_differences

# Settings that may change between a run and its resumption without changing the results' meaning.
VOLATILE_KEYS = ("created", "versions", "device", "batch_size", "command", "progress", "shard",
                 "lpips", "threads", "compile")
IMAGE_FILES = {"target": "target.png", "degraded": "degraded.png",
               "reconstruction": "reconstruction.png", "output": "output.png",
               "latents": "latents.safetensors", "record": "record.json",
               "untuned": "untuned.png", "tuning": "tuning.safetensors"}
EXTRA_PREFIX = "extra."


@dataclass
class ImageRecord:
    """Extra per-image facts the run directory keeps beside the inversion result."""

    source: str
    notes: list[str]
    target: torch.Tensor | None  # clean image [3, H, W] when known
    metric_reference: str | None  # "clean", "reference", "observation" or None
    source_sha256: str | None = None


def _read_latent_stats(path: Path, w_dim: int) -> LatentStats | None:
    """The cached W statistics, or None when absent, unreadable or of another size."""
    try:
        tensors = load_tensors(path.read_bytes())
        w_avg, w_std, samples = tensors["w_avg"], tensors["w_std"], tensors["samples"]
    except (OSError, SafetensorError, KeyError):
        return None
    if w_avg.shape != (w_dim,) or w_std.dim() or samples.dim() or not torch.isfinite(w_avg).all():
        return None
    return LatentStats(w_avg.float(), float(w_std), int(samples))


def read_png(path: Path) -> torch.Tensor:
    """An image file as ``[3, H, W]`` in [-1, 1]; a missing file is an InputError naming it."""
    if not path.is_file():
        raise InputError(f"{path} is missing")
    try:
        with Image.open(path) as image:
            return from_uint8(np.asarray(image.convert("RGB")))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path} is unreadable ({type(err).__name__}: {err})") from None


class RunDirectory:
    """The owner of the run layout: everything that reads or writes a run goes through it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.results_path = self.path / "results.jsonl"
        self.summary_path = self.path / "summary.json"
        self.images_dir = self.path / "images"
        self.locks = self.path / ".locks"
        self.claims = Claims(self.locks / "claims")

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, config: dict[str, Any],
             may_change: Iterable[str] = VOLATILE_KEYS,
             log: Callable[[str], None] | None = None) -> RunDirectory:
        """Create the run, or resume it when its stored config matches ``config`` (settings in
        ``may_change`` may differ). A run with other settings but no finished image and no
        image in progress (a first attempt that failed) takes the new settings, with a note.
        Safe when several processes open one run at once."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise InputError(f"{run.path} exists and is not a directory", field="out")
        # hidden entries are ours (.locks, and the temporary of a config.json that another
        # process is writing this instant) or the system's
        if run.path.is_dir() and not run.config_path.is_file() and \
                any(not p.name.startswith(".") for p in run.path.iterdir()):
            raise InputError(f"{run.path} is not empty and holds no run (no config.json)",
                             field="out")
        try:
            run.locks.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"{run.path} cannot be created ({err.strerror})", field="out") \
                from None
        with locked(run.locks / "run.lock"):
            stored = run.config() if run.config_path.is_file() else None
            if stored is not None and settings_differences(stored, config, may_change) and \
                    not run.finished() and not run.claims.any_held_elsewhere():
                write_json(run.config_path, config)
                if log is not None:
                    log(f"note: {run.path} held a run with other settings but no finished "
                        "image; it now holds this one")
            elif stored is not None:
                check_resume(stored, config, what="run", where=run.path, may_change=may_change)
            else:  # config first: another process that looks in meanwhile sees a run
                write_json(run.config_path, config)
                run.images_dir.mkdir(parents=True, exist_ok=True)
        return run

    def config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise InputError(f"{self.path} is not a run directory (no config.json)")
        config = read_json(self.config_path, "run config")
        if not isinstance(config, dict):
            raise InputError(f"{self.config_path} is not a JSON object")
        return config

    def is_run(self) -> bool:
        return self.config_path.is_file()

    # -- what every image of the run shares -----------------------------------------------------
    def latent_stats(self, generator: LayeredGenerator) -> LatentStats:
        """The generator's W statistics (``inversion.projector``), estimated by the first
        process that needs them and kept in ``RUN/w_stats.safetensors`` for every later image,
        session and process. A file that does not fit the generator is estimated again."""
        path = self.path / "w_stats.safetensors"
        with locked(self.locks / "run.lock"):
            stats = _read_latent_stats(path, generator.w_dim)
            if stats is None:
                stats = estimate_latent_stats(generator)
                atomic_write_bytes(path, save_tensors(stats.tensors()))
        return stats

    # -- one image's files ---------------------------------------------------------------------
    def image_dir(self, name: str) -> Path:
        return self.images_dir / name

    def image_file(self, name: str, kind: str) -> Path:
        """The path of one of an image's files (``IMAGE_FILES``); ``output`` falls back to the
        reconstruction when the task's output is the reconstruction itself."""
        path = self.image_dir(name) / IMAGE_FILES[kind]
        if kind == "output" and not path.is_file():
            return self.image_dir(name) / IMAGE_FILES["reconstruction"]
        return path

    def read_image(self, name: str, kind: str) -> torch.Tensor:
        """One of an image's PNGs as ``[3, H, W]`` in [-1, 1]."""
        return read_png(self.image_file(name, kind))

    def is_finished(self, name: str) -> bool:
        return (self.image_dir(name) / IMAGE_FILES["record"]).is_file()

    def finished(self) -> set[str]:
        """Names of the finished images, from their folders (the source of truth)."""
        if not self.images_dir.is_dir():
            return set()
        return {p.parent.name for p in self.images_dir.glob(f"*/{IMAGE_FILES['record']}")
                if not p.parent.name.startswith(".")}  # .partial-NAME-PID: still being written

    def folder_records(self, problems: list[str] | None = None) -> list[dict[str, Any]]:
        """Every finished image's record, read from its folder, in finishing order. Only
        complete, valid folders count: each damaged one is skipped and named in ``problems``,
        or, when no list is given, is an InputError naming it."""
        records = []
        tuned = self._tuned()
        for name in sorted(self.finished()):
            path = self.image_dir(name) / IMAGE_FILES["record"]
            try:
                record = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                record = None
            problem = self._folder_problem(name, record, tuned)
            if problem is None:
                records.append(record)
            elif problems is not None:
                problems.append(f"images/{name}: {problem}; skipped")
            else:
                raise InputError(f"{self.path}/images/{name}: {problem}; `mganprior index "
                                 f"{self.path}` names every damaged image folder")
        return sorted(records, key=lambda r: (str(r.get("finished", "")), str(r.get("image"))))

    def _tuned(self) -> bool:
        """Whether the run tunes its generator (its images then hold their change)."""
        try:
            return self.is_run() and "tune" in self.config()
        except InputError:
            return False

    def _folder_problem(self, name: str, record: Any, tuned: bool = False) -> str | None:
        """Why an image folder does not count as finished, or None when it does."""
        if self.image_dir(name).is_symlink():
            return "is a link to another folder, not an image's own folder"
        if not isinstance(record, dict):
            return "record.json is damaged or not a JSON object"
        if record.get("image") != name:
            return f"record.json names image {record.get('image')!r}, not its folder"
        if record.get("status") not in ("ok", "failed") or \
                isinstance(record.get("seed"), bool) or not isinstance(record.get("seed"), int):
            return "record.json lacks a status (ok or failed) or an integer seed"
        if record["status"] == "failed":
            return None
        for kind in ("reconstruction", "latents", *(("tuning", "untuned") if tuned else ())):
            if not self.image_file(name, kind).is_file():
                return f"{IMAGE_FILES[kind]} is missing"
        try:
            with safe_open(str(self.image_file(name, "latents")), framework="pt") as handle:
                if not {"codes", "alphas"} <= set(handle.keys()):
                    return "latents.safetensors lacks codes or alphas"
        except (SafetensorError, OSError, ValueError) as err:
            return f"latents.safetensors is damaged ({' '.join(str(err).split())[:80]})"
        return self._tuning_problem(name) if tuned else None

    def _tuning_problem(self, name: str) -> str | None:
        """Why a tuned image's stored change does not count, or None when it does."""
        try:
            with safe_open(str(self.image_file(name, "tuning")), framework="pt") as handle:
                meta = handle.metadata() or {}
                if not list(handle.keys()) or not {"rank", "part"} <= set(meta):
                    return "tuning.safetensors holds no change or lacks its rank and part"
        except (SafetensorError, OSError, ValueError) as err:
            return f"tuning.safetensors is damaged ({' '.join(str(err).split())[:80]})"
        return None

    # -- the index -----------------------------------------------------------------------------
    def records(self, problems: list[str] | None = None) -> list[dict[str, Any]]:
        """The index ``results.jsonl``: one record per image (damaged lines are skipped and
        named in ``problems``; a repeated image keeps its last line)."""
        by_name: dict[str, dict[str, Any]] = {}
        for record in read_jsonl(self.results_path, problems):
            if "image" in record:
                by_name.pop(str(record["image"]), None)
                by_name[str(record["image"])] = record
        return list(by_name.values())

    def _append_index(self, records: list[dict[str, Any]]) -> None:
        with locked(self.locks / "index.lock"):
            present = {r.get("image") for r in read_jsonl(self.results_path)}
            fresh = [r for r in records if r["image"] not in present]
            if fresh:
                with open(self.results_path, "a", encoding="utf-8") as handle:
                    handle.write("".join(json_line(r) for r in fresh))
                    handle.flush()
                    os.fsync(handle.fileno())

    def index_is_current(self) -> bool:
        """Whether ``results.jsonl`` lists exactly the finished folders, each once, undamaged."""
        problems: list[str] = []
        lines = read_jsonl(self.results_path, problems)
        names = [r.get("image") for r in lines]
        return not problems and len(names) == len(set(names)) and set(names) == self.finished()

    def rebuild_index(self, extra: dict[str, Any] | None = None,
                      problems: list[str] | None = None) -> dict[str, Any]:
        """Recreate ``results.jsonl`` and ``summary.json`` from the image folders.

        Runs written before image folders held their record (where only ``results.jsonl`` did)
        are adopted: an index line whose folder has its latents becomes that folder's record.
        Damaged or incomplete folders are left out and named in ``problems``.
        """
        with locked(self.locks / "index.lock"):
            for record in read_jsonl(self.results_path):
                name = str(record.get("image"))
                if name == safe_name(name) and self.image_file(name, "latents").is_file() \
                        and not self.is_finished(name):
                    write_json(self.image_file(name, "record"), record)
            records = self.folder_records(problems if problems is not None else [])
            atomic_write_bytes(self.results_path, "".join(json_line(r) for r in records).encode())
            return self._write_summary(extra)

    def write_summary(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Aggregate the index into ``summary.json`` (under the index lock, so the last writer
        of many always writes the complete one)."""
        with locked(self.locks / "index.lock"):
            return self._write_summary(extra)

    def _write_summary(self, extra: dict[str, Any] | None) -> dict[str, Any]:
        records = self.records()
        ok = [r for r in records if r.get("status") == "ok"]
        summary: dict[str, Any] = {
            "images": len(records), "ok": len(ok), "failed": len(records) - len(ok),
            "seconds_total": sum(float(r.get("seconds") or 0) for r in records),
        }
        for key in ("psnr", "ssim", "lpips", "perceptual", "loss"):
            values = [r[key] for r in ok if isinstance(r.get(key), int | float)]
            if values:
                summary[f"{key}_mean"] = statistics.fmean(values)
                summary[f"{key}_std"] = statistics.pstdev(values)
            elif key == "lpips":  # always stated: null where its backbone weights are absent
                summary["lpips_mean"] = summary["lpips_std"] = None
        summary.update(extra or {})
        write_json(self.summary_path, summary)
        return summary

    def summary(self) -> dict[str, Any] | None:
        """The stored ``summary.json``, or None when there is none (or it is damaged)."""
        try:
            summary = read_json(self.summary_path, "run summary")
        except InputError:
            return None
        return summary if isinstance(summary, dict) else None

    # -- writing results -----------------------------------------------------------------------
    def write_batch(self, result: InversionResult, extras: list[ImageRecord]) -> list[dict]:
        """Write every image of ``result`` (claimed by this process), then index them."""
        records = []
        per_image_seconds = result.seconds / max(1, result.batch)
        for i, (name, extra) in enumerate(zip(result.names, extras, strict=True)):
            failed = i in result.failures
            metrics = result.metrics[i] or {}
            record = {
                "image": name, "status": "failed" if failed else "ok",
                "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"),
                "lpips": metrics.get("lpips"), "perceptual": metrics.get("perceptual"),
                "loss": float(result.losses[i]), "seconds": per_image_seconds,
                "metric_reference": extra.metric_reference if metrics else None,
                "seed": result.seeds[i], "layer": result.layer.name, "source": extra.source,
                "stopped_at": result.stopped[i] if result.stopped else None,
                "source_sha256": extra.source_sha256, "notes": extra.notes,
                **({"tuning": result.tuning[i]} if result.tuning is not None else {}),
                "finished": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                **({"error": result.failures[i]} if failed else {}),
            }
            self._write_image(result, i, extra, record)
            records.append(record)
        self._append_index(records)
        return records

    def _write_image(self, result: InversionResult, i: int, extra: ImageRecord,
                     record: dict[str, Any]) -> None:
        name = result.names[i]
        final = self.image_dir(name)
        for stale in self.images_dir.glob(f".partial-{name}-*"):  # left by a killed writer
            shutil.rmtree(stale, ignore_errors=True)
        partial = self.images_dir / f".partial-{name}-{os.getpid()}"
        partial.mkdir(parents=True)
        if extra.target is not None:
            save_png(extra.target, partial / IMAGE_FILES["target"])
        save_png(result.observations[i], partial / IMAGE_FILES["degraded"])
        save_png(result.reconstructions[i], partial / IMAGE_FILES["reconstruction"])
        if not torch.equal(result.outputs[i], result.reconstructions[i]):
            save_png(result.outputs[i], partial / IMAGE_FILES["output"])
        trace = result.trace[:, i] if result.trace.numel() else torch.empty(0)
        tensors = {
            "codes": result.codes[i].contiguous(), "alphas": result.alphas[i].contiguous(),
            "trace_iterations": torch.tensor(result.trace_iterations, dtype=torch.int64),
            "trace_loss": trace.float().contiguous(),
            **{EXTRA_PREFIX + k: v[i].contiguous() for k, v in result.extras.items()},
        }
        save_file(tensors, str(partial / IMAGE_FILES["latents"]), metadata={
            "layer": result.layer.name, "layer_index": str(result.layer.index),
            "layer_shape": "x".join(map(str, result.layer.shape)), "fusion": result.fusion,
            "seed": str(result.seeds[i]), "carry": json.dumps(result.carry),
        })
        os.chmod(partial / IMAGE_FILES["latents"], 0o644)
        if result.adapters is not None:
            change = result.adapters[i]
            save_file({k: v.contiguous() for k, v in change.tensors.items()},
                      str(partial / IMAGE_FILES["tuning"]),
                      metadata={"rank": str(change.rank), "part": change.part})
            os.chmod(partial / IMAGE_FILES["tuning"], 0o644)
            save_png(result.untuned[i], partial / IMAGE_FILES["untuned"])
        write_json(partial / IMAGE_FILES["record"], record)
        shutil.rmtree(final, ignore_errors=True)  # an unfinished folder (no record) only
        os.replace(partial, final)

    # -- loading -------------------------------------------------------------------------------
    def load_result(self, names: list[str] | None = None,
                    generator: LayeredGenerator | None = None) -> InversionResult:
        """Finished images (all, or ``names``) as one :class:`InversionResult`; failed images
        are left out. In a tuned run each image's change comes back as ``adapters`` (checked
        against ``generator`` when given: ``adapters[i].apply(generator)`` is the image's tuned
        generator) with the untuned reconstructions."""
        config = self.config()
        records = [r for r in self.folder_records() if r.get("status") == "ok"]
        if names is not None:
            wanted = set(names)
            records = [r for r in records if r["image"] in wanted]
        if not records:
            raise InputError(f"{self.path} has no finished images")
        latents, images = [], {"reconstruction": [], "output": [], "degraded": []}
        layer, carry = None, {}
        for record in records:
            name = record["image"]
            path = self.image_file(name, "latents")
            if not path.is_file():
                raise InputError(f"{self.path}: image {name} has no latents "
                                 f"({path.relative_to(self.path)} is missing)")
            try:
                with safe_open(str(path), framework="pt") as handle:
                    meta = handle.metadata() or {}
                    latents.append({key: handle.get_tensor(key)
                                    for key in handle.keys()})  # noqa: SIM118
            except (SafetensorError, OSError) as err:
                raise InputError(f"{path} is damaged ({err})") from None
            layer = Layer(int(meta["layer_index"]), meta["layer"],
                          tuple(int(s) for s in meta["layer_shape"].split("x")))
            carry = json.loads(meta.get("carry", "{}"))
            for kind in images:
                images[kind].append(self.read_image(name, kind))
        adapters = untuned = None
        if "tune" in config:
            tune = config["tune"] if isinstance(config["tune"], dict) else {}
            expected = None
            if generator is not None:
                viewed = generator.in_space(config["recipe"].get("latent_space", "z"))
                expected = adapted_shapes(viewed, viewed.layer(layer.name), tune.get("part"),
                                          int(tune.get("rank", -1)))
            adapters = [self._adapters(r["image"], tune, expected) for r in records]
            untuned = torch.stack([self.read_image(r["image"], "untuned") for r in records])
        trace_iterations = latents[0]["trace_iterations"].tolist()
        same_trace = all(len(x["trace_loss"]) == len(trace_iterations) for x in latents)
        extra_names = sorted(k for k in latents[0] if k.startswith(EXTRA_PREFIX))
        return InversionResult(
            names=[r["image"] for r in records],
            codes=torch.stack([x["codes"] for x in latents]),
            alphas=torch.stack([x["alphas"] for x in latents]),
            layer=layer, fusion=config["recipe"]["fusion"], task=config["task"],
            recipe=config["recipe"], seeds=[r["seed"] for r in records],
            reconstructions=torch.stack(images["reconstruction"]),
            outputs=torch.stack(images["output"]), observations=torch.stack(images["degraded"]),
            losses=torch.tensor([float(r["loss"]) for r in records]),
            trace_iterations=trace_iterations if same_trace else [],
            trace=(torch.stack([x["trace_loss"] for x in latents], dim=1) if same_trace
                   else torch.empty(0, len(records))),
            metrics=[{"psnr": r["psnr"], "ssim": r["ssim"]} if r.get("psnr") is not None
                     else None for r in records],
            seconds=sum(float(r.get("seconds") or 0) for r in records),
            carry=carry,
            extras={k.removeprefix(EXTRA_PREFIX): torch.stack([x[k] for x in latents])
                    for k in extra_names},
            adapters=adapters, untuned=untuned,
            tuning=[r.get("tuning") or {} for r in records] if adapters is not None else None)

    def _adapters(self, name: str, tune: dict[str, Any],
                  expected: dict[str, torch.Size] | None) -> Adapters:
        """One image's tuning change: its header read and (with ``expected``, the shapes of
        the weights the run's tuning changes) checked before any tensor is loaded."""
        path = self.image_file(name, "tuning")
        if not path.is_file():
            raise InputError(f"{self.path}: image {name} of this tuned run has no "
                             f"{IMAGE_FILES['tuning']}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                keys = list(handle.keys())
                shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in keys}
                dtypes = {key: handle.get_slice(key).get_dtype() for key in keys}
                rank, part = int(meta["rank"]), str(meta["part"])
                if (rank, part) != (tune.get("rank"), tune.get("part")) or not keys:
                    raise InputError(f"{path}: a rank-{rank} change of part {part}, but the run "
                                     f"tunes {tune.get('part')} at rank {tune.get('rank')}")
                if expected is not None:
                    Adapters.check_layout(shapes, dtypes, rank, expected, str(path))
                tensors = {key: handle.get_tensor(key) for key in keys}
        except InputError:
            raise
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise InputError(f"{path} is damaged ({' '.join(str(err).split())[:80]})") from None
        return Adapters.checked(tensors, rank, part, str(path))
