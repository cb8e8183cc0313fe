"""``mganprior directions`` and ``mganprior edit``: find semantic directions of a generator, and
edit a run's inverted images along one, writing an edit directory with frames, strips,
animations, tables and figures (docs/editing.md).

Everything is loaded and checked before anything is written; directories are built beside
their final name and swapped in whole.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from analysis.directions import (
    Direction,
    interfacegan_direction,
    load_boundary,
    parse_attribute,
    sefa_directions,
)
from analysis.edit_files import EditDirectory
from analysis.editing import EditResult, EditSettings, check_zero_frame, edit
from inversion.rundir import RunDirectory
from mganprior.attribution import REPRODUCTION_TOLERANCE, run_generator
from mganprior.core.errors import InputError
from mganprior.zoo import LoadedGenerator, load_segmenter
from reports.figures import (
    FigureOutput,
    edit_changed,
    edit_curves,
    edit_disentanglement,
    edit_strip,
    save_figure,
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


DIRECTION_METHODS = ("sefa", "interfacegan", "file")


def find_directions(method: str, loaded: LoadedGenerator, out: str | Path, *, count: int = 5,
                    layers: str = "all", attribute: str | None = None, segmenter=None,
                    samples: int = 5000, fraction: float = 0.02, space: str | None = None,
                    conditions: list[str] | None = None, name: str | None = None,
                    boundary: str | Path | None = None, seed: int = 0,
                    log: Callable[[str], None] = _stderr) -> list[Path]:
    """Directions by ``sefa``, ``interfacegan`` or from a boundary ``file``, saved into ``out``
    (one ``.npy`` + ``.json`` each)."""
    generator, sha = loaded.generator, loaded.info["sha256"]
    if method == "sefa":
        directions = sefa_directions(generator, count, layers, sha)
    elif method == "interfacegan":
        if attribute is None:
            raise InputError("attribute is needed to train a boundary (brightness or "
                             "class:NAME)", field="attribute")
        score = parse_attribute(attribute, segmenter)
        kept = [load_boundary(path, generator) for path in conditions or []]
        label = name or attribute.replace(":", "_")
        directions = [interfacegan_direction(generator, score, label, samples=samples,
                                             fraction=fraction, space=space or "z", seed=seed,
                                             conditions=kept, generator_sha256=sha)]
        directions[0].meta["attribute"] = attribute
    elif method == "file":
        if boundary is None:
            raise InputError("boundary file is needed", field="boundary")
        notes: list[str] = []
        direction = load_boundary(boundary, generator, space, notes)
        for note in notes:
            log(f"note: {note}")
        direction.meta["generator_sha256"] = sha
        directions = [direction]
    else:
        raise InputError(f"method {method!r} is unknown; methods: "
                         f"{', '.join(DIRECTION_METHODS)}", field="method")
    return [direction.save(out) for direction in directions]


def edit_run(run_dir: str | Path, direction_path: str | Path, settings: EditSettings, *,
             segmenter: str | None = None, segmenter_dir: str | Path | None = None,
             label_names: str | None = None, segmenter_scales: str | None = None,
             target: str | None = None, out: str | Path | None = None,
             generator: str | None = None,
             checkpoint: str | Path | None = None, device: str | None = None,
             figures: FigureOutput | None = None, progress: bool = True,
             log: Callable[[str], None] = _stderr,
             ) -> tuple[EditResult, Path]:
    """Edit the finished images of a run along a direction and write the edit directory
    (default ``RUN/edits/DIRECTION``) with its figures (PDF and SVG beside the PNGs as
    ``figures`` asks)."""
    run = RunDirectory(run_dir)
    if not run.is_run():
        raise InputError(f"run directory {run.path} does not exist or holds no run",
                         field="run_dir")
    config = run.config()
    loaded = run_generator(config, generator, checkpoint, device, log)
    inversion = run.load_result(generator=loaded.generator)
    notes: list[str] = []
    direction: Direction = load_boundary(direction_path, loaded.generator, notes=notes)
    for note in notes:
        log(f"note: {note}")
    seg = None
    if segmenter is not None or segmenter_dir is not None:
        seg = load_segmenter(segmenter, segmenter_dir, labels=label_names,
                             device=loaded.generator.device, scales=segmenter_scales)
    if target is not None:
        if seg is None:
            raise InputError("target needs a segmenter (segmenter or segmenter_dir)",
                             field="target")
        seg.vocabulary.index(target)
    out = EditDirectory.check_target(out if out is not None else
                                     run.path / "edits" / direction.name)
    result = edit(loaded.generator, inversion, direction, settings, segmenter=seg,
                  progress=progress)
    error = check_zero_frame(result, inversion.reconstructions)
    if error > REPRODUCTION_TOLERANCE:
        raise InputError(f"this generator does not reproduce the run's reconstructions at t=0 "
                         f"(mean difference {error:.1f} 8-bit levels): it is not the generator "
                         "the run used")
    result.extra["code_classes"] = code_classes(run, result.names)
    extra = {"run": str(run.path), "generator": loaded.info.get("name") or
             loaded.info.get("checkpoint"), "zero_frame_error_levels": error}
    with EditDirectory.building(out) as directory:
        directory.save(result, target, extra)
        edit_figures(directory, result, target, figures)
    return result, out


def edit_figures(directory: EditDirectory, result: EditResult, target: str | None,
                 figures: FigureOutput | None = None) -> None:
    """The edit's figures: every image's labelled strip and changed pixels, and with a
    segmentation the disentanglement map and the target's curves."""
    if result.fractions is not None:
        save_figure(edit_disentanglement(result), directory.figure("disentanglement"), figures)
        if target is not None:
            save_figure(edit_curves(result, target), directory.figure("curves"), figures)
    for i, name in enumerate(result.names):
        save_figure(edit_strip(result, i, target), directory.figure(f"strip-{name}"), figures)
        save_figure(edit_changed(result, i), directory.figure(f"changed-{name}"), figures)


def code_classes(run: RunDirectory, names: list[str]) -> dict[str, list[str]]:
    """The class attribution gave each code of each image, where the run has an attribution
    (``RUN/attribution``) that covers it; edit figures label their rows with it."""
    from analysis.attribution_files import AttributionDirectory

    directory = AttributionDirectory(run.path / "attribution")
    if not directory.exists():
        return {}
    try:
        result = directory.load()
    except InputError:
        return {}
    return {name: [result.class_name(int(k)) for k in result.assigned[b].tolist()]
            for b, name in enumerate(result.names) if name in set(names)}
