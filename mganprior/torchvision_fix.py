"""Make ``import torchvision`` work when its compiled extension cannot load.

PyPI ships only CUDA builds of torchvision 0.28. With the CPU build of torch its ``_C`` extension
fails to load, and torchvision's meta registrations then refer to ``torchvision::nms``, an operator
that was never defined, so the import itself fails (pytorch/vision#9085). timm and
segmentation-models-pytorch import torchvision, so they fail too.

The fix, applied only when ``_C`` really fails to load: define the ``nms``/``qnms`` schemas with a
small pure-torch CPU kernel for ``nms`` before torchvision is imported, then let torchvision report
that its ops are present. It runs from a meta-path hook that a ``.pth`` file installs at interpreter
start-up; the hook itself imports nothing heavy, so start-up stays fast and torch is only imported
when torchvision is.

``python -m mganprior.torchvision_fix`` writes that ``.pth`` file into the current environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

PTH_NAME = "mganprior_torchvision_fix.pth"
_library = None  # keeps the torch.library registration alive


def _nms_cpu(dets, scores, iou_threshold: float):
    """Greedy non-maximum suppression, boxes as (x1, y1, x2, y2); returns kept indices by score."""
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    suppressed = torch.zeros(len(dets), dtype=torch.bool, device=dets.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _extension_loads(package_dir: Path) -> bool:
    import torch

    for candidate in sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd")):
        try:
            torch.ops.load_library(str(candidate))
            return True
        except (OSError, RuntimeError):
            return False
    return False


def _define_fallback_ops() -> None:
    global _library
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.impl("nms", _nms_cpu, "CPU")


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Runs the fix right before torchvision's first import, then steps aside."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionHook)]
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or spec.loader is None:
            return spec
        if _extension_loads(Path(spec.origin).parent):
            return spec
        _define_fallback_ops()
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            module.extension._has_ops = lambda: True

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register the hook (idempotent). Called from the ``.pth`` file at start-up."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionHook())


def write_pth(site_packages: Path | None = None) -> Path:
    """Write the ``.pth`` file that installs the hook in every interpreter of this environment."""
    import sysconfig

    target = Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text("import mganprior.torchvision_fix as _f; _f.install()\n")
    return target


if __name__ == "__main__":
    print(f"wrote {write_pth()}")
