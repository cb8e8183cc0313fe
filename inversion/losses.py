"""Reconstruction loss: pixel MSE plus an optional VGG16 perceptual L1, per image.

The perceptual backend is torchvision's VGG16 architecture with weights the user has on disk:
``--vgg-weights PATH`` or the torch hub cache (``<torch hub dir>/checkpoints/vgg16-397923af.pth``).
Weights are never downloaded and never random: when none are found the run says so in one line and
records ``perceptual: none``. Features are taken up to ``relu3_3`` (the official code's
``vgg16().features[:16]``) or ``conv4_3`` (the paper, ``features[:22]``); both images are
ImageNet-normalised and resized (nearest, as the official code) to ``size`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InputError
from core.weights import check_state_dict, read_torch_checkpoint

PERCEPTUAL_BACKENDS = ("vgg16", "none")
VGG_LAYERS = {"relu3_3": 16, "conv4_3": 22}
VGG_FILE = "vgg16-397923af.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hub_vgg_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG_FILE


class VGGPerceptual(nn.Module):
    """Per-image mean L1 distance between VGG16 features of two image batches in [-1, 1]."""

    def __init__(self, state_dict: dict[str, torch.Tensor], layer: str = "relu3_3",
                 size: int | None = None, source: str = "VGG16 weights") -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers  # heavy; only when weights exist

        if layer not in VGG_LAYERS:
            raise InputError(f"perceptual_layer must be one of {', '.join(VGG_LAYERS)}, "
                             f"got {layer!r}", field="perceptual_layer")
        self.features = make_layers(cfgs["D"])[: VGG_LAYERS[layer]]  # VGG16's conv trunk
        _load_vgg_features(self.features, state_dict, source)
        self.features.eval().requires_grad_(False)
        self.layer = layer
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images + 1) / 2 - self.mean) / self.std
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        return self.features(x)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (self._embed(images) - self._embed(targets)).abs().flatten(1).mean(dim=1)

    def distance_map(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Where two batches differ perceptually: the channel-mean L1 of their features,
        upsampled (bilinear) to the input size, ``[B, H, W]``."""
        distance = (self._embed(images) - self._embed(targets)).abs().mean(dim=1, keepdim=True)
        return F.interpolate(distance, size=images.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]


def _load_vgg_features(features: nn.Sequential, state_dict: dict[str, torch.Tensor],
                       source: str) -> None:
    """Strict on what is used (``features.*`` up to the layer); a full torchvision VGG16 file
    also holds deeper features and the classifier, which are expected and ignored."""
    expected = {f"features.{k}": tuple(v.shape) for k, v in features.state_dict().items()}
    used = {k: v for k, v in state_dict.items() if k in expected}
    foreign = {k: v for k, v in state_dict.items()
               if k not in expected and not k.startswith(("features.", "classifier."))}
    check_state_dict(expected, used | foreign, source)
    features.load_state_dict({k.removeprefix("features."): v.float() for k, v in used.items()})


@dataclass
class PerceptualStatus:
    """What the run uses: ``module`` is None when perceptual loss is off; ``note`` says why."""

    module: VGGPerceptual | None
    backend: str  # "vgg16" or "none"
    note: str | None = None
    weights: str | None = None


def load_perceptual(backend: str = "vgg16", weights: str | Path | None = None,
                    layer: str = "relu3_3", size: int | None = None) -> PerceptualStatus:
    """Resolve the perceptual backend. An explicit ``weights`` path must exist; the hub cache is
    optional and its absence turns the perceptual term off with a one-line note."""
    if backend == "none":
        return PerceptualStatus(None, "none")
    if backend not in PERCEPTUAL_BACKENDS:
        raise InputError(f"perceptual backend {backend!r} is unknown; backends: "
                         f"{', '.join(PERCEPTUAL_BACKENDS)}", field="perceptual")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"vgg_weights {path}: no such file", field="vgg_weights")
    else:
        path = hub_vgg_path()
        if not path.is_file():
            return PerceptualStatus(
                None, "none",
                note=f"perceptual: none (VGG16 weights not found; put {VGG_FILE} at {path} "
                     "or pass its path with --vgg-weights); using the pixel loss only")
    module = VGGPerceptual(read_torch_checkpoint(path), layer=layer, size=size, source=str(path))
    return PerceptualStatus(module, "vgg16", weights=str(path))


def reconstruction_loss(predicted: torch.Tensor, observed: torch.Tensor,
                        perceptual: VGGPerceptual | None = None, mse_weight: float = 1.0,
                        perceptual_weight: float = 0.0) -> torch.Tensor:
    """Per-image loss ``[B]``: ``mse_weight * MSE + perceptual_weight * VGG-L1`` (float32)."""
    predicted, observed = predicted.float(), observed.float()
    loss = mse_weight * (predicted - observed).pow(2).flatten(1).mean(dim=1)
    if perceptual is not None and perceptual_weight:
        loss = loss + perceptual_weight * perceptual(predicted, observed)
    return loss
