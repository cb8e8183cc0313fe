"""`import torchvision` (and smp, timm) works in this environment; start-up stays torch-free."""

import subprocess
import sys

import torch

from mganprior.torchvision_fix import _nms_cpu


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def brute_force_nms(boxes, scores, threshold):
    keep = []
    for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        ok = True
        for j in keep:
            x1, y1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            x2, y2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            if inter / (area(boxes[i]) + area(boxes[j]) - inter) > threshold:
                ok = False
        if ok:
            keep.append(i)
    return keep


def test_fallback_nms_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    corners = torch.rand(60, 2, generator=gen) * 50
    boxes = torch.cat([corners, corners + 5 + torch.rand(60, 2, generator=gen) * 20], dim=1)
    scores = torch.rand(60, generator=gen)
    for threshold in (0.1, 0.5, 0.9):
        expected = brute_force_nms(boxes.tolist(), scores.tolist(), threshold)
        assert _nms_cpu(boxes, scores, threshold).tolist() == expected


def test_torchvision_smp_and_timm_import_and_nms_runs():
    out = run_python(
        "import torch, torchvision, segmentation_models_pytorch, timm\n"
        "from torchvision.ops import nms\n"
        "b = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.]])\n"
        "print(nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist())\n"
        "print(type(torchvision.models.vgg16(weights=None)).__name__)\n")
    assert out.splitlines() == ["[0, 2]", "VGG"]


def test_interpreter_start_up_does_not_import_torch():
    out = run_python("import sys; print('torch' in sys.modules, "
                     "any(type(f).__name__ == '_TorchvisionHook' for f in sys.meta_path))")
    assert out.strip() == "False True"
