"""Hugging Face transformers semantic-segmentation models as Segmenters, always offline.

A folder written by ``save_pretrained`` (``config.json`` with ``model_type``, the weights,
``preprocessor_config.json``; OneFormer also its tokenizer) or a hub cache entry named by its repo
id (``nvidia/segformer-b0-finetuned-ade-512-512``) is loaded with ``local_files_only=True``:
nothing is ever fetched, and a missing file gets one line naming it and the command that would
fetch it on a machine with network.

Every map is the one transformers' own ``image-segmentation`` pipeline gives with
``subtask="semantic"``: the images go to the folder's own image processor as 8-bit pixels (what
the pipeline hands it after ``load_image``), the model runs on the processor's output, and the
processor's ``post_process_semantic_segmentation`` turns the outputs into label maps at the
images' size. For the universal models (Mask2Former, MaskFormer: mask logits upsampled to 384 px
before they meet the class probabilities; OneFormer, given the ``semantic`` task input through
its tokenizer, as the pipeline does) that function itself is called. For the per-pixel models
(SegFormer, UPerNet with ConvNeXt or Swin backbones, BEiT, DPT, ...) every processor's
post-processing is the same two operations, bilinear upsampling of the logits and argmax; they
run here on the whole batch at once, which gives the same maps 3x faster than the processors'
image-by-image loop.

Class names come from ``config.id2label`` (by index: ADE20K checkpoints on the hub number the 150
classes from 0 = wall, which is this project's ``ade20k-150`` order), stripped of the spaces hub
configs leave in them (``"bed "``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mganprior.core.errors import InputError
from mganprior.core.pixels import to_uint8
from segmentation.segmenters import check_images
from segmentation.vocabularies import ADE20K_150, Vocabulary, spread_colors

UNIVERSAL = ("mask2former", "maskformer", "oneformer")
PREPROCESSOR = "preprocessor_config.json"


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """transformers' loaders without their warnings and printed notes (a one-line error, or
    nothing, is what a user sees)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


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


def vocabulary_of(config: Any, name: str, source: str) -> Vocabulary:
    """Class names in index order from ``id2label``, stripped of surrounding spaces (hub ADE20K
    configs write ``"bed "``); the ADE20K-150 colours when they are its classes."""
    where = f"{source}/config.json"
    raw = config.id2label or {}
    try:
        labels = {int(k): str(v).strip() for k, v in dict(raw).items()}
    except (TypeError, ValueError):
        raise InputError(f"{where}: id2label must map class ids to names, got "
                         f"{str(raw)[:60]}", field="id2label") from None
    if sorted(labels) != list(range(len(labels))) or not labels:
        raise InputError(f"{where}: id2label must number the classes 0..K-1, got "
                         f"{sorted(labels)[:5]}...", field="id2label")
    names = tuple(labels[i] for i in range(len(labels)))
    try:
        if len(names) == len(ADE20K_150) and names[0] == ADE20K_150.names[0]:
            return Vocabulary(ADE20K_150.name, names, ADE20K_150.colors)
        return Vocabulary(name, names, spread_colors(len(names)))
    except InputError as err:
        raise InputError(f"{where}: id2label: {err}; rename one of them there, or pass "
                         "label_names with distinct names", field="id2label") \
            from None


class HFSegmenter:
    """A transformers segmentation model and its processor as a Segmenter (see the module
    docstring)."""

    def __init__(self, model: torch.nn.Module, vocabulary: Vocabulary, *, processor: Any,
                 universal: bool, source: str, tokenizer: Any = None,
                 batch_size: int = 16) -> None:
        self.model = model.eval()
        self.vocabulary, self.processor, self.tokenizer = vocabulary, processor, tokenizer
        self.universal, self.source, self.batch_size = universal, source, batch_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.vocabulary.names

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def inputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's inputs for images ``[B, 3, H, W]`` in [-1, 1], made by the folder's
        processor from their 8-bit pixels, on the model's device."""
        pixels = torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2)  # [B, 3, H, W] uint8
        kwargs = {"task_inputs": ["semantic"] * len(pixels)} if self.tokenizer is not None else {}
        batch = self.processor(images=list(pixels), return_tensors="pt", **kwargs)
        inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        if self.tokenizer is not None:
            inputs["task_inputs"] = self.tokenizer(
                batch["task_inputs"], padding="max_length",
                max_length=self.model.config.task_seq_len, return_tensors="pt")["input_ids"]
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.model(**self.inputs(images))
        size = tuple(images.shape[-2:])
        if not self.universal:
            # what every per-pixel processor's post_process_semantic_segmentation does (SegFormer,
            # BEiT, DPT, MobileViT: bilinear, align_corners=False, argmax), for the whole batch
            # at once instead of image by image (3x faster on the CPU; the same numbers)
            return F.interpolate(outputs.logits, size=size, mode="bilinear",
                                 align_corners=False).argmax(dim=1)
        post = self.processor.post_process_semantic_segmentation
        return torch.stack(post(outputs, target_sizes=[size] * len(images)))

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        maps = [self._maps(chunk).long().cpu() for chunk in images.split(self.batch_size)]
        labels = torch.cat(maps) if maps else torch.zeros((0, *images.shape[-2:]),
                                                         dtype=torch.long)
        if labels.numel() and int(labels.max()) >= len(self.vocabulary):
            raise InputError(f"{self.source} predicts class {int(labels.max())} but names "
                             f"{len(self.vocabulary)} (config.id2label)")
        return labels


