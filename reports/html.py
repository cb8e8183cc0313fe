"""The self-contained HTML report: one file, images as data URIs, CSS and JS inline, no network.

``build_report(paths)`` accepts run directories (``config.json``), study directories
(``study.json``) and attribution directories (``attribution.json``). Each section appears when its
data exists; a missing or damaged part is reported in the page instead of stopping the report, and
an unreadable image becomes a placeholder that says why.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib.figure import Figure
from PIL import Image

from analysis.attribution_files import AttributionDirectory
from analysis.edit_files import EditDirectory
from analysis.editing import EditSettings
from analysis.study_files import StudyDirectory
from inversion.rundir import RunDirectory
from inversion.tuning import CHANGE_SAMPLES
from mganprior.core.errors import InputError
from mganprior.core.files import atomic_write_bytes
from mganprior.core.jsonio import csv_text
from reports.figures import (
    attribution_grid,
    class_histogram,
    code_class_heatmap,
    tuning_summary,
)

THUMBNAIL_SIDE = 128  # images larger than this are downscaled in the gallery
JPEG_ABOVE_BYTES = 300_000  # figures larger than this as PNG are embedded as JPEG
PHOTO_QUALITY = 70  # JPEG quality of figures made of photographs: artefacts stay below notice


@dataclass
class Picture:
    alt: str
    uri: str | None = None
    error: str | None = None


@dataclass
class Block:
    title: str
    text: str = ""
    figures: list[Picture] = field(default_factory=list)
    table: dict[str, Any] | None = None
    csv: str | None = None
    csv_name: str = "table.csv"
    folded: str | None = None  # a summary line: the block starts folded under it


@dataclass
class Source:
    kind: str
    name: str
    path: str
    problems: list[str] = field(default_factory=list)
    config: list[tuple[str, str]] = field(default_factory=list)
    gallery: list[dict[str, Any]] = field(default_factory=list)
    gallery_columns: list[str] = field(default_factory=lambda: ["target", "input",
                                                                "reconstruction"])
    gallery_csv: str | None = None
    blocks: list[Block] = field(default_factory=list)
    edits: list[Block] = field(default_factory=list)  # shown after every source's analysis


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _jpeg_if_large(png: bytes) -> tuple[bytes, str]:
    """PNG bytes as they are, or re-encoded as JPEG (quality 85) above ``JPEG_ABOVE_BYTES``."""
    if len(png) <= JPEG_ABOVE_BYTES:
        return png, "image/png"
    return _jpeg(png, quality=85), "image/jpeg"


def image_uri(path: Path, alt: str, max_side: int | None = THUMBNAIL_SIDE,
              jpeg_if_large: bool = False, jpeg: bool = False) -> Picture:
    """A data URI of an image file (downscaled to ``max_side``; PNG, or JPEG when large and
    ``jpeg_if_large``, or always with ``jpeg``), or the reason it failed."""
    if not path.is_file():
        return Picture(alt, error=f"{path.name} is missing")
    try:
        with Image.open(path) as image:
            image.load()
            image = image.convert("RGB")
    except Image.DecompressionBombError:
        return Picture(alt, error=f"{path.name} is refused: too many pixels (decompression bomb)")
    except (OSError, SyntaxError, ValueError) as err:
        return Picture(alt, error=f"{path.name} is unreadable ({type(err).__name__})")
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.LANCZOS)
    buffer = io.BytesIO()
    if jpeg:
        image.save(buffer, format="JPEG", quality=PHOTO_QUALITY)
        return Picture(alt, uri=_data_uri(buffer.getvalue(), "image/jpeg"))
    image.save(buffer, format="PNG", optimize=True)
    data, mime = (_jpeg_if_large(buffer.getvalue()) if jpeg_if_large
                  else (buffer.getvalue(), "image/png"))
    return Picture(alt, uri=_data_uri(data, mime))


def figure_uri(figure: Figure, alt: str, dpi: int = 80, photographic: bool = False) -> Picture:
    """A figure drawn into the page: PNG (JPEG when large), or JPEG for figures made of
    photographs and heat maps, where it is 3-4x smaller and reads the same."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if photographic:
        return Picture(alt, uri=_data_uri(_jpeg(buffer.getvalue()), "image/jpeg"))
    return Picture(alt, uri=_data_uri(*_jpeg_if_large(buffer.getvalue())))


def _jpeg(png: bytes, quality: int = PHOTO_QUALITY) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        converted = io.BytesIO()
        image.convert("RGB").save(converted, format="JPEG", quality=quality)
    return converted.getvalue()


