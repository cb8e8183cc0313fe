"""The names and choices of inversion settings, importable without torch: what the command line
offers (``mganprior invert --help`` loads no tensor library) and what the modules that implement
them check against. Each implementation imports its choices from here, so they are written once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mganprior.core.errors import InputError
from mganprior.core.settings import option

# inversion.composition: F = scale * sum_n alpha_n * G1(z_n), scale 1 ("sum") or 1/N ("mean")
FUSIONS = ("sum", "mean")
# inversion.tasks, in this order
TASK_NAMES = ("inversion", "colorization", "super-resolution", "inpainting", "denoising")
# inversion.losses
PERCEPTUAL_BACKENDS = ("vgg16", "none")
PERCEPTUAL_DISTANCES = ("l1", "lpips")  # mGANprior's VGG16 feature L1, or LPIPS-VGG
VGG_LAYERS = {"relu3_3": 16, "conv4_3": 22}  # torchvision VGG16 feature indices
VGG_FILE = "vgg16-397923af.pth"
LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": VGG_FILE}  # torchvision's files
LPIPS_METRIC_NET = "alex"
# inversion.runs
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 8
# inversion.tuning
TUNE_PARTS = ("tail", "head", "all", "progressive")


def parse_carry(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"img=alpha,styles=latent"`` (or a mapping) as ``{name: rule}``; empty: family defaults."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {str(k): str(v) for k, v in text.items()}
    rules = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, rule = part.partition("=")
        if not sep or not name.strip() or not rule.strip():
            raise InputError(f"carry must look like NAME=RULE[,NAME=RULE], got {text!r}",
                             field="carry")
        rules[name.strip()] = rule.strip()
    return rules


@dataclass(frozen=True)
class TuneSettings:
    """How the generator is tuned after the inversion (``tune`` steps; 0: not at all)."""

    tune: int = option("steps of generator tuning after the inversion, codes and alphas held "
                       "fixed (0: no tuning)", default=0)
    tune_part: str = option("which weights change: the tail after the cut, the head, the whole "
                            "generator, or the whole one unfrozen shallow to deep in equal "
                            "stages (DGP)", TUNE_PARTS, default="tail")
    tune_rank: int = option("rank of the low-rank adapter of each weight (0: a full weight "
                            "delta per image)", default=16)
    tune_lr: float = option("Adam learning rate of the adapters or deltas", default=1e-2)
    tune_locality: float = option("weight of pivotal tuning's locality term: outputs of codes "
                                  "moved toward random latents stay the untuned generator's "
                                  "(0: off)", default=0.1)
    tune_locality_mix: float = option("how far the locality term's codes move from the pivot "
                                      "toward random latents (0 to 1)", default=0.5)

    def __post_init__(self) -> None:
        def whole(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def number(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) and \
                math.isfinite(value)

        checks = (("tune", whole(self.tune) and self.tune >= 0, "must be a whole number >= 0"),
                  ("tune_part", self.tune_part in TUNE_PARTS, f"must be one of "
                   f"{', '.join(TUNE_PARTS)}"),
                  ("tune_rank", whole(self.tune_rank) and self.tune_rank >= 0,
                   "must be a whole number >= 0"),
                  ("tune_lr", number(self.tune_lr) and self.tune_lr > 0,
                   "must be a positive number"),
                  ("tune_locality", number(self.tune_locality) and self.tune_locality >= 0,
                   "must be a number >= 0"),
                  ("tune_locality_mix", number(self.tune_locality_mix) and
                   0 <= self.tune_locality_mix <= 1, "must be in [0, 1]"))
        for name, good, why in checks:
            if not good:
                raise InputError(f"{name} {why}, got {getattr(self, name)!r}", field=name)

    @property
    def enabled(self) -> bool:
        return self.tune > 0

    def to_dict(self) -> dict[str, Any]:
        """As a run's config records it: ``steps``, ``part``, ``rank``, ``lr``, ..."""
        return {key.removeprefix("tune_") if key != "tune" else "steps": value
                for key, value in asdict(self).items()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> TuneSettings:
        """From field values (a study's ``tuning``); an unknown name lists the known ones."""
        known = [item for item in cls.__dataclass_fields__]
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise InputError(f"tuning settings name {', '.join(unknown)}; known: "
                             f"{', '.join(known)}", field="tuning")
        return cls(**fields)
