"""The Segmenter protocol and its segmentation-models-pytorch adapter.

A segmenter turns images ``[B, 3, H, W]`` in [-1, 1] into label maps ``[B, H, W]`` (int64) over
its ``labels``. An smp model directory (written by ``save_pretrained``) plugs in as it is; our
own ``segmenter.json`` beside its files records the class names and how inputs are normalised,
and a user's model (an ADE20K one, say) gets those from arguments instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mganprior.core.devices import resolve_device
from mganprior.core.errors import InputError
from mganprior.core.jsonio import write_json
from segmentation.vocabularies import VOCABULARIES, Vocabulary, spread_colors

META_FILE = "segmenter.json"
NORMALIZATIONS = ("minus_one_one", "imagenet")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class Segmenter(Protocol):
    """What every segmenter provides, whatever its format (``segmentation.formats``)."""

    @property
    def vocabulary(self) -> Vocabulary:
        """Class names (label k is ``vocabulary.names[k]``) and their display colours."""
        ...

    @property
    def labels(self) -> tuple[str, ...]:
        """``vocabulary.names``."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the model runs; inputs may live anywhere."""
        ...

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> label maps [B, H, W] (int64, on the CPU)."""
        ...


def check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"segmenter input must be images [B, 3, H, W], got {list(images.shape)}")
    if images.numel() and (images.min() < -1.001 or images.max() > 1.001):
        raise InputError(f"segmenter input must be in [-1, 1], got range "
                         f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")


class SmpSegmenter:
    """An smp model as a Segmenter. Inputs are resized to ``input_size`` and maps resized back.

    ``normalization``: ``minus_one_one`` feeds images as they are (our models, trained from
    scratch); ``imagenet`` maps them to ImageNet mean/std (most published smp checkpoints).
    """

    def __init__(self, model: nn.Module, vocabulary: Vocabulary, *,
                 normalization: str = "minus_one_one", input_size: int | None = None,
                 source: str = "smp model", batch_size: int = 64) -> None:
        if normalization not in NORMALIZATIONS:
            raise InputError(f"unknown normalization {normalization!r}; choose one of "
                             f"{', '.join(NORMALIZATIONS)}")
        classes = output_classes(model)
        if classes is not None and classes != len(vocabulary):
            raise InputError(f"{source} predicts {classes} classes but its vocabulary "
                             f"{vocabulary.name} has {len(vocabulary)} labels")
        self.model = model.eval()
        self.vocabulary = vocabulary
        self.normalization = normalization
        self.input_size = input_size
        self.source = source
        self.batch_size = batch_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.vocabulary.names

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores [B, K, H, W] at the input's size (for training and soft analyses)."""
        check_images(images)
        x = images.to(self.device, torch.float32)
        height, width = x.shape[-2:]
        if self.input_size is not None and (height, width) != (self.input_size,) * 2:
            x = nn.functional.interpolate(x, size=(self.input_size,) * 2, mode="bilinear",
                                          align_corners=False, antialias=True)
        if self.normalization == "imagenet":
            mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            x = ((x + 1) / 2 - mean) / std
        scores = self.model(x)
        if scores.shape[-2:] != (height, width):
            scores = nn.functional.interpolate(scores, size=(height, width), mode="bilinear",
                                               align_corners=False)
        return scores

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        maps = [self.logits(chunk).argmax(dim=1).cpu()
                for chunk in images.split(self.batch_size)]
        if not maps:
            return torch.zeros((0, *images.shape[-2:]), dtype=torch.int64)
        return torch.cat(maps)

    def to(self, device: str | torch.device) -> SmpSegmenter:
        self.model.to(resolve_device(device))
        return self


def output_classes(model: nn.Module) -> int | None:
    """Output channels of an smp model's segmentation head (None for a model without one)."""
    head = getattr(model, "segmentation_head", None)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)] if head is not None else []
    return convs[-1].out_channels if convs else None


