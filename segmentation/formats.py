"""Segmenter folders: one registry of formats, each a sniffer and a loader (smp, transformers,
CSAIL). A Hugging Face repo id (``org/name``) stands for its cached snapshot.

``load_segmenter_dir(DIR)`` asks every format whether the folder is one of its own, and the first
that says yes loads it. A folder no format recognises gets one line listing the known formats.
Nothing is ever downloaded: every format reads local files only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mganprior.core.errors import InputError
from segmentation.csail import is_csail_folder, load_csail_segmenter
from segmentation.hf import is_hf_folder, load_hf_segmenter, resolve_hub
from segmentation.segmenters import Segmenter, load_smp_segmenter


@dataclass(frozen=True)
class SegmenterFormat:
    name: str
    description: str
    sniff: Callable[[Path], bool]
    load: Callable[..., Segmenter]  # (directory, *, labels, device[, scales]) -> Segmenter
    multiscale: bool = False  # its loader takes scales= (multi-scale inference)


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _sniff_smp(directory: Path) -> bool:
    config = _json_object(directory / "config.json")
    return config is not None and "_model_class" in config


SEGMENTER_FORMATS: list[SegmenterFormat] = [
    SegmenterFormat("smp", "segmentation-models-pytorch save_pretrained folder (config.json with "
                    "_model_class, model.safetensors; class names from segmenter.json or "
                    "labels=)", _sniff_smp, load_smp_segmenter),
    SegmenterFormat("transformers", "Hugging Face transformers segmentation folder or cached "
                    "hub repo id (config.json with model_type, weights, "
                    "preprocessor_config.json; SegFormer, UPerNet, Mask2Former, ...)",
                    is_hf_folder, load_hf_segmenter),
    SegmenterFormat("csail", "CSAIL semantic-segmentation-pytorch folder (encoder*.pth and "
                    "decoder*.pth, a *.yaml config or a DATASET-ENCODER-DECODER name)",
                    is_csail_folder, load_csail_segmenter, multiscale=True),
]


def known_formats() -> str:
    return "; ".join(f"{f.name} ({f.description})" for f in SEGMENTER_FORMATS)


def load_segmenter_dir(directory: str | Path, *, labels: str | list[str] | None = None,
                       device: str | torch.device | None = None,
                       scales: str | None = None) -> Segmenter:
    """Load a segmenter folder of any registered format on ``device``; ``scales`` (CSAIL
    folders: ``csail``, ``1`` or short sides such as ``300,450``) asks for multi-scale
    inference."""
    directory = resolve_hub(str(directory)) or Path(directory)
    if not directory.is_dir():
        raise InputError(f"segmenter directory {directory} does not exist")
    for fmt in SEGMENTER_FORMATS:
        if fmt.sniff(directory):
            if fmt.multiscale:
                return fmt.load(directory, labels=labels, device=device, scales=scales)
            if scales is not None and str(scales).strip() not in ("", "1"):
                takers = ", ".join(f.name for f in SEGMENTER_FORMATS if f.multiscale)
                raise InputError(f"segmenter_scales {scales} applies to {takers} segmenters; "
                                 f"{directory} is a {fmt.name} folder", field="segmenter_scales")
            return fmt.load(directory, labels=labels, device=device)
    raise InputError(f"{directory} is not a segmenter folder in a known format. Known formats: "
                     f"{known_formats()}")
