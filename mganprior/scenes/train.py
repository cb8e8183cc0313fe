"""Train the scene world's models: one PGGAN per domain and one segmenter for all domains.

Thin glue between rendered datasets and the generic trainers in ``training.gan`` and
``training.segmenter``; the CLI commands ``train-generator`` and ``train-segmenter`` call these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mganprior.scenes.datasets import HELD_OUT_SEED, rendered_dataset
from mganprior.scenes.render import DOMAINS, get_domain
from mganprior.training.gan import GANTrainConfig, GANTrainResult, ImageBank, train_gan
from mganprior.training.loop import DEFAULT_CHECKPOINT_EVERY, check_checkpoint_every
from mganprior.training.segmenter import (
    LabelledBank,
    SegmenterTrainConfig,
    SegmenterTrainResult,
    train_segmenter,
)
from segmentation.vocabularies import SCENE_WORLD


def train_scene_generator(domain: str, out_dir: str | Path, config: GANTrainConfig, *,
                          images: int = 20000, device: torch.device, workers: int = 1,
                          cache: str | Path | None = None,
                          checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                          progress: bool = True) -> GANTrainResult:
    get_domain(domain)
    config.validate()  # before rendering thousands of images
    check_checkpoint_every(checkpoint_every)
    pixels, _ = rendered_dataset(domain, images, config.resolution, workers=workers, cache=cache,
                                 progress=progress)
    bank = ImageBank(pixels, device, flip=config.flip)
    return train_gan(bank, config, out_dir, device=device, checkpoint_every=checkpoint_every,
                     progress=progress)


def train_scene_segmenter(out_dir: str | Path, config: SegmenterTrainConfig, *,
                          domains: list[str] | None = None, images_per_domain: int = 8000,
                          validation_per_domain: int = 300, size: int = 64,
                          device: torch.device, workers: int = 1,
                          cache: str | Path | None = None,
                          checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                          progress: bool = True) -> SegmenterTrainResult:
    domains = domains or list(DOMAINS)
    for domain in domains:
        get_domain(domain)
    config.validate()  # before rendering thousands of images
    check_checkpoint_every(checkpoint_every)
    train = [rendered_dataset(d, images_per_domain, size, workers=workers, cache=cache,
                              progress=progress) for d in domains]
    held = [rendered_dataset(d, validation_per_domain, size, start=HELD_OUT_SEED,
                             workers=workers, cache=cache, progress=progress) for d in domains]
    train_bank = LabelledBank(np.concatenate([i for i, _ in train]),
                              np.concatenate([lab for _, lab in train]), device)
    validation = LabelledBank(np.concatenate([i for i, _ in held]),
                              np.concatenate([lab for _, lab in held]), device)
    extra = {"domains": domains, "images_per_domain": images_per_domain,
             "validation": {"seeds_from": HELD_OUT_SEED, "per_domain": validation_per_domain}}
    return train_segmenter(train_bank, SCENE_WORLD, config, out_dir, device=device,
                           validation=validation, checkpoint_every=checkpoint_every,
                           progress=progress, extra_meta={"data": extra})
