"""Train a GAN generator: non-saturating loss with lazy R1, EMA weights, one loop for every
architecture (:class:`GANTrainConfig` for PGGAN here, ``training.stylegan2`` for StyleGAN2).

The generators are the classes that load official checkpoints
(:class:`inversion.generators.PGGANGenerator`, ``StyleGAN2Generator``), so trained models go
through the same inversion code as real ones. The PGGAN discriminator mirrors its generator with
the same equalised-lr convolution (average-pool downsampling, minibatch standard deviation).
Training is at full resolution from the start: on a GPU a 64 px model converges in minutes;
progressive growing is not implemented. An architecture's config builds both networks, makes
the fake images of a step and adds any generator regulariser (``build``, ``fakes``,
``g_regularizer``).

Training state (both networks, the EMA generator, both optimisers, the step, the data sampler's
RNG) is saved atomically to ``checkpoint.pt`` every ``checkpoint_every`` steps and on Ctrl-C,
together with ``generator.safetensors`` (the EMA weights, the file the zoo loads). A rerun with the
same settings resumes; a rerun with a larger ``iterations`` continues training. ``samples.png`` is
written at the end. Every random draw comes from explicit ``torch.Generator``s (initial weights
inside ``torch.random.fork_rng``), so training neither reads nor changes the process-global RNG.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inversion.generators import PGGANGenerator, save_generator
from inversion.generators.base import LayeredGenerator
from inversion.generators.pggan import EqualizedConv2d
from inversion.images import save_png
from mganprior.core.errors import InputError, field_error
from mganprior.core.jsonio import write_json
from mganprior.core.pixels import from_uint8, to_uint8
from mganprior.core.resume import check_resume
from mganprior.training.loop import (
    DEFAULT_CHECKPOINT_EVERY,
    LoopState,
    check_checkpoint_every,
    load_state,
    run_steps,
    save_state,
)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = ("config", "step", "seconds", "log", "generator", "discriminator", "ema",
                   "opt_g", "opt_d", "data_rng")
GENERATOR_FILE = "generator.safetensors"


class PGGANDiscriminator(nn.Module):
    """Mirror of a PGGAN generator: images [B, 3, R, R] in [-1, 1] -> realness logits [B]."""

    def __init__(self, resolution: int, channels: list[int]) -> None:
        super().__init__()
        blocks = int(math.log2(resolution)) - 1
        if len(channels) != blocks:
            raise InputError(f"discriminator at {resolution} px needs {blocks} widths, "
                             f"got {len(channels)}")
        self.resolution = resolution
        self.from_rgb = EqualizedConv2d(3, channels[-1], 1)
        self.blocks = nn.ModuleList()
        for b in range(blocks - 1, 0, -1):
            self.blocks.append(nn.ModuleList([
                EqualizedConv2d(channels[b], channels[b], 3, padding=1),
                EqualizedConv2d(channels[b], channels[b - 1], 3, padding=1),
            ]))
        top = channels[0]
        self.final_conv = EqualizedConv2d(top + 1, top, 3, padding=1)
        self.final_dense = EqualizedConv2d(top, top, 4)
        self.logit = EqualizedConv2d(top, 1, 1, gain=1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(images), 0.2)
        for conv_a, conv_b in self.blocks:
            x = F.leaky_relu(conv_a(x), 0.2)
            x = F.leaky_relu(conv_b(x), 0.2)
            x = F.avg_pool2d(x, 2)
        group = math.gcd(4, x.shape[0])
        # sqrt(var + eps), not std + eps: the gradient of std is NaN where the batch collapses.
        stats = (x.reshape(group, -1, *x.shape[1:]).var(dim=0, unbiased=False) + 1e-8).sqrt()
        stats = stats.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)
        stats = stats.repeat(group, 1, *x.shape[2:])
        x = F.leaky_relu(self.final_conv(torch.cat([x, stats], dim=1)), 0.2)
        x = F.leaky_relu(self.final_dense(x), 0.2)
        return self.logit(x).flatten()


@dataclass
class GANTrainConfig:
    """Everything that defines a training run; a resume must match it exactly."""

    resolution: int = 64
    z_dim: int = 128
    channels: list[int] = field(default_factory=lambda: [128, 128, 128, 64, 32])
    iterations: int = 10000
    batch: int = 64
    lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_every: int = 4
    ema_half_life_images: float = 10000.0
    seed: int = 0
    flip: bool = True

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def validate(self) -> None:
        """Every setting in range, before anything is built or written."""
        check_common(self)

    def build(self) -> tuple[nn.Module, nn.Module]:
        """The untrained generator and discriminator (drawn from the global RNG, which the
        trainer forks and seeds)."""
        return (PGGANGenerator(self.resolution, self.z_dim, self.channels),
                PGGANDiscriminator(self.resolution, self.channels))

    def fakes(self, generator: nn.Module, batch: int, rng: torch.Generator,
              device: torch.device) -> torch.Tensor:
        return generator(torch.randn(batch, self.z_dim, generator=rng).to(device))

    def g_regularizer(self, generator: nn.Module, step: int, rng: torch.Generator,
                      device: torch.device, extra: dict[str, Any]) -> torch.Tensor | None:
        """A loss to add to the generator's (None: none this step); ``extra`` persists."""
        return None


