"""The batched multi-code inversion loop.

B images x N codes go through the generator head as one batch of B*N latents, the fused features
through the tail as one batch of B. Each image has its own codes, alphas and loss; the total loss
is the *sum* of per-image losses, so with element-wise optimisers (SGD, Adam) every image follows
exactly the trajectory it would follow alone. An image whose loss turns NaN/inf stops there and is
reported as failed; the others go on.

Besides codes ``[B, N, Z]`` and alphas ``[B, N, C]`` (unless the recipe fixes them), the loop
optimises the extra latents a family asks for under the chosen carry rules (``extras``, each
``[B, ...]``), and the result records them. Noise maps (``extras["noise"]``, when the recipe
optimises them) add the projector's regulariser to each image's loss and are re-normalised after
every step; the recipe's learning-rate ramps and latent noise (NVIDIA's projector) apply per step,
the latent noise drawn per image from its own seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from inversion.composition import code_cuts, fuse, initial_alphas, latent_carry
from inversion.generators.base import Cut, Layer, LayeredGenerator, compiled, frozen
from inversion.losses import (
    LPIPSDistance,
    VGGPerceptual,
    noise_regularization,
    normalize_noise_,
    reconstruction_loss,
)
from inversion.metrics import image_metrics
from inversion.options import TuneSettings
from inversion.projector import LatentStats, estimate_latent_stats
from inversion.recipes import Recipe
from inversion.tasks import Task, TaskContext
from inversion.tuning import Adapters, tune_generator
from mganprior.core.progress import progress_bar


@dataclass
class InversionResult:
    """What one inversion produced, for B images with N codes at ``layer`` (C channels).

    Tensors live on the CPU. Images are ``[B, 3, H, W]`` in [-1, 1]; ``observations`` are
    ``[B, 3, h, w]`` (h = H / factor for super-resolution).
    """

    names: list[str]
    codes: torch.Tensor  # [B, N, Z]
    alphas: torch.Tensor  # [B, N, C]
    layer: Layer
    fusion: str
    task: dict[str, Any]
    recipe: dict[str, Any]
    seeds: list[int]
    reconstructions: torch.Tensor  # x_inv, clamped
    outputs: torch.Tensor  # the task's output (colorization: observed luma + x_inv chroma)
    observations: torch.Tensor
    losses: torch.Tensor  # [B], final loss (NaN for failed images)
    trace_iterations: list[int]  # negative: steps of the alpha warm-up
    trace: torch.Tensor  # [T, B]
    metrics: list[dict[str, float] | None]
    failures: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    carry: dict[str, str] = field(default_factory=dict)  # the fusion rule of each carried tensor
    stopped: list[int | None] = field(default_factory=list)  # convergence stop, per image
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # extra latents, each [B, ...]
    features: Cut | None = None  # [B, N, ...] per-code cuts of the final codes (keep_features)
    # generator tuning (inversion.tuning): each image's change, the task's output before
    # tuning (like ``outputs``), and facts
    adapters: list[Adapters] | None = None
    untuned: torch.Tensor | None = None  # [B, 3, H, W]
    tuning: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        b, n = self.codes.shape[:2]
        if self.alphas.shape[:2] != (b, n) or self.alphas.shape[2] != self.layer.channels:
            raise ValueError(f"alphas {list(self.alphas.shape)} do not match codes "
                             f"{list(self.codes.shape)} at a {self.layer.channels}-channel layer")
        if len(self.names) != b or self.reconstructions.shape[0] != b:
            raise ValueError("names, codes and reconstructions disagree on the batch size")
        for name, value in self.extras.items():
            if value.shape[0] != b:
                raise ValueError(f"extra latent {name} {list(value.shape)} is not [B={b}, ...]")

    @property
    def batch(self) -> int:
        return self.codes.shape[0]


def initial_codes(generator: LayeredGenerator, seeds: list[int], codes: int,
                  init: str) -> torch.Tensor:
    """``[B, N, Z]`` on the CPU; each image's codes depend only on its own seed (``normal``: the
    family's ``initial_latents``, standard normal z for most)."""
    if init == "zero":
        return torch.zeros(len(seeds), codes, generator.z_dim)
    return torch.stack([generator.initial_latents(codes, torch.Generator().manual_seed(int(s)))
                        for s in seeds])


SYNC_EVERY = 10  # iterations between reads of per-image state on the host
LATENT_NOISE_SEED = 0x6A6974746572  # mixed into an image's seed for its latent noise draws


