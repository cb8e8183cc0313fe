"""Reconstruction loss: pixel MSE plus an optional perceptual distance, per image; LPIPS; the
noise-map regulariser of NVIDIA's projector.

The perceptual backend is torchvision's VGG16 architecture with weights the user has on disk:
``--vgg-weights PATH`` or the torch hub cache (``<torch hub dir>/checkpoints/vgg16-397923af.pth``).
Weights are never downloaded and never random: when none are found the run says so in one line and
records ``perceptual: none``. Features are taken up to ``relu3_3`` (the official code's
``vgg16().features[:16]``) or ``conv4_3`` (the paper, ``features[:22]``); both images are
ImageNet-normalised and resized (nearest, as the official code) to ``size`` first.

**LPIPS** (Zhang et al. 2018, v0.1) is the ``lpips`` package's model with the linear heads it
ships, on a torchvision backbone whose weights are on disk (AlexNet for the metric, as the
package recommends; VGG16 for NVIDIA's projector, whose distance is the squared distance of
LPIPS-normalised VGG16 features, i.e. LPIPS-VGG). The backbone is never downloaded: without its
file the metric is ``null`` and one line names the file and where to put it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from inversion.options import (
    LPIPS_BACKBONES,
    LPIPS_METRIC_NET,
    PERCEPTUAL_BACKENDS,
    PERCEPTUAL_DISTANCES,
    VGG_FILE,
    VGG_LAYERS,
)
from mganprior.core.errors import InputError
from mganprior.core.weights import check_state_dict, read_torch_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)




def hub_path(filename: str) -> Path:
    """Where torchvision keeps (and we look for) a pretrained backbone file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def backbone_file(weights: str | Path | None, field: str, filename: str) -> tuple[Path, bool]:
    """A backbone's weights file and whether it exists: an explicit path must exist (one line
    naming ``field`` otherwise); without one, the torch hub cache's ``filename``."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"{field} {path}: no such file", field=field)
        return path, True
    path = hub_path(filename)
    return path, path.is_file()


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


class LPIPSDistance(nn.Module):
    """Per-image LPIPS ``[B]`` between two batches in [-1, 1]: the ``lpips`` package's model
    (v0.1, its shipped linear heads) on ``net``'s torchvision backbone weights ``backbone``.
    With ``size``, larger images are area-downsampled to ``size`` px first (NVIDIA's projector
    at 256 px)."""

    def __init__(self, backbone: dict[str, torch.Tensor], net: str = LPIPS_METRIC_NET,
                 size: int | None = None, source: str = "backbone weights") -> None:
        super().__init__()
        import warnings

        import lpips  # heavy; only when a backbone exists

        if net not in LPIPS_BACKBONES:
            raise InputError(f"lpips net must be one of {', '.join(LPIPS_BACKBONES)}, got "
                             f"{net!r}", field="lpips")
        with warnings.catch_warnings():  # torchvision's notice about lpips' 'pretrained' flag
            warnings.simplefilter("ignore")
            self.model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        heads = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
        head_state = {k: v for k, v in read_torch_checkpoint(heads).items()
                      if k.startswith("lin")}
        _load_lpips_backbone(self.model, backbone, source)
        expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items()
                    if k.startswith("lin") and not k.startswith("lins.")}  # lins: the same heads
        check_state_dict(expected, head_state, str(heads))
        self.model.load_state_dict(head_state, strict=False)
        self.model.eval().requires_grad_(False)
        self.net = net
        self.size = size

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.size is not None and images.shape[-1] > self.size:
            images, targets = (F.interpolate(x, size=(self.size, self.size), mode="area")
                               for x in (images, targets))
        return self.model(images.float(), targets.float()).flatten()


def _load_lpips_backbone(model: nn.Module, state_dict: dict[str, torch.Tensor],
                         source: str) -> None:
    """torchvision's ``features.N.*`` keys into lpips' ``net.sliceK.N.*``, strict on what is
    used; the classifier and deeper features of a full torchvision file are ignored."""
    names = {key: "features." + key.split(".", 2)[2] for key in model.state_dict()
             if key.startswith("net.slice")}
    expected = {torchvision_key: tuple(model.state_dict()[key].shape)
                for key, torchvision_key in names.items()}
    used = {k: v for k, v in state_dict.items() if k in expected}
    foreign = {k: v for k, v in state_dict.items()
               if k not in expected and not k.startswith(("features.", "classifier."))}
    check_state_dict(expected, used | foreign, source)
    model.load_state_dict({key: used[name].float() for key, name in names.items()},
                          strict=False)


@dataclass
class PerceptualStatus:
    """What the run uses: ``module`` is None when perceptual loss is off; ``note`` says why."""

    module: VGGPerceptual | LPIPSDistance | None
    backend: str  # "vgg16" or "none"
    note: str | None = None
    weights: str | None = None
    distance: str = "l1"  # with a module: "l1" (VGGPerceptual) or "lpips" (LPIPS-VGG)


def load_perceptual(backend: str = "vgg16", weights: str | Path | None = None,
                    layer: str = "relu3_3", size: int | None = None,
                    distance: str = "l1") -> PerceptualStatus:
    """Resolve the perceptual backend. An explicit ``weights`` path must exist; the hub cache is
    optional and its absence turns the perceptual term off with a one-line note. ``distance``:
    ``l1`` (mGANprior's VGG16 feature L1 at ``layer``) or ``lpips`` (LPIPS-VGG, NVIDIA's
    projector; ``size`` is then the side larger images are area-downsampled to)."""
    if backend == "none":
        return PerceptualStatus(None, "none")
    if backend not in PERCEPTUAL_BACKENDS:
        raise InputError(f"perceptual backend {backend!r} is unknown; backends: "
                         f"{', '.join(PERCEPTUAL_BACKENDS)}", field="perceptual")
    if distance not in PERCEPTUAL_DISTANCES:
        raise InputError(f"perceptual_distance must be one of {', '.join(PERCEPTUAL_DISTANCES)}"
                         f", got {distance!r}", field="perceptual_distance")
    path, found = backbone_file(weights, "vgg_weights", VGG_FILE)
    if not found:
        return PerceptualStatus(
            None, "none",
            note=f"perceptual: none (VGG16 weights not found; put {VGG_FILE} at {path} "
                 "or give its path: vgg_weights, --vgg-weights on the command line); using "
                 "the pixel loss only")
    state = read_torch_checkpoint(path)
    module = (LPIPSDistance(state, net="vgg", size=size, source=str(path))
              if distance == "lpips" else
              VGGPerceptual(state, layer=layer, size=size, source=str(path)))
    return PerceptualStatus(module, "vgg16", weights=str(path), distance=distance)


@dataclass
class LPIPSStatus:
    """The LPIPS metric of a run: ``module`` None (results say ``lpips: null``) with ``note``
    saying why, or without one when the metric is off."""

    module: LPIPSDistance | None
    net: str | None = None
    weights: str | None = None
    note: str | None = None

    def describe(self) -> dict[str, str | None]:
        return {"net": self.net, "weights": self.weights, "note": self.note}


def load_lpips(net: str | None = LPIPS_METRIC_NET, weights: str | Path | None = None
               ) -> LPIPSStatus:
    """The LPIPS metric on ``net``'s backbone (``None``: off). An explicit ``weights`` path
    must exist; without one the torch hub cache is tried, and a missing file is a note."""
    if net is None or net == "none":
        return LPIPSStatus(None)
    if net not in LPIPS_BACKBONES:
        raise InputError(f"lpips must be one of {', '.join([*LPIPS_BACKBONES, 'none'])}, got "
                         f"{net!r}", field="lpips")
    path, found = backbone_file(weights, "lpips_weights", LPIPS_BACKBONES[net])
    if not found:
        return LPIPSStatus(None, net, note=(
            f"lpips: null ({net} backbone weights not found; put {LPIPS_BACKBONES[net]} at "
            f"{path} or give its path: lpips_weights, --lpips-weights on the command line)"))
    module = LPIPSDistance(read_torch_checkpoint(path), net=net, source=str(path))
    return LPIPSStatus(module, net, str(path))


def noise_regularization(maps: list[torch.Tensor]) -> torch.Tensor:
    """NVIDIA's projector's noise regulariser per image ``[B]`` over maps ``[B, h, w]``: at every
    scale down to 8 px (2x2 average pooling between scales), the squared mean of
    ``n * roll(n, 1)`` along x plus the same along y, summed."""
    total = maps[0].new_zeros(maps[0].shape[0])
    for noise in maps:
        noise = noise[:, None]
        while True:
            for dim in (3, 2):
                total = total + (noise * torch.roll(noise, 1, dims=dim)).mean(dim=(1, 2, 3))**2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return total


@torch.no_grad()
def normalize_noise_(flat: torch.Tensor, sizes: list[int]) -> None:
    """Each image's maps, stored flat ``[B, sum sizes]`` one after the other, back to zero mean
    and unit mean square, in place (after every projector step)."""
    for noise in flat.split(sizes, dim=1):  # views: the update lands in ``flat``
        noise -= noise.mean(dim=1, keepdim=True)
        noise *= noise.square().mean(dim=1, keepdim=True).rsqrt()


def reconstruction_loss(predicted: torch.Tensor, observed: torch.Tensor,
                        perceptual: VGGPerceptual | LPIPSDistance | None = None,
                        mse_weight: float = 1.0, perceptual_weight: float = 0.0) -> torch.Tensor:
    """Per-image loss ``[B]``: ``mse_weight * MSE + perceptual_weight * distance`` (float32)."""
    predicted, observed = predicted.float(), observed.float()
    loss = mse_weight * (predicted - observed).pow(2).flatten(1).mean(dim=1)
    if perceptual is not None and perceptual_weight:
        loss = loss + perceptual_weight * perceptual(predicted, observed)
    return loss
