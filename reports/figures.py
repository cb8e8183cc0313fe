"""Figure builders: each takes results and returns a matplotlib Figure (never shown, never global).

Figures are made with ``matplotlib.figure.Figure`` directly, not pyplot, so building many of them
in a long job leaks nothing and needs no display. Every builder draws in one paper style
(:data:`PAPER_RC`: seaborn's paper context, text at least :data:`MIN_FONT_PT` pt, SVG and PDF text
kept as text). :func:`save_figure` writes a figure atomically as PNG (what the report embeds)
and, on request, as PDF and SVG at a journal's column width (``reports.output.FigureOutput``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis.attribution import UNASSIGNED, AttributionAggregate, AttributionResult
from mganprior.core.files import atomic_path
from mganprior.core.pixels import to_uint8
from reports.output import FigureOutput

UNASSIGNED_COLOR = "#9e9e9e"  # text of unassigned codes
UNASSIGNED_BAR = {"color": "white", "hatch": "////"}  # bars: no class colour can look like it
MIN_FONT_PT = 7  # the smallest type of any figure, at the size it is drawn
PAPER_RC: dict[str, Any] = {
    **sns.plotting_context("paper"),
    "font.size": 7, "axes.titlesize": 8, "axes.labelsize": 7, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "legend.title_fontsize": 7,
    "figure.titlesize": 8,
    "svg.fonttype": "none",  # text stays text in SVG ...
    "pdf.fonttype": 42, "ps.fonttype": 42,  # ... and TrueType (editable) in PDF
}
F = TypeVar("F", bound=Callable[..., Figure])
MIN_COLOR_DISTANCE = 0.15  # RGB in [0, 1]: two class colours closer than this look the same


def distinct_colors(colors: dict[str, Any]) -> dict[str, np.ndarray]:
    """The classes of one figure with colours (RGB in [0, 1], or 0-255, or ``#rrggbb``) no two
    of which are near-identical, nor white (hatched bars mean "unassigned"): a colour too close
    to one already given is replaced by the next free colour of seaborn's colour-blind palette,
    then its dark and pastel variants."""
    from matplotlib.colors import to_rgb

    spare = iter([*sns.color_palette("colorblind"), *sns.color_palette("dark"),
                  *sns.color_palette("pastel")])
    taken: list[np.ndarray] = [np.ones(3)]
    chosen = {}
    for name, color in colors.items():
        rgb = (np.asarray(to_rgb(color)) if isinstance(color, str) and color else
               np.asarray(color, float) / (255.0 if np.max(color) > 1 else 1.0)
               if color is not None and len(np.atleast_1d(color)) == 3 else None)
        while rgb is None or min(np.linalg.norm(rgb - t) for t in taken) < MIN_COLOR_DISTANCE:
            rgb = np.asarray(next(spare, np.random.default_rng(len(taken)).random(3)))
        taken.append(rgb)
        chosen[name] = rgb
    return chosen


def paper_figure(builder: F) -> F:
    """Build the figure in the paper style (the rc settings apply as artists are made)."""
    @functools.wraps(builder)
    def build(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(PAPER_RC):
            return builder(*args, **kwargs)
    return build  # type: ignore[return-value]


def save_figure(figure: Figure, path: str | Path, output: FigureOutput | None = None,
                dpi: int = 100) -> list[Path]:
    """Write ``figure`` as ``path`` with each suffix of ``output.formats`` (atomically); vector
    files at the print width, whose type then prints at least :data:`MIN_FONT_PT` pt."""
    output = output or FigureOutput()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context(PAPER_RC):
        for fmt in output.formats:  # PNG first, at the figure's own size
            target = path.with_suffix(f".{fmt}")
            if fmt != "png" and output.inches is not None:
                width, height = figure.get_size_inches()
                figure.set_size_inches(output.inches, height * output.inches / width)
            with atomic_path(target, target.suffix) as tmp:
                if fmt != "png" and output.inches is not None:
                    figure.savefig(tmp, format=fmt, dpi=dpi)
                else:
                    figure.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
            written.append(target)
    return written


def _hide_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


@paper_figure
def attribution_grid(result: AttributionResult, index: int, columns: int = 8) -> Figure:
    """One image: target (when known), reconstruction, segmentation, then every code's difference
    map (most influential first) with the changed region outlined, its class and IoU."""
    if not 0 <= index < result.batch:
        raise IndexError(f"image index {index} outside 0..{result.batch - 1}")
    panels: list[tuple[str, np.ndarray]] = []
    if result.targets is not None:
        panels.append(("target", to_uint8(result.targets[index:index + 1])[0]))
    panels.append(("reconstruction", to_uint8(result.reconstructions[index:index + 1])[0]))
    labels = result.segmentation[index].numpy()
    present = [int(k) for k in np.unique(labels) if 0 <= k < len(result.vocabulary)]
    palette = distinct_colors({result.vocabulary.names[k]: result.vocabulary.colors[k]
                               for k in present})
    painted = np.zeros((*labels.shape, 3), np.uint8)
    for k in present:
        painted[labels == k] = np.round(palette[result.vocabulary.names[k]] * 255)
    panels.append(("segmentation", painted))
    order = np.argsort(result.ranks[index].numpy())
    total = len(panels) + len(order)
    columns = max(1, min(columns, total))
    rows = -(-total // columns)
    figure = Figure(figsize=(1.45 * columns, 1.65 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes:
        _hide_axes(ax)
    for ax, (title, pixels) in zip(axes, panels, strict=False):
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    maps = result.differences[index].numpy()
    top = float(maps.max()) or 1.0
    for ax, code in zip(axes[len(panels):], order, strict=False):
        ax.imshow(maps[code], cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        binary = result.binary[index, code].numpy()
        if binary.any() and not binary.all():
            ax.contour(binary.astype(float), levels=[0.5], colors="cyan", linewidths=0.7)
        klass = int(result.assigned[index, code])
        name = result.class_name(klass)
        iou = float(result.assigned_iou[index, code])
        ax.set_title(f"code {code}: {name}\nIoU {iou:.2f}", fontsize=7,
                     color=UNASSIGNED_COLOR if klass == UNASSIGNED else "black")
    figure.legend(handles=[Patch(color=palette[result.vocabulary.names[k]],
                                 label=result.vocabulary.names[k]) for k in present],
                  loc="outside lower center", ncols=min(8, max(1, len(present))), fontsize=7,
                  frameon=False)
    settings = result.settings
    relative = "" if settings.relative == "none" else f" ({settings.relative})"
    figure.suptitle(f"{result.names[index]}: {result.codes} codes at {result.layer.name}; "
                    f"ablation alpha > {settings.threshold:g}{relative}, {settings.binarize}",
                    fontsize=9)
    return figure


def _aggregate(result: AttributionResult | AttributionAggregate) -> AttributionAggregate:
    return result.aggregate() if isinstance(result, AttributionResult) else result


TOP_CLASSES = 15  # classes drawn by name; the rest of a long vocabulary is "other"


def top_classes(aggregate: AttributionAggregate, count: int = TOP_CLASSES) -> list[int]:
    """The classes that matter most: most codes assigned, then present in most images."""
    shown = aggregate.shown_classes()
    return sorted(shown, key=lambda k: (-aggregate.class_codes[k],
                                        -aggregate.class_images_present[k]))[:count]


@paper_figure
def code_class_heatmap(result: AttributionResult | AttributionAggregate) -> Figure:
    """Mean IoU of the code at each rank (1 = changes the image most) with each class, from a
    result or from the aggregate of many parts; the top classes of a long vocabulary."""
    result = _aggregate(result)
    shown = sorted(top_classes(result))
    values = result.mean_iou_by_rank()[:, shown]
    names = [result.vocabulary.names[k] for k in shown]
    figure = Figure(figsize=(max(4.0, 0.45 * len(shown) + 2), max(3.0, 0.3 * result.codes + 1.2)),
                    layout="constrained")
    ax = figure.subplots()
    sns.heatmap(values, ax=ax, cmap="viridis", vmin=0, vmax=max(0.05, float(values.max())),
                annot=values.size <= 300, fmt=".2f", annot_kws={"fontsize": MIN_FONT_PT},
                xticklabels=names, yticklabels=[str(r + 1) for r in range(result.codes)],
                cbar_kws={"label": "mean IoU"})
    ax.set_xlabel("class")
    ax.set_ylabel("code rank (by mean difference)")
    ax.set_title(f"code x class IoU over {result.batch} image(s)", fontsize=10)
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=7)
    return figure


@paper_figure
def class_histogram(result: AttributionResult | AttributionAggregate) -> Figure:
    """How many codes went to each class (and how many stayed unassigned); beyond the top
    classes of a long vocabulary, the rest are one bar, "other"."""
    result = _aggregate(result)
    rows = [row for row in result.class_rows() if row["codes"] or row["class"] == "unassigned"]
    named = [row for row in rows if row["class"] != "unassigned"]
    if len(named) > TOP_CLASSES:
        rest = named[TOP_CLASSES:]
        rows = named[:TOP_CLASSES] + [{"class": "other", "codes": sum(r["codes"] for r in rest)}]\
            + [row for row in rows if row["class"] == "unassigned"]
    names = [row["class"] for row in rows]
    counts = [row["codes"] for row in rows]
    classes = distinct_colors({name: result.vocabulary.colors[result.vocabulary.names.index(
        name)] for name in names if name not in ("unassigned", "other")})
    palette = [classes.get(name, "white") for name in names]
    figure = Figure(figsize=(max(4.0, 0.5 * len(names) + 1.5), 3.2), layout="constrained")
    ax = figure.subplots()
    sns.barplot(x=names, y=counts, hue=names, palette=palette, legend=False, ax=ax,
                edgecolor="black", linewidth=0.5)
    for bar, name in zip(ax.patches, names, strict=False):
        if name == "unassigned":
            bar.set_hatch(UNASSIGNED_BAR["hatch"])
    for i, count in enumerate(counts):
        ax.annotate(str(count), (i, count), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("codes")
    ax.set_xlabel("")
    ax.set_title(f"classes of {result.batch * result.codes} codes "
                 f"({result.batch} image(s) x {result.codes})", fontsize=10)
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    return figure


# -- studies ------------------------------------------------------------------------------------
METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS (lower is better)",
                 "perceptual": "VGG16 distance (lower is better)"}


def _metric_name(metric: str) -> str:
    return "perceptual distance" if metric == "perceptual" else metric.upper()


def _metric_axes(rows: list[dict], metric: str, size: tuple[float, float]):
    """A figure, its axes and the finite values of ``metric`` as a DataFrame (empty: the axes
    already say so)."""
    import pandas as pd

    data = pd.DataFrame([row for row in rows if row["metric"] == metric
                         and row["value"] == row["value"] and abs(row["value"]) != float("inf")])
    figure = Figure(figsize=size, layout="constrained")
    ax = figure.subplots()
    if data.empty:
        ax.text(0.5, 0.5, f"no {metric} values", ha="center", va="center")
    else:
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    return figure, ax, data


@paper_figure
def metric_vs_layer(rows: list[dict], metric: str = "psnr", hue: str = "task") -> Figure:
    """Mean ``metric`` (with one standard deviation over images) against the composing layer;
    x = layer index, the single-code baseline at 0. Several swept N are drawn as line styles."""
    figure, ax, data = _metric_axes(rows, metric, (7.0, 3.8))
    if data.empty:
        return figure
    several_codes = data.loc[data["layer_index"] > 0, "codes"].nunique() > 1
    baselines = data[data["layer_index"] == 0]
    several_baselines = baselines["layer"].nunique() > 1
    if several_baselines:  # single codes in several latent spaces: one level line each
        data = data[data["layer_index"] > 0]
    hues = list(dict.fromkeys(data[hue])) + [h for h in dict.fromkeys(baselines[hue])
                                              if h not in set(data[hue])]
    palette = dict(zip(hues, sns.color_palette("colorblind", n_colors=len(hues)), strict=True))
    data = data.copy()
    several_priors = data["generator"].nunique() > 1
    data["x"] = data["layer_index"]
    if several_priors:
        data["x"] = _feature_side(data)
        data["position"] = _side_positions(data)
    sns.lineplot(data=data, x="position" if several_priors else "layer_index", y="value",
                 hue=hue, marker="o", palette=palette,
                 errorbar="sd", err_style="band", ax=ax,
                 style="codes" if several_codes else None)
    if several_baselines:
        styles = dict(zip(dict.fromkeys(baselines["layer"]), ("--", ":", "-.", (0, (5, 1))),
                          strict=False))
        for (group, label), values in baselines.groupby([hue, "layer"], sort=False):
            ax.axhline(values["value"].mean(), color=palette[group],
                       linestyle=styles.get(label, "--"), linewidth=1.2,
                       label=f"{group} {label}")
        # beside the axes: one entry per task and baseline would cover the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ticks = data.drop_duplicates("layer_index").sort_values("layer_index")
    if data["generator"].nunique() == 1:
        ax.set_xticks(ticks["layer_index"], [f"{i}\n{name}" for i, name in
                                             zip(ticks["layer_index"], ticks["layer"],
                                                 strict=True)], fontsize=MIN_FONT_PT)
        ax.set_xlabel("composing layer (lines: single codes in each latent space)" if
                      several_baselines else "composing layer (0 = single code, plain z "
                      "optimisation)")
    else:  # priors of other depths: the same x is the same feature size for every one
        sides = sorted({side for side in data["x"]})
        ax.set_xticks([np.log2(side) for side in sides],
                      ["z" if side == 1 else f"{side}x{side}" for side in sides])
        ax.set_xlabel("feature size at the composing layer (z: single code; a prior's layers "
                      "of one size side by side, shallow to deep)")
    ax.set_title(f"{_metric_name(metric)} by composing layer (mean ± sd over "
                 f"{data['image'].nunique()} images)", fontsize=10)
    return figure


@paper_figure
def _feature_side(data) -> list[int]:
    """The spatial side of each row's composing layer (``layer_shape`` CxHxW; 1 for z)."""
    return [int(str(shape).split("x")[1]) if str(shape).count("x") == 2 else 1
            for shape in data.get("layer_shape", ["1"] * len(data))]


def _side_positions(data) -> list[float]:
    """x positions in log2(side) units: a prior's layers of one side spread over half an
    octave in their order, so that no two layers of one prior share a point."""
    groups: dict[tuple[str, int], list[int]] = {}
    for generator, side, index in zip(data["generator"], data["x"], data["layer_index"],
                                      strict=True):
        groups.setdefault((generator, side), [])
        if index not in groups[(generator, side)]:
            groups[(generator, side)].append(index)
    positions = []
    for generator, side, index in zip(data["generator"], data["x"], data["layer_index"],
                                      strict=True):
        layers = sorted(groups[(generator, side)])
        positions.append(float(np.log2(side)) + 0.5 * layers.index(index) / len(layers))
    return positions


def metric_vs_codes(rows: list[dict], metric: str = "psnr") -> Figure:
    """Mean ``metric`` (± sd) against the number of codes N, one line per layer."""
    figure, ax, data = _metric_axes(rows, metric, (6.0, 3.6))
    if data.empty:
        return figure
    data["line"] = data["generator"] + " " + data["task"] + " " + data["layer"]
    sns.lineplot(data=data, x="codes", y="value", hue="line", marker="o", errorbar="sd",
                 err_style="bars", ax=ax)
    ax.set_xticks(sorted(data["codes"].unique()))
    ax.set_xlabel("number of codes N")
    ax.set_title(f"{_metric_name(metric)} by number of codes (mean ± sd)", fontsize=10)
    return figure


def _read_image(path: str | Path | None) -> tuple[np.ndarray | None, str | None]:
    """Pixels of a PNG, or None and the reason when it is missing or unreadable."""
    from PIL import Image

    if path is None:
        return None, "missing"
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")), None
    except (OSError, SyntaxError, ValueError) as err:
        return None, f"unreadable: {type(err).__name__}"


@paper_figure
def image_table(rows: list[str], columns: list[str],
                cells: dict[tuple[str, str], str | Path | np.ndarray | None],
                cell_titles: dict[tuple[str, str], str] | None = None,
                title: str = "", side: float = 1.25, column_titles: bool = True) -> Figure:
    """A grid of images: ``cells[(row, column)]`` is a PNG path, pixels or None (left blank,
    or marked when a path cannot be read). Column labels on top (unless ``column_titles`` is
    False), row labels on the left; ``cell_titles`` gives a cell its own title."""
    cell_titles = cell_titles or {}
    figure = Figure(figsize=(side * len(columns) + 0.8, side * len(rows) + 0.6),
                    layout="constrained")
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            ax = axes[r, c]
            _hide_axes(ax)
            value = cells.get((row, column))
            pixels, problem = ((value, None) if isinstance(value, np.ndarray)
                               else _read_image(value) if value is not None else (None, None))
            if pixels is not None:
                ax.imshow(pixels, interpolation="nearest")
            elif problem:
                ax.text(0.5, 0.5, problem, ha="center", va="center", fontsize=MIN_FONT_PT,
                        color="red", transform=ax.transAxes)
            label = cell_titles.get((row, column), column if r == 0 and column_titles else "")
            if label:
                ax.set_title(label, fontsize=7)
            if c == 0:
                ax.set_ylabel(row, fontsize=MIN_FONT_PT, rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


@paper_figure
def attribution_by_layer(rows: list[dict]) -> Figure:
    """Share of codes per class at each composing layer (stacked), from a study's
    ``attribution.csv`` rows of one generator and task; each class in the ``color`` its
    segmenter's vocabulary gives it."""
    import pandas as pd

    colors = distinct_colors({row["class"]: row.get("color") for row in rows
                              if row["class"] != "unassigned"})
    data = pd.DataFrame(rows)
    data["share"] = data["share"].astype(float)
    data["layer_index"] = data["layer_index"].astype(int)
    table = data.pivot_table(index=["layer_index", "layer"], columns="class", values="share",
                             aggfunc="sum", fill_value=0.0).sort_index()
    order = table.sum().sort_values(ascending=False).index.tolist()
    if "unassigned" in order:
        order = [c for c in order if c != "unassigned"] + ["unassigned"]
    table = table[order]
    figure = Figure(figsize=(max(5.0, 0.6 * len(table) + 3), 3.8), layout="constrained")
    ax = figure.subplots()
    bottom = np.zeros(len(table))
    positions = np.arange(len(table))
    for name in order:
        style = UNASSIGNED_BAR if name == "unassigned" else {"color": colors[name]}
        ax.bar(positions, table[name].to_numpy(), bottom=bottom, label=name,
               edgecolor="black", linewidth=0.3, **style)
        bottom += table[name].to_numpy()
    ax.set_xticks(positions, [f"{i}\n{name}" for i, name in table.index], fontsize=7)
    ax.set_ylabel("share of codes")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncols=1, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    generator = data["generator"].iloc[0]
    ax.set_title(f"classes the codes attach to, by layer ({generator}, {data['task'].iloc[0]})",
                 fontsize=10)
    return figure


# -- edits --------------------------------------------------------------------------------------
def code_set_label(label: str, classes: list[str] | None = None) -> str:
    """``all`` as "all codes"; ``code k`` with the class attribution gave code k."""
    if label == "all":
        return "all codes"
    if classes and label.startswith("code ") and label[5:].isdigit() and \
            int(label[5:]) < len(classes):
        return f"{label}: {classes[int(label[5:])]}"
    return label


def _code_classes(result, index: int) -> list[str] | None:
    return (result.extra.get("code_classes") or {}).get(result.names[index])


@paper_figure
def edit_strip(result, index: int, target: str | None = None, max_sets: int = 24) -> Figure:
    """One image's edit: a row per code set (labelled "all codes", "code k: its class"; at
    most ``max_sets``), a column per step t (t = 0 is the reconstruction), and a caption that
    says what moves."""
    sets = result.code_sets[:max_sets]
    classes = _code_classes(result, index)
    rows = [code_set_label(label, classes) for label in sets]
    columns = [("t = 0\n(input)" if t == 0 else f"t = {t:+.2g}") for t in result.ts.tolist()]
    pixels = to_uint8(result.frames[index, :len(sets)].flatten(0, 1)).reshape(
        len(sets), len(columns), *result.frames.shape[-2:], 3)
    cells = {(row, column): pixels[s, i] for s, row in enumerate(rows)
             for i, column in enumerate(columns)}
    side = min(1.0, max(0.5, result.frames.shape[-1] / 100))  # about a pixel per pixel at 100 dpi
    figure = image_table(rows, columns, cells, side=side,
                         title=f"{result.names[index]} along {result.direction.name} "
                               f"({result.direction.source}, {result.direction.space})")
    moved = ("each row moves the codes it names by t along the direction; the others stay"
             if "all" not in sets or len(sets) > 1 else "every code moves by t")
    effect = ""
    if target is not None and result.fractions is not None and result.vocabulary is not None:
        k = result.vocabulary.index(target)
        curve = result.fractions[index, 0, :, k]
        effect = (f"; {target} share {float(curve[0]):.3f} (first t) to "
                  f"{float(curve[-1]):.3f} (last t) for {rows[0]}")
    hidden = (f"; {len(result.code_sets) - len(sets)} more code sets in the edit's tables"
              if len(result.code_sets) > len(sets) else "")
    figure.supxlabel(f"{moved}{effect}{hidden}", fontsize=MIN_FONT_PT)
    return figure


NAMED_CURVES = 3  # single-code curves named in an edit's legend, the strongest first


@paper_figure
def edit_curves(result, target: str) -> Figure:
    """The target class's share of pixels against t (mean over images): the all-code line and
    the ``NAMED_CURVES`` strongest other code sets named, the rest grey; the effect size in
    the title, and a plain sentence when every change is within the segmenter's noise."""
    from analysis.editing import EFFECT_NOISE

    k = result.vocabulary.index(target)
    curves = result.fractions[..., k].mean(dim=0).numpy()  # [S, T]
    ts = result.ts.numpy()
    zero = result.zero if result.zero is not None else len(ts) // 2
    ends = np.stack([curves[:, 0] - curves[:, zero], curves[:, -1] - curves[:, zero]], 1)
    strength = np.abs(curves[:, -1] - curves[:, 0])
    main = result.code_sets.index("all") if "all" in result.code_sets else int(strength.argmax())
    others = [s for s in np.argsort(-strength) if s != main][:NAMED_CURVES]
    figure = Figure(figsize=(6.0, 3.4), layout="constrained")
    ax = figure.subplots()
    palette = sns.color_palette("colorblind", n_colors=NAMED_CURVES + 1)
    for s in range(len(result.code_sets)):
        if s != main and s not in others:
            ax.plot(ts, curves[s], color="#c8c8c8", linewidth=0.8, zorder=1)
    for color, s in zip(palette[1:], others, strict=False):
        ax.plot(ts, curves[s], color=color, marker="o", markersize=3, linewidth=1.2, zorder=2,
                label=code_set_label(result.code_sets[s], _code_classes(result, 0)))
    ax.plot(ts, curves[main], color="black", marker="o", markersize=3.5, linewidth=2, zorder=3,
            label=code_set_label(result.code_sets[main]))
    if len(result.code_sets) > len(others) + 1:
        ax.plot([], [], color="#c8c8c8", linewidth=0.8,
                label=f"{len(result.code_sets) - len(others) - 1} other code sets")
    low, high = float(curves.min()), float(curves.max())
    span = max(high - low, 0.1)  # a change of 0.01 must not fill the axis
    ax.set_ylim(max(0.0, (low + high - span) / 2 - 0.01),
                min(1.0, (low + high + span) / 2 + 0.01))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    ax.set_ylabel(f"share of {target} pixels")
    ax.set_xlabel(f"t along {result.direction.name} (t = 0: the reconstruction)")
    ax.set_title(f"{target} under the edit, mean over {len(result.names)} image(s): "
                 f"{code_set_label(result.code_sets[main])} {ends[main, 0]:+.3f} at the first t, "
                 f"{ends[main, 1]:+.3f} at the last", fontsize=8)
    if float(np.abs(ends).max()) <= EFFECT_NOISE:
        ax.text(0.5, 0.04, f"the edit barely moves {target}: every change is within "
                f"{EFFECT_NOISE:g} of the image, the segmenter's noise", ha="center",
                va="bottom", transform=ax.transAxes, fontsize=MIN_FONT_PT, color="#a00000")
    return figure


@paper_figure
def edit_disentanglement(result, top: int = 12) -> Figure:
    """Mean |change of each class's share| from the first to the last step, per code set: one
    column that lights up is a disentangled edit."""
    changes = result.class_changes().abs().mean(dim=0).numpy()  # [S, K]
    shown = np.argsort(-changes.max(axis=0))[:top]
    shown = [k for k in shown if changes[:, k].max() > 0] or list(shown[:1])
    figure = Figure(figsize=(max(4.0, 0.5 * len(shown) + 2.5),
                             max(2.5, 0.28 * len(result.code_sets) + 1.2)), layout="constrained")
    ax = figure.subplots()
    sns.heatmap(changes[:, shown], ax=ax, cmap="magma", annot=changes[:, shown].size <= 200,
                fmt=".2f", annot_kws={"fontsize": MIN_FONT_PT},
                xticklabels=[result.vocabulary.names[k] for k in shown],
                yticklabels=result.code_sets, cbar_kws={"label": "mean |change of share|"})
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=7)
    ax.set_title("how much each class changes under the edit", fontsize=10)
    return figure


@paper_figure
def edit_changed(result, index: int, columns: int = 11) -> Figure:
    """Which pixels each code set's edit changes (the largest |x_t - x_0| over t), every code
    set, ``columns`` panels a row."""
    sets = result.code_sets
    total = len(sets) + 1
    columns = min(columns, total)
    rows = -(-total // columns)
    figure = Figure(figsize=(1.0 * columns + 0.3, 1.15 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes:
        _hide_axes(ax)
    zero = int(result.ts.abs().argmin())
    axes[0].imshow(to_uint8(result.frames[index, 0, zero:zero + 1])[0])
    axes[0].set_title("t = 0", fontsize=MIN_FONT_PT)
    top = float(result.changed[index].max()) or 1.0
    classes = _code_classes(result, index)
    for ax, (s, label) in zip(axes[1:], enumerate(sets), strict=False):
        ax.imshow(result.changed[index, s].numpy(), cmap="magma", vmin=0, vmax=top)
        ax.set_title(code_set_label(label, classes).replace(": ", ":\n"), fontsize=MIN_FONT_PT)
    figure.suptitle(f"{result.names[index]}: pixels each edit changes (brighter: more; one "
                    f"scale, max {top:.2f})", fontsize=8)
    return figure


@paper_figure
def tuning_summary(records: list[dict]) -> Figure:
    """A tuned run, image by image: PSNR before and after tuning (one line each), and how far
    each image's tuned generator moved random samples (mean |change|, 8-bit levels)."""
    tuned = [r for r in records if isinstance(r.get("tuning"), dict) and r.get("status") == "ok"]
    figure = Figure(figsize=(6.8, 0.35 * max(3, len(tuned)) + 1.0), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    names = [str(r["image"]) for r in tuned]
    rows = np.arange(len(tuned))
    before = [r["tuning"].get("psnr_untuned") for r in tuned]
    after = [r.get("psnr") for r in tuned]
    colors = sns.color_palette("colorblind", 2)
    for y, b, a in zip(rows, before, after, strict=True):
        if isinstance(b, int | float) and isinstance(a, int | float):
            left.plot([b, a], [y, y], color="0.6", linewidth=1)
    left.scatter([b if isinstance(b, int | float) else np.nan for b in before], rows,
                 color=colors[0], label="untuned", zorder=3)
    left.scatter([a if isinstance(a, int | float) else np.nan for a in after], rows,
                 color=colors[1], marker="D", label="tuned", zorder=3)
    left.set_yticks(rows, names)
    left.invert_yaxis()
    left.set_xlabel("PSNR (dB)")
    left.legend(loc="best")
    right.barh(rows, [float(r["tuning"].get("sample_change") or 0) for r in tuned],
               color=colors[0])
    right.set_xlabel("random samples moved (mean |change|, 8-bit levels)")
    figure.suptitle("generator tuning: reconstruction gained, and what it cost elsewhere",
                    fontsize=8)
    return figure
