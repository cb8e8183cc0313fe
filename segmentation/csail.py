"""CSAIL semantic-segmentation-pytorch (``mit_semseg``) encoder/decoder pairs as Segmenters.

The folders that project publishes (``ade20k-resnet50dilated-ppm_deepsup/`` with
``encoder_epoch_20.pth`` and ``decoder_epoch_20.pth``, the GAN Dissection family of segmenters)
are built with the ``mit-semseg`` package's module classes (installed without its unused
dependencies, as ``gan-face-generate`` is; never with its builder, which downloads ImageNet
weights) and loaded **strictly** with ``weights_only=True``: the project itself loads with
``strict=False``, which hides a wrong file; here every missing or unexpected key is named.

The architecture comes from a ``*.yaml`` config in the folder (``MODEL.arch_encoder``,
``MODEL.arch_decoder``, ``MODEL.fc_dim``, ``DATASET.num_class``) or from the folder's name
(``DATASET-ENCODER-DECODER``). Inputs are ImageNet-normalised [0, 1] images, as the project
trains them.

**Scales.** By default the network sees each image at its own size, once. The CSAIL project's
own evaluation (its ``eval.py``/``test.py`` with ``mit_semseg.dataset``'s resizing) averages
several scales instead: the 8-bit image is resized (PIL, bilinear) so that its short side is each
of ``DATASET.imgSizes`` (its long side at most ``imgMaxSize``, both rounded up to a multiple of
``padding_constant``), each resized image's class probabilities are upsampled to the image's
size, and their mean is argmaxed. :class:`MultiScale` does exactly that; ``csail`` names the
folder's own test sizes (its YAML's ``DATASET``), or CSAIL's defaults
(300, 375, 450, 525, 600; 1000; 8) when it has none.

**ADE20K-150 by index.** CSAIL's ``object150_info.csv`` numbers the classes from 1 (wall) and
keeps 0 for "unlabelled"; its networks predict 150 channels, channel k being class k + 1 there.
This project's ``ade20k-150`` numbers the same classes from 0 (wall), as the transformers
checkpoints do, so channel k is our class k: the mapping is by index, never by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mganprior.core.errors import InputError
from mganprior.core.pixels import to_uint8
from mganprior.core.weights import load_strict, read_torch_checkpoint
from segmentation.segmenters import check_images
from segmentation.vocabularies import ADE20K_150, Vocabulary

# each encoder with the width of the features its decoder reads (MODEL.fc_dim)
ENCODER_WIDTHS = {"resnet18dilated": 512, "resnet50dilated": 2048, "resnet101dilated": 2048,
                  "resnet50": 2048, "resnet101": 2048, "mobilenetv2dilated": 320}
ENCODERS = tuple(ENCODER_WIDTHS)
DECODERS = ("ppm_deepsup", "ppm", "upernet", "c1_deepsup", "c1")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MAX_SCALES = 16
MAX_SIDE = 4096  # a scale beyond this would allocate gigabytes of activations per image


@dataclass(frozen=True)
class MultiScale:
    """CSAIL's multi-scale inference: short sides, the long side's cap, the size multiple."""

    sizes: tuple[int, ...]
    max_size: int = 1000
    padding: int = 8

    def __post_init__(self) -> None:
        def side(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and \
                1 <= value <= MAX_SIDE

        if not 1 <= len(self.sizes) <= MAX_SCALES or not all(side(s) for s in self.sizes):
            raise InputError(f"segmenter_scales must be 1 to {MAX_SCALES} sizes in "
                             f"[1, {MAX_SIDE}], got {list(self.sizes)}",
                             field="segmenter_scales")
        if not side(self.max_size) or not side(self.padding):
            raise InputError(f"segmenter_scales: the long-side cap and the size multiple must be "
                             f"in [1, {MAX_SIDE}], got {self.max_size} and {self.padding}",
                             field="segmenter_scales")

    def target(self, height: int, width: int, short: int) -> tuple[int, int]:
        """The (height, width) that ``mit_semseg.dataset`` resizes an image to for one scale."""
        scale = min(short / float(min(height, width)), self.max_size / float(max(height, width)))
        rounded = [((int(side * scale) - 1) // self.padding + 1) * self.padding
                   for side in (height, width)]
        return rounded[0], rounded[1]


CSAIL_SCALES = MultiScale((300, 375, 450, 525, 600), 1000, 8)


def parse_scales(text: str | None, config: dict[str, Any] | None = None) -> MultiScale | None:
    """``None`` or ``1``: one pass at the image's size. ``csail``: the folder config's test
    scales, else CSAIL's defaults. ``300,450``: those short sides (cap 1000, multiples of 8)."""
    if text is None or str(text).strip() in ("", "1"):
        return None
    text = str(text).strip()
    if text == "csail":
        dataset = (config or {}).get("dataset") or {}
        if not dataset:
            return CSAIL_SCALES
        return MultiScale(tuple(dataset.get("imgSizes", CSAIL_SCALES.sizes)),
                          dataset.get("imgMaxSize", CSAIL_SCALES.max_size),
                          dataset.get("padding_constant", CSAIL_SCALES.padding))
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"segmenter_scales must be csail, 1 or short sides such as 300,450, "
                         f"got {text!r}", field="segmenter_scales") from None
    return MultiScale(sizes, CSAIL_SCALES.max_size, CSAIL_SCALES.padding)


