"""The names and choices of inversion settings, importable without torch: what the command line
offers (``mganprior invert --help`` loads no tensor library) and what the modules that implement
them check against. Each implementation imports its choices from here, so they are written once.
"""

from __future__ import annotations

from collections.abc import Mapping

from mganprior.core.errors import InputError

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
