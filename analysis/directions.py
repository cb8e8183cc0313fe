"""Semantic directions in a generator's latent space, and their files.

- **InterFaceGAN boundary files** (Shen et al. 2020): a ``.npy`` array of shape (1, d), float64,
  unit norm; named ``{gan}_{dataset}_{attribute}[_w]_boundary.npy`` (``_w``: the boundary lives in
  W, else in Z). :func:`load_boundary` checks size and space against the generator.
- **Trained boundaries**, as InterFaceGAN's ``train_boundary`` (:func:`train_boundary`): sample
  latents, score each with an attribute function, keep the top and bottom fraction (2% by
  default), split each side 70/30 on its own, fit ``SVC(kernel="linear")`` (scikit-learn), keep
  its unit normal and report held-out accuracy; optionally project out up to two other
  boundaries (conditioning).
- **SeFa** (Shen & Zhou 2021), closed form and data free (:func:`sefa_directions`): the
  eigenvectors of ``A^T A`` for ``A`` the weight of the layers acting on the latent, each output
  unit's weight vector normalised (genforce/sefa's ``factorize_weight``), sorted by eigenvalue
  (largest first); the eigenvalues are reported as importance.

Every direction is saved as the official ``.npy`` plus a JSON sidecar (source, generator sha256,
latent space, accuracy or eigenvalue): :class:`Direction`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from tokenize import TokenError
from typing import Any

import numpy as np
import torch

from inversion.generators.base import LayeredGenerator
from inversion.images import safe_name
from mganprior.core.errors import InputError
from mganprior.core.files import atomic_path
from mganprior.core.jsonio import write_json

SPACES = ("z", "w")
MIN_SAMPLES_PER_SIDE = 10  # fewer positives or negatives than this cannot fit a boundary


@dataclass
class Direction:
    """A unit vector in one latent space, with where it came from."""

    name: str
    vector: np.ndarray  # [d] float64, unit norm
    space: str  # "z" or "w"
    source: str  # "sefa", "interfacegan", "file"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a name is a file name, sanitised as image names are: "../../x" cannot leave --out
        self.name = safe_name(str(self.name))
        self.vector = np.asarray(self.vector, dtype=np.float64).reshape(-1)
        if self.space not in SPACES:
            raise InputError(f"space must be one of {', '.join(SPACES)}, got {self.space!r}",
                             field="space")

    @property
    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.vector).float()

    def save(self, directory: str | Path) -> Path:
        """``DIR/NAME.npy`` (shape (1, d), float64, unit norm) and ``DIR/NAME.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.npy"
        with atomic_path(path, ".npy") as tmp:
            np.save(tmp, self.vector.reshape(1, -1))
        write_json(path.with_suffix(".json"), {"name": self.name, "space": self.space,
                                               "source": self.source, "size": len(self.vector),
                                               **self.meta})
        return path


def latent_size(generator: LayeredGenerator, space: str) -> int:
    if space == "z":
        return int(getattr(generator, "mapping_z_dim", generator.z_dim))
    if "w" not in generator.latent_spaces:
        raise InputError(f"space w: a {generator.family} generator has no W space (its latent "
                         "is z)", field="space")
    return int(generator.w_dim)


def space_from_name(path: Path) -> str:
    """InterFaceGAN's naming convention: ``..._w_boundary.npy`` lives in W, others in Z."""
    return "w" if re.search(r"_w_boundary$", path.stem) else "z"


MAX_DIRECTION_SIZE = 1 << 20  # numbers: far above any latent space (W+ of 18 x 512 is 9216)