def file_figure(path: Path, alt: str) -> Picture:
    """A figure already on disk (a study's), embedded at full size (JPEG when large)."""
    return image_uri(path, alt, max_side=None, jpeg_if_large=True)


def photo_figure(path: Path, alt: str) -> Picture:
    """A figure made of photographs or heat maps (an edit strip, changed pixels): embedded as
    JPEG whatever its size."""
    return image_uri(path, alt, max_side=None, jpeg=True)


def csv_uri(rows: list[dict[str, Any]]) -> str | None:
    return _data_uri(csv_text(rows).encode(), "text/csv") if rows else None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    numeric = {c for c in columns if any(isinstance(r.get(c), int | float) and
                                         not isinstance(r.get(c), bool) for r in rows)}
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if column in numeric and isinstance(value, int | float):
                text = f"{value:.3f}" if isinstance(value, float) else str(value)
                cells.append({"text": text, "value": value, "num": True})
            else:
                cells.append({"text": "" if value is None else str(value), "value": "",
                              "num": column in numeric})
        body.append(cells)
    return {"columns": columns, "numeric": numeric, "rows": body}


def _config_rows(config: dict[str, Any]) -> list[tuple[str, str]]:
    generator = config.get("generator") or {}
    recipe = config.get("recipe") or {}
    task = config.get("task") or {}
    layer = config.get("layer") or {}
    perceptual = config.get("perceptual") or {}
    rows = [
        ("generator", generator.get("name") or generator.get("checkpoint") or "?"),
        ("checkpoint sha256", (generator.get("sha256") or "?")[:16]),
        ("family, resolution", f"{generator.get('family')}, {generator.get('resolution')} px"),
        ("task", ", ".join(f"{k}={v}" for k, v in task.items())),
        ("codes N", str(config.get("codes"))),
        ("composing layer", f"{layer.get('index')} {layer.get('name')} "
                            f"{'x'.join(map(str, layer.get('shape', [])))}"),
        ("recipe", ", ".join(f"{k}={recipe.get(k)}" for k in
                             ("name", "optimizer", "lr", "adam_beta2", "iterations",
                              "alpha_warmup", "fusion", "init")
                             if k in recipe)),
        ("perceptual", perceptual.get("backend", "?") +
         (" (its weights were missing: see the warnings)" if perceptual.get("note") else "")),
        ("seed", str(config.get("seed"))),
        ("device", str(config.get("device"))),
        ("created", str(config.get("created"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in (config.get("versions") or {}).items())),
    ]
    tune = config.get("tune")
    if isinstance(tune, dict):
        rows.insert(8, ("generator tuning", ", ".join(f"{k}={v}" for k, v in tune.items())))
    if config.get("command"):
        rows.append(("command", config["command"]))
    return rows


def _fmt(value: Any, digits: int) -> tuple[str, str]:
    if isinstance(value, int | float):
        return f"{value:.{digits}f}", repr(float(value))
    return "", "nan"


def _owned(read, problems: list[str]) -> Any:
    """``read()``, or None with its one-line error added to ``problems``."""
    try:
        return read()
    except InputError as err:
        problems.append(str(err))
        return None


def _gallery(source: Source, run: RunDirectory, records: list[dict[str, Any]],
             tuned: bool) -> None:
    """The gallery rows of ``records``: target, input, (untuned,) reconstruction, metrics."""
    if tuned:
        source.gallery_columns = ["target", "input", "untuned", "tuned reconstruction"]
    for record in records:
        name = str(record.get("image"))
        target = run.image_file(name, "target")
        untuned = run.image_file(name, "untuned")
        pictures = [
            image_uri(target, "target") if target.exists() else Picture("target"),
            image_uri(run.image_file(name, "degraded"), "input"),
            *([image_uri(untuned, "untuned") if untuned.exists() else Picture("untuned")]
              if tuned else []),
            image_uri(run.image_file(name, "output"), "reconstruction"),
        ]
        psnr, psnr_value = _fmt(record.get("psnr"), 2)
        ssim, ssim_value = _fmt(record.get("ssim"), 3)
        loss, loss_value = _fmt(record.get("loss"), 4)
        source.gallery.append({"image": name, "pictures": pictures,
                               "psnr": psnr, "psnr_value": psnr_value, "ssim": ssim,
                               "ssim_value": ssim_value, "loss": loss, "loss_value": loss_value,
                               "status": record.get("status", "?")})
        if record.get("status") == "failed":
            source.problems.append(f"{name} failed: {record.get('error')}")


def run_source(path: Path, max_gallery: int, attribution_images: int) -> Source:
    source = Source("run", path.name, str(path))
    run = RunDirectory(path)
    config = _owned(run.config, source.problems)
    if config:
        source.config = _config_rows(config)
        if (config.get("perceptual") or {}).get("note"):
            source.problems.append(config["perceptual"]["note"])
    records = run.records(source.problems)
    if len(records) < len(run.finished()):
        records = run.folder_records(source.problems)
        source.problems.append("results.jsonl is missing or behind the image folders; the "
                               "gallery reads the folders (`mganprior index RUN` rebuilds it)")
    if not records:
        source.problems.append("no image has finished")
    tuned = bool(config and config.get("tune"))
    _gallery(source, run, records[:max_gallery], tuned)
    if len(records) > max_gallery:
        source.problems.append(f"the gallery shows the first {max_gallery} of {len(records)} "
                               "images; the CSV has them all")
    source.gallery_csv = csv_uri([{k: r.get(k) for k in ("image", "status", "psnr", "ssim",
                                                          "perceptual", "loss", "seconds")}
                                  for r in records])
    summary = run.summary() if records else None
    if summary:
        rows = [{"statistic": k, "value": v} for k, v in summary.items()
                if isinstance(v, int | float)]
        source.blocks.append(Block("Summary", table=_table(rows, ["statistic", "value"])))
    if tuned and records:
        source.blocks.append(tuning_block(records, max_gallery))
    attribution = AttributionDirectory(path / "attribution")
    if attribution.exists():
        source.blocks.extend(attribution_blocks(attribution, source.problems,
                                                attribution_images))
    for folder in sorted((path / "edits").iterdir()) if (path / "edits").is_dir() else []:
        if EditDirectory(folder).exists():
            source.edits.extend(edit_blocks(EditDirectory(folder), source.problems,
                                            attribution_images))
    return source


TUNING_COLUMNS = ["image", "psnr_untuned", "psnr", "ssim_untuned", "ssim",
                  "random samples moved", "change KB", "seconds"]


def tuning_block(records: list[dict[str, Any]], shown: int) -> Block:
    """What generator tuning did to each image: PSNR and SSIM before and after, how far the
    image's tuned generator moved random samples, and the size of the stored change (the first
    ``shown`` images in the figure and table, every image in the CSV)."""
    rows = []
    for record in records:
        facts = record.get("tuning") if isinstance(record.get("tuning"), dict) else {}
        rows.append({"image": record.get("image"), "psnr_untuned": facts.get("psnr_untuned"),
                     "psnr": record.get("psnr"), "ssim_untuned": facts.get("ssim_untuned"),
                     "ssim": record.get("ssim"),
                     "random samples moved": facts.get("sample_change"),
                     "change KB": (facts["bytes"] / 1024 if isinstance(facts.get("bytes"), int)
                                   else None), "seconds": facts.get("seconds")})
    more = (f" The figure and table show the first {shown} of {len(records)} images; the CSV "
            "has them all." if len(records) > shown else "")
    return Block("Generator tuning",
                 text="Each image's generator was tuned around its multi-code solution. Random "
                      "samples moved: the mean |change| (8-bit levels) tuning made to "
                      f"{CHANGE_SAMPLES} fixed random samples, the cost of tuning elsewhere "
                      f"in the generator.{more}",
                 figures=[figure_uri(tuning_summary(records[:shown]), "PSNR before and after "
                                     "tuning, and random samples moved")],
                 table=_table(rows[:shown], TUNING_COLUMNS), csv=csv_uri(rows),
                 csv_name="tuning.csv")


def attribution_blocks(directory: AttributionDirectory, problems: list[str],
                       images: int) -> list[Block]:
    try:
        result = directory.load()
    except InputError as err:
        problems.append(f"attribution: {err}")
        return []
    settings = result.settings
    text = (f"{result.batch} images x {result.codes} codes at {result.layer.name}; ablation "
            f"alpha > {settings.threshold:g} ({settings.relative}), {settings.binarize}, "
            f"min IoU {settings.min_iou:g}; segmentation: {result.segmentation_source}")
    classes = result.class_rows()
    blocks = [
        Block("Attribution: codes per class", text=text,
              figures=[figure_uri(class_histogram(result), "class histogram"),
                       figure_uri(code_class_heatmap(result), "code x class IoU heatmap")],
              table=_table(classes, ["class", "codes", "images_with_codes", "images_present",
                                     "mean_iou"]),
              csv=csv_uri(result.records()), csv_name="attribution.csv"),
    ]
    shown = min(images, result.batch)
    blocks.append(Block(f"Attribution: difference maps ({shown} of {result.batch} images)",
                        figures=[figure_uri(attribution_grid(result, i),
                                            f"attribution of {result.names[i]}",
                                            photographic=True)
                                 for i in range(shown)]))
    return blocks


def animation_uri(path: Path, alt: str) -> Picture:
    """A GIF embedded as it is (it must keep its frames)."""
    if not path.is_file():
        return Picture(alt, error=f"{path.name} is missing")
    return Picture(alt, uri=_data_uri(path.read_bytes(), "image/gif"))


def sweep(settings: dict[str, Any]) -> str:
    """``7 steps in [-3, 3]`` from an edit's stored settings."""
    try:
        return EditSettings(**settings).describe()
    except (InputError, TypeError):
        return f"{settings.get('steps')} steps"


def edit_blocks(directory: EditDirectory, problems: list[str], images: int) -> list[Block]:
    """The Edits section: provenance, summary table, curves, strips, animations, changes."""
    try:
        meta = directory.meta()
    except InputError as err:
        problems.append(f"edits: {err}")
        return []
    direction = meta.get("direction") or {}
    facts = direction.get("meta") or {}
    settings = meta.get("settings") or {}
    provenance = ", ".join(filter(None, [
        f"direction {direction.get('name')} ({direction.get('source')}, space "
        f"{direction.get('space')})",
        f"eigenvalue {facts['eigenvalue']:.4g}" if isinstance(facts.get("eigenvalue"), float)
        else None,
        f"held-out accuracy {facts['accuracy']:.3f}" if isinstance(facts.get("accuracy"), float)
        else None,
        f"attribute {facts['attribute']}" if facts.get("attribute") else None,
        f"generator sha256 {str(facts.get('generator_sha256'))[:12]}"
        if facts.get("generator_sha256") else None,
        f"{sweep(settings)}, mode {settings.get('mode')}",
        f"target {meta['target']}" if meta.get("target") else None,
        f"segmentation: {meta['segmentation_source']}" if meta.get("segmentation_source")
        else None]))
    summary = meta.get("summary") or []
    columns = [c for c in ("image", "code_set", "changed_pixels", "target_change",
                           "target_monotone", "largest_other_change", "largest_other_class")
               if any(c in row for row in summary)]
    figures = [file_figure(directory.figure(name), name) for name in ("curves",
                                                                      "disentanglement")
               if directory.figure(name).is_file()]
    blocks = [Block(f"Edits: {direction.get('name')}", text=provenance, figures=figures,
                    table=_table(summary, columns) if summary else None,
                    csv=csv_uri(summary), csv_name="summary.csv")]
    sets, steps = len(meta.get("code_sets") or []), len(meta.get("ts") or [])
    for name in list(meta.get("names") or [])[:images]:
        labelled = directory.figure(f"strip-{name}")
        blocks.append(Block(f"Edits: {name}", folded=(
            f"{name}: the animation, the strip ({sets} code sets x {steps} steps) and the "
            "pixels each code set changes"), figures=[
            animation_uri(directory.animation(name), f"animation of {name}"),
            photo_figure(labelled if labelled.is_file() else directory.strip(name),
                         f"strip of {name}"),
            photo_figure(directory.figure(f"changed-{name}"), f"changed pixels of {name}")]))
    return blocks


def study_source(path: Path) -> Source:
    source = Source("study", path.name, str(path))
    owner = StudyDirectory(path)
    study = _owned(owner.study, source.problems)
    summary = _owned(owner.summary, source.problems)
    if study:
        cost = study.get("cost_image_iterations")
        source.config = [("kind", str(study.get("kind"))),
                         ("generators", ", ".join(study.get("generators", {}))),
                         ("tasks", ", ".join(study.get("tasks", []))),
                         ("layers", str(study.get("layers"))), ("codes", str(study.get("codes"))),
                         ("iterations", str(study.get("iterations"))),
                         ("alpha warm-up", str(study.get("alpha_warmup", "?"))),
                         ("Adam beta2", str(study.get("adam_beta2", "0.999"))),
                         ("images", str(len(study.get("images", [])))),
                         ("cost (image-iterations)",
                          f"{cost:,}" if isinstance(cost, int) else "?")]
    if summary:
        source.problems.extend(summary.get("warnings", []))
        source.config.append(("cells done", f"{summary.get('done')}/{summary.get('total')}"))
        rows = [{k: row.get(k) for k in ("generator", "task", "layer", "layer_index", "codes",
                                         "metric", "images", "mean", "std")}
                for row in summary.get("aggregates", [])]
        source.blocks.append(Block(
            "Metrics by cell", text="mean and sd over the images; click a heading to sort",
            table=_table(rows, ["generator", "task", "layer", "layer_index", "codes", "metric",
                                "images", "mean", "std"]),
            csv=csv_uri(owner.table()), csv_name="layers.csv"))
    groups = [("Metric by layer", "*_vs_layer.png", file_figure),
              ("Metric by number of codes", "*_vs_codes.png", file_figure),
              ("Reconstructions by layer", "grid-*.png", photo_figure),
              ("Cross-domain reconstructions", "cross-domain-*.png", photo_figure),
              ("Attribution by layer", "attribution-*.png", file_figure)]
    for title, pattern, embed in groups:
        found = owner.figure_files(pattern)
        if found:
            source.blocks.append(Block(title, figures=[embed(p, p.stem) for p in found]))
    return source


def classify(path: Path) -> str | None:
    """``study``, ``run``, ``attribution``, or None for a folder that holds none of them."""
    if StudyDirectory(path).exists():
        return "study"
    if RunDirectory(path).is_run():
        return "run"
    if AttributionDirectory(path).exists():
        return "attribution"
    if EditDirectory(path).exists():
        return "edit"
    return None


def build_report(paths: list[str | Path], *, title: str = "mganprior analysis report",
                 max_gallery: int = 50, attribution_images: int = 4,
                 base: str | Path | None = None) -> str:
    """The report's HTML for ``paths`` (runs, studies, attributions, edits): every source's
    inversion and analysis first, then the edits; a problem that several sources share is
    one warning at the top, its paths relative to ``base`` (the report's folder)."""
    if not paths:
        raise InputError("give at least one run, study or attribution directory")
    sources = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise InputError(f"{path} is not a directory")
        kind = classify(path)
        if kind == "study":
            sources.append(study_source(path))
        elif kind == "run":
            sources.append(run_source(path, max_gallery, attribution_images))
        elif kind == "edit":
            source = Source("edit", path.name, str(path))
            source.edits = edit_blocks(EditDirectory(path), source.problems, attribution_images)
            sources.append(source)
        elif kind is None:
            sources.append(Source("missing", path.name, str(path), problems=[
                f"{path} holds no config.json (run), study.json (study), attribution.json "
                "(attribution) or edits.json (edits): nothing to show; was the run started?"]))
        else:
            source = Source("attribution", path.name, str(path))
            source.blocks = attribution_blocks(AttributionDirectory(path), source.problems,
                                               attribution_images)
            sources.append(source)
    warnings = shared_warnings(sources, base)
    environment = Environment(loader=PackageLoader("reports", "templates"),
                              autoescape=select_autoescape(["html", "j2"]))
    try:
        version = metadata.version("mganprior")
    except metadata.PackageNotFoundError:
        version = "?"
    return environment.get_template("report.html.j2").render(
        title=title, sources=sources, warnings=warnings, version=version,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_report(paths: list[str | Path], out: str | Path, **options: Any) -> Path:
    out = Path(out)
    html = build_report(paths, base=out.parent, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, html.encode())
    return out


def relative_paths(text: str, base: str | Path | None) -> str:
    """``text`` with absolute paths under ``base`` made relative to it and the home folder
    written ``~``: a report sent to someone else does not show the author's folders."""
    import os

    if base is not None:
        root = Path(base).resolve()
        for token in sorted(set(text.split()), key=len, reverse=True):
            path = token.strip("(),;:'\"")
            if path.startswith("/") and Path(path).resolve().is_relative_to(root):
                text = text.replace(path, os.path.relpath(path, root))
    return text.replace(str(Path.home()), "~")


def shared_warnings(sources: list[Source], base: str | Path | None) -> list[str]:
    """Problems that more than one source has, once each (taken out of the sources), and
    every problem's paths made relative (:func:`relative_paths`)."""
    counts: dict[str, int] = {}
    for source in sources:
        for problem in dict.fromkeys(source.problems):
            counts[problem] = counts.get(problem, 0) + 1
    shared = [problem for problem, count in counts.items() if count > 1]
    for source in sources:
        source.problems = [relative_paths(p, base) for p in dict.fromkeys(source.problems)
                           if p not in shared]
    return [relative_paths(problem, base) for problem in shared]
