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

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from inversion.composition import code_cuts, fuse, initial_alphas, latent_carry
from inversion.generators.base import Cut, Layer, LayeredGenerator, evaluating
from inversion.losses import (
    LPIPSDistance,
    VGGPerceptual,
    noise_regularization,
    normalize_noise_,
    reconstruction_loss,
)
from inversion.metrics import image_metrics
from inversion.projector import LatentStats, estimate_latent_stats
from inversion.recipes import Recipe
from inversion.tasks import Task, TaskContext


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
    trace_iterations: list[int]
    trace: torch.Tensor  # [T, B]
    metrics: list[dict[str, float] | None]
    failures: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    carry: dict[str, str] = field(default_factory=dict)  # the fusion rule of each carried tensor
    stopped: list[int | None] = field(default_factory=list)  # convergence stop, per image
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # extra latents, each [B, ...]
    features: Cut | None = None  # [B, N, ...] per-code cuts of the final codes (keep_features)

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


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside the block; both restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    with evaluating(module):
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


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


def invert(generator: LayeredGenerator, observations: torch.Tensor, task: Task, recipe: Recipe,
           *, seeds: list[int], names: list[str] | None = None, ctx: TaskContext | None = None,
           references: torch.Tensor | None = None, perceptual: VGGPerceptual | None = None,
           bf16: bool = False, progress: bool = True, trace_points: int = 50,
           description: str = "inverting", keep_features: bool = False,
           latent_stats: LatentStats | None = None,
           lpips: LPIPSDistance | None = None) -> InversionResult:
    """Invert a batch of observations ``[B, 3, h, w]`` (in [-1, 1]) with ``recipe``.

    ``references``: clean images ``[B, 3, H, W]`` for metrics (None: no metrics). ``seeds``: one per
    image, for its initial codes (and its task randomness when ``ctx`` is built here).
    ``keep_features``: keep the final head features in the result, so an attribution that follows
    in the same process skips the head pass. ``latent_stats``: W statistics for a ``w_avg``
    start and latent noise (estimated here when needed and not given). ``lpips``: the LPIPS
    metric (None: results carry ``lpips: None``).
    """
    recipe.check_generator(generator)
    generator = generator.in_space(recipe.latent_space)
    device = generator.device
    batch = observations.shape[0]
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for {batch} observations")
    if observations.dim() != 4 or observations.shape[1] != 3:
        raise ValueError(f"observations must be [B, 3, h, w], got {list(observations.shape)}")
    if observations.min() < -1.001 or observations.max() > 1.001:
        raise ValueError("observations must be in [-1, 1]")
    task.check(generator.resolution)
    names = names if names is not None else [f"image{i}" for i in range(batch)]
    ctx = ctx if ctx is not None else task.context(generator.resolution, seeds, device)
    layer = recipe.resolve_layer(generator)
    observations = observations.to(device)
    if perceptual is not None:
        perceptual = perceptual.to(device)
    started = time.perf_counter()

    rules = recipe.carry_rules(generator, layer)
    if latent_stats is None and (recipe.init == "w_avg" or recipe.latent_noise):
        latent_stats = estimate_latent_stats(generator)
    codes = start_codes(generator, recipe, seeds, latent_stats).to(device)
    alphas = initial_alphas(batch, recipe.codes, layer.channels, device)
    extras: dict[str, torch.Tensor] = {}
    if "latent" in rules.values():
        with torch.no_grad(), frozen(generator):
            extras = {name: value.detach().clone() for name, value in generator.extra_latents(
                layer, rules, code_cuts(generator, codes, layer), seeds).items()}
    noise_sizes = ([m[0].numel() for m in generator.noise_maps(layer, extras["noise"]).values()]
                   if "noise" in extras else [])
    jitter_rngs = [torch.Generator().manual_seed(int(s) ^ LATENT_NOISE_SEED) for s in seeds]
    params = [codes, *([alphas] if recipe.trains_alphas(layer) else []), *extras.values()]
    for param in params:
        param.requires_grad_(True)
    lr = recipe.resolve_lr(generator)
    optimizer = (torch.optim.SGD(params, lr=lr) if recipe.optimizer == "sgd"
                 else torch.optim.Adam(params, lr=lr))

    def jitter(step: int) -> torch.Tensor | None:
        """The latent noise of ``step`` for every image ``[B, N, Z]`` (None when off)."""
        std = recipe.latent_noise_std(step, latent_stats.w_std) if latent_stats else 0.0
        if not std:
            return None
        draws = [torch.randn(codes.shape[1:], generator=rng) for rng in jitter_rngs]
        return torch.stack(draws).to(device) * std

    def render(cut: Cut | None = None, index: torch.Tensor | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_inv of every image, or of the images ``index`` only; ``noise`` is added to the
        codes first."""
        def part(t: torch.Tensor) -> torch.Tensor:
            return t if index is None else t[index]

        with _autocast(device, bf16):
            if cut is None:
                moved = codes if noise is None else codes + noise
                cut = code_cuts(generator, part(moved), layer)
            chosen = {name: part(value) for name, value in extras.items()}
            fused = fuse(cut, part(alphas), recipe.fusion, rules,
                         latent_carry(generator, layer, rules, chosen))
            return generator.tail(fused, layer).float()

    used = recipe.for_run(generator, perceptual is not None)

    def losses_of(images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        view_ctx = ctx if index is None else ctx.subset(index)
        target = observations if index is None else observations[index]
        return reconstruction_loss(task.view(images, view_ctx), target, perceptual,
                                   used.mse_weight, used.perceptual_weight)

    def regularizer(index: torch.Tensor | None = None) -> torch.Tensor | float:
        """The noise maps' regulariser per image, weighted (0 when noise is not optimised)."""
        if not noise_sizes or not recipe.noise_regularization:
            return 0.0
        noise = extras["noise"] if index is None else extras["noise"][index]
        maps = list(generator.noise_maps(layer, noise).values())
        return recipe.noise_regularization * noise_regularization(maps)

    # Per-image state lives on the device: the loop reads it back (a host synchronisation) only
    # every SYNC_EVERY iterations, at trace points and when the working set changes.
    failed = torch.zeros(batch, dtype=torch.bool, device=device)
    failed_at = torch.full((batch,), -1, dtype=torch.long, device=device)
    failed_loss = torch.zeros(batch, device=device)
    stopped = [None] * batch  # the iteration each image converged at (convergence stop)
    best = torch.full((batch,), float("inf"), device=device)
    checkpoint_best = best.clone()
    working = torch.arange(batch, device=device)  # the images still optimised
    frozen_values: dict[int, list[torch.Tensor]] = {}
    every = max(1, recipe.iterations // max(1, trace_points))
    trace_iterations: list[int] = []
    trace: list[torch.Tensor] = []
    bar = tqdm(range(recipe.iterations), desc=description, disable=not progress, leave=False,
               unit="it")
    with frozen(generator):
        for step in bar:
            full = len(working) == batch
            index = None if full else working
            for group in optimizer.param_groups:
                group["lr"] = lr * recipe.lr_factor(step)
            losses = losses_of(render(index=index, noise=jitter(step)), index) + regularizer(index)
            finite = torch.isfinite(losses)
            newly = ~finite & ~failed[working]
            failed_at[working] = torch.where(newly, step, failed_at[working])
            failed_loss[working] = torch.where(newly, losses.detach(), failed_loss[working])
            failed[working] |= ~finite
            optimizer.zero_grad(set_to_none=False)
            torch.where(finite, losses, torch.zeros_like(losses)).sum().backward()
            keep = (~failed).to(codes.dtype)
            for param in params:
                param.grad.mul_(keep.view(-1, *[1] * (param.dim() - 1)))
                torch.nan_to_num_(param.grad, nan=0.0, posinf=0.0, neginf=0.0)
            optimizer.step()
            if noise_sizes:
                normalize_noise_(extras["noise"], noise_sizes)
            with torch.no_grad():
                for i, values in frozen_values.items():  # converged images stay where they were
                    for param, value in zip(params, values, strict=True):
                        param[i] = value
                best[working] = torch.minimum(best[working], losses.detach().nan_to_num(
                    float("inf")))
            if step % every == 0 or step == recipe.iterations - 1:
                trace_iterations.append(step)
                full_losses = torch.full((batch,), float("nan"), device=device)
                full_losses[working] = losses.detach()
                trace.append(full_losses)
                bar.set_postfix(loss=f"{float(losses.detach().nanmean()):.4f}")
            window = recipe.converge_window
            checkpoint = window and (step + 1) % window == 0
            if checkpoint or (step + 1) % SYNC_EVERY == 0:
                if bool(failed.all()):
                    break
                done = torch.zeros_like(failed)  # failed images stay (their gradient is zero)
                if checkpoint:
                    gain = (checkpoint_best - best) / best.clamp(min=1e-12)
                    converged = (gain < recipe.converge_tolerance) & ~failed
                    converged &= torch.isfinite(checkpoint_best)
                    checkpoint_best = best.clone()
                    for i in torch.nonzero(converged).flatten().tolist():
                        if i not in frozen_values and stopped[i] is None:
                            stopped[i] = step + 1
                            frozen_values[i] = [param[i].detach().clone() for param in params]
                    done |= converged
                for i in frozen_values:
                    done[i] = True
                remaining = torch.nonzero(~done).flatten()
                if len(remaining) == 0:
                    break
                if len(remaining) != len(working):
                    working = remaining
    failures = {i: f"loss became {failed_loss[i].item()} at iteration {failed_at[i].item()}"
                for i in torch.nonzero(failed).flatten().tolist()}
    with frozen(generator), torch.no_grad():
        with _autocast(device, bf16):
            final_cut = code_cuts(generator, codes, layer)
        reconstructions = render(final_cut)
        final_losses = losses_of(reconstructions)
    for i in torch.nonzero(~torch.isfinite(final_losses)).flatten().tolist():
        failures.setdefault(i, f"final loss is {final_losses[i].item()}")
    reconstructions = reconstructions.clamp(-1, 1)
    outputs = task.finalize(reconstructions, observations, ctx)
    metrics: list[dict[str, float | None] | None] = [None] * batch
    if references is not None:
        metrics = evaluate_metrics(outputs, references, perceptual, lpips)
    for i in failures:
        metrics[i] = None
    final_losses = final_losses.detach().cpu()
    final_losses[list(failures)] = float("nan")
    return InversionResult(
        names=list(names), codes=codes.detach().cpu(), alphas=alphas.detach().cpu(), layer=layer,
        fusion=recipe.fusion, task=task.to_dict(), recipe=used.to_dict(), seeds=list(seeds),
        reconstructions=torch.nan_to_num(reconstructions).cpu(),
        outputs=torch.nan_to_num(outputs).cpu(), observations=observations.cpu(),
        losses=final_losses, trace_iterations=trace_iterations,
        trace=torch.stack(trace).cpu() if trace else torch.empty(0, batch),
        metrics=metrics, failures=failures, seconds=time.perf_counter() - started,
        carry=rules, extras={name: value.detach().cpu() for name, value in extras.items()},
        stopped=stopped,
        features=final_cut.apply(lambda t: t.float().cpu()) if keep_features else None)
