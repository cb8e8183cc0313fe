"""Rendered datasets: many scenes at once (in parallel worker processes), cached on disk.

Seeds ``[0, count)`` are the training split of every domain; held-out evaluation scenes use seeds
from :data:`HELD_OUT_SEED` up, so no evaluation scene is ever a training scene.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from mganprior.core.errors import InputError
from mganprior.core.files import atomic_path
from mganprior.core.progress import progress_bar
from mganprior.scenes.render import get_domain, render

HELD_OUT_SEED = 1_000_000


MIN_SIZE, MAX_SIZE = 8, 1024  # rendering is Python-level work: beyond 1024 px it takes hours


def check_scene_request(domain: str, size: int, first_seed: int) -> None:
    get_domain(domain)
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got "
                         f"{size}", field="size")
    if first_seed < 0:
        raise InputError(f"start must be >= 0 (the first seed), got {first_seed}", field="start")


def iter_scenes(domain: str, seeds: range, size: int = 64
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(seed, image, label)`` one at a time, so a caller can write each before the next is
    rendered (a count of a billion costs time, not memory)."""
    check_scene_request(domain, size, min(seeds[0], seeds[-1]) if seeds else 0)  # O(1)
    for seed in seeds:
        yield (seed, *render(domain, seed, size=size))


def render_many(domain: str, seeds: range | list[int], size: int = 64, workers: int = 1,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scenes of one domain: (images uint8 [N, size, size, 3], labels uint8 [N, size, size])."""
    seeds = list(seeds)
    check_scene_request(domain, size, min(seeds, default=0))
    images = np.empty((len(seeds), size, size, 3), dtype=np.uint8)
    labels = np.empty((len(seeds), size, size), dtype=np.uint8)
    job = partial(render, domain, size=size)
    bar = progress_bar(total=len(seeds), enabled=progress, unit="img", desc=f"render {domain}",
               dynamic_ncols=True)
    if workers > 1 and len(seeds) > 64:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.imap(job, seeds, chunksize=64)
            for i, (image, label) in enumerate(results):
                images[i], labels[i] = image, label
                bar.update(1)
    else:
        for i, seed in enumerate(seeds):
            images[i], labels[i] = job(seed)
            bar.update(1)
    bar.close()
    return images, labels


def rendered_dataset(domain: str, count: int, size: int = 64, *, start: int = 0,
                     workers: int = 1, cache: str | Path | None = None,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``render_many`` over seeds ``[start, start + count)``, read from / saved to ``cache``."""
    if count < 1:
        raise InputError(f"need at least one scene, got count={count}")
    path = None
    if cache is not None:
        path = Path(cache) / f"{domain}-{size}px-{start}-{count}.npz"
        if path.is_file():
            try:
                with np.load(path) as data:
                    return data["images"], data["labels"]
            except (OSError, ValueError, KeyError):
                path.unlink()  # a damaged cache entry is re-rendered
    images, labels = render_many(domain, range(start, start + count), size, workers, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, ".npz") as tmp:
            np.savez(tmp, images=images, labels=labels)
    return images, labels