ARCHITECTURES = ("pggan", "stylegan2")


def train_config_class(architecture: str) -> type:
    """The training config class of ``architecture`` (one of :data:`ARCHITECTURES`)."""
    if architecture == "pggan":
        return GANTrainConfig
    if architecture == "stylegan2":
        from mganprior.training.stylegan2 import StyleGAN2TrainConfig

        return StyleGAN2TrainConfig
    raise InputError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}",
                     field="architecture")


def train_config_from_dict(settings: dict[str, Any]) -> Any:
    """The config a ``training.json`` (or a published model's ``training`` record) stores;
    records without ``architecture`` are PGGAN's."""
    fields = {k: v for k, v in settings.items() if k != "architecture"}
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return train_config_class(settings.get("architecture", "pggan"))(**fields)


def check_common(config: Any) -> None:
    """The settings every GAN config shares, each in range (errors name the field)."""
    positive_ints = {"iterations": config.iterations, "batch": config.batch,
                     "r1_every": config.r1_every, "z_dim": config.z_dim,
                     "resolution": config.resolution}
    for name, value in positive_ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise field_error(name, f"must be a positive integer, got {value}")
    if not config.channels or any(not isinstance(c, int) or c < 1 for c in config.channels):
        raise field_error("channels", f"must be positive integers, got {config.channels}")
    if not 0 < config.lr < math.inf:
        raise field_error("lr", f"must be a finite number above 0, got {config.lr}")
    if not 0 <= config.r1_gamma < math.inf:
        raise field_error("r1_gamma", f"must be a finite number >= 0, got {config.r1_gamma}")
    if not 0 < config.ema_half_life_images < math.inf:
        raise field_error("ema_half_life_images", "must be a finite number above 0, got "
                          f"{config.ema_half_life_images}")
    if len(config.betas) != 2 or not all(0 <= b < 1 for b in config.betas):
        raise field_error("betas", f"must be two numbers in [0, 1), got {config.betas}")


@dataclass
class GANTrainResult:
    generator: LayeredGenerator
    steps: int
    seconds: float
    log: list[dict[str, float]]
    out_dir: Path


class ImageBank:
    """Training images held on the device as uint8; ``sample`` gives [B, 3, H, W] in [-1, 1]."""

    def __init__(self, images: np.ndarray, device: torch.device, flip: bool = True) -> None:
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise InputError(f"training images must be uint8 [N, H, W, 3], got "
                             f"{images.dtype} {list(images.shape)}")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.flip = flip

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        device = self.images.device
        index = torch.randint(len(self), (batch,), generator=generator, device="cpu").to(device)
        x = from_uint8(self.images[index])
        if self.flip:
            mirror = torch.rand(batch, generator=generator).to(device) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        return x


def _r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
    return grad.pow(2).sum(dim=(1, 2, 3)).mean()


def sample_grid(generator: LayeredGenerator, count: int = 64, seed: int = 0,
                columns: int = 8) -> np.ndarray:
    """A uint8 [rows*R, columns*R, 3] grid of ``count`` samples (fixed seed, eval mode)."""
    return image_grid(to_uint8(generator.sample(count, seed=seed).cpu()), columns)