def start_codes(generator: LayeredGenerator, recipe: Recipe, seeds: list[int],
                stats: LatentStats | None) -> torch.Tensor:
    """The recipe's initial codes ``[B, N, Z]`` on the CPU: seeded draws, zeros, or ``w_avg``."""
    if recipe.init == "w_avg":
        return stats.start(generator, len(seeds), recipe.codes)
    return initial_codes(generator, seeds, recipe.codes, recipe.init)


def evaluate_metrics(outputs: torch.Tensor, references: torch.Tensor,
                     perceptual: VGGPerceptual | LPIPSDistance | None,
                     lpips: LPIPSDistance | None) -> list[dict[str, float | None]]:
    """Per-image PSNR, SSIM, LPIPS (None without its weights) and, with a VGG16 loss module,
    its feature distance."""
    metrics: list[dict[str, float | None]] = image_metrics(outputs, references)
    device = outputs.device
    with torch.no_grad():
        scores = (lpips.to(device)(outputs, references.to(device)).cpu().tolist()
                  if lpips is not None else [None] * len(metrics))
        distances = (perceptual(outputs, references.to(device)).cpu().tolist()
                     if isinstance(perceptual, VGGPerceptual) else None)
    for i, entry in enumerate(metrics):
        entry["lpips"] = scores[i]
        if distances is not None:
            entry["perceptual"] = distances[i]
    return metrics


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@dataclass(frozen=True)
class InvertOptions:
    """How an inversion runs, not what it computes: bf16 autocast of the generator, progress
    bar and its label, how many loss-trace points to keep, whether to keep the final head
    features (so an attribution that follows in the same process skips the head pass), and
    ``torch.compile`` of the head and tail (docs/benchmarks.md: where it pays)."""

    bf16: bool = False
    progress: bool = True
    trace_points: int = 50
    description: str = "inverting"
    keep_features: bool = False
    compile: bool = False  # the head and tail under torch.compile (tuning runs eager)


QUIET = InvertOptions(progress=False)


