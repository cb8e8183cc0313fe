"""Tuning the generator around a multi-code solution: pivotal tuning and DGP's schedule.

After the codes and alphas are found they are held fixed (the *pivot*) and the generator's
weights change so that ``x_inv`` meets the observation: the task's loss (so every task benefits)
plus the locality regulariser of pivotal tuning (Roich et al. 2022), which keeps the outputs of
codes moved from the pivot toward random latents equal to the untuned generator's. The part that
changes is the tail after the cut, the head, the whole generator, or the whole generator unfrozen
from shallow to deep in equal stages (``progressive``: the schedule of Pan et al.'s deep
generative prior, 2020, without its discriminator loss).

Every image gets its own change: low-rank adapters ``W + B A`` per weight (``rank`` r), or a
full weight delta (``rank`` 0). The B images of a batch tune together in one pass: the forward
runs under ``torch.func.vmap`` over the per-image changes, with the shared weights unbatched.
Adam is element-wise and the loss a sum over images, so each image follows the trajectory it
would follow alone (batched equals looped within fp32 rounding, tested).

Which weights belong to a part is measured, not listed per family: the parameters that receive
a gradient from the tail (``tail``), from the head at the cut (``head``), or from the head at each
layer in turn (the stages of ``progressive``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from inversion.composition import code_cuts, fuse, latent_carry, render
from inversion.generators.base import Cut, Layer, LayeredGenerator, evaluating, frozen
from inversion.losses import LPIPSDistance, VGGPerceptual, reconstruction_loss
from inversion.options import TuneSettings
from mganprior.core.errors import InputError
from mganprior.core.progress import progress_bar

LOCALITY_SEED = 0x10CA1  # mixed into an image's seed for its locality draws
CHANGE_SAMPLES = 4  # random samples whose change after tuning the record reports
CHANGE_SEED = 20260  # their seed, the same for every image and run
_PREFIX = "generator."


def _delta(tensors: Mapping[str, torch.Tensor], name: str, shape: torch.Size) -> torch.Tensor:
    """The change of parameter ``name``: its low-rank product or its full delta."""
    if f"{name}.delta" in tensors:
        return tensors[f"{name}.delta"]
    return (tensors[f"{name}.b"] @ tensors[f"{name}.a"]).reshape(shape)


@dataclass
class Adapters:
    """One image's change to the generator: ``NAME.a`` ``[r, fan_in]`` and ``NAME.b``
    ``[out, r]`` per adapted weight (low rank), or ``NAME.delta`` (full)."""

    rank: int
    part: str
    tensors: dict[str, torch.Tensor]

    @property
    def names(self) -> list[str]:
        return sorted({key.rsplit(".", 1)[0] for key in self.tensors})

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def to(self, device: torch.device | str) -> Adapters:
        return Adapters(self.rank, self.part, {k: v.to(device) for k, v in self.tensors.items()})

    def apply(self, generator: LayeredGenerator) -> LayeredGenerator:
        """A copy of ``generator`` whose weights carry this change (the original is kept)."""
        params = dict(generator.named_parameters())
        unknown = [name for name in self.names if name not in params]
        if unknown:
            raise InputError(f"the tuning change names {', '.join(unknown[:3])}, which this "
                             f"{generator.family} generator does not have: not the run's "
                             "generator")
        tuned = copy.deepcopy(generator)
        params = dict(tuned.named_parameters())
        with torch.no_grad():
            for name in self.names:
                param = params[name]
                change = _delta(self.tensors, name, param.shape).to(param.device, param.dtype)
                param.copy_(param + change)
        return tuned

    @staticmethod
    def check_layout(shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str],
                     rank: int, expected: Mapping[str, torch.Size], source: str) -> None:
        """A stored change's names, shapes and dtypes (read from its header, before any tensor
        is loaded) against the parameters it must adapt, ``expected`` (name: shape)."""
        names = set()
        for key, shape in shapes.items():
            name, _, kind = key.rpartition(".")
            if name not in expected or kind not in ("a", "b", "delta") or \
                    (kind == "delta") != (rank == 0):
                raise InputError(f"{source}: {key} is not a rank-{rank} adapter of a weight "
                                 "this tuning changes")
            full = expected[name]
            want = {"delta": tuple(full), "b": (full[0], rank),
                    "a": (rank, math.prod(full[1:]))}[kind]
            if tuple(shape) != want:
                raise InputError(f"{source}: {key} is {list(shape)}, expected {list(want)} for "
                                 f"{name} at rank {rank}")
            if dtypes[key] not in ("F32", "F16", "BF16"):
                raise InputError(f"{source}: {key} is {dtypes[key]}, not floating point")
            names.add(name)
        missing = sorted(set(expected) - names) or sorted(
            f"{n}.{k}" for n in names for k in "ab" if rank and f"{n}.{k}" not in shapes)
        if missing:
            raise InputError(f"{source}: the change of {', '.join(missing[:3])} is missing")

    @classmethod
    def checked(cls, tensors: Mapping[str, torch.Tensor], rank: int, part: str,
                source: str) -> Adapters:
        """Adapters from loaded tensors whose layout ``check_layout`` passed: finite, float32."""
        for key, value in tensors.items():
            if not torch.isfinite(value).all():
                raise InputError(f"{source}: {key} holds non-finite numbers")
        return cls(rank, part, {k: v.float() for k, v in tensors.items()})


def adapted_shapes(generator: LayeredGenerator, layer: Layer, part: str,
                   rank: int) -> dict[str, torch.Size]:
    """The parameters a tuning of ``part`` at ``rank`` changes, with their shapes."""
    params = dict(generator.named_parameters())
    names = _adapted(params, [n for stage in tuning_stages(generator, layer, part)
                              for n in stage], rank)
    return {name: params[name].shape for name in names}


@dataclass
class TuneResult:
    """What tuning produced for B images: each image's adapters, its tuned ``x_inv`` (rendered
    by ``Adapters.apply``, exactly what a reload renders), and per-image facts."""

    adapters: list[Adapters]
    reconstructions: torch.Tensor  # [B, 3, H, W], unclamped
    facts: list[dict[str, Any]]
    failures: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


class _Wrapped(nn.Module):
    """Lets ``functional_call`` swap the generator's weights around any of its methods."""

    def __init__(self, generator: LayeredGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        return fn(self.generator, *args)


def parameters_reached(generator: LayeredGenerator, fn: Callable[[], torch.Tensor]
                       ) -> list[str]:
    """Names of the parameters ``fn()``'s output depends on (one backward pass; the
    parameters' flags and gradients are restored)."""
    params = dict(generator.named_parameters())
    kept = {name: (p.requires_grad, p.grad) for name, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    try:
        # identity hooks: a memory plan measuring around this counts the tuning, not the probe
        with evaluating(generator), torch.autograd.graph.saved_tensors_hooks(_same, _same):
            out = fn().float().sum()
            if not out.requires_grad:
                return []
            out.backward()
        return [name for name, p in params.items() if p.grad is not None]
    finally:
        for name, p in params.items():
            p.requires_grad_(kept[name][0])
            p.grad = kept[name][1]


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def tuning_stages(generator: LayeredGenerator, layer: Layer, part: str) -> list[list[str]]:
    """The parameters each stage adds (one stage but for ``progressive``), measured."""
    z = generator.initial_latents(1, torch.Generator().manual_seed(0)).to(generator.device)

    def head_at(at: Layer) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            reached = generator.head(z, at)
            return reached.features.float().sum() + sum(
                (t.float().sum() for t in reached.carry.values()), torch.zeros(()))
        return run

    if part == "tail":
        with torch.no_grad(), evaluating(generator):
            cut = generator.head(z, layer)
        stages = [parameters_reached(generator, lambda: generator.tail(cut, layer))]
    elif part == "head":
        stages = [parameters_reached(generator, head_at(layer))]
    elif part == "all":
        stages = [[name for name, _ in generator.named_parameters()]]
    else:
        stages, seen = [], set()
        for at in generator.layers[1:]:
            new = [n for n in parameters_reached(generator, head_at(at)) if n not in seen]
            seen.update(new)
            stages.append(new)
        stages.append([name for name, _ in generator.named_parameters() if name not in seen])
    stages = [stage for stage in stages if stage]
    if not stages:
        raise InputError(f"tune_part {part}: no weight of this {generator.family} generator "
                         f"takes part there at cut {layer.name}", field="tune_part")
    return stages


def _adapted(params: Mapping[str, torch.Tensor], names: list[str], rank: int) -> list[str]:
    """The parameters that get a change: every one at rank 0, weights (2-D and up) otherwise."""
    return [n for n in names if params[n].is_floating_point() and (rank == 0 or
                                                                   params[n].dim() >= 2)]


def initial_adapters(params: Mapping[str, torch.Tensor], names: list[str], rank: int,
                     seeds: list[int]) -> dict[str, torch.Tensor]:
    """Per-image starting values ``[B, ...]``: zero deltas, or LoRA's start (``b`` zero, ``a``
    drawn with std 1/sqrt(fan_in) from each image's seed), so every change starts at 0."""
    batch = len(seeds)
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        param = params[name]
        if rank == 0:
            tensors[f"{name}.delta"] = torch.zeros(batch, *param.shape, device=param.device)
            continue
        fan_in = math.prod(param.shape[1:])
        draws = [torch.randn(rank, fan_in, generator=torch.Generator().manual_seed(
            (int(seed) * 7919 + len(name) * 104729 + sum(map(ord, name))) % 2**63))
            for seed in seeds]
        tensors[f"{name}.a"] = (torch.stack(draws) / math.sqrt(fan_in)).to(param.device)
        tensors[f"{name}.b"] = torch.zeros(batch, param.shape[0], rank, device=param.device)
    return tensors


def state_bytes(generator: LayeredGenerator, layer: Layer, settings: TuneSettings) -> int:
    """Bytes of one image's adapters with their gradients and Adam's two moments (counted from
    the shapes; nothing is allocated)."""
    rank = settings.tune_rank
    count = sum(math.prod(shape) if rank == 0 else rank * (shape[0] + math.prod(shape[1:]))
                for shape in adapted_shapes(generator, layer, settings.tune_part, rank).values())
    return 4 * 4 * count


class _Pivot:
    """One batch's fixed pivot: codes, alphas, extra latents, and (when the head is not tuned)
    the per-code cuts."""

    def __init__(self, generator: LayeredGenerator, layer: Layer, codes: torch.Tensor,
                 alphas: torch.Tensor, extras: Mapping[str, torch.Tensor], fusion: str,
                 rules: Mapping[str, str], head_tuned: bool) -> None:
        self.generator, self.layer, self.fusion, self.rules = generator, layer, fusion, rules
        self.codes, self.alphas, self.extras = codes, alphas, dict(extras)
        self.head_tuned = head_tuned

    def cuts(self, codes: torch.Tensor) -> Cut:
        """Per-code cuts ``[B, S, N, ...]`` of codes ``[B, S, N, Z]`` (untuned head)."""
        b, s = codes.shape[:2]
        with torch.no_grad():
            cut = code_cuts(self.generator, codes.flatten(0, 1), self.layer)
        return cut.apply(lambda t: t.reshape(b, s, *t.shape[1:]))

    def render_one(self, generator: LayeredGenerator, source: Any, alphas: torch.Tensor,
                   extras: dict[str, torch.Tensor]) -> torch.Tensor:
        """One image's renders ``[S, 3, H, W]`` from codes ``[S, N, Z]`` (head tuned) or cuts
        ``(features, carry)`` ``[S, N, ...]``, with its alphas ``[N, C]``."""
        if self.head_tuned:
            cut = code_cuts(generator, source, self.layer)
        else:
            cut = Cut(source[0], source[1])
        count = cut.features.shape[0]
        expanded = {k: v.expand(count, *v.shape) for k, v in extras.items()}
        fused = fuse(cut, alphas.expand(count, *alphas.shape), self.fusion, self.rules,
                     latent_carry(generator, self.layer, self.rules, expanded))
        return generator.tail(fused, self.layer).float()


class _Tuner:
    """One batch's tuning state: the per-image changes, one Adam per started stage, and the
    vmapped render of every image with its own weights."""

    def __init__(self, work: LayeredGenerator, pivot: _Pivot, settings: TuneSettings,
                 seeds: list[int]) -> None:
        self.work, self.pivot, self.settings = work, pivot, settings
        stages = tuning_stages(work, pivot.layer, settings.tune_part)
        self.base = {name: p.detach() for name, p in work.named_parameters()}
        self.stages = [_adapted(self.base, stage, settings.tune_rank) for stage in stages]
        self.adapted = [name for stage in self.stages for name in stage]
        self.tensors = initial_adapters(self.base, self.adapted, settings.tune_rank, seeds)
        for value in self.tensors.values():
            value.requires_grad_(True)
        # one Adam per stage, made as the stage starts: its first steps are Adam's first steps
        self.optimizers: list[torch.optim.Optimizer] = []
        self.per_stage = max(1, settings.tune // len(self.stages))
        self.rngs = [torch.Generator().manual_seed(int(s) ^ LOCALITY_SEED) for s in seeds]
        with evaluating(work):
            self.pivot_cut = None if pivot.head_tuned else pivot.cuts(pivot.codes[:, None])
        self.batched = vmap(self._one_image)
        self.wrapped = _Wrapped(work)
        self.failed = torch.zeros(len(seeds), dtype=torch.bool, device=work.device)

    def _one_image(self, changes: dict[str, torch.Tensor], source: Any, alphas: torch.Tensor,
                   extras: dict[str, torch.Tensor]) -> torch.Tensor:
        swapped = {_PREFIX + name: self.base[name] + _delta(changes, name, self.base[name].shape)
                   for name in self.adapted}
        return functional_call(self.wrapped, swapped,
                               (self.pivot.render_one, source, alphas, extras), strict=False)

    def losses(self, step: int, losses_of: Callable[[torch.Tensor], torch.Tensor],
               perceptual: VGGPerceptual | LPIPSDistance | None,
               weights: tuple[float, float]) -> torch.Tensor:
        """Every image's loss ``[B]`` at ``step``: the task's, plus the locality term."""
        pivot, settings = self.pivot, self.settings
        locality = settings.tune_locality > 0
        moved = _locality_codes(self.work, pivot.codes, self.rngs, settings) if locality else None
        source = _sources(pivot, self.pivot_cut, pivot.codes, moved)
        try:
            images = self.batched(self.tensors, source, pivot.alphas, pivot.extras)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, NotImplementedError) as err:
            if step or "allocate" in str(err):  # out of memory on the CPU
                raise
            raise InputError(f"tune: this {self.work.family} generator's forward cannot run "
                             f"per image under torch.func.vmap, which tuning needs "
                             f"({' '.join(str(err).split())[:160]})", field="tune") from None
        losses = losses_of(images[:, 0])
        if locality:
            with torch.no_grad():
                untuned = _untuned(pivot, source, moved)
            held = reconstruction_loss(images[:, 1:].flatten(0, 1), untuned, perceptual, *weights)
            losses = losses + settings.tune_locality * held.view(len(losses), -1).mean(dim=1)
        return losses

    def update(self, step: int, losses: torch.Tensor) -> None:
        """Start the stages due at ``step``, then one Adam step of every started stage; images
        whose loss is not finite get no gradient from then on (they are reported failed)."""
        while len(self.optimizers) < min(len(self.stages), step // self.per_stage + 1):
            names = set(self.stages[len(self.optimizers)])
            self.optimizers.append(torch.optim.Adam(
                [v for k, v in self.tensors.items() if k.rsplit(".", 1)[0] in names],
                lr=self.settings.tune_lr))
        self.failed |= ~torch.isfinite(losses.detach())
        for value in self.tensors.values():  # stages not started must not gather gradients
            value.grad = None
        torch.where(self.failed, torch.zeros_like(losses), losses).sum().backward()
        keep = (~self.failed).float()
        for value in self.tensors.values():
            if value.grad is not None:
                value.grad.mul_(keep.view(-1, *[1] * (value.dim() - 1)))
                torch.nan_to_num_(value.grad, nan=0.0, posinf=0.0, neginf=0.0)
        for optimizer in self.optimizers:
            optimizer.step()

    def adapters(self) -> list[Adapters]:
        return [Adapters(self.settings.tune_rank, self.settings.tune_part,
                         {k: v[i].detach().clone() for k, v in self.tensors.items()})
                for i in range(len(self.failed))]


def tune_generator(generator: LayeredGenerator, layer: Layer, codes: torch.Tensor,
                   alphas: torch.Tensor, extras: Mapping[str, torch.Tensor], fusion: str,
                   rules: Mapping[str, str], seeds: list[int],
                   losses_of: Callable[[torch.Tensor], torch.Tensor], settings: TuneSettings,
                   perceptual: VGGPerceptual | LPIPSDistance | None = None,
                   weights: tuple[float, float] = (1.0, 0.0), progress: bool = True,
                   description: str = "tuning") -> TuneResult:
    """Tune a copy of ``generator`` per image around the pivot (codes ``[B, N, Z]``, alphas
    ``[B, N, C]``, extra latents ``[B, ...]``) for ``settings.tune`` steps.

    ``losses_of(images)``: the task's per-image loss ``[B]`` of x_inv; ``weights``: the MSE and
    perceptual weights of the locality term (the recipe's). The generator is not changed."""
    started = time.perf_counter()
    work = generator
    if not generator.fast_paths_vmap:  # a family whose fast path branches on values
        work = copy.deepcopy(generator).use_fast_paths(False)
    pivot = _Pivot(work, layer, codes, alphas, extras, fusion, rules,
                   head_tuned=settings.tune_part != "tail")
    last = torch.full((codes.shape[0],), float("nan"))
    bar = progress_bar(range(settings.tune), desc=description, enabled=progress, leave=False,
                       unit="it")
    tuner = _Tuner(work, pivot, settings, seeds)
    with frozen(work):  # only the adapters learn; the generator keeps no gradients
        for step in bar:
            losses = tuner.losses(step, losses_of, perceptual, weights)
            tuner.update(step, losses)
            last = losses.detach().cpu()
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(last.nanmean()):.4f}")
    adapters = tuner.adapters()
    reconstructions, facts = _finish(generator, adapters, layer, codes, alphas, extras,
                                     fusion, rules)
    failures = {i: f"tuning loss became {float(last[i])}"
                for i in torch.nonzero(tuner.failed).flatten().tolist()}
    seconds = time.perf_counter() - started
    for fact in facts:
        fact.update(steps=settings.tune, seconds=seconds / len(facts))
    return TuneResult(adapters, reconstructions, facts, failures, seconds)


def _locality_codes(generator: LayeredGenerator, codes: torch.Tensor,
                    rngs: list[torch.Generator], settings: TuneSettings) -> torch.Tensor:
    """Codes ``[B, 1, N, Z]`` moved from each image's pivot toward fresh random latents, each
    image's drawn from its own seed."""
    targets = torch.stack([generator.initial_latents(codes.shape[1], rng) for rng in rngs])
    targets = targets.to(codes.device, codes.dtype)
    return (codes + settings.tune_locality_mix * (targets - codes))[:, None]


def _sources(pivot: _Pivot, pivot_cut: Cut | None, codes: torch.Tensor,
             moved: torch.Tensor | None) -> Any:
    """What the per-image render starts from ``[B, S, ...]``: the pivot first, then the moved
    codes; codes when the head is tuned, else their (untuned) cuts."""
    if pivot.head_tuned:
        return codes[:, None] if moved is None else torch.cat([codes[:, None], moved], dim=1)
    cut = pivot_cut if moved is None else _cat_cuts(pivot_cut, pivot.cuts(moved))
    return cut.features, dict(cut.carry)


def _cat_cuts(first: Cut, second: Cut) -> Cut:
    return Cut(torch.cat([first.features, second.features], dim=1),
               {k: torch.cat([v, second.carry[k]], dim=1) for k, v in first.carry.items()})


def _untuned(pivot: _Pivot, source: Any, moved: torch.Tensor) -> torch.Tensor:
    """The untuned generator's renders of the moved codes ``[B * S, 3, H, W]``."""
    count = moved.shape[1]
    if pivot.head_tuned:
        cut = pivot.cuts(moved)
    else:
        features, carry = source
        cut = Cut(features[:, 1:], {k: v[:, 1:] for k, v in carry.items()})
    flat = cut.apply(lambda t: t.flatten(0, 1))
    alphas = pivot.alphas.repeat_interleave(count, dim=0)
    extras = {k: v.repeat_interleave(count, dim=0) for k, v in pivot.extras.items()}
    fused = fuse(flat, alphas, pivot.fusion, pivot.rules,
                 latent_carry(pivot.generator, pivot.layer, pivot.rules, extras))
    return pivot.generator.tail(fused, pivot.layer).float()


def _finish(generator: LayeredGenerator, adapters: list[Adapters], layer: Layer,
            codes: torch.Tensor, alphas: torch.Tensor, extras: Mapping[str, torch.Tensor],
            fusion: str, rules: Mapping[str, str]) -> tuple[torch.Tensor, list[dict]]:
    """Each image's tuned x_inv through ``Adapters.apply`` (what a reload does), and how far
    the tuned generator moved random samples (mean |change| in 8-bit levels)."""
    samples = generator.sample_latents(CHANGE_SAMPLES, CHANGE_SEED)
    renders, facts = [], []
    with torch.no_grad(), evaluating(generator):
        untuned = generator(samples).float()
        for i, change in enumerate(adapters):
            tuned = change.apply(generator)
            with evaluating(tuned):
                renders.append(render(tuned, codes[i:i + 1], alphas[i:i + 1], layer, fusion,
                                      rules, {k: v[i:i + 1] for k, v in extras.items()}).float())
                moved = (tuned(samples).float() - untuned).abs().mean() * 127.5
            facts.append({"sample_change": float(moved), "bytes": change.nbytes})
    return torch.cat(renders), facts


def image_groups(generator: LayeredGenerator, adapters: list[Adapters] | None, batch: int,
                 size: int) -> Iterator[tuple[slice, LayeredGenerator]]:
    """How consumers of a run walk its images: ``size`` at a time with ``generator``, or, for a
    tuned run, one at a time, each with its own tuned generator (built when reached, so one
    copy is held at a time)."""
    if adapters is None:
        for start in range(0, batch, max(1, size)):
            yield slice(start, start + max(1, size)), generator
        return
    for i, change in enumerate(adapters):
        yield slice(i, i + 1), change.apply(generator)


def group_count(adapters: list[Adapters] | None, batch: int, size: int) -> int:
    return batch if adapters is not None else math.ceil(batch / max(1, size))