def read_boundary_array(path: Path) -> np.ndarray:
    """A boundary ``.npy`` as numbers ``(1, d)`` or ``(d,)``: the header is read and checked
    (dtype, shape, and the bytes it implies against the file's size) before the array is."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(handle, max_header_size=10000)
            offset = handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TokenError, MemoryError,
            RecursionError) as err:  # numpy parses the header as a Python literal
        reason = " ".join(str(err).split())[:120]
        raise InputError(f"direction {path} is not a .npy array ({reason})",
                         field="direction") from None
    if not isinstance(shape, tuple) or not all(isinstance(s, int) for s in shape):
        raise InputError(f"direction {path} declares shape {shape!r}", field="direction")
    size = math.prod(shape)
    if dtype.kind not in "fiu" or len(shape) not in (1, 2) or \
            (len(shape) == 2 and shape[0] != 1) or not 0 < size <= MAX_DIRECTION_SIZE:
        raise InputError(f"direction {path} holds a {dtype} array of shape {list(shape)}; a "
                         "boundary is (1, d) numbers", field="direction")
    if path.stat().st_size < offset + size * dtype.itemsize:
        raise InputError(f"direction {path} is truncated: its header declares {size} numbers",
                         field="direction")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"direction {path} is not a .npy array ({err})", field="direction") \
            from None


def load_boundary(path: str | Path, generator: LayeredGenerator, space: str | None = None,
                  notes: list[str] | None = None) -> Direction:
    """A boundary ``.npy`` checked against ``generator`` (size and space; a sidecar JSON's space
    wins over the file name's). A vector that is not unit-norm is normalised, with a note."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"direction {path} does not exist", field="direction")
    array = read_boundary_array(path)
    meta: dict[str, Any] = {}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            meta = {}
        if not isinstance(meta, dict):
            raise InputError(f"direction sidecar {sidecar} must hold a JSON object, got "
                             f"{type(meta).__name__}", field="direction")
    if meta.get("space") is not None and meta.get("space") not in SPACES:
        raise InputError(f"direction sidecar {sidecar}: space must be one of "
                         f"{', '.join(SPACES)}, got {meta.get('space')!r}", field="direction")
    space = space or meta.get("space") or space_from_name(path)
    size = latent_size(generator, space)
    vector = array.reshape(-1).astype(np.float64)
    if vector.size != size:
        raise InputError(f"direction {path} has {vector.size} numbers but the generator's "
                         f"{space} has {size}", field="direction")
    if not np.isfinite(vector).all() or np.abs(vector).max() > 1e150:
        raise InputError(f"direction {path} holds numbers that are not finite or too large to "
                         "normalise", field="direction")
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0:
        raise InputError(f"direction {path} is zero or not finite", field="direction")
    if abs(norm - 1) > 1e-4:
        vector = vector / norm
        if notes is not None:
            notes.append(f"direction {path.name} had norm {norm:.4g}; it was normalised")
    return Direction(path.stem, vector, space, meta.get("source", "file"),
                     {k: v for k, v in meta.items() if k not in ("name", "space", "source")}
                     | {"file": str(path)})


# -- SeFa -----------------------------------------------------------------------------------------
def sefa(weight: torch.Tensor, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors ``[count, d]`` (rows, unit norm) and eigenvalues ``[count]`` of ``A^T A``,
    largest first, for ``A`` = ``weight`` ``[out, d]`` with each output unit's row scaled to unit
    norm, as genforce/sefa's ``factorize_weight`` does (its ``[d, out]`` weight normalised over
    axis 0). The eigenvalues therefore sum to the number of output units. The released code keeps
    ``np.linalg.eig``'s unsorted order; this sorts by eigenvalue."""
    a = weight.detach().double().cpu().numpy()
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    a = a / np.where(norms > 0, norms, 1.0)  # an output unit with no weight stays 0
    values, vectors = np.linalg.eigh(a.T @ a)  # ascending; A^T A is symmetric
    order = np.argsort(values)[::-1][:count]
    return vectors[:, order].T, values[order]


def sefa_directions(generator: LayeredGenerator, count: int = 5, layers: str = "all",
                    generator_sha256: str | None = None) -> list[Direction]:
    """The ``count`` most important SeFa directions of ``generator``."""
    weight, space = generator.latent_weight(layers)
    if isinstance(count, bool) or not isinstance(count, int) or \
            not 1 <= count <= weight.shape[1]:
        raise InputError(f"count must be an integer in [1, {weight.shape[1]}] (the size of the "
                         f"{space} space SeFa factorises), got {count}", field="count")
    vectors, values = sefa(weight, count)
    return [Direction(f"sefa_{i:02d}", vector, space, "sefa",
                      {"eigenvalue": float(value), "rank": i, "layers": layers,
                       "generator_sha256": generator_sha256})
            for i, (vector, value) in enumerate(zip(vectors, values, strict=True))]


# -- InterFaceGAN ---------------------------------------------------------------------------------
def project_out(direction: np.ndarray, conditions: Sequence[np.ndarray]) -> np.ndarray:
    """``direction`` with its components along the span of ``conditions`` removed, unit norm
    (InterFaceGAN's conditional manipulation; up to two conditions)."""
    if len(conditions) > 2:
        raise InputError(f"condition: at most two boundaries, got {len(conditions)}",
                         field="condition")
    vector = np.asarray(direction, dtype=np.float64).reshape(-1)
    if conditions:
        basis, _ = np.linalg.qr(np.stack([np.asarray(c, dtype=np.float64).reshape(-1)
                                          for c in conditions], axis=1))
        vector = vector - basis @ (basis.T @ vector)
    norm = np.linalg.norm(vector)
    if norm < 1e-8:
        raise InputError("condition: the boundary lies in the span of its conditions",
                         field="condition")
    return vector / norm


@dataclass
class BoundaryFit:
    normal: np.ndarray  # [d], unit norm
    accuracy: float  # on the held-out part of the chosen samples
    samples: int  # latents scored (valid ones)
    chosen: int  # positives + negatives kept
    # indices into the latents given: each side's training and validation samples
    train_positive: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    validation_positive: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    train_negative: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    validation_negative: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def train_boundary(latents: np.ndarray, scores: np.ndarray, fraction: float = 0.02,
                   split_ratio: float = 0.7, seed: int = 0,
                   conditions: Sequence[np.ndarray] = (),
                   invalid_value: float | None = None) -> BoundaryFit:
    """InterFaceGAN's ``train_boundary`` on ``latents`` ``[K, d]`` and ``scores`` ``[K]``: the
    top and bottom ``int(K * fraction)`` samples by score are the positives and negatives; each
    side is shuffled (seeded) and split on its own, ``int(chosen * split_ratio)`` for training, so
    training and validation are balanced; ``sklearn.svm.SVC(kernel="linear")`` (C = 1) is fit
    and its unit normal, pointing toward high scores, is the boundary (the intercept is dropped).
    Samples whose score equals ``invalid_value`` are left out first."""
    from sklearn.svm import SVC

    latents = np.asarray(latents, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if latents.ndim != 2 or len(latents) != len(scores):
        raise InputError(f"latents [K, d] and scores [K] do not match: {list(latents.shape)} "
                         f"vs {list(scores.shape)}", field="samples")
    if not 0 < fraction <= 0.5:
        raise InputError(f"fraction must be in (0, 0.5], got {fraction}", field="fraction")
    if not 0 < split_ratio < 1:
        raise InputError(f"split_ratio must be in (0, 1), got {split_ratio}", field="split_ratio")
    valid = np.flatnonzero(scores != invalid_value) if invalid_value is not None \
        else np.arange(len(scores))
    side = min(int(len(valid) * fraction), len(valid) // 2)
    if side < MIN_SAMPLES_PER_SIDE:
        raise InputError(f"samples: {len(valid)} samples at fraction {fraction:g} give {side} "
                         f"per side; a boundary needs at least {MIN_SAMPLES_PER_SIDE} "
                         f"({math.ceil(MIN_SAMPLES_PER_SIDE / fraction)} samples)",
                         field="samples")
    if np.ptp(scores[valid]) == 0:
        raise InputError("samples: every sample has the same score; the attribute does not vary",
                         field="samples")
    order = valid[np.argsort(scores[valid], kind="stable")[::-1]]  # highest score first
    rng = np.random.default_rng(seed)
    train_num = int(side * split_ratio)
    positive, negative = rng.permutation(order[:side]), rng.permutation(order[-side:])
    train = np.concatenate([positive[:train_num], negative[:train_num]])
    held = np.concatenate([positive[train_num:], negative[train_num:]])
    labels = np.concatenate([np.ones(train_num, int), np.zeros(train_num, int)])
    held_labels = np.concatenate([np.ones(side - train_num, int),
                                  np.zeros(side - train_num, int)])
    classifier = SVC(kernel="linear").fit(latents[train], labels)
    accuracy = float(classifier.score(latents[held], held_labels))
    normal = classifier.coef_.reshape(-1)
    normal = project_out(normal, conditions) if conditions else normal / np.linalg.norm(normal)
    return BoundaryFit(normal, accuracy, len(valid), 2 * side,
                       positive[:train_num], positive[train_num:],
                       negative[:train_num], negative[train_num:])


# -- attribute functions --------------------------------------------------------------------------
Attribute = Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] -> scores [B]


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean luma in [-1, 1]."""
    weights = images.new_tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1).flatten(1).mean(dim=1)


def class_fraction(segmenter, name: str) -> Attribute:
    """The fraction of pixels the segmenter gives class ``name``."""
    index = segmenter.vocabulary.index(name)

    def score(images: torch.Tensor) -> torch.Tensor:
        labels = segmenter.segment(images.clamp(-1, 1).to(segmenter.device))
        return (labels == index).flatten(1).float().mean(dim=1)
    return score


def parse_attribute(text: str, segmenter=None) -> Attribute:
    """``brightness`` or ``class:NAME`` (needs a segmenter)."""
    if text == "brightness":
        return brightness
    kind, _, name = text.partition(":")
    if kind == "class" and name:
        if segmenter is None:
            raise InputError(f"attribute {text} needs a segmenter (segmenter or "
                             "segmenter_dir)", field="attribute")
        return class_fraction(segmenter, name)
    raise InputError(f"attribute {text!r} is unknown; attributes: brightness, class:NAME",
                     field="attribute")


def check_sample_memory(count: int, size: int) -> None:
    """Refuse, before sampling, more latents than memory holds (they are kept for the fit)."""
    from inversion.memory import check_fits

    # float64 latents and scores, and the fit's copy
    check_fits(count * (size + 1) * 8 * 2, f"{count} latents of {size} numbers", "samples",
               "use fewer samples")


@torch.no_grad()
def sample_and_score(generator: LayeredGenerator, attribute: Attribute, count: int,
                     space: str = "z", seed: int = 0, batch: int = 64
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` seeded latents in ``space`` ``[K, d]`` and their attribute scores ``[K]``."""
    if count < 1:
        raise InputError(f"samples must be at least 1, got {count}", field="samples")
    generator = generator.in_space(space)
    check_sample_memory(count, generator.z_dim)
    rng = torch.Generator().manual_seed(seed)
    latents, scores = [], []
    for start in range(0, count, batch):
        z = generator.initial_latents(min(batch, count - start), rng)
        latents.append(z)
        scores.append(attribute(generator(z.to(generator.device)).clamp(-1, 1)).float().cpu())
    return torch.cat(latents).double().numpy(), torch.cat(scores).double().numpy()


def interfacegan_direction(generator: LayeredGenerator, attribute: Attribute, name: str, *,
                           samples: int = 5000, fraction: float = 0.02, space: str = "z",
                           seed: int = 0, conditions: Sequence[Direction] = (),
                           generator_sha256: str | None = None) -> Direction:
    """Sample, score, fit: a trained boundary as a :class:`Direction`."""
    latent_size(generator, space)
    for condition in conditions:
        if condition.space != space or condition.vector.size != latent_size(generator, space):
            raise InputError(f"condition {condition.name} lives in {condition.space} with "
                             f"{condition.vector.size} numbers, not in this {space}",
                             field="condition")
    latents, scores = sample_and_score(generator, attribute, samples, space, seed)
    fit = train_boundary(latents, scores, fraction, seed=seed,
                         conditions=[c.vector for c in conditions])
    return Direction(name, fit.normal, space, "interfacegan",
                     {"accuracy": fit.accuracy, "samples": fit.samples, "chosen": fit.chosen,
                      "fraction": fraction, "seed": seed, "generator_sha256": generator_sha256,
                      "conditions": [c.name for c in conditions],
                      "score_mean": float(scores.mean()), "score_std": float(scores.std())})
