"""Hugging Face transformers semantic-segmentation models as Segmenters, always offline.

A folder written by ``save_pretrained`` (``config.json`` with ``model_type``, the weights,
``preprocessor_config.json``) or a hub cache entry named by its repo id
(``nvidia/segformer-b0-finetuned-ade-512-512``) is loaded with ``local_files_only=True``: nothing
is ever fetched, and a missing file gets one line naming it and the command that would fetch it
on a machine with network.

- **Per-pixel models** (SegFormer, UPerNet with ConvNeXt or Swin backbones, BEiT, DPT, ...):
  ``AutoModelForSemanticSegmentation``; their logits are upsampled to the image and argmaxed.
- **Universal models** (Mask2Former, MaskFormer, OneFormer): ``AutoModelForUniversalSegmentation``;
  the semantic map is each class's probability (softmax over the classes of every query, the
  "no object" class dropped) times each query's mask probability, summed over queries.

Class names come from ``config.id2label`` (by index: ADE20K checkpoints on the hub number the 150
classes from 0 = wall, which is this project's ``ade20k-150`` order); preprocessing (size, rescale,
mean, std) from the preprocessor config, applied in torch on the model's device, batched.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.errors import InputError
from segmentation.segmenters import check_images
from segmentation.vocabularies import ADE20K_150, Vocabulary, spread_colors

UNIVERSAL = ("mask2former", "maskformer", "oneformer")
PREPROCESSOR = "preprocessor_config.json"


def is_hf_folder(directory: Path) -> bool:
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "model_type" in config and "_model_class" not in config


def resolve_hub(name: str) -> Path | None:
    """The cached snapshot folder of a hub repo id, or None when ``name`` is not one."""
    if "/" not in name or Path(name).exists():
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise InputError(f"segmenter {name} is not in the Hugging Face cache; fetch it on a "
                         f"machine with network (`huggingface-cli download {name}`) and copy "
                         "the cache, or pass the folder it was saved to") from None


def vocabulary_of(config: Any, name: str) -> Vocabulary:
    """Class names in index order from ``id2label``; the ADE20K-150 colours when they are its
    classes."""
    labels = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    if sorted(labels) != list(range(len(labels))) or not labels:
        raise InputError(f"{name}: config.id2label must number the classes 0..K-1, got "
                         f"{sorted(labels)[:5]}...")
    names = tuple(labels[i] for i in range(len(labels)))
    if len(names) == len(ADE20K_150) and names[0] == ADE20K_150.names[0]:
        return Vocabulary(ADE20K_150.name, names, ADE20K_150.colors)
    return Vocabulary(name, names, spread_colors(len(names)))


class HFSegmenter:
    """A transformers segmentation model as a Segmenter (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, vocabulary: Vocabulary, *, size: tuple[int, int],
                 mean: tuple[float, ...], std: tuple[float, ...], rescale: float,
                 normalize: bool, universal: bool, source: str, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.vocabulary = vocabulary
        self.size, self.mean, self.std = size, mean, std
        self.rescale, self.normalize, self.universal = rescale, normalize, universal
        self.source, self.batch_size = source, batch_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.vocabulary.names

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.device, torch.float32) + 1) * 127.5 * self.rescale  # as 0-255 bytes
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                          antialias=True)
        if self.normalize:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class scores ``[B, K, H, W]`` at the images' size."""
        check_images(images)
        outputs = self.model(pixel_values=self._prepare(images))
        if self.universal:
            classes = outputs.class_queries_logits.softmax(dim=-1)[..., :-1]  # [B, Q, K]
            masks = outputs.masks_queries_logits.sigmoid()  # [B, Q, h, w]
            scores = torch.einsum("bqk,bqhw->bkhw", classes, masks)
        else:
            scores = outputs.logits
        if scores.shape[1] != len(self.vocabulary):
            raise InputError(f"{self.source} predicts {scores.shape[1]} classes but names "
                             f"{len(self.vocabulary)} (config.id2label)")
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear",
                             align_corners=False)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        maps = [self.scores(chunk).argmax(dim=1).cpu() for chunk in images.split(self.batch_size)]
        return torch.cat(maps) if maps else torch.zeros((0, *images.shape[-2:]), dtype=torch.long)


def _size(processor: dict[str, Any], source: str) -> tuple[int, int]:
    size = processor.get("size") or {}
    if isinstance(size, int):
        return size, size
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise InputError(f"{source}: {PREPROCESSOR} gives no usable size ({size!r})")


def load_hf_segmenter(directory: str | Path, *, labels: Any = None,
                      device: str | torch.device | None = None) -> HFSegmenter:
    """A transformers segmentation folder (or cached hub repo id) as a Segmenter."""
    try:
        import transformers
    except ModuleNotFoundError:
        raise InputError("Hugging Face segmenters need transformers (pip install "
                         '"mganprior[hf]")') from None
    from core.devices import resolve_device

    directory = resolve_hub(str(directory)) or Path(directory)
    source = str(directory)
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES as SEMANTIC,
    )

    model_type = is_hf_folder(directory) and json.loads(
        (directory / "config.json").read_text())["model_type"]
    if model_type and model_type not in SEMANTIC and model_type not in UNIVERSAL:
        raise InputError(f"{source} holds a transformers {model_type!r} model, which is not a "
                         f"segmenter; semantic: {', '.join(sorted(SEMANTIC))}; universal: "
                         f"{', '.join(UNIVERSAL)}")
    missing = [name for name in ("config.json", PREPROCESSOR) if not (directory / name).is_file()]
    if missing:
        raise InputError(f"{source} lacks {', '.join(missing)}; save the model and its image "
                         "processor there with save_pretrained")
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
        processor = json.loads((directory / PREPROCESSOR).read_text())
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise InputError(f"{source} has a config transformers cannot read ({err})") from None
    universal = config.model_type in UNIVERSAL
    kind = (transformers.AutoModelForUniversalSegmentation if universal
            else transformers.AutoModelForSemanticSegmentation)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            model = kind.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{source} holds no weights transformers can load for a "
                         f"{config.model_type} segmenter ({reason})") from None
    vocabulary = vocabulary_of(config, directory.name)
    if labels is not None:
        from segmentation.segmenters import vocabulary_from

        given = vocabulary_from(labels)
        if len(given) != len(vocabulary):
            raise InputError(f"labels name {len(given)} classes but {source} predicts "
                             f"{len(vocabulary)}", field="labels")
        vocabulary = given
    rescale = float(processor.get("rescale_factor", 1 / 255)) if processor.get(
        "do_rescale", True) else 1.0
    return HFSegmenter(model.float().to(resolve_device(device)), vocabulary,
                       size=_size(processor, source),
                       mean=tuple(processor.get("image_mean", (0.485, 0.456, 0.406))),
                       std=tuple(processor.get("image_std", (0.229, 0.224, 0.225))),
                       rescale=rescale, normalize=bool(processor.get("do_normalize", True)),
                       universal=universal, source=source)