def csail_files(directory: Path) -> tuple[Path, Path] | None:
    encoders = sorted(directory.glob("encoder*.pth"))
    decoders = sorted(directory.glob("decoder*.pth"))
    return (encoders[-1], decoders[-1]) if encoders and decoders else None


def is_csail_folder(directory: Path) -> bool:
    return csail_files(directory) is not None


MAX_CLASSES = 10000
MAX_CONFIG_BYTES = 1 << 20


def read_yaml_config(path: Path) -> dict[str, Any]:
    """A CSAIL YAML config as plain values. Aliases are refused before anything is expanded (a
    kilobyte of nested aliases expands to gigabytes), and so is a file over 1 MB."""
    import yaml

    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path} is {path.stat().st_size} bytes; a CSAIL config is a few "
                             "hundred", field="config")
        text = path.read_text()
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise InputError(f"{path} uses a YAML alias (*{event.anchor}); CSAIL configs "
                                 "have none, write the value out", field="config")
        config = yaml.safe_load(text)
    except (yaml.YAMLError, OSError, UnicodeDecodeError, RecursionError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path} is not a YAML config ({reason})", field="config") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} must hold a mapping with MODEL and DATASET, got "
                         f"{type(config).__name__}", field="config")
    return config


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{where} must be an integer in [{low}, {high}], got {value!r}",
                         field=where.rsplit(" ", 1)[-1])
    return value


def _sizes(value: Any, where: str) -> list[int]:
    """``imgSizes``: a list, or yacs's tuple written as a string ``(300, 375)``."""
    if isinstance(value, str):
        import ast

        try:
            value = ast.literal_eval(value) if len(value) < 200 else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_SCALES:
        raise InputError(f"{where} must list 1 to {MAX_SCALES} sizes, got {value!r}",
                         field="imgSizes")
    return [_integer(v, where, 1, MAX_SIDE) for v in value]


