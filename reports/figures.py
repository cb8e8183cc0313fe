"""Figure builders: each takes results and returns a matplotlib Figure (never shown, never global).

Figures are made with ``matplotlib.figure.Figure`` directly, not pyplot, so building many of them
in a long job leaks nothing and needs no display. :func:`save_figure` writes one atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis.attribution import UNASSIGNED, AttributionAggregate, AttributionResult
from mganprior.core.files import atomic_path
from mganprior.core.pixels import to_uint8

UNASSIGNED_COLOR = "#9e9e9e"


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, path.suffix) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return path


def _hide_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


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
    panels.append(("segmentation", result.vocabulary.colorize(labels)))
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
    present = [k for k in np.unique(labels) if 0 <= k < len(result.vocabulary)]
    figure.legend(handles=[Patch(color=np.array(result.vocabulary.colors[k]) / 255,
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
                annot=values.size <= 300, fmt=".2f", annot_kws={"fontsize": 6},
                xticklabels=names, yticklabels=[str(r + 1) for r in range(result.codes)],
                cbar_kws={"label": "mean IoU"})
    ax.set_xlabel("class")
    ax.set_ylabel("code rank (by mean difference)")
    ax.set_title(f"code x class IoU over {result.batch} image(s)", fontsize=10)
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=7)
    return figure


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
    palette = [UNASSIGNED_COLOR if name in ("unassigned", "other") else
               np.array(result.vocabulary.colors[result.vocabulary.names.index(name)]) / 255
               for name in names]
    figure = Figure(figsize=(max(4.0, 0.5 * len(names) + 1.5), 3.2), layout="constrained")
    ax = figure.subplots()
    sns.barplot(x=names, y=counts, hue=names, palette=palette, legend=False, ax=ax,
                edgecolor="black", linewidth=0.5)
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
    palette = dict(zip(hues, sns.color_palette(n_colors=len(hues)), strict=True))
    sns.lineplot(data=data, x="layer_index", y="value", hue=hue, marker="o", palette=palette,
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
                                                 strict=True)], fontsize=7)
    else:
        ax.set_xticks(ticks["layer_index"])
    ax.set_xlabel("composing layer (lines: single codes in each latent space)" if
                  several_baselines else "composing layer (0 = single code, plain z "
                  "optimisation)")
    ax.set_title(f"{_metric_name(metric)} by composing layer (mean ± sd over "
                 f"{data['image'].nunique()} images)", fontsize=10)
    return figure


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
                ax.text(0.5, 0.5, problem, ha="center", va="center", fontsize=6, color="red",
                        transform=ax.transAxes)
            label = cell_titles.get((row, column), column if r == 0 and column_titles else "")
            if label:
                ax.set_title(label, fontsize=7)
            if c == 0:
                ax.set_ylabel(row, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def attribution_by_layer(rows: list[dict]) -> Figure:
    """Share of codes per class at each composing layer (stacked), from a study's
    ``attribution.csv`` rows of one generator and task; each class in the ``color`` its
    segmenter's vocabulary gives it."""
    import pandas as pd

    colors = {row["class"]: row.get("color") for row in rows}
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
        color = UNASSIGNED_COLOR if name == "unassigned" else colors.get(name) or None
        ax.bar(positions, table[name].to_numpy(), bottom=bottom, label=name, color=color,
               edgecolor="black", linewidth=0.3)
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
def edit_strip(result, index: int, max_sets: int = 8) -> Figure:
    """One image's edit: a row per code set (at most ``max_sets``), a column per step t."""
    sets = result.code_sets[:max_sets]
    columns = [f"t={t:+.2g}" for t in result.ts.tolist()]
    pixels = to_uint8(result.frames[index, :len(sets)].flatten(0, 1)).reshape(
        len(sets), len(columns), *result.frames.shape[-2:], 3)
    cells = {(label, column): pixels[s, i] for s, label in enumerate(sets)
             for i, column in enumerate(columns)}
    return image_table(sets, columns, cells, side=1.0,
                       title=f"{result.names[index]} along {result.direction.name} "
                             f"({result.direction.source}, {result.direction.space})")


def edit_curves(result, target: str) -> Figure:
    """The target class's share of pixels against t, per code set (mean over images; ± sd
    bands while there are few enough sets for the bands to stay readable)."""
    import pandas as pd

    k = result.vocabulary.index(target)
    rows = [{"t": t, "code set": label, "fraction": float(result.fractions[b, s, i, k])}
            for b in range(len(result.names)) for s, label in enumerate(result.code_sets)
            for i, t in enumerate(result.ts.tolist())]
    bands = len(result.code_sets) <= 4
    figure = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = figure.subplots()
    sns.lineplot(data=pd.DataFrame(rows), x="t", y="fraction", hue="code set", marker="o",
                 errorbar="sd" if bands else None, ax=ax, legend=len(result.code_sets) <= 12)
    ax.set_ylabel(f"share of {target} pixels")
    ax.set_xlabel(f"t along {result.direction.name}")
    spread = "mean ± sd" if bands else "mean"
    ax.set_title(f"{target} under the edit ({spread} over {len(result.names)} images)",
                 fontsize=10)
    return figure


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
                fmt=".2f", annot_kws={"fontsize": 6},
                xticklabels=[result.vocabulary.names[k] for k in shown],
                yticklabels=result.code_sets, cbar_kws={"label": "mean |change of share|"})
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=7)
    ax.set_title("how much each class changes under the edit", fontsize=10)
    return figure


def edit_changed(result, index: int, max_sets: int = 12) -> Figure:
    """Which pixels each code set's edit changes (the largest |x_t - x_0| over t)."""
    sets = result.code_sets[:max_sets]
    figure = Figure(figsize=(1.5 * (len(sets) + 1), 1.9), layout="constrained")
    axes = figure.subplots(1, len(sets) + 1, squeeze=False)[0]
    zero = int(result.ts.abs().argmin())
    axes[0].imshow(to_uint8(result.frames[index, 0, zero:zero + 1])[0])
    axes[0].set_title("t=0", fontsize=7)
    top = float(result.changed[index].max()) or 1.0
    for ax, (s, label) in zip(axes[1:], enumerate(sets), strict=False):
        ax.imshow(result.changed[index, s].numpy(), cmap="magma", vmin=0, vmax=top)
        ax.set_title(label, fontsize=7)
    for ax in axes:
        _hide_axes(ax)
    figure.suptitle(f"{result.names[index]}: pixels each edit changes", fontsize=9)
    return figure
