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

**ADE20K-150 by index.** CSAIL's ``object150_info.csv`` numbers the classes from 1 (wall) and
keeps 0 for "unlabelled"; its networks predict 150 channels, channel k being class k + 1 there.
This project's ``ade20k-150`` numbers the same classes from 0 (wall), as the transformers
checkpoints do, so channel k is our class k: the mapping is by index, never by name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.errors import InputError
from core.weights import load_strict, read_torch_checkpoint
from segmentation.segmenters import check_images
from segmentation.vocabularies import ADE20K_150, Vocabulary

ENCODERS = ("resnet18dilated", "resnet50dilated", "resnet101dilated", "resnet50", "resnet101",
            "mobilenetv2dilated")
DECODERS = ("ppm_deepsup", "ppm", "upernet", "c1_deepsup", "c1")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def csail_files(directory: Path) -> tuple[Path, Path] | None:
    encoders = sorted(directory.glob("encoder*.pth"))
    decoders = sorted(directory.glob("decoder*.pth"))
    return (encoders[-1], decoders[-1]) if encoders and decoders else None


def is_csail_folder(directory: Path) -> bool:
    return csail_files(directory) is not None


def read_architecture(directory: Path) -> dict[str, Any]:
    """``arch_encoder``, ``arch_decoder``, ``fc_dim`` and ``num_class`` of a CSAIL folder."""
    for path in sorted(directory.glob("*.yaml")):
        import yaml

        try:
            config = yaml.safe_load(path.read_text())
            model, dataset = config["MODEL"], config.get("DATASET", {})
            return {"arch_encoder": str(model["arch_encoder"]).lower(),
                    "arch_decoder": str(model["arch_decoder"]).lower(),
                    "fc_dim": int(model.get("fc_dim", 2048)),
                    "num_class": int(dataset.get("num_class", 150))}
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            raise InputError(f"{path} is not a CSAIL config (MODEL.arch_encoder, "
                             f"MODEL.arch_decoder: {err})") from None
    match = re.fullmatch(rf"\w+-({'|'.join(ENCODERS)})-({'|'.join(DECODERS)})", directory.name)
    if match is None:
        raise InputError(f"{directory} holds CSAIL encoder/decoder weights but no *.yaml config "
                         "and its name is not DATASET-ENCODER-DECODER (e.g. "
                         "ade20k-resnet50dilated-ppm_deepsup)")
    encoder = match.group(1)
    fc_dim = 320 if encoder.startswith("mobilenet") else 512 if encoder.startswith(
        "resnet18") else 2048
    return {"arch_encoder": encoder, "arch_decoder": match.group(2), "fc_dim": fc_dim,
            "num_class": 150}


def build(arch: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Encoder and decoder modules of the package, with random weights (nothing downloaded)."""
    try:
        from mit_semseg.models import mobilenet, models, resnet
    except ModuleNotFoundError:
        raise InputError("CSAIL segmenters need the mit-semseg package (pip install --no-deps "
                         "mit-semseg==1.0.0)") from None
    encoder_name, decoder_name = arch["arch_encoder"], arch["arch_decoder"]
    if encoder_name not in ENCODERS or decoder_name not in DECODERS:
        raise InputError(f"CSAIL architecture {encoder_name}-{decoder_name} is not supported; "
                         f"encoders: {', '.join(ENCODERS)}; decoders: {', '.join(DECODERS)}")
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
    """A CSAIL encoder/decoder pair as a Segmenter over ADE20K-150 (by index)."""

    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module,
                 vocabulary: Vocabulary, source: str, batch_size: int = 8) -> None:
        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        self.vocabulary, self.source, self.batch_size = vocabulary, source, batch_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.vocabulary.names

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        x = (images.to(self.device, torch.float32) + 1) / 2
        x = (x - torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)) / \
            torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
        scores = self.decoder(self.encoder(x, return_feature_maps=True),
                              segSize=tuple(images.shape[-2:]))
        if scores.shape[1] != len(self.vocabulary):
            raise InputError(f"{self.source} predicts {scores.shape[1]} classes but its "
                             f"vocabulary has {len(self.vocabulary)}")
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear",
                             align_corners=False) if scores.shape[-2:] != images.shape[-2:] \
            else scores

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        maps = [self.scores(chunk).argmax(dim=1).cpu() for chunk in images.split(self.batch_size)]
        return torch.cat(maps) if maps else torch.zeros((0, *images.shape[-2:]), dtype=torch.long)


def load_csail_segmenter(directory: str | Path, *, labels: Any = None,
                         device: str | torch.device | None = None) -> CSAILSegmenter:
    from core.devices import resolve_device
    from segmentation.segmenters import vocabulary_from

    directory = Path(directory)
    files = csail_files(directory)
    if files is None:
        raise InputError(f"{directory} holds no encoder*.pth and decoder*.pth pair")
    arch = read_architecture(directory)
    encoder, decoder = build(arch)
    for module, path in zip((encoder, decoder), files, strict=True):
        state = {k.removeprefix("module."): v for k, v in read_torch_checkpoint(path).items()
                 if isinstance(v, torch.Tensor)}
        for key in module.state_dict():  # BatchNorm step counters: older files lack them
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, torch.zeros((), dtype=torch.long))
        load_strict(module, state, str(path))
    vocabulary = vocabulary_from(labels) if labels is not None else ADE20K_150
    if len(vocabulary) != arch["num_class"]:
        raise InputError(f"{directory} predicts {arch['num_class']} classes but the vocabulary "
                         f"{vocabulary.name} has {len(vocabulary)}; pass labels= with its "
                         "classes", field="labels")
    target = resolve_device(device)
    return CSAILSegmenter(encoder.float().to(target), decoder.float().to(target), vocabulary,
                          str(directory))
