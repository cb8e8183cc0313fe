"""Code-to-class attribution by alpha ablation (Gu et al., CVPR 2020, section 4.3).

For every inverted image and every code n:

1. ``alpha'_n``: ``alpha_n`` with its entries above the threshold set to zero (other codes kept);
2. ``x'_n = tail(scale * (sum_m alpha_m F_m - (alpha_n - alpha'_n) F_n), carry)`` and the
   difference map ``D_n = |x_inv - x'_n|`` (channel mean, or a VGG16 feature distance). Only the
   features are ablated: whatever else crosses the cut (a StyleGAN2 skip image, the styles after
   the cut) stays as the inversion fused it;
3. ``D_n`` binarised (Otsu by default; a top quantile or a fixed threshold as options);
4. IoU of the binary map with every class mask of a segmentation of ``x_inv`` (or of the target, or
   given label maps); the code's class is the best one, kept when its IoU reaches ``min_iou``.

Shapes: alphas ``[B, N, C]``, features ``[B, N, C, h, w]``, images ``[B, 3, H, W]`` in [-1, 1],
difference and binary maps ``[B, N, H, W]``, label maps ``[B, H, W]`` (int64, ``IGNORE`` =
unlabelled), IoU ``[B, N, K]``.

The ablations of one image share the fused feature: ``x'_n`` only subtracts code n's zeroed part,
so the N renders of B images are one batched tail pass (no head pass at all when the inversion kept
its features), instead of N full generator forwards per image (``benchmarks/attribution.py``).
Codes with nothing above the threshold are not rendered: their difference map is exactly zero.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.filters import threshold_otsu

from inversion.composition import code_cuts, fuse, fusion_scale, latent_carry, resolve_carry
from inversion.engine import InversionResult
from inversion.generators.base import Cut, Layer, LayeredGenerator, compiled, frozen
from inversion.losses import VGGPerceptual
from inversion.tuning import group_count, image_groups
from mganprior.core.errors import InputError
from mganprior.core.progress import progress_bar
from mganprior.core.settings import option
from segmentation.segmenters import Segmenter
from segmentation.vocabularies import Vocabulary

if TYPE_CHECKING:
    import pandas as pd

RELATIVE_MODES = ("none", "codes", "quantile")
DIFFERENCES = ("pixel", "perceptual")
SEGMENT_SOURCES = ("reconstruction", "target")
UNASSIGNED = -1
IGNORE = 255  # label-map value of unlabelled pixels


def parse_binarization(text: str) -> tuple[str, float | None]:
    """``otsu``, ``quantile:Q`` (``D >=`` each map's Q quantile: its top ``1 - Q``, ties kept)
    or ``fixed:T`` (``D > T``)."""
    method, _, value = text.partition(":")
    if method == "otsu" and not value:
        return "otsu", None
    if method in ("quantile", "fixed") and value:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if method == "quantile" and 0 < number < 1:
            return method, number
        if method == "fixed" and number > 0:
            return method, number
        wanted = "a number in (0, 1)" if method == "quantile" else "a number above 0"
        raise InputError(f"binarize {text}: {method} needs {wanted}", field="binarize")
    raise InputError(f"binarize must be otsu, quantile:Q or fixed:T, got {text!r}",
                     field="binarize")


@dataclass(frozen=True)
class AttributionSettings:
    """Every choice of the procedure; the defaults are the paper's (alpha > 0.2, min IoU 0.05).

    ``relative``: ``none`` zeroes ``alpha > threshold``; ``codes`` zeroes ``alpha > threshold / N``
    (a multiple of the initial 1/N, for runs whose alpha scale differs); ``quantile`` zeroes each
    code's entries above its own ``threshold`` quantile (threshold in (0, 1)).
    ``min_difference``: pixels that change less than this never count as changed (default half
    an 8-bit level of the [-1, 1] range), so float noise cannot make a region.
    """

    threshold: float = option("zero alpha entries above this (the paper's 0.2)", default=0.2)
    relative: str = option("none: alpha > threshold; codes: the threshold is a multiple of 1/N; "
                           "quantile: a per-code quantile of alpha in (0, 1)", RELATIVE_MODES,
                           default="none")
    binarize: str = option("how difference maps become regions: otsu, quantile:Q or fixed:T",
                           default="otsu")
    difference: str = option("pixel: channel-mean |x_inv - x'|; perceptual: VGG16 feature "
                             "distance (needs VGG16 weights)", DIFFERENCES, default="pixel")
    min_iou: float = option("codes whose best IoU is lower stay unassigned", default=0.05)
    min_difference: float = option("smallest change that counts, in [-1, 1] units (half an "
                                   "8-bit level)", default=1 / 255)

    def __post_init__(self) -> None:
        if self.relative not in RELATIVE_MODES:
            raise InputError(f"relative must be one of {', '.join(RELATIVE_MODES)}, "
                             f"got {self.relative!r}", field="relative")
        if not 0 < self.threshold < float("inf"):
            raise InputError(f"threshold must be in (0, inf), got {self.threshold}",
                             field="threshold")
        if self.relative == "quantile" and not self.threshold < 1:
            raise InputError(f"threshold is a quantile with relative=quantile and must be "
                             f"in (0, 1), got {self.threshold}", field="threshold")
        if self.difference not in DIFFERENCES:
            raise InputError(f"difference must be one of {', '.join(DIFFERENCES)}, "
                             f"got {self.difference!r}", field="difference")
        if not 0 <= self.min_iou <= 1:
            raise InputError(f"min_iou must be in [0, 1], got {self.min_iou}", field="min_iou")
        if not self.min_difference >= 0:
            raise InputError(f"min_difference must be >= 0, got {self.min_difference}",
                             field="min_difference")
        parse_binarization(self.binarize)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the steps, each a pure function ------------------------------------------------------------
def ablation_mask(alphas: torch.Tensor, threshold: float = 0.2,
                  relative: str = "none") -> torch.Tensor:
    """Which alpha entries an ablation zeroes: bool ``[B, N, C]`` (see AttributionSettings)."""
    if alphas.dim() != 3:
        raise ValueError(f"alphas must be [B, N, C], got {list(alphas.shape)}")
    if relative == "none":
        return alphas > threshold
    if relative == "codes":
        return alphas > threshold / alphas.shape[1]
    if relative == "quantile":
        return alphas > torch.quantile(alphas.float(), threshold, dim=-1, keepdim=True)
    raise ValueError(f"relative must be one of {RELATIVE_MODES}, got {relative!r}")


@torch.no_grad()
def ablated_renders(generator: LayeredGenerator, cut: Cut, alphas: torch.Tensor,
                    zeroed: torch.Tensor, layer: Layer, fusion: str = "sum",
                    renders_per_pass: int = 64, rules: dict[str, str] | None = None,
                    extras: dict[str, torch.Tensor] | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_inv`` ``[B, 3, H, W]`` and every code's ablation ``x'_n`` ``[B, N, 3, H, W]``, clamped.

    ``cut``: the per-code cuts ``[B, N, ...]``; ``alphas``/``zeroed`` ``[B, N, C]``, on the
    generator's device; ``rules``/``extras``: the inversion's carry rules and extra latents.
    Codes without a zeroed entry are not rendered (``x'_n = x_inv`` exactly); the others go
    through the tail ``renders_per_pass`` at a time, whatever image they belong to.
    """
    codes = alphas.shape[1]
    if zeroed.shape != alphas.shape:
        raise ValueError(f"zeroed {list(zeroed.shape)} does not match alphas "
                         f"{list(alphas.shape)}")
    rules = resolve_carry(generator, layer) if rules is None else rules
    removed = alphas * zeroed * fusion_scale(fusion, codes)  # the part of alpha_n that goes
    with frozen(generator):
        fused = fuse(cut, alphas, fusion, rules, latent_carry(generator, layer, rules, extras))
        x_inv = generator.tail(fused, layer).float().clamp(-1, 1)
        ablated = x_inv[:, None].repeat(1, codes, 1, 1, 1)
        pairs = torch.nonzero(zeroed.any(dim=-1))
        for chunk in pairs.split(max(1, renders_per_pass)):
            b, n = chunk[:, 0], chunk[:, 1]
            features_bn = cut.features[b, n]
            delta = features_bn * removed[b, n].to(features_bn.dtype)[:, :, None, None]
            edited = Cut(fused.features[b] - delta, {k: v[b] for k, v in fused.carry.items()})
            ablated[b, n] = generator.tail(edited, layer).float().clamp(-1, 1)
    return x_inv, ablated


def difference_maps(x_inv: torch.Tensor, ablated: torch.Tensor,
                    perceptual: VGGPerceptual | None = None) -> torch.Tensor:
    """``D_n = |x_inv - x'_n|``: ``[B, N, H, W]``, the channel mean of the absolute difference (in
    [0, 2]), or, given ``perceptual``, VGG16's feature distance upsampled to the image size."""
    if ablated.dim() != 5 or ablated.shape[0] != x_inv.shape[0] or \
            ablated.shape[2:] != x_inv.shape[1:]:
        raise ValueError(f"ablated renders [B, N, 3, H, W] {list(ablated.shape)} do not match "
                         f"x_inv [B, 3, H, W] {list(x_inv.shape)}")
    if perceptual is None:
        return (ablated - x_inv[:, None]).abs().mean(dim=2)
    batch, codes = ablated.shape[:2]
    reference = x_inv[:, None].expand_as(ablated).flatten(0, 1)
    with torch.no_grad():
        distance = perceptual.to(x_inv.device).distance_map(ablated.flatten(0, 1), reference)
    same = (ablated == x_inv[:, None]).flatten(2).all(dim=2)
    return distance.reshape(batch, codes, *x_inv.shape[-2:]).masked_fill(same[..., None, None], 0)


def binarize(maps: torch.Tensor, method: str = "otsu",
             min_difference: float = 1 / 255) -> torch.Tensor:
    """Binary maps (bool, same shape) from difference maps ``[..., H, W]``.

    ``otsu`` uses scikit-image's Otsu threshold of each map (a constant map is all changed or
    all unchanged); pixels must also exceed ``min_difference`` under every method.
    """
    kind, value = parse_binarization(method)
    flat = maps.detach().float().cpu().reshape(-1, maps.shape[-2] * maps.shape[-1]).numpy()
    thresholds = np.empty(len(flat), dtype=np.float64)
    for i, values in enumerate(flat):
        if kind == "fixed":
            thresholds[i] = value
        elif kind == "quantile":
            thresholds[i] = np.quantile(values, value)
        elif values.max() > values.min():
            thresholds[i] = threshold_otsu(values)
        else:
            thresholds[i] = -np.inf
    above = flat >= thresholds[:, None] if kind == "quantile" else flat > thresholds[:, None]
    binary = above & (flat > min_difference)
    return torch.from_numpy(binary).reshape(maps.shape)


def check_label_maps(labels: torch.Tensor, classes: int, names: list[str] | None = None) -> None:
    """Label maps ``[B, H, W]`` hold class indices ``0..classes-1`` or ``IGNORE``; each map needs
    at least one labelled pixel."""
    if labels.dim() != 3:
        raise InputError(f"label maps must be [B, H, W], got {list(labels.shape)}")
    names = names or [f"image {i}" for i in range(labels.shape[0])]
    for name, label_map in zip(names, labels, strict=True):
        bad = label_map[(label_map < 0) | ((label_map >= classes) & (label_map != IGNORE))]
        if bad.numel():
            raise InputError(f"label map of {name} holds value {int(bad[0])}, but the vocabulary "
                             f"has {classes} classes (0..{classes - 1}; {IGNORE} = unlabelled)")
        if not bool((label_map < classes).any()):
            raise InputError(f"label map of {name} is empty: no pixel has a class "
                             f"({IGNORE} = unlabelled)")


def iou_with_classes(binary: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """IoU ``[B, N, K]`` of each binary map ``[B, N, H, W]`` with each class mask of its image's
    label map ``[B, H, W]``; 0 where both are empty. ``IGNORE`` pixels belong to no class."""
    if binary.shape[0] != labels.shape[0] or binary.shape[-2:] != labels.shape[-2:]:
        raise InputError(f"binary maps {list(binary.shape)} and label maps "
                         f"{list(labels.shape)} differ in batch or size")
    valid = (labels >= 0) & (labels < classes)
    onehot = F.one_hot(torch.where(valid, labels, 0).long(), classes) * valid[..., None]
    changed = binary.flatten(2).double()  # [B, N, P]; doubles count pixels exactly
    masks = onehot.flatten(1, 2).double()  # [B, P, K]
    intersection = torch.bmm(changed, masks)
    union = changed.sum(dim=2)[..., None] + masks.sum(dim=1)[:, None, :] - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    return iou.float()


def assign_classes(iou: torch.Tensor, min_iou: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Each code's class (the best IoU; ties go to the lower class index) and that IoU, ``[B, N]``.

    A best IoU below ``min_iou``, or of zero, leaves the code ``UNASSIGNED`` (-1).
    """
    best, classes = iou.max(dim=-1)
    unassigned = (best < min_iou) | (best <= 0)
    return classes.masked_fill(unassigned, UNASSIGNED), best


def code_ranks(differences: torch.Tensor) -> torch.Tensor:
    """Rank of each code within its image by mean difference, ``[B, N]``: 1 changes the image
    most (ties keep code order). Codes are exchangeable across images; ranks are comparable."""
    order = torch.argsort(-differences.flatten(2).double().mean(dim=2), dim=1, stable=True)
    return torch.argsort(order, dim=1) + 1


# -- the result ---------------------------------------------------------------------------------
@dataclass
class AttributionResult:
    """Attribution of the N codes of B images to K classes (tensors on the CPU).

    ``assigned`` holds class indices or ``UNASSIGNED``; ``assigned_iou`` the best IoU even when it
    was too low to assign. ``reconstructions`` are ``x_inv`` as re-rendered from the codes.
    """

    names: list[str]
    vocabulary: Vocabulary
    settings: AttributionSettings
    segmentation_source: str
    layer: Layer
    fusion: str
    reconstructions: torch.Tensor  # [B, 3, H, W] in [-1, 1]
    segmentation: torch.Tensor  # [B, H, W] int64
    differences: torch.Tensor  # [B, N, H, W] float32
    binary: torch.Tensor  # [B, N, H, W] bool
    iou: torch.Tensor  # [B, N, K]
    assigned: torch.Tensor  # [B, N] int64
    assigned_iou: torch.Tensor  # [B, N]
    zeroed_fraction: torch.Tensor  # [B, N]: fraction of alpha_n's entries the ablation zeroed
    ranks: torch.Tensor  # [B, N]
    targets: torch.Tensor | None = None  # [B, 3, H, W] when known
    reproduction_error: torch.Tensor | None = None  # [B]: mean |x_inv - saved x_inv|, 8-bit levels
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        batch, codes = self.assigned.shape
        expected = {"differences": (batch, codes), "binary": (batch, codes),
                    "iou": (batch, codes), "assigned_iou": (batch, codes),
                    "zeroed_fraction": (batch, codes), "ranks": (batch, codes)}
        for key, shape in expected.items():
            if tuple(getattr(self, key).shape[:2]) != shape:
                raise ValueError(f"{key} {list(getattr(self, key).shape)} does not start with "
                                 f"[B, N] = {list(shape)}")
        if self.iou.shape[2] != len(self.vocabulary) or len(self.names) != batch:
            raise ValueError("iou, vocabulary and names disagree")

    @property
    def batch(self) -> int:
        return self.assigned.shape[0]

    @property
    def codes(self) -> int:
        return self.assigned.shape[1]

    def class_name(self, index: int) -> str:
        return "unassigned" if index == UNASSIGNED else self.vocabulary.names[index]

    def records(self) -> list[dict[str, Any]]:
        """The tidy table: one row per (image, code)."""
        pixels = self.binary.shape[-1] * self.binary.shape[-2]
        changed = self.binary.flatten(2).sum(dim=2) / pixels
        mean_difference = self.differences.flatten(2).mean(dim=2)
        rows = []
        for b, name in enumerate(self.names):
            for n in range(self.codes):
                rows.append({
                    "image": name, "code": n, "rank": int(self.ranks[b, n]),
                    "class": self.class_name(int(self.assigned[b, n])),
                    "iou": round(float(self.assigned_iou[b, n]), 6),
                    "alpha_zeroed_fraction": round(float(self.zeroed_fraction[b, n]), 6),
                    "changed_fraction": round(float(changed[b, n]), 6),
                    "mean_difference": round(float(mean_difference[b, n]), 6),
                })
        return rows

    def aggregate(self) -> AttributionAggregate:
        """The counts and sums every table and summary figure is made from."""
        aggregate = AttributionAggregate.empty(self.vocabulary, self.codes)
        aggregate.add(self)
        return aggregate

    def class_rows(self) -> list[dict[str, Any]]:
        return self.aggregate().class_rows()

    def class_summary(self) -> pd.DataFrame:
        return self.aggregate().class_summary()

    def rank_class_counts(self) -> np.ndarray:
        return self.aggregate().rank_class

    def mean_iou_by_rank(self) -> np.ndarray:
        return self.aggregate().mean_iou_by_rank()

    def summary(self) -> dict[str, Any]:
        return self.aggregate().summary()


@dataclass
class AttributionAggregate:
    """Counts and sums over any number of attributed images, added part by part, so tables and
    summary figures never need every image's maps in memory (and shards merge by adding)."""

    vocabulary: Vocabulary
    codes: int
    images: int
    rank_class: np.ndarray  # [N, K + 1]: how often the code of rank r+1 went to class k
    iou_by_rank: np.ndarray  # [N, K]: summed IoU of the code at each rank with each class
    class_codes: np.ndarray  # [K + 1]: codes assigned to each class (last: unassigned)
    class_images_with_codes: np.ndarray  # [K + 1]
    class_images_present: np.ndarray  # [K]: images whose segmentation holds the class
    class_iou: np.ndarray  # [K]: summed best IoU of the codes assigned to each class
    zeroed_codes: int = 0  # codes with at least one alpha entry zeroed
    seconds: float = 0.0
    reproduction_error_max: float | None = None

    @classmethod
    def empty(cls, vocabulary: Vocabulary, codes: int) -> AttributionAggregate:
        k = len(vocabulary)
        return cls(vocabulary, codes, 0, np.zeros((codes, k + 1), np.int64),
                   np.zeros((codes, k)), np.zeros(k + 1, np.int64), np.zeros(k + 1, np.int64),
                   np.zeros(k, np.int64), np.zeros(k))

    def add(self, result: AttributionResult) -> None:
        if result.codes != self.codes or len(result.vocabulary) != len(self.vocabulary):
            raise ValueError("an attribution part with other codes or classes")
        k = len(self.vocabulary)
        assigned = result.assigned.numpy()
        column = np.where(assigned < 0, k, assigned)  # UNASSIGNED -> the last column
        np.add.at(self.rank_class, (result.ranks.numpy() - 1, column), 1)
        for b in range(result.batch):
            self.iou_by_rank[result.ranks[b].numpy() - 1] += result.iou[b].double().numpy()
            self.class_images_with_codes[np.unique(column[b])] += 1
            labels = result.segmentation[b]
            present = torch.bincount(labels[labels < k].flatten(), minlength=k) > 0
            self.class_images_present += present.numpy()
        np.add.at(self.class_codes, column.flatten(), 1)
        hits = assigned >= 0
        np.add.at(self.class_iou, assigned[hits], result.assigned_iou.double().numpy()[hits])
        self.zeroed_codes += int((result.zeroed_fraction > 0).sum())
        self.images += result.batch
        self.seconds += result.seconds
        if result.reproduction_error is not None and result.batch:
            worst = float(result.reproduction_error.max())
            self.reproduction_error_max = max(worst, self.reproduction_error_max or 0.0)

    def merge(self, other: AttributionAggregate) -> None:
        for name in ("rank_class", "iou_by_rank", "class_codes", "class_images_with_codes",
                     "class_images_present", "class_iou"):
            getattr(self, name).__iadd__(getattr(other, name))
        self.images += other.images
        self.zeroed_codes += other.zeroed_codes
        self.seconds += other.seconds
        if other.reproduction_error_max is not None:
            self.reproduction_error_max = max(other.reproduction_error_max,
                                              self.reproduction_error_max or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"codes": self.codes, "images": self.images,
                "rank_class": self.rank_class.tolist(), "iou_by_rank": self.iou_by_rank.tolist(),
                "class_codes": self.class_codes.tolist(),
                "class_images_with_codes": self.class_images_with_codes.tolist(),
                "class_images_present": self.class_images_present.tolist(),
                "class_iou": self.class_iou.tolist(), "zeroed_codes": self.zeroed_codes,
                "seconds": self.seconds, "reproduction_error_max": self.reproduction_error_max}

    @classmethod
    def from_dict(cls, vocabulary: Vocabulary, data: dict[str, Any]) -> AttributionAggregate:
        arrays = {name: np.asarray(data[name], dtype=dtype) for name, dtype in (
            ("rank_class", np.int64), ("iou_by_rank", np.float64), ("class_codes", np.int64),
            ("class_images_with_codes", np.int64), ("class_images_present", np.int64),
            ("class_iou", np.float64))}
        return cls(vocabulary, int(data["codes"]), int(data["images"]), **arrays,
                   zeroed_codes=int(data["zeroed_codes"]), seconds=float(data["seconds"]),
                   reproduction_error_max=data.get("reproduction_error_max"))

    @property
    def batch(self) -> int:
        return self.images

    def mean_iou_by_rank(self) -> np.ndarray:
        """``[N, K]``: mean IoU with each class of the code at each rank, over images."""
        return self.iou_by_rank / max(1, self.images)

    def shown_classes(self) -> list[int]:
        """Classes assigned to some code, or present in some segmentation."""
        k = len(self.vocabulary)
        return [c for c in range(k) if self.class_codes[c] or self.class_images_present[c]]

    def class_summary(self) -> pd.DataFrame:
        """:meth:`class_rows` as a table, one row per class, indexed by class name."""
        import pandas as pd

        return pd.DataFrame(self.class_rows()).set_index("class")

    def class_rows(self) -> list[dict[str, Any]]:
        """Per class present in any segmentation or assigned to any code: how many codes attach
        to it, in how many images, their mean IoU, and in how many images the class appears."""
        rows = []
        for c in self.shown_classes():
            codes = int(self.class_codes[c])
            rows.append({"class": self.vocabulary.names[c], "codes": codes,
                         "images_with_codes": int(self.class_images_with_codes[c]),
                         "images_present": int(self.class_images_present[c]),
                         "mean_iou": round(float(self.class_iou[c] / codes), 6) if codes
                         else None})
        rows.append({"class": "unassigned", "codes": int(self.class_codes[-1]),
                     "images_with_codes": int(self.class_images_with_codes[-1]),
                     "images_present": None, "mean_iou": None})
        return sorted(rows, key=lambda row: (row["class"] == "unassigned", -row["codes"]))

    def summary(self) -> dict[str, Any]:
        assigned = int(self.class_codes[:-1].sum())
        total = self.images * self.codes
        summary = {
            "images": self.images, "codes_per_image": self.codes,
            "codes_assigned": assigned, "codes_unassigned": int(self.class_codes[-1]),
            "assigned_fraction": assigned / total if total else 0.0,
            "mean_assigned_iou": float(self.class_iou.sum() / assigned) if assigned else None,
            "codes_with_zeroed_alpha": self.zeroed_codes,
            "classes": {row["class"]: row["codes"] for row in self.class_rows()
                        if row["codes"]},
            "seconds": self.seconds,
        }
        if self.reproduction_error_max is not None:
            summary["reproduction_error_max"] = self.reproduction_error_max
        return summary


# -- the whole procedure -----------------------------------------------------------------------
def attribute(generator: LayeredGenerator, inversion: InversionResult, *,
              segmenter: Segmenter | None = None, labels: torch.Tensor | None = None,
              vocabulary: Vocabulary | None = None, segment: str = "reconstruction",
              targets: torch.Tensor | None = None,
              settings: AttributionSettings | None = None,
              perceptual: VGGPerceptual | None = None, images_per_pass: int = 8,
              renders_per_pass: int = 64, progress: bool = True,
              segmentation_source: str | None = None, compile: bool = False
              ) -> AttributionResult:
    """Attribute every code of ``inversion`` to a class.

    The segmentation comes from ``segmenter`` (of the re-rendered ``x_inv``, or of ``targets``
    ``[B, 3, H, W]`` with ``segment="target"``) or from ``labels`` ``[B, H, W]`` with their
    ``vocabulary``. ``inversion.features``, when the inversion kept them, spare the head pass.
    A tuned inversion's images go one at a time, each through its own tuned generator.
    ``compile``: the untuned generator's head and tail under ``torch.compile``.
    """
    settings = settings or AttributionSettings()
    generator = generator.in_space(inversion.recipe.get("latent_space", "z"))
    check_compatible(generator, inversion)
    if (segmenter is None) == (labels is None):
        raise InputError("give exactly one of a segmenter or label maps")
    if segment not in SEGMENT_SOURCES:
        raise InputError(f"segment must be one of {', '.join(SEGMENT_SOURCES)}, got {segment!r}")
    if settings.difference == "perceptual" and perceptual is None:
        raise InputError("difference perceptual needs VGG16 weights (vgg_weights PATH)",
                         field="difference")
    batch, resolution = inversion.batch, generator.resolution
    if targets is not None and tuple(targets.shape) != (batch, 3, resolution, resolution):
        raise InputError(f"targets must be [{batch}, 3, {resolution}, {resolution}], "
                         f"got {list(targets.shape)}")
    if segmenter is not None and segment == "target" and targets is None:
        raise InputError("segmenting the targets needs the target images (the run has none: "
                         "it was made from observations); segment the reconstructions instead")
    if labels is not None:
        if vocabulary is None:
            raise InputError("label maps need the vocabulary that names their classes")
        if tuple(labels.shape) != (batch, resolution, resolution):
            raise InputError(f"label maps are {list(labels.shape)[1:]} but the generator makes "
                             f"{resolution}x{resolution} images (expected [{batch}, "
                             f"{resolution}, {resolution}])")
        check_label_maps(labels, len(vocabulary), inversion.names)
    started = time.perf_counter()
    device, layer = generator.device, inversion.layer
    rules = resolve_carry(generator, generator.layer(layer.name), inversion.carry)
    zeroed = ablation_mask(inversion.alphas, settings.threshold, settings.relative)
    x_inv, differences = [], []
    groups = image_groups(generator, inversion.adapters, batch, images_per_pass)
    fast = compiled(generator) if compile else generator
    for part, used in progress_bar(groups, desc="attributing", unit="pass", enabled=progress,
                                   leave=False, total=group_count(inversion.adapters, batch,
                                                                  images_per_pass)):
        used = fast if used is generator else used
        if inversion.features is not None:
            cut = inversion.features.apply(lambda t, part=part: t[part].to(device))
        else:
            with torch.no_grad(), frozen(used):
                cut = code_cuts(used, inversion.codes[part].to(device), layer)
        extras = {k: v[part].to(device) for k, v in inversion.extras.items()}
        rendered, ablated = ablated_renders(
            used, cut, inversion.alphas[part].to(device), zeroed[part].to(device),
            layer, inversion.fusion, renders_per_pass, rules, extras)
        differences.append(difference_maps(
            rendered, ablated, perceptual if settings.difference == "perceptual" else None).cpu())
        x_inv.append(rendered.cpu())
    reconstructions = torch.cat(x_inv)
    difference = torch.cat(differences).float()
    if labels is None:
        assert segmenter is not None
        vocabulary = segmenter.vocabulary
        segmented = reconstructions if segment == "reconstruction" else targets
        label_maps = segmenter.segment(segmented.to(segmenter.device)).cpu()
        check_label_maps(label_maps, len(vocabulary), inversion.names)
        source = segmentation_source or f"segmenter on the {segment}s"
    else:
        label_maps = labels.long().cpu()
        source = segmentation_source or "given label maps"
    assert vocabulary is not None
    binary = binarize(difference, settings.binarize, settings.min_difference)
    iou = iou_with_classes(binary, label_maps, len(vocabulary))
    assigned, assigned_iou = assign_classes(iou, settings.min_iou)
    saved = inversion.reconstructions.float()
    reproduction = ((reconstructions - saved).abs().flatten(1).mean(dim=1) * 127.5
                    if saved.shape == reconstructions.shape else None)
    return AttributionResult(
        names=list(inversion.names), vocabulary=vocabulary, settings=settings,
        segmentation_source=source, layer=layer, fusion=inversion.fusion,
        reconstructions=reconstructions, segmentation=label_maps, differences=difference,
        binary=binary, iou=iou, assigned=assigned, assigned_iou=assigned_iou,
        zeroed_fraction=zeroed.float().mean(dim=-1), ranks=code_ranks(difference),
        targets=targets.cpu() if targets is not None else None,
        reproduction_error=reproduction, seconds=time.perf_counter() - started)


def check_compatible(generator: LayeredGenerator, inversion: InversionResult) -> None:
    """The codes fit the generator: same z size, same composing layer with the same shape."""
    generator = generator.in_space(inversion.recipe.get("latent_space", "z"))
    if inversion.codes.shape[-1] != generator.z_dim:
        raise InputError(f"the run's codes are {inversion.codes.shape[-1]}-dimensional but the "
                         f"generator takes z of {generator.z_dim}: not the run's generator")
    try:
        layer = generator.layer(inversion.layer.name)
    except InputError:
        raise InputError(f"the run composes at layer {inversion.layer.name!r}, which this "
                         "generator does not have: not the run's generator") from None
    if layer.shape != inversion.layer.shape:
        raise InputError(f"layer {layer.name} is {'x'.join(map(str, layer.shape))} in this "
                         f"generator but {'x'.join(map(str, inversion.layer.shape))} in the run: "
                         "not the run's generator")


