"""Segmentation quality and distribution metrics: confusion, IoU, Frechet Segmentation Distance.

FSD follows "Seeing What a GAN Cannot Generate" (Bau et al. 2019): each image becomes the vector
of the fraction of its pixels in every class, and FSD is the Frechet distance between the
Gaussians fitted to those vectors for two image sets (generated vs real).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

from mganprior.core.errors import InputError


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """[K, K] counts: row = target class, column = predicted class (label maps [B, H, W])."""
    if predicted.shape != target.shape:
        raise InputError(f"predicted maps {list(predicted.shape)} and target maps "
                         f"{list(target.shape)} differ in shape")
    index = target.reshape(-1).long() * classes + predicted.reshape(-1).long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


@dataclass
class IoUReport:
    """Per-class IoU (NaN where a class is absent from both prediction and target)."""

    names: tuple[str, ...]
    per_class: np.ndarray
    pixel_accuracy: float

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.per_class))

    def as_dict(self) -> dict[str, float | None]:
        return {n: (None if np.isnan(v) else round(float(v), 4))
                for n, v in zip(self.names, self.per_class, strict=True)}


def iou_report(confusion: torch.Tensor, names: tuple[str, ...]) -> IoUReport:
    conf = confusion.double().numpy()
    intersection = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, intersection / union, np.nan)
    total = conf.sum()
    return IoUReport(names, per_class, float(intersection.sum() / total) if total else float("nan"))


def class_fractions(label_maps: torch.Tensor, classes: int) -> np.ndarray:
    """Label maps [B, H, W] -> [B, K] fraction of each image's pixels in each class."""
    flat = label_maps.reshape(label_maps.shape[0], -1).long()
    counts = torch.zeros(flat.shape[0], classes, dtype=torch.float64)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    return (counts / flat.shape[1]).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` [N, D] and ``b`` [M, D]."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise InputError(f"Frechet distance needs two [N, D] sets with the same D and N >= 2, "
                         f"got {list(a.shape)} and {list(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        # Classes that never occur make the covariances singular; the root is still exact.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = np.real(linalg.sqrtm(cov_a @ cov_b))
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
    return max(value, 0.0)


def frechet_segmentation_distance(maps_a: torch.Tensor, maps_b: torch.Tensor,
                                  classes: int) -> float:
    """FSD between two sets of label maps, reported as 100 x the Frechet distance."""
    return 100.0 * frechet_distance(class_fractions(maps_a, classes),
                                    class_fractions(maps_b, classes))