class Variables:
    """What one inversion optimises and how it renders: codes ``[B, N, Z]``, alphas ``[B, N, C]``
    (trained or fixed), the extra latents of ``latent`` carry rules (noise maps among them), and
    the per-step latent noise of the projector."""

    def __init__(self, generator: LayeredGenerator, recipe: Recipe, layer: Layer,
                 seeds: list[int], stats: LatentStats | None, bf16: bool) -> None:
        device = generator.device
        self.generator, self.recipe, self.layer, self.stats, self.bf16 = (
            generator, recipe, layer, stats, bf16)
        self.rules = recipe.carry_rules(generator, layer)
        self.codes = start_codes(generator, recipe, seeds, stats).to(device)
        self.alphas = initial_alphas(len(seeds), recipe.codes, layer.channels, device)
        self.extras: dict[str, torch.Tensor] = {}
        if "latent" in self.rules.values():
            with torch.no_grad(), frozen(generator):
                cut = code_cuts(generator, self.codes, layer)
                self.extras = {name: value.detach().clone() for name, value in
                               generator.extra_latents(layer, self.rules, cut, seeds).items()}
        self.noise_sizes = ([m[0].numel() for m in
                             generator.noise_maps(layer, self.extras["noise"]).values()]
                            if "noise" in self.extras else [])
        self.jitter_rngs = [torch.Generator().manual_seed(int(s) ^ LATENT_NOISE_SEED)
                            for s in seeds]
        self.params = [self.codes, *([self.alphas] if recipe.trains_alphas(layer) else []),
                       *self.extras.values()]
        for param in self.params:
            param.requires_grad_(True)

    def optimizer(self) -> torch.optim.Optimizer:
        lr = self.recipe.resolve_lr(self.generator)
        if self.recipe.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=lr)
        return torch.optim.Adam(self.params, lr=lr,
                                betas=(self.recipe.adam_beta1, self.recipe.adam_beta2))

    def jitter(self, step: int) -> torch.Tensor | None:
        """The latent noise of ``step`` for every image ``[B, N, Z]`` (None when off), each
        image's drawn from its own seed."""
        std = self.recipe.latent_noise_std(step, self.stats.w_std) if self.stats else 0.0
        if not std:
            return None
        draws = [torch.randn(self.codes.shape[1:], generator=rng) for rng in self.jitter_rngs]
        return torch.stack(draws).to(self.codes.device) * std

    def render(self, cut: Cut | None = None, index: torch.Tensor | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_inv of every image, or of the images ``index`` only; ``noise`` is added to the
        codes first."""
        def part(t: torch.Tensor) -> torch.Tensor:
            return t if index is None else t[index]

        generator, layer = self.generator, self.layer
        with _autocast(self.codes.device, self.bf16):
            if cut is None:
                codes = self.codes if noise is None else self.codes + noise
                cut = code_cuts(generator, part(codes), layer)
            chosen = {name: part(value) for name, value in self.extras.items()}
            fused = fuse(cut, part(self.alphas), self.recipe.fusion, self.rules,
                         latent_carry(generator, layer, self.rules, chosen))
            return generator.tail(fused, layer).float()

    def head_cut(self) -> Cut:
        """Every image's per-code cuts of the current codes, without gradient: the alpha warm-up
        renders from them, and the final render."""
        with torch.no_grad(), frozen(self.generator), _autocast(self.codes.device, self.bf16):
            return code_cuts(self.generator, self.codes, self.layer)

    def regularizer(self, index: torch.Tensor | None = None) -> torch.Tensor | float:
        """The noise maps' regulariser per image, weighted (0 when noise is not optimised)."""
        if not self.noise_sizes or not self.recipe.noise_regularization:
            return 0.0
        noise = self.extras["noise"] if index is None else self.extras["noise"][index]
        maps = list(self.generator.noise_maps(self.layer, noise).values())
        return self.recipe.noise_regularization * noise_regularization(maps)

    def after_step(self) -> None:
        """The projector's re-normalisation of the noise maps."""
        if self.noise_sizes:
            normalize_noise_(self.extras["noise"], self.noise_sizes)


class ImageStates:
    """Per-image bookkeeping, on the device: which images failed (and when, at what loss), the
    best loss so far, convergence stops, and the working set of images still optimised. The loop
    reads it back (a host synchronisation) only every SYNC_EVERY iterations and at checkpoints."""

    def __init__(self, batch: int, device: torch.device, recipe: Recipe) -> None:
        self.batch, self.recipe = batch, recipe
        self.failed = torch.zeros(batch, dtype=torch.bool, device=device)
        self.failed_at = torch.full((batch,), -1, dtype=torch.long, device=device)
        self.failed_loss = torch.zeros(batch, device=device)
        self.stopped: list[int | None] = [None] * batch  # the iteration each image converged at
        self.best = torch.full((batch,), float("inf"), device=device)
        self.checkpoint_best = self.best.clone()
        self.working = torch.arange(batch, device=device)
        self.frozen: dict[int, list[torch.Tensor]] = {}  # converged images' values

    @property
    def index(self) -> torch.Tensor | None:
        """The working images, or None while every image is."""
        return None if len(self.working) == self.batch else self.working

    def observe(self, step: int, losses: torch.Tensor) -> torch.Tensor:
        """Record the working images' losses at ``step`` (the iteration; negative in the alpha
        warm-up); returns which are finite."""
        working = self.working
        finite = torch.isfinite(losses)
        newly = ~finite & ~self.failed[working]
        self.failed_at[working] = torch.where(newly, step, self.failed_at[working])
        self.failed_loss[working] = torch.where(newly, losses.detach(),
                                                self.failed_loss[working])
        self.failed[working] |= ~finite
        return finite

    def mask_gradients(self, params: list[torch.Tensor]) -> None:
        """Failed images get no update; non-finite gradient entries become 0."""
        keep = (~self.failed).to(params[0].dtype)
        for param in params:
            if param.grad is None:  # codes during the alpha warm-up
                continue
            param.grad.mul_(keep.view(-1, *[1] * (param.dim() - 1)))
            torch.nan_to_num_(param.grad, nan=0.0, posinf=0.0, neginf=0.0)

    @torch.no_grad()
    def settle(self, params: list[torch.Tensor], losses: torch.Tensor) -> None:
        """After a step: converged images return to where they stopped; best losses update."""
        for i, values in self.frozen.items():
            for param, value in zip(params, values, strict=True):
                param[i] = value
        self.best[self.working] = torch.minimum(self.best[self.working],
                                                losses.detach().nan_to_num(float("inf")))

    def full_losses(self, losses: torch.Tensor) -> torch.Tensor:
        """The working images' losses placed in a ``[B]`` tensor (NaN elsewhere)."""
        full = torch.full((self.batch,), float("nan"), device=losses.device)
        full[self.working] = losses.detach()
        return full

    def review(self, step: int, params: list[torch.Tensor]) -> bool:
        """At a sync point or convergence checkpoint: stop converged images (not in the alpha
        warm-up, negative steps, which renders every image), shrink the working set; False when
        nothing is left to optimise."""
        window = self.recipe.converge_window
        checkpoint = step >= 0 and window and (step + 1) % window == 0
        if not (checkpoint or (step + 1) % SYNC_EVERY == 0):
            return True
        if bool(self.failed.all()):
            return False
        if checkpoint:
            self._converge(step, params)
        done = torch.zeros_like(self.failed)  # failed images stay (their gradient is zero)
        for i in self.frozen:
            done[i] = True
        remaining = torch.nonzero(~done).flatten()
        if len(remaining) == 0:
            return False
        if len(remaining) != len(self.working):
            self.working = remaining
        return True

    def _converge(self, step: int, params: list[torch.Tensor]) -> None:
        gain = (self.checkpoint_best - self.best) / self.best.clamp(min=1e-12)
        converged = (gain < self.recipe.converge_tolerance) & ~self.failed
        converged &= torch.isfinite(self.checkpoint_best)
        self.checkpoint_best = self.best.clone()
        for i in torch.nonzero(converged).flatten().tolist():
            if i not in self.frozen and self.stopped[i] is None:
                self.stopped[i] = step + 1
                self.frozen[i] = [param[i].detach().clone() for param in params]

    def failures(self) -> dict[int, str]:
        def when(step: int) -> str:
            return (f"at iteration {step}" if step >= 0 else
                    f"in the alpha warm-up, {-step} steps before the iterations")

        return {i: f"loss became {self.failed_loss[i].item()} {when(self.failed_at[i].item())}"
                for i in torch.nonzero(self.failed).flatten().tolist()}


def check_observations(observations: torch.Tensor, seeds: list[int]) -> None:
    batch = observations.shape[0]
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for {batch} observations")
    if observations.dim() != 4 or observations.shape[1] != 3:
        raise ValueError(f"observations must be [B, 3, h, w], got {list(observations.shape)}")
    if observations.min() < -1.001 or observations.max() > 1.001:
        raise ValueError("observations must be in [-1, 1]")


def invert(generator: LayeredGenerator, observations: torch.Tensor, task: Task, recipe: Recipe,
           *, seeds: list[int], names: list[str] | None = None, ctx: TaskContext | None = None,
           references: torch.Tensor | None = None,
           perceptual: VGGPerceptual | LPIPSDistance | None = None,
           lpips: LPIPSDistance | None = None, latent_stats: LatentStats | None = None,
           options: InvertOptions = InvertOptions(),
           tune: TuneSettings | None = None) -> InversionResult:
    """Invert a batch of observations ``[B, 3, h, w]`` (in [-1, 1]) with ``recipe``.

    ``references``: clean images ``[B, 3, H, W]`` for metrics (None: no metrics). ``seeds``: one
    per image, for its initial codes (and its task randomness when ``ctx`` is built here).
    ``perceptual``: the loss's perceptual module; ``lpips``: the LPIPS metric (None: results carry
    ``lpips: None``). ``latent_stats``: W statistics for a ``w_avg`` start and latent noise
    (estimated here when needed and not given). ``tune``: tune the generator per image around
    the solution afterwards (``inversion.tuning``); the result's reconstructions are then the
    tuned ones, with the untuned ones, each image's adapters and facts beside them.
    """
    recipe.check_generator(generator)
    generator = generator.in_space(recipe.latent_space)
    check_observations(observations, seeds)
    task.check(generator.resolution)
    device = generator.device
    names = names if names is not None else [f"image{i}" for i in range(len(seeds))]
    ctx = ctx if ctx is not None else task.context(generator.resolution, seeds, device)
    observations = observations.to(device)
    perceptual = perceptual.to(device) if perceptual is not None else None
    started = time.perf_counter()
    if latent_stats is None and recipe.needs_latent_stats:
        latent_stats = estimate_latent_stats(generator)
    layer = recipe.resolve_layer(generator)
    eager = generator
    if options.compile:
        generator = compiled(generator)
    variables = Variables(generator, recipe, layer, seeds, latent_stats, options.bf16)
    used = recipe.for_run(generator, perceptual is not None)

    def losses_of(images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        view_ctx = ctx if index is None else ctx.subset(index)
        target = observations if index is None else observations[index]
        return reconstruction_loss(task.view(images, view_ctx), target, perceptual,
                                   used.mse_weight, used.perceptual_weight)

    states = ImageStates(len(seeds), device, recipe)
    trace = _optimize(variables, states, losses_of, options)
    final_cut = variables.head_cut()
    with frozen(generator), torch.no_grad():
        reconstructions = variables.render(final_cut)
        final_losses = losses_of(reconstructions).detach().cpu()
    failures = states.failures()
    tuned = None
    if tune is not None and tune.enabled:
        tuned = tune_generator(
            eager, layer, variables.codes.detach(), variables.alphas.detach(),
            {k: v.detach() for k, v in variables.extras.items()}, recipe.fusion,
            variables.rules, seeds, losses_of, tune, perceptual,
            (used.mse_weight, used.perceptual_weight), progress=options.progress,
            description=f"{options.description} tuning")
        untuned = task.finalize(reconstructions.clamp(-1, 1), observations, ctx)
        reconstructions = tuned.reconstructions
        for fact, loss in zip(tuned.facts, final_losses.tolist(), strict=True):
            fact["loss_untuned"] = loss
        with torch.no_grad():
            final_losses = losses_of(reconstructions).detach().cpu()
        for i, why in tuned.failures.items():
            failures.setdefault(i, why)
    for i in torch.nonzero(~torch.isfinite(final_losses)).flatten().tolist():
        failures.setdefault(i, f"final loss is {final_losses[i].item()}")
    final_losses[list(failures)] = float("nan")
    reconstructions = reconstructions.clamp(-1, 1)
    outputs = task.finalize(reconstructions, observations, ctx)
    metrics: list[dict[str, float | None] | None] = [None] * len(seeds)
    if references is not None:
        metrics = evaluate_metrics(outputs, references, perceptual, lpips)
        if tuned is not None:
            before = evaluate_metrics(untuned, references, perceptual, lpips)
            for fact, values in zip(tuned.facts, before, strict=True):
                fact.update({f"{key}_untuned": value for key, value in values.items()
                             if key in ("psnr", "ssim", "lpips")})
    for i in failures:
        metrics[i] = None
    return InversionResult(
        names=list(names), codes=variables.codes.detach().cpu(),
        alphas=variables.alphas.detach().cpu(), layer=layer, fusion=recipe.fusion,
        task=task.to_dict(), recipe=used.to_dict(), seeds=list(seeds),
        reconstructions=torch.nan_to_num(reconstructions).cpu(),
        outputs=torch.nan_to_num(outputs).cpu(), observations=observations.cpu(),
        losses=final_losses, trace_iterations=trace[0],
        trace=torch.stack(trace[1]).cpu() if trace[1] else torch.empty(0, len(seeds)),
        metrics=metrics, failures=failures, seconds=time.perf_counter() - started,
        carry=variables.rules,
        extras={name: value.detach().cpu() for name, value in variables.extras.items()},
        stopped=states.stopped,
        features=(final_cut.apply(lambda t: t.float().cpu())
                  if options.keep_features and tuned is None else None),
        adapters=([change.to("cpu") for change in tuned.adapters] if tuned is not None
                  else None),
        untuned=torch.nan_to_num(untuned).cpu() if tuned is not None else None,
        tuning=tuned.facts if tuned is not None else None)


def _optimize(variables: Variables, states: ImageStates,
              losses_of: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
              options: InvertOptions) -> tuple[list[int], list[torch.Tensor]]:
    """The loop: the alpha warm-up's steps first (alphas and extra latents over head features
    computed once), then the iterations, each rendering the working images (codes moved by
    the latent noise), adding the noise maps' regulariser, stepping the optimiser at the
    scheduled learning rate and keeping per-image state; returns the loss trace (the iteration
    of each point, negative for the warm-up's steps, and ``[B]`` losses)."""
    recipe = variables.recipe
    optimizer = variables.optimizer()
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # the schedule scales these
    warmup = recipe.warmup_iterations(variables.layer)
    total = warmup + recipe.iterations
    every = max(1, total // max(1, options.trace_points))
    iterations: list[int] = []
    trace: list[torch.Tensor] = []
    bar = progress_bar(range(total), desc=options.description, enabled=options.progress,
                       leave=False, unit="it")
    fixed_cut = variables.head_cut() if warmup else None
    with frozen(variables.generator):
        for step in bar:
            index, joint = states.index, step - warmup  # joint: the iteration, < 0 in warm-up
            for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base_lr * recipe.lr_factor(joint)
            if joint < 0:  # the codes stay: no head pass, no gradient for them (Adam skips them)
                images = variables.render(fixed_cut)
            else:
                fixed_cut = None
                images = variables.render(index=index, noise=variables.jitter(joint))
            losses = losses_of(images, index) + variables.regularizer(index)
            finite = states.observe(joint, losses)
            optimizer.zero_grad(set_to_none=False)
            torch.where(finite, losses, torch.zeros_like(losses)).sum().backward()
            states.mask_gradients(variables.params)
            optimizer.step()
            variables.after_step()
            states.settle(variables.params, losses)
            if step % every == 0 or step == total - 1:
                iterations.append(joint)
                trace.append(states.full_losses(losses))
                bar.set_postfix(loss=f"{float(losses.detach().nanmean()):.4f}")
            if not states.review(joint, variables.params):
                break
    return iterations, trace