def read_architecture(directory: Path) -> dict[str, Any]:
    """``arch_encoder``, ``arch_decoder``, ``fc_dim``, ``num_class`` and the test scales
    (``dataset``, empty when the folder says none) of a CSAIL folder, checked before anything is
    built."""
    for path in sorted(directory.glob("*.yaml")):
        config = read_yaml_config(path)
        model, dataset = config.get("MODEL"), config.get("DATASET", {})
        if not isinstance(model, dict) or not isinstance(dataset, dict):
            raise InputError(f"{path} is not a CSAIL config: MODEL and DATASET must be mappings "
                             "(MODEL.arch_encoder, MODEL.arch_decoder)", field="config")
        encoder, decoder = model.get("arch_encoder"), model.get("arch_decoder")
        if not isinstance(encoder, str) or not isinstance(decoder, str):
            raise InputError(f"{path} is not a CSAIL config: MODEL.arch_encoder and "
                             f"MODEL.arch_decoder must be names, got {encoder!r} and "
                             f"{decoder!r}", field="config")
        encoder, decoder = encoder.lower(), decoder.lower()
        check_names(encoder, decoder)
        arch = {"arch_encoder": encoder, "arch_decoder": decoder,
                "fc_dim": _integer(model.get("fc_dim", ENCODER_WIDTHS[encoder]),
                                   f"{path}: MODEL.fc_dim", 1, 8192),
                "num_class": _integer(dataset.get("num_class", 150),
                                      f"{path}: DATASET.num_class", 1, MAX_CLASSES),
                "dataset": {}}
        if arch["fc_dim"] != ENCODER_WIDTHS[encoder]:
            raise InputError(f"{path}: MODEL.fc_dim is {arch['fc_dim']} but a {encoder} encoder "
                             f"gives {ENCODER_WIDTHS[encoder]} channels", field="fc_dim")
        if "imgSizes" in dataset:
            arch["dataset"]["imgSizes"] = _sizes(dataset["imgSizes"], f"{path}: DATASET.imgSizes")
        for key in ("imgMaxSize", "padding_constant"):
            if key in dataset:
                arch["dataset"][key] = _integer(dataset[key], f"{path}: DATASET.{key}", 1,
                                                MAX_SIDE)
        return arch
    match = re.fullmatch(rf"\w+-({'|'.join(ENCODERS)})-({'|'.join(DECODERS)})", directory.name)
    if match is None:
        raise InputError(f"{directory} holds CSAIL encoder/decoder weights but no *.yaml config "
                         "and its name is not DATASET-ENCODER-DECODER (e.g. "
                         "ade20k-resnet50dilated-ppm_deepsup)")
    encoder = match.group(1)
    return {"arch_encoder": encoder, "arch_decoder": match.group(2),
            "fc_dim": ENCODER_WIDTHS[encoder], "num_class": 150, "dataset": {}}


def check_names(encoder: str, decoder: str) -> None:
    if encoder not in ENCODERS or decoder not in DECODERS:
        raise InputError(f"CSAIL architecture {encoder}-{decoder} is not supported; "
                         f"encoders: {', '.join(ENCODERS)}; decoders: {', '.join(DECODERS)}")


