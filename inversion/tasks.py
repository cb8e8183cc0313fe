"""Tasks: the degradation each one applies inside the loss, and how its output is finished.

Every task is a forward model ``A``. The loss compares ``A(x_inv)`` with the observation ``y``:

- inversion: ``A = identity``;
- colorization: ``A(x) = gray(x)`` (0.299 R + 0.587 G + 0.114 B, repeated on 3 channels). The
  output keeps the observation's luma and the reconstruction's chroma (YCbCr), as the official code;
- super-resolution: ``A(x) = down_k(x)``, bilinear like the official code (optionally antialiased);
  the observation is ``H/k x W/k``;
- inpainting: ``A(x) = x * mask`` with the mask convention **1 = known pixel, 0 = hole**;
- denoising: ``A = identity``; the observation is the clean image plus Gaussian noise of standard
  deviation ``sigma`` in 0-255 pixel units, clamped to the valid range.

In synthetic mode the clean image is known: ``y = observe(clean)`` and metrics use the clean image.
In observed mode the user's image already is the degraded observation (``accept(image)``).
Images are ``[B, 3, H, W]`` in [-1, 1]. Per-image randomness (noise, random masks) comes from
per-image seeds in the :class:`TaskContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mganprior.core.errors import InputError
from mganprior.core.files import describe_missing

LUMA = (0.299, 0.587, 0.114)


def gray(images: torch.Tensor) -> torch.Tensor:
    """Luma ``[B, 1, H, W]`` of RGB images ``[B, 3, H, W]`` (ITU-R BT.601 weights)."""
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


@dataclass
class TaskContext:
    """Per-batch state: the images' seeds, the generator resolution and, for inpainting, masks."""

    seeds: list[int]
    resolution: int
    device: torch.device
    mask: torch.Tensor | None = None  # [B, 1, H, W], 1 = known

    def subset(self, index: torch.Tensor) -> TaskContext:
        """The context of the images ``index`` only."""
        chosen = index.tolist()
        return TaskContext([self.seeds[i] for i in chosen], self.resolution, self.device,
                           None if self.mask is None else self.mask[index])

    def generators(self) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(int(s)) for s in self.seeds]


class Task:
    """Base: inversion. Subclasses override the forward model and the finishing step."""

    name: ClassVar[str] = "inversion"

    def observation_size(self, resolution: int) -> int:
        return resolution

    def check(self, resolution: int) -> None:
        """Raise InputError when the task cannot run on a generator of this resolution."""
        self.observation_size(resolution)

    def context(self, resolution: int, seeds: list[int], device: torch.device | str) -> TaskContext:
        return TaskContext(list(seeds), resolution, torch.device(device))

    def view(self, images: torch.Tensor, ctx: TaskContext) -> torch.Tensor:
        """The forward model ``A`` applied to generator images."""
        return images

    def observe(self, clean: torch.Tensor, ctx: TaskContext) -> torch.Tensor:
        """Synthesise the observation from clean images."""
        return self.view(clean, ctx)

    def accept(self, observed: torch.Tensor, ctx: TaskContext) -> torch.Tensor:
        """Turn a user-supplied degraded image into the observation."""
        return self.view(observed, ctx)

    def finalize(self, reconstruction: torch.Tensor, observation: torch.Tensor,
                 ctx: TaskContext) -> torch.Tensor:
        """The task's output image from the reconstruction ``x_inv``."""
        return reconstruction

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


class Inversion(Task):
    name = "inversion"


class Colorization(Task):
    name = "colorization"

    def view(self, images, ctx):
        return gray(images).expand(-1, 3, -1, -1)

    def finalize(self, reconstruction, observation, ctx):
        """Observation's luma, reconstruction's chroma: R, G, B all carry Y with weight 1 in
        YCbCr, so replacing Y adds the same luma difference to every channel."""
        luma_shift = observation[:, :1] - gray(reconstruction)
        return (reconstruction + luma_shift).clamp(-1, 1)


@dataclass
class SuperResolution(Task):
    name: ClassVar[str] = "super-resolution"
    factor: int = 4
    antialias: bool = False

    def __post_init__(self):
        if self.factor < 1:
            raise InputError(f"factor must be >= 1, got {self.factor}", field="factor")

    def observation_size(self, resolution):
        if resolution % self.factor:
            raise InputError(f"factor {self.factor} does not divide the generator resolution "
                             f"{resolution}", field="factor")
        return resolution // self.factor

    def view(self, images, ctx):
        if self.factor == 1:
            return images
        size = images.shape[-1] // self.factor
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=self.antialias)

    def accept(self, observed, ctx):
        return observed

    def to_dict(self):
        return {"name": self.name, "factor": self.factor, "antialias": self.antialias}