POSTPROCESS_BYTES = 256 << 20
MAX_SIDE = 4096  # a processor size beyond this would allocate gigabytes per image
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def check_preprocessor(path: Path) -> None:
    """The preprocessor config as plain values, checked before transformers builds anything from
    it: a JSON object, sizes positive and at most ``MAX_SIDE``, numbers where numbers belong,
    three non-zero standard deviations."""
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not JSON ({err})", field="preprocessor") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(config).__name__}",
                         field="preprocessor")

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)

    size = config.get("size")
    sides = list(size.values()) if isinstance(size, dict) else [size] if size is not None else []
    for side in sides:
        if side is not None and (not number(side) or not 0 < side <= MAX_SIDE):
            raise InputError(f"{path}: size must give sides in [1, {MAX_SIDE}], got {size!r}",
                             field="size")
    if "rescale_factor" in config and not number(config["rescale_factor"]):
        raise InputError(f"{path}: rescale_factor must be a number, got "
                         f"{config['rescale_factor']!r}", field="rescale_factor")
    for name in ("image_mean", "image_std"):
        value = config.get(name)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) not in (1, 3) or not all(number(v) for v in values):
            raise InputError(f"{path}: {name} must be one or three numbers, got {value!r}",
                             field=name)
        if name == "image_std" and any(v == 0 for v in values):
            raise InputError(f"{path}: image_std must not be 0, got {value!r} (every pixel "
                             "would divide by zero)", field=name)


def load_hf_segmenter(directory: str | Path, *, labels: Any = None,
                      device: str | torch.device | None = None) -> HFSegmenter:
    """A transformers segmentation folder (or cached hub repo id) as a Segmenter."""
    try:
        import transformers
    except ModuleNotFoundError:
        raise InputError("Hugging Face segmenters need transformers (pip install "
                         '"mganprior[hf]")') from None
    from mganprior.core.devices import resolve_device

    directory = resolve_hub(str(directory)) or Path(directory)
    source = str(directory)
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES as SEMANTIC,
    )

    model_type = is_hf_folder(directory) and json.loads(
        (directory / "config.json").read_text())["model_type"]
    if model_type is not False and not isinstance(model_type, str):
        raise InputError(f"{source}/config.json: model_type must be a name, got "
                         f"{str(model_type)[:40]}", field="model_type")
    if model_type and model_type not in SEMANTIC and model_type not in UNIVERSAL:
        raise InputError(f"{source} holds a transformers {model_type!r} model, which is not a "
                         f"segmenter; semantic: {', '.join(sorted(SEMANTIC))}; universal: "
                         f"{', '.join(UNIVERSAL)}")
    missing = [name for name in ("config.json", PREPROCESSOR) if not (directory / name).is_file()]
    if missing:
        raise InputError(f"{source} lacks {', '.join(missing)}; save the model and its image "
                         "processor there with save_pretrained")
    check_preprocessor(directory / PREPROCESSOR)
    try:
        with quietly():
            config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
            processor = transformers.AutoImageProcessor.from_pretrained(source,
                                                                        local_files_only=True)
    except Exception as err:  # transformers raises many types (its own too) for bad configs
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{source} has a config or {PREPROCESSOR} transformers cannot read "
                         f"({reason})") from None
    vocabulary = vocabulary_of(config, directory.name, source)
    if labels is not None:
        from segmentation.segmenters import vocabulary_from

        given = vocabulary_from(labels)
        if len(given) != len(vocabulary):
            raise InputError(f"labels name {len(given)} classes but {source} predicts "
                             f"{len(vocabulary)}", field="labels")
        vocabulary = given
    universal = config.model_type in UNIVERSAL
    tokenizer = load_task_tokenizer(directory, transformers) \
        if config.model_type == "oneformer" else None
    kind = (transformers.AutoModelForUniversalSegmentation if universal
            else transformers.AutoModelForSemanticSegmentation)
    try:
        with quietly():
            model = kind.from_pretrained(source, local_files_only=True)
    except Exception as err:  # as above; pickle.UnpicklingError for a refused .bin among them
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{source} holds no weights transformers can load for a "
                         f"{config.model_type} segmenter ({reason})") from None
    # universal post-processing holds [B, K, 384, 384] class scores: batch within a budget
    batch = max(1, min(16, POSTPROCESS_BYTES // (len(vocabulary) * 384 * 384 * 4))) \
        if universal else 16
    segmenter = HFSegmenter(model.float().to(resolve_device(device)), vocabulary,
                            processor=processor, tokenizer=tokenizer, universal=universal,
                            source=source, batch_size=batch)
    try:  # a processor setting that transformers accepts at load time can still fail per image
        with quietly():
            segmenter.inputs(torch.zeros(1, 3, 8, 8))
    except Exception as err:  # transformers raises many types for settings it cannot apply
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{source}/{PREPROCESSOR}: the image processor cannot prepare an "
                         f"image ({reason})", field="preprocessor") from None
    return segmenter


def load_task_tokenizer(directory: Path, transformers: Any) -> Any:
    """OneFormer's tokenizer, which turns the ``semantic`` task input into tokens."""
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{directory} is a OneFormer folder without its task tokenizer "
                         f"(none of {', '.join(TOKENIZER_FILES)}); save the OneFormerProcessor "
                         "(or its tokenizer) there with save_pretrained", field="tokenizer")
    try:
        with quietly():
            return transformers.AutoTokenizer.from_pretrained(str(directory),
                                                              local_files_only=True)
    except Exception as err:  # as above
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{directory}: OneFormer's task tokenizer cannot be read ({reason})",
                         field="tokenizer") from None