def image_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 grid image with ``columns`` per row (blank-padded)."""
    count, h, w, _ = images.shape
    rows = -(-count // columns)
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i in range(count):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    return grid


def train_gan(
    bank: ImageBank,
    config: GANTrainConfig,
    out_dir: str | Path,
    *,
    device: torch.device,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> GANTrainResult:
    """Train (or resume) the generator ``config`` describes on ``bank``; returns the EMA
    generator in eval mode."""
    out_dir = Path(out_dir)
    config.validate()
    check_checkpoint_every(checkpoint_every)
    if bank.images.shape[1] != config.resolution or bank.images.shape[2] != config.resolution:
        raise InputError(f"training images are {bank.images.shape[2]}x{bank.images.shape[1]} but "
                         f"the generator is {config.resolution}x{config.resolution}")
    with torch.random.fork_rng(devices=[]):  # seeded initial weights; the global RNG is restored
        torch.manual_seed(config.seed)
        generator, discriminator = config.build()
    generator, discriminator = generator.to(device), discriminator.to(device)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=config.betas)
    r1_ratio = config.r1_every / (config.r1_every + 1)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr * r1_ratio,
                             betas=tuple(b ** r1_ratio for b in config.betas))
    data_rng = torch.Generator().manual_seed(config.seed + 1)
    state = LoopState()
    last_r1 = 0.0
    extra: dict[str, Any] = {}  # a regulariser's running state (StyleGAN2: the path-length mean)

    out_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs have been checked
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.is_file():
        saved = load_state(checkpoint_path, CHECKPOINT_KEYS)
        check_resume(saved["config"], config.to_dict(), what="training run", where=out_dir,
                     may_change=("iterations",))  # a longer run continues a shorter one
        generator.load_state_dict(saved["generator"])
        discriminator.load_state_dict(saved["discriminator"])
        ema.load_state_dict(saved["ema"])
        opt_g.load_state_dict(saved["opt_g"])
        opt_d.load_state_dict(saved["opt_d"])
        data_rng.set_state(saved["data_rng"])
        extra.update(saved.get("extra", {}))
        state = LoopState(saved["step"], saved["seconds"], saved["log"])

    def checkpoint() -> None:
        save_generator(ema, out_dir / GENERATOR_FILE, dtype=torch.float16)
        save_state(checkpoint_path, {
            "config": config.to_dict(), "step": state.step, "seconds": state.seconds,
            "log": state.log, "generator": generator.state_dict(),
            "discriminator": discriminator.state_dict(), "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "data_rng": data_rng.get_state(), "extra": extra,
        })

    ema_beta = 0.5 ** (config.batch / max(config.ema_half_life_images, 1e-8))

    def train_step(step: int) -> dict[str, torch.Tensor | float]:
        nonlocal last_r1
        # Discriminator step (with the lazy R1 penalty every r1_every steps). The fakes' latents
        # are drawn before the real batch: the order every trained model in scenes/ used.
        with torch.no_grad():
            fake = config.fakes(generator, config.batch, data_rng, device)
        real = bank.sample(config.batch, data_rng)
        d_loss = F.softplus(discriminator(fake)).mean() + F.softplus(-discriminator(real)).mean()
        if config.r1_gamma > 0 and step % config.r1_every == 0:
            r1 = _r1_penalty(discriminator, real)
            d_loss = d_loss + r1 * (config.r1_gamma / 2) * config.r1_every
            last_r1 = float(r1.detach())
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        # Generator step (plus the architecture's regulariser, when it runs this step).
        fake = config.fakes(generator, config.batch, data_rng, device)
        g_loss = F.softplus(-discriminator(fake)).mean()
        penalty = config.g_regularizer(generator, step, data_rng, device, extra)
        opt_g.zero_grad(set_to_none=True)
        (g_loss if penalty is None else g_loss + penalty).backward()
        opt_g.step()

        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), generator.parameters(), strict=True):
                p_ema.lerp_(p, 1.0 - ema_beta)
            for b_ema, b in zip(ema.buffers(), generator.buffers(), strict=True):
                b_ema.copy_(b)  # running statistics such as StyleGAN2's w_avg
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "r1": last_r1}

    generator.train()
    discriminator.train()
    run_steps(state, config.iterations, train_step, checkpoint,
              checkpoint_every=checkpoint_every, desc=f"train GAN {config.resolution}px",
              progress=progress, on_log=on_step)

    ema.eval()
    save_png(sample_grid(ema), out_dir / "samples.png")
    summary = {"config": config.to_dict(), "steps": state.step,
               "seconds": round(state.seconds, 1), "device": str(device),
               "final": state.log[-1] if state.log else None}
    write_json(out_dir / "training.json", summary)
    return GANTrainResult(ema, state.step, state.seconds, state.log, out_dir)