@dataclass
class Inpainting(Task):
    """``mask``: ``center:F`` (a centred square hole of side F x resolution), ``random:P`` (a
    fraction P of pixels missing, drawn per image), or a PNG path (white = known, black = hole;
    ``invert_mask`` for files where white marks the hole, like the official mGANprior masks)."""

    name: ClassVar[str] = "inpainting"
    mask: str = "center:0.5"
    invert_mask: bool = False
    resize_mask: bool = False
    _file_mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        kind, _, value = self.mask.partition(":")
        if kind in ("center", "random"):
            try:
                fraction = float(value)
            except ValueError:
                raise InputError(f"mask {self.mask}: expected {kind}:FRACTION",
                                 field="mask") from None
            if not 0.0 < fraction < 1.0:
                raise InputError(f"mask {self.mask}: the fraction must be in (0, 1)", field="mask")
        else:
            self._file_mask = _read_mask(Path(self.mask), self.invert_mask)

    def check(self, resolution: int) -> None:
        if self._file_mask is None:
            self.mask_for(resolution, [0])  # a hole that covers everything is refused here
            return
        h, w = self._file_mask.shape
        if (h, w) != (resolution, resolution) and not self.resize_mask:
            raise InputError(f"mask {self.mask} is {w}x{h} but the generator makes "
                             f"{resolution}x{resolution} images (pass --resize-mask to resize it)")

    def mask_for(self, resolution: int, seeds: list[int]) -> torch.Tensor:
        """Masks ``[B, 1, H, W]`` of 0/1 floats, 1 = known."""
        kind, _, value = self.mask.partition(":")
        if kind == "center":
            side = round(float(value) * resolution)
            if side >= resolution:
                raise InputError(f"mask {self.mask} hides all {resolution}x{resolution} pixels; "
                                 "use a smaller fraction", field="mask")
            start = (resolution - side) // 2
            mask = torch.ones(1, 1, resolution, resolution)
            mask[..., start:start + side, start:start + side] = 0
            return mask.expand(len(seeds), -1, -1, -1).clone()
        if kind == "random":
            missing = round(float(value) * resolution * resolution)
            if missing >= resolution * resolution:
                raise InputError(f"mask {self.mask} hides all {resolution}x{resolution} pixels; "
                                 "use a smaller fraction", field="mask")
            masks = torch.ones(len(seeds), 1, resolution * resolution)
            for i, seed in enumerate(seeds):
                order = torch.randperm(resolution * resolution,
                                       generator=torch.Generator().manual_seed(int(seed)))
                masks[i, 0, order[:missing]] = 0
            return masks.view(len(seeds), 1, resolution, resolution)
        self.check(resolution)
        mask = Image.fromarray(self._file_mask * 255)
        if mask.size != (resolution, resolution):
            mask = mask.resize((resolution, resolution), Image.NEAREST)
        tensor = torch.from_numpy((np.asarray(mask) > 127).astype(np.float32))
        return tensor[None, None].expand(len(seeds), -1, -1, -1).clone()

    def context(self, resolution, seeds, device):
        ctx = super().context(resolution, seeds, device)
        ctx.mask = self.mask_for(resolution, seeds).to(ctx.device)
        return ctx

    def view(self, images, ctx):
        return images * ctx.mask.to(images.dtype)

    def to_dict(self):
        return {"name": self.name, "mask": self.mask, "invert_mask": self.invert_mask,
                "resize_mask": self.resize_mask, "mask_convention": "1 = known"}


def _read_mask(path: Path, invert: bool) -> np.ndarray:
    from inversion.images import open_image

    if not path.is_file():
        raise InputError(f"mask {path} {describe_missing(path)} (or use center:F / random:P)",
                         field="mask")
    with open_image(path, "mask") as image:
        gray_mask = np.asarray(image.convert("L"))
    known = (gray_mask > 127).astype(np.uint8)
    known = 1 - known if invert else known
    if not known.any():
        raise InputError(f"mask {path} has no known pixel (1 = known, white unless "
                         "--invert-mask): there is nothing to invert from", field="mask")
    return known


@dataclass
class Denoising(Task):
    name: ClassVar[str] = "denoising"
    sigma: float = 25.0  # in 0-255 pixel units

    def __post_init__(self):
        if not 0 <= self.sigma < float("inf"):
            raise InputError(f"sigma must be a finite number >= 0 (0-255 pixel units), got "
                             f"{self.sigma}",
                             field="sigma")

    def observe(self, clean, ctx):
        noise = torch.stack([torch.randn(clean.shape[1:], generator=g) for g in ctx.generators()])
        return (clean + noise.to(clean) * (self.sigma / 127.5)).clamp(-1, 1)

    def to_dict(self):
        return {"name": self.name, "sigma": self.sigma, "sigma_units": "0-255"}


TASKS: dict[str, type[Task]] = {t.name: t for t in (Inversion, Colorization, SuperResolution,
                                                     Inpainting, Denoising)}  # TASK_NAMES' order


def make_task(name: str, **options: Any) -> Task:
    """Build a task by name; options that the task does not take are ignored."""
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    cls = TASKS[name]
    fields = getattr(cls, "__dataclass_fields__", {})
    return cls(**{k: v for k, v in options.items() if k in fields and v is not None
                  and not k.startswith("_")})
