"""Train a segmentation-models-pytorch model from scratch on (image, label map) pairs.

Random initialisation (no ImageNet weights exist offline), cross-entropy loss, AdamW with warm-up
and a cosine schedule, light photometric augmentation so the model also reads GAN samples (which
are blurrier and noisier than renders). State is checkpointed atomically and a rerun with the
same settings resumes; the result is written with ``save_pretrained`` plus ``segmenter.json``.
Random draws come from explicit ``torch.Generator``s; the process-global RNG is left alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mganprior.core.errors import InputError, field_error
from mganprior.core.jsonio import write_json
from mganprior.core.pixels import from_uint8
from mganprior.core.resume import check_resume
from mganprior.core.weights import load_strict
from mganprior.training.loop import (
    DEFAULT_CHECKPOINT_EVERY,
    LoopState,
    check_checkpoint_every,
    load_state,
    run_steps,
    save_state,
)
from segmentation.metrics import IoUReport, confusion_matrix, iou_report
from segmentation.segmenters import (
    SmpSegmenter,
    load_smp_segmenter,
    output_classes,
    save_segmenter,
)
from segmentation.vocabularies import Vocabulary

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = ("config", "step", "seconds", "log", "model", "optimizer", "schedule",
                   "data_rng")
MODEL_DIR = "model"


@dataclass
class SegmenterTrainConfig:
    architecture: str = "Unet"
    encoder: str = "mobilenet_v2"
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16)
    iterations: int = 4000
    batch: int = 64
    lr: float = 0.002
    weight_decay: float = 1e-4
    augment: bool = True
    dice_weight: float = 0.0
    init_from: str | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def validate(self) -> None:
        """Every setting in range, before anything is built or written."""
        for name in ("iterations", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise field_error(name, f"must be a positive integer, got {value}")
        if not 0 < self.lr < math.inf:
            raise field_error("lr", f"must be a finite number above 0, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise field_error("weight_decay", f"must be a finite number >= 0, got "
                              f"{self.weight_decay}")
        if not 0 <= self.dice_weight < math.inf:
            raise field_error("dice_weight", f"must be a finite number >= 0, got "
                              f"{self.dice_weight}")


def _warmup_cosine(step: int, total: int, warmup: int = 100) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0."""
    warmup = min(warmup, max(total // 10, 1))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))


def build_model(config: SegmenterTrainConfig, classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    architectures = {"Unet": smp.Unet, "FPN": smp.FPN, "DeepLabV3Plus": smp.DeepLabV3Plus,
                     "Linknet": smp.Linknet}
    if config.architecture not in architectures:
        raise InputError(f"unknown architecture {config.architecture!r}; choose one of "
                         f"{', '.join(architectures)}")
    kwargs: dict[str, Any] = {"encoder_name": config.encoder, "encoder_weights": None,
                              "classes": classes}
    if config.architecture == "Unet":
        kwargs["decoder_channels"] = tuple(config.decoder_channels)
    try:
        return architectures[config.architecture](**kwargs)
    except (KeyError, ValueError) as err:
        raise InputError(f"cannot build {config.architecture} with encoder {config.encoder!r} "
                         f"({err})") from None


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Photometric jitter in [-1, 1]: brightness, contrast, saturation, blur, noise (per image)."""
    b = images.shape[0]

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(images.device)

    x = (images + 1) / 2
    x = x * (0.75 + 0.5 * rand(b, 1, 1, 1)) + (rand(b, 1, 1, 1) - 0.5) * 0.2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (0.7 + 0.6 * rand(b, 1, 1, 1)) + mean
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * (0.6 + 0.8 * rand(b, 1, 1, 1)) + gray
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(rand(b, 1, 1, 1) < 0.3, blurred, x)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    x = x + noise * rand(b, 1, 1, 1) * 0.05
    return (x.clamp(0, 1) * 2 - 1)


class LabelledBank:
    """Images uint8 [N, H, W, 3] and labels uint8 [N, H, W] on the device."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device) -> None:
        if images.shape[:3] != labels.shape or images.ndim != 4:
            raise InputError(f"images {list(images.shape)} and label maps {list(labels.shape)} "
                             "do not pair up ([N, H, W, 3] and [N, H, W])")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.labels = torch.from_numpy(np.ascontiguousarray(labels)).to(device)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(self.images.device)
        x = from_uint8(self.images[index])
        return x, self.labels[index].long()


def evaluate(segmenter: SmpSegmenter, bank: LabelledBank, batch: int = 128) -> IoUReport:
    classes = len(segmenter.labels)
    total = torch.zeros(classes, classes, dtype=torch.int64)
    for start in range(0, len(bank), batch):
        index = torch.arange(start, min(start + batch, len(bank)))
        x, y = bank.batch(index)
        total += confusion_matrix(segmenter.segment(x), y.cpu(), classes)
    return iou_report(total, segmenter.labels)


def _initialise_from(model: nn.Module, directory: Path) -> None:
    """Start from the weights of a saved smp model of the same architecture (fine-tuning)."""
    labels = [str(k) for k in range(output_classes(model))]
    source = load_smp_segmenter(directory, labels=labels, device="cpu").model
    load_strict(model, source.state_dict(), f"--init-from {directory}")


@dataclass
class SegmenterTrainResult:
    segmenter: SmpSegmenter
    steps: int
    seconds: float
    validation: IoUReport | None
    out_dir: Path


def train_segmenter(train: LabelledBank, vocabulary: Vocabulary, config: SegmenterTrainConfig,
                    out_dir: str | Path, *, device: torch.device,
                    validation: LabelledBank | None = None,
                    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                    progress: bool = True, extra_meta: dict[str, Any] | None = None,
                    ) -> SegmenterTrainResult:
    """Train (or resume) an smp model; writes ``out_dir/model`` loadable by load_smp_segmenter."""
    out_dir = Path(out_dir)
    config.validate()
    check_checkpoint_every(checkpoint_every)
    labels_max = int(train.labels.max())
    if labels_max >= len(vocabulary):
        raise InputError(f"label maps contain class {labels_max} but vocabulary "
                         f"{vocabulary.name} has only {len(vocabulary)} classes")
    with torch.random.fork_rng(devices=[]):  # seeded initial weights; the global RNG is restored
        torch.manual_seed(config.seed)
        model = build_model(config, len(vocabulary))
    model = model.to(device)
    if config.init_from is not None:
        _initialise_from(model, Path(config.init_from))
    dice = None
    if config.dice_weight > 0:
        from segmentation_models_pytorch.losses import DiceLoss

        dice = DiceLoss("multiclass")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_warmup_cosine,
                                                                    total=config.iterations))
    data_rng = torch.Generator().manual_seed(config.seed + 1)
    state = LoopState()
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs have been checked
    path = out_dir / CHECKPOINT
    if path.is_file():
        saved = load_state(path, CHECKPOINT_KEYS)
        # iterations too must match: the learning-rate schedule is laid out over them
        check_resume(saved["config"], config.to_dict(), what="segmenter run", where=out_dir)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        data_rng.set_state(saved["data_rng"])
        state = LoopState(saved["step"], saved["seconds"], saved["log"])

    def checkpoint() -> None:
        save_state(path, {"config": config.to_dict(), "step": state.step,
                          "seconds": state.seconds, "log": state.log,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "schedule": schedule.state_dict(), "data_rng": data_rng.get_state()})

    def train_step(step: int) -> dict[str, torch.Tensor]:
        index = torch.randint(len(train), (config.batch,), generator=data_rng)
        x, y = train.batch(index)
        flip = (torch.rand(config.batch, generator=data_rng) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        y = torch.where(flip[:, None, None], y.flip(2), y)
        if config.augment:
            x = augment(x, data_rng)
        scores = model(x)
        loss = F.cross_entropy(scores, y)
        if dice is not None:
            loss = loss + config.dice_weight * dice(scores, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return {"loss": loss.detach()}

    model.train()
    run_steps(state, config.iterations, train_step, checkpoint,
              checkpoint_every=checkpoint_every, desc="train segmenter", progress=progress)
    model.eval()
    resolution = int(train.images.shape[1])
    segmenter = SmpSegmenter(model, vocabulary, input_size=resolution, source=str(out_dir))
    report = evaluate(segmenter, validation) if validation is not None else None
    meta = {"training": {"config": config.to_dict(), "steps": state.step,
                         "seconds": round(state.seconds, 1), "device": str(device)},
            **(extra_meta or {})}
    if report is not None:
        meta["validation"] = {"mean_iou": round(report.mean, 4),
                              "pixel_accuracy": round(report.pixel_accuracy, 4),
                              "per_class_iou": report.as_dict()}
    save_segmenter(model, vocabulary, out_dir / MODEL_DIR, input_size=resolution,
                   extra=meta)
    write_json(out_dir / "training.json",
               {**meta, "final": state.log[-1] if state.log else None})
    return SegmenterTrainResult(segmenter, state.step, state.seconds, report, out_dir)
