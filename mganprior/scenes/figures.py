"""Figures of the scene world for docs and model cards; each returns a matplotlib Figure."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from segmentation.vocabularies import Vocabulary


def image_rows_figure(rows: list[tuple[str, list[np.ndarray]]], *,
                      vocabulary: Vocabulary | None = None, title: str | None = None,
                      cell: float = 0.9) -> Figure:
    """A grid: one row per (label, images [H, W, 3] uint8 or label maps [H, W]) pair.

    Label maps are drawn in the vocabulary's colours; with a vocabulary, a legend lists the
    classes that appear anywhere in the figure.
    """
    columns = max(len(images) for _, images in rows)
    fig = Figure(figsize=(cell * columns + 1.6, cell * len(rows) + (0.9 if vocabulary else 0.3)))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    present: set[int] = set()
    for r, (name, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(images):
                continue
            image = np.asarray(images[c])
            if image.ndim == 2:
                if vocabulary is None:
                    raise ValueError("label maps need a vocabulary to be drawn")
                present.update(np.unique(image).tolist())
                image = vocabulary.colorize(image)
            ax.imshow(image, interpolation="nearest")
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if vocabulary is not None and present:
        handles = [Patch(color=np.array(vocabulary.colors[k]) / 255, label=vocabulary.names[k])
                   for k in sorted(present)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7,
                   frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=1.4 / fig.get_figwidth(), right=0.99, top=0.92 if title else 0.99,
                        bottom=(0.8 / fig.get_figheight()) if vocabulary else 0.01,
                        wspace=0.05, hspace=0.05)
    return fig


def scene_world_figure(seeds: range = range(10), size: int = 64) -> Figure:
    """Renders and their exact label maps, two rows per domain."""
    from mganprior.scenes.render import DOMAINS, render
    from segmentation.vocabularies import SCENE_WORLD

    rows: list[tuple[str, list[np.ndarray]]] = []
    for domain in DOMAINS:
        scenes = [render(domain, seed, size) for seed in seeds]
        rows.append((domain, [image for image, _ in scenes]))
        rows.append(("labels", [labels for _, labels in scenes]))
    return image_rows_figure(rows, vocabulary=SCENE_WORLD,
                             title=f"scene world: seeds {seeds.start}-{seeds.stop - 1}, {size} px")


def main() -> None:
    """Write the figures of docs/scenes.md: ``python -m mganprior.scenes.figures [DOCS_DIR]``."""
    import sys
    from pathlib import Path

    from PIL import Image

    from mganprior.scenes.datasets import render_many
    from mganprior.scenes.render import DOMAINS
    from mganprior.training.gan import image_grid

    docs = Path(sys.argv[1] if len(sys.argv) > 1 else "docs") / "images"
    docs.mkdir(parents=True, exist_ok=True)
    scene_world_figure().savefig(docs / "scene-world.png", dpi=110)
    for domain in DOMAINS:
        images, _ = render_many(domain, range(32), 64, progress=False)
        Image.fromarray(image_grid(images, 16)).save(docs / f"scenes-{domain}.png")
    print(f"wrote figures to {docs}")


if __name__ == "__main__":
    main()