def build(arch: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Encoder and decoder modules of the package, with random weights (nothing downloaded)."""
    try:
        from mit_semseg.models import mobilenet, models, resnet
    except ModuleNotFoundError:
        raise InputError("CSAIL segmenters need the mit-semseg package (pip install --no-deps "
                         "mit-semseg==1.0.0)") from None
    encoder_name, decoder_name = arch["arch_encoder"], arch["arch_decoder"]
    check_names(encoder_name, decoder_name)
    if encoder_name == "mobilenetv2dilated":
        encoder = models.MobileNetV2Dilated(mobilenet.mobilenetv2(pretrained=False),
                                            dilate_scale=8)
    else:
        depth = re.match(r"resnet(\d+)", encoder_name).group(1)
        base = getattr(resnet, f"resnet{depth}")(pretrained=False)
        encoder = models.ResnetDilated(base, dilate_scale=8) if encoder_name.endswith(
            "dilated") else models.Resnet(base)
    classes, fc_dim = arch["num_class"], arch["fc_dim"]
    decoders = {"ppm_deepsup": lambda: models.PPMDeepsup(classes, fc_dim, use_softmax=True),
                "ppm": lambda: models.PPM(classes, fc_dim, use_softmax=True),
                "upernet": lambda: models.UPerNet(classes, fc_dim, use_softmax=True,
                                                  fpn_dim=512),
                "c1_deepsup": lambda: models.C1DeepSup(classes, fc_dim, use_softmax=True),
                "c1": lambda: models.C1(classes, fc_dim, use_softmax=True)}
    return encoder, decoders[decoder_name]()


class CSAILSegmenter:
    """A CSAIL encoder/decoder pair as a Segmenter over ADE20K-150 (by index), at one scale or
    several (``scales``, see the module docstring)."""

    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module,
                 vocabulary: Vocabulary, source: str, batch_size: int = 8,
                 scales: MultiScale | None = None) -> None:
        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        self.vocabulary, self.source, self.batch_size = vocabulary, source, batch_size
        self.scales = scales

    @property
    def labels(self) -> tuple[str, ...]:
        return self.vocabulary.names

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images to ImageNet-normalised ones, as CSAIL's ``img_transform``."""
        return (x - torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)) / \
            torch.tensor(STD, device=x.device).view(1, 3, 1, 1)

    def _probabilities(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        scores = self.decoder(self.encoder(x, return_feature_maps=True), segSize=size)
        if scores.shape[1] != len(self.vocabulary):
            raise InputError(f"{self.source} predicts {scores.shape[1]} classes but its "
                             f"vocabulary has {len(self.vocabulary)}")
        return scores

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, K, H, W]`` at the images' size: one pass, or the mean over
        the scales."""
        check_images(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if self.scales is None:
            x = self._normalised((images.to(self.device, torch.float32) + 1) / 2)
            return self._probabilities(x, size)
        from PIL import Image

        pixels = to_uint8(images)  # CSAIL's evaluation reads 8-bit images
        total = torch.zeros(len(images), len(self.vocabulary), *size, device=self.device)
        for short in self.scales.sizes:
            height, width = self.scales.target(*size, short)
            resized = np.stack([np.asarray(Image.fromarray(image).resize(
                (width, height), Image.BILINEAR)) for image in pixels])
            x = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float() / 255.0
            total = total + self._probabilities(self._normalised(x), size) / len(
                self.scales.sizes)
        return total

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        maps = [self.scores(chunk).argmax(dim=1).cpu() for chunk in images.split(self.batch_size)]
        return torch.cat(maps) if maps else torch.zeros((0, *images.shape[-2:]), dtype=torch.long)


def load_csail_segmenter(directory: str | Path, *, labels: Any = None,
                         device: str | torch.device | None = None,
                         scales: str | None = None) -> CSAILSegmenter:
    """A CSAIL folder as a Segmenter; ``scales`` as :func:`parse_scales` reads them."""
    from mganprior.core.devices import resolve_device
    from segmentation.segmenters import vocabulary_from

    directory = Path(directory)
    files = csail_files(directory)
    if files is None:
        raise InputError(f"{directory} holds no encoder*.pth and decoder*.pth pair")
    arch = read_architecture(directory)
    multiscale = parse_scales(scales, arch)
    vocabulary = vocabulary_from(labels) if labels is not None else ADE20K_150
    if len(vocabulary) != arch["num_class"]:
        raise InputError(f"{directory} predicts {arch['num_class']} classes but the vocabulary "
                         f"{vocabulary.name} has {len(vocabulary)}; pass labels= with its "
                         "classes", field="labels")
    encoder, decoder = build(arch)
    for module, path in zip((encoder, decoder), files, strict=True):
        state = {k.removeprefix("module."): v for k, v in read_torch_checkpoint(path).items()
                 if isinstance(v, torch.Tensor)}
        for key in module.state_dict():  # BatchNorm step counters: older files lack them
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, torch.zeros((), dtype=torch.long))
        load_strict(module, state, str(path))
    target = resolve_device(device)
    return CSAILSegmenter(encoder.float().to(target), decoder.float().to(target), vocabulary,
                          str(directory), scales=multiscale)
