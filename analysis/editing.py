"""Semantic edits of inverted images: move the codes along a direction and measure what changes.

- **All codes** (the official mGANprior edit): the same offset ``t * d`` is added to every code of
  the inversion, alphas and any extra latents fixed, for ``t`` in ``[-range, range]``.
- **One code at a time** (the multi-code edit): only code n moves, so the frames show which part
  of the image code n controls under the direction. A chosen subset works the same way.
- ``mode="absolute"`` (InterFaceGAN's ``linear_interpolate`` for Z and W codes): each moving code
  is placed at signed distance ``t`` from the boundary, ``z' = z + (t - z.d) d``. For W+ codes
  InterFaceGAN's offsets are relative, and so are ours: ``absolute`` acts as ``offset`` there.
- ``t`` runs from ``start`` to ``end`` (InterFaceGAN's start and end distances, -3 and 3 by
  default), or over ``[-range, range]``.

For every frame: the image, optionally its segmentation and class fractions (any segmenter). From
those, per edit: the target class's fraction against ``t`` (is it monotone?), how much every other
class changes (disentanglement), and which pixels change (``changed``: the largest
channel-mean absolute change over ``t``, in [-1, 1] units).

Shapes: frames ``[B, S, T, 3, H, W]`` (S code sets, T steps), fractions ``[B, S, T, K]``,
changed ``[B, S, H, W]``. The frame at ``t = 0`` renders the original codes exactly as the
inversion did (same batch, same ops), so it is the reconstruction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from analysis.directions import Direction
from inversion.composition import render, resolve_carry
from inversion.engine import InversionResult
from inversion.generators.base import LayeredGenerator, frozen
from inversion.tuning import group_count, image_groups
from mganprior.core.errors import InputError
from mganprior.core.progress import progress_bar
from mganprior.core.settings import option
from segmentation.vocabularies import Vocabulary

MODES = ("offset", "absolute")
MAX_STEPS = 1000  # frames of one edit; a sweep has no use for more
# A change of a class's share of the pixels below this (1% of the image) is within what a
# segmenter's boundary jitter moves between nearly equal frames: no trend is judged there.
EFFECT_NOISE = 0.01


@dataclass(frozen=True)
class EditSettings:
    steps: int = option("steps from start to end", default=7)
    range: float = option("symmetric sweep: t from -range to +range", default=3.0)
    mode: str = option("offset: codes + t d; absolute: Z/W codes at signed distance t from the "
                       "boundary (InterFaceGAN's linear_interpolate; W+ codes move by t d there "
                       "too)", MODES, default="offset")
    start: float | None = option("first t (with end; InterFaceGAN's start_distance); overrides "
                                 "range", default=None)
    end: float | None = option("last t (with start; InterFaceGAN's end_distance)", default=None)
    code_sets: str = option("code sets: all, each (one at a time), or indices joined by +",
                            default="all,each")
    change_threshold: float = option("a pixel changed when its channel-mean |difference| "
                                     "exceeds this", default=0.05)

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or \
                not 2 <= self.steps <= MAX_STEPS:
            raise InputError(f"steps must be an integer in [2, {MAX_STEPS}], got {self.steps}",
                             field="steps")
        if not 0 < self.range < float("inf"):
            raise InputError(f"range must be a finite number above 0, got {self.range}",
                             field="range")
        if (self.start is None) != (self.end is None):
            raise InputError(f"start and end must be given together, got start {self.start} "
                             f"and end {self.end}", field="start")
        if self.start is not None:
            for name, value in (("start", self.start), ("end", self.end)):
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise InputError(f"{name} must be a finite number, got {value!r}",
                                     field=name)
            if self.start == self.end:
                raise InputError(f"start and end must differ, got {self.start} for both",
                                 field="start")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}",
                             field="mode")
        if not 0 <= self.change_threshold < 2:
            raise InputError(f"change_threshold must be in [0, 2), got {self.change_threshold}",
                             field="change_threshold")

    def ts(self) -> torch.Tensor:
        """The steps from ``start`` to ``end`` (InterFaceGAN's ``linspace``), or symmetric
        around 0 for ``range`` (0 included when ``steps`` is odd)."""
        if self.start is not None:
            return torch.linspace(self.start, self.end, self.steps, dtype=torch.float64).float()
        return torch.linspace(-self.range, self.range, self.steps)

    def describe(self) -> str:
        """``7 steps in [-3, 3]``."""
        low, high = (self.start, self.end) if self.start is not None else (-self.range,
                                                                            self.range)
        return f"{self.steps} steps in [{low:g}, {high:g}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_code_sets(spec: str, codes: int) -> list[tuple[str, list[int]]]:
    """``all``, ``each`` and ``i+j+...`` subsets as (label, code indices)."""
    sets: list[tuple[str, list[int]]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "all":
            sets.append(("all", list(range(codes))))
        elif part == "each":
            sets.extend((f"code {n}", [n]) for n in range(codes))
        else:
            try:
                chosen = sorted({int(i) for i in part.split("+")})
            except ValueError:
                chosen = [-1]
            if not chosen or min(chosen) < 0 or max(chosen) >= codes:
                raise InputError(f"code_sets {part!r}: use all, each, or code indices "
                                 f"0..{codes - 1} joined by + (e.g. 0+3)", field="code_sets")
            sets.append(("codes " + "+".join(map(str, chosen)), chosen))
    if not sets:
        raise InputError("code_sets is empty; use all, each or indices such as 0+3",
                         field="code_sets")
    return sets


def direction_for_codes(direction: Direction, generator: LayeredGenerator,
                        latent_space: str) -> torch.Tensor:
    """The direction as a vector of the codes' space: the same space, or a W direction tiled
    over every layer of W+ codes (each layer's w moves by ``t * d``)."""
    size = generator.in_space(latent_space).z_dim
    vector = direction.tensor
    if direction.space == latent_space and vector.numel() == size:
        return vector
    if latent_space == "w+" and direction.space == "w" and size % vector.numel() == 0:
        return vector.repeat(size // vector.numel())
    raise InputError(f"direction {direction.name} lives in {direction.space} "
                     f"({vector.numel()} numbers) but the run's codes live in {latent_space} "
                     f"({size}); invert with --latent-space {direction.space}, or use a "
                     f"{latent_space} direction", field="direction")


def moved_codes(codes: torch.Tensor, vector: torch.Tensor, t: float, moving: torch.Tensor,
                mode: str = "offset") -> torch.Tensor:
    """Codes ``[B, N, Z]`` with the ``moving`` ones ``[N]`` (bool) moved along ``vector``."""
    vector = vector.to(codes)
    if mode == "offset":
        shift = t * vector.expand_as(codes)
    else:  # absolute: signed distance t from the hyperplane through the origin
        distance = (codes * vector).sum(dim=-1, keepdim=True)
        shift = (t - distance) * vector
    return codes + shift * moving.to(codes)[None, :, None]


@dataclass
class EditResult:
    """Edits of B inverted images under one direction (tensors on the CPU)."""

    names: list[str]
    direction: Direction
    settings: EditSettings
    code_sets: list[str]
    moving: torch.Tensor  # [S, N] bool
    ts: torch.Tensor  # [T]
    frames: torch.Tensor  # [B, S, T, 3, H, W] in [-1, 1]
    changed: torch.Tensor  # [B, S, H, W]: the largest channel-mean |x_t - x_0| over t
    vocabulary: Vocabulary | None = None
    fractions: torch.Tensor | None = None  # [B, S, T, K]
    segmentation_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def zero(self) -> int | None:
        """The step index of t = 0, when there is one."""
        hits = torch.nonzero(self.ts == 0).flatten()
        return int(hits[0]) if hits.numel() else None

    def changed_fraction(self) -> torch.Tensor:
        """``[B, S]``: the share of pixels that changed by more than the threshold."""
        return (self.changed > self.settings.change_threshold).flatten(2).float().mean(dim=2)

    def class_changes(self) -> torch.Tensor:
        """``[B, S, K]``: each class's fraction at the last step minus at the first."""
        if self.fractions is None:
            raise InputError("class changes need a segmentation of the frames")
        return self.fractions[:, :, -1] - self.fractions[:, :, 0]

    def monotone(self, target: int, tolerance: float = 0.01) -> torch.Tensor:
        """``[B, S]`` bool: the target class's fraction never moves against its overall trend
        by more than ``tolerance``."""
        if self.fractions is None:
            raise InputError("monotonicity needs a segmentation of the frames")
        curve = self.fractions[..., target]  # [B, S, T]
        trend = torch.sign(curve[..., -1] - curve[..., 0])[..., None]
        steps = (curve[..., 1:] - curve[..., :-1]) * trend
        return (steps >= -tolerance).all(dim=-1)

    def records(self) -> list[dict[str, Any]]:
        """The tidy table: one row per (image, code set, t, class) with a nonzero fraction
        somewhere in that edit (all classes when nothing was segmented: none)."""
        if self.fractions is None or self.vocabulary is None:
            return []
        rows = []
        present = (self.fractions > 0).flatten(0, 2).any(dim=0)
        for b, name in enumerate(self.names):
            for s, label in enumerate(self.code_sets):
                for i, t in enumerate(self.ts.tolist()):
                    for k in torch.nonzero(present).flatten().tolist():
                        rows.append({"image": name, "code_set": label, "t": round(t, 6),
                                     "class": self.vocabulary.names[k],
                                     "fraction": round(float(self.fractions[b, s, i, k]), 6)})
        return rows

    def summary(self, target: str | None = None) -> list[dict[str, Any]]:
        """Per (image, code set): changed pixels, and with a segmentation the target's change,
        whether it is monotone (None where the change is within :data:`EFFECT_NOISE`), and the
        largest change of any other class."""
        rows = []
        changed = self.changed_fraction()
        k = self.vocabulary.index(target) if target and self.vocabulary else None
        changes = self.class_changes() if self.fractions is not None else None
        for b, name in enumerate(self.names):
            for s, label in enumerate(self.code_sets):
                row: dict[str, Any] = {"image": name, "code_set": label,
                                       "changed_pixels": round(float(changed[b, s]), 6)}
                if changes is not None:
                    others = changes[b, s].abs().clone()
                    if k is not None:
                        row["target_change"] = round(float(changes[b, s, k]), 6)
                        row["target_monotone"] = (bool(self.monotone(k)[b, s])
                                                  if abs(float(changes[b, s, k])) > EFFECT_NOISE
                                                  else None)
                        others[k] = 0
                    row["largest_other_change"] = round(float(others.max()), 6)
                    row["largest_other_class"] = self.vocabulary.names[int(others.argmax())]
                rows.append(row)
        return rows


def check_frame_memory(images: int, code_sets: int, steps: int, resolution: int) -> None:
    """Refuse an edit whose frames (kept in fp32 on the CPU, with about as much again for their
    segmentation and changes) would not fit in memory."""
    from inversion.memory import check_fits

    check_fits(2 * images * code_sets * steps * 3 * resolution * resolution * 4,
               f"{images} images x {code_sets} code sets x {steps} steps of {resolution} px "
               "frames", "steps", "use fewer steps, code_sets (all) or images")


@torch.no_grad()
def edit(generator: LayeredGenerator, inversion: InversionResult, direction: Direction,
         settings: EditSettings | None = None, *, segmenter=None, progress: bool = True,
         segmentation_source: str | None = None) -> EditResult:
    """Render every code set of every image at every step, and segment the frames when a
    segmenter is given. A tuned inversion's images render through their own tuned generators."""
    settings = settings or EditSettings()
    space = inversion.recipe.get("latent_space", "z")
    generator = generator.in_space(space)
    layer = generator.layer(inversion.layer.name)
    vector = direction_for_codes(direction, generator, space)
    rules = resolve_carry(generator, layer, inversion.carry)
    sets = parse_code_sets(settings.code_sets, inversion.codes.shape[1])
    moving = torch.zeros(len(sets), inversion.codes.shape[1], dtype=torch.bool)
    for s, (_, indices) in enumerate(sets):
        moving[s, indices] = True
    device = generator.device
    codes, alphas = inversion.codes.to(device), inversion.alphas.to(device)
    extras = {k: v.to(device) for k, v in inversion.extras.items()} or None
    check_frame_memory(inversion.batch, len(sets), settings.steps, generator.resolution)
    ts = settings.ts()
    mode = "offset" if space == "w+" else settings.mode  # InterFaceGAN: W+ offsets are relative
    frames = torch.empty(inversion.batch, len(sets), len(ts), 3, generator.resolution,
                         generator.resolution)
    work = [(s, i) for s in range(len(sets)) for i in range(len(ts))]
    bar = progress_bar(total=len(work) * group_count(inversion.adapters, inversion.batch,
                                                    inversion.batch),
                       desc="editing", unit="frame", enabled=progress, leave=False)
    for part, used in image_groups(generator, inversion.adapters, inversion.batch,
                                   inversion.batch):
        with frozen(used):
            for s, i in work:
                edited = moved_codes(codes[part], vector, float(ts[i]), moving[s].to(device),
                                     mode)
                frames[part, s, i] = render(
                    used, edited, alphas[part], layer, inversion.fusion, rules,
                    {k: v[part] for k, v in extras.items()} if extras else None,
                ).float().clamp(-1, 1).cpu()
                bar.update()
    bar.close()
    reference = frames[:, :, int(ts.abs().argmin())]  # t = 0 (or the step nearest it)
    changed = (frames - reference[:, :, None]).abs().mean(dim=3).amax(dim=2)
    vocabulary = fractions = None
    if segmenter is not None:
        vocabulary = segmenter.vocabulary
        labels = segmenter.segment(frames.flatten(0, 2).to(segmenter.device)).cpu()
        onehot = torch.nn.functional.one_hot(labels.clamp(0, len(vocabulary) - 1),
                                             len(vocabulary))
        fractions = onehot.flatten(1, 2).float().mean(dim=1).reshape(
            *frames.shape[:3], len(vocabulary))
    return EditResult(list(inversion.names), direction, settings, [label for label, _ in sets],
                      moving, ts, frames, changed, vocabulary, fractions,
                      segmentation_source or ("segmenter on the frames" if segmenter else None))


def check_zero_frame(result: EditResult, reconstructions: torch.Tensor) -> float:
    """Largest mean |frame at t=0 - reconstruction| over images, in 8-bit levels (how well the
    edit's start reproduces the inversion)."""
    zero = result.zero
    if zero is None:
        return float("nan")
    start = result.frames[:, 0, zero]
    return float((start - reconstructions.float()).abs().flatten(1).mean(dim=1).max() * 127.5)