def vocabulary_from(labels: str | list[str] | tuple[str, ...], name: str = "custom") -> Vocabulary:
    """A vocabulary from a known name, a JSON file with a list of names, or a list of names."""
    if isinstance(labels, (list, tuple)):
        names = tuple(str(n) for n in labels)
    elif labels in VOCABULARIES:
        return VOCABULARIES[labels]
    else:
        path = Path(labels)
        if not path.is_file():
            raise InputError(f"labels {labels!r} is neither a known vocabulary "
                             f"({', '.join(VOCABULARIES)}) nor a JSON file of class names")
        try:
            names = tuple(str(n) for n in json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise InputError(f"labels file {path} is not a JSON list of class names ({err})") \
                from None
        name = path.stem
    return Vocabulary(name, names, spread_colors(len(names)))


def save_segmenter(model: nn.Module, vocabulary: Vocabulary, directory: str | Path, *,
                   normalization: str = "minus_one_one", input_size: int | None = None,
                   extra: dict[str, Any] | None = None, half: bool = True) -> Path:
    """``model.save_pretrained(directory)`` (fp16 by default) plus ``segmenter.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    original = next(model.parameters()).dtype
    if half:
        model.half()
    try:
        model.save_pretrained(str(directory))
    finally:
        model.to(original)
    meta = {"labels": list(vocabulary.names), "vocabulary": vocabulary.name,
            "colors": [list(c) for c in vocabulary.colors], "normalization": normalization,
            "input_size": input_size, **(extra or {})}
    write_json(directory / META_FILE, meta)
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    """Our ``segmenter.json`` (empty when absent), its fields checked for type."""
    path = directory / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err})") from None
    problems = []
    if not isinstance(meta, dict):
        raise InputError(f"{path} holds a {type(meta).__name__}, not a JSON object")
    if "labels" in meta and (not isinstance(meta["labels"], list) or
                             not all(isinstance(n, str) for n in meta["labels"])):
        problems.append("labels must be a list of class names")
    if "colors" in meta and (not isinstance(meta["colors"], list) or not all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) for v in c)
            for c in meta["colors"])):
        problems.append("colors must be a list of [R, G, B] integer triples")
    if meta.get("normalization") not in (None, *NORMALIZATIONS):
        problems.append(f"normalization must be one of {', '.join(NORMALIZATIONS)}")
    if meta.get("input_size") is not None and (not isinstance(meta["input_size"], int) or
                                               isinstance(meta["input_size"], bool) or
                                               meta["input_size"] < 1):
        problems.append("input_size must be a positive integer")
    if problems:
        raise InputError(f"{path} is wrongly typed: {'; '.join(problems)}")
    return meta


def load_smp_segmenter(directory: str | Path, *, labels: str | list[str] | None = None,
                       normalization: str | None = None, input_size: int | None = None,
                       device: str | torch.device | None = None) -> SmpSegmenter:
    """Load an smp model saved with ``save_pretrained`` from a local directory (never the hub).

    Class names come from ``labels`` (a vocabulary name, a JSON file or a list) or from our
    ``segmenter.json`` in the directory; one of the two must exist.
    """
    import segmentation_models_pytorch as smp

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"segmenter directory {directory} does not exist")
    if not (directory / "config.json").is_file():
        raise InputError(f"{directory} is not an smp model directory (no config.json; save one "
                         "with model.save_pretrained(DIR))")
    meta = read_meta(directory)
    if labels is not None:
        vocabulary = vocabulary_from(labels)
    elif "labels" in meta:
        colors = tuple(tuple(int(v) for v in c) for c in meta.get("colors", [])) or None
        vocabulary = (Vocabulary(str(meta.get("vocabulary", directory.name)),
                                 tuple(meta["labels"]), colors) if colors
                      else vocabulary_from(meta["labels"], directory.name))
    else:
        raise InputError(f"{directory} has no {META_FILE} naming its classes; pass labels= "
                         f"(a vocabulary name, e.g. ade20k-150, or a JSON list of class names)")
    weights = [p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin")]
    if not weights:
        raise InputError(f"{directory} has no model weights (model.safetensors)")
    try:
        # huggingface_hub prints "Loading weights from local directory" to stdout; keep it quiet.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model = smp.from_pretrained(str(directory))
    except Exception as err:  # smp/hub/safetensors raise many types for damaged directories
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"segmenter weights in {directory} are corrupt or incompatible "
                         f"({reason})") from None
    model = model.float().to(resolve_device(device))
    return SmpSegmenter(model, vocabulary,
                        normalization=normalization or meta.get("normalization",
                                                                "minus_one_one"),
                        input_size=input_size or meta.get("input_size"), source=str(directory))
