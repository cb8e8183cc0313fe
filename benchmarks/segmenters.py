"""Segmenters of the ecosystem: what following the libraries' own pipelines costs.

    python benchmarks/segmenters.py [--images 16] [--side 64] [--repeats 5]

1. transformers folders (tiny random-initialised SegFormer, UPerNet, Mask2Former and OneFormer,
   as the tests build them): seconds per image of ``segment`` now (the folder's image processor
   on 8-bit pixels and its ``post_process_semantic_segmentation``, equal to the pipeline) against
   the previous path (resize and normalise in torch on floats, our own combination of a universal
   model's masks and classes), batched, side by side in one run; then one attribution (4 renders
   of the committed bedroom-pggan64 inverted with N = 20 codes) per arm, per image.
2. The library's Mask2Former post-processing beside a full-size forward (random weights).
3. CSAIL multi-scale inference: seconds per image for one pass at the image's size and for each
   of CSAIL's test scales (300 to 600 px short side) on a random MobileNetV2 + C1 pair.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny folders

import argparse
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from analysis.attribution import attribute
from helpers import tiny_hf_folder
from inversion.engine import QUIET, invert
from inversion.recipes import get_recipe
from inversion.tasks import Inversion
from mganprior.core.devices import cpu_model, timed
from mganprior.zoo import load_generator
from segmentation.formats import load_segmenter_dir

KINDS = ("segformer", "upernet", "mask2former", "oneformer")


class PreviousPath:
    """The segmenter as it was before it followed transformers' pipeline: float images resized
    (antialiased bilinear) and normalised in torch, a universal model's class probabilities and
    mask probabilities combined before upsampling. Kept here as the benchmark's other arm."""

    def __init__(self, segmenter) -> None:
        self.model, self.vocabulary = segmenter.model, segmenter.vocabulary
        self.tokenizer_inputs = None
        processor = segmenter.processor
        size = processor.size
        self.size = (size["height"], size["width"])
        self.mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        self.universal, self.device = segmenter.universal, segmenter.device
        if segmenter.tokenizer is not None:  # the task tokens the model needs, made once
            self.tokenizer_inputs = segmenter.inputs(torch.zeros(1, 3, 8, 8))["task_inputs"]

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate((images + 1) * 127.5 / 255, size=self.size, mode="bilinear",
                          align_corners=False, antialias=True)
        inputs = {"pixel_values": (x - self.mean) / self.std}
        if self.tokenizer_inputs is not None:
            inputs["task_inputs"] = self.tokenizer_inputs.expand(len(images), -1)
        outputs = self.model(**inputs)
        if self.universal:
            classes = outputs.class_queries_logits.softmax(dim=-1)[..., :-1]
            masks = outputs.masks_queries_logits.sigmoid()
            scores = torch.einsum("bqk,bqhw->bkhw", classes, masks)
        else:
            scores = outputs.logits
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear",
                             align_corners=False).argmax(dim=1)


def per_image(fn, images: int, repeats: int) -> float:
    cpu = torch.device("cpu")
    return statistics.median(timed(fn, cpu)[1] for _ in range(repeats)) / images


def transformers_rows(folder: Path, images: int, side: int, repeats: int) -> list[str]:
    torch.manual_seed(0)
    batch = torch.rand(images, 3, side, side) * 2 - 1
    generator = load_generator("bedroom-pggan64", device="cpu").generator
    run = invert(generator, generator.sample(4, seed=3), Inversion(),
                 get_recipe("adam", "inversion").with_overrides(iterations=2, codes=20),
                 seeds=[0, 1, 2, 3], options=QUIET)
    rows = []
    for kind in KINDS:
        segmenter = load_segmenter_dir(tiny_hf_folder(kind, side, folder / kind), device="cpu")
        previous = PreviousPath(segmenter)
        now = per_image(lambda s=segmenter: s.segment(batch), images, repeats)
        before = per_image(lambda s=previous: s.segment(batch), images, repeats)
        agree = float((segmenter.segment(batch) == previous.segment(batch)).float().mean())

        def attribution(s):
            return lambda: attribute(generator, run, segmenter=s, progress=False)

        attr_now = per_image(attribution(segmenter), run.batch, repeats)
        attr_before = per_image(attribution(previous), run.batch, repeats)
        rows.append(f"| {kind} | {before * 1e3:.2f} | {now * 1e3:.2f} | {now / before:.2f}x | "
                    f"{agree:.1%} | {attr_before * 1e3:.1f} | {attr_now * 1e3:.1f} | "
                    f"{attr_now / attr_before:.2f}x |")
    return rows


def full_size_row(repeats: int) -> str:
    """What the library's Mask2Former post-processing costs beside a full-size forward: the
    transformers default configuration (Swin backbone, 100 queries), random weights, 150
    classes, two 384 px images."""
    import transformers

    model = transformers.Mask2FormerForUniversalSegmentation(
        transformers.Mask2FormerConfig(num_labels=150)).eval()
    processor = transformers.Mask2FormerImageProcessor(size={"height": 384, "width": 384})
    pixels = torch.rand(2, 3, 384, 384)
    with torch.no_grad():
        outputs = model(pixel_values=pixels)
        forward = per_image(lambda: model(pixel_values=pixels), 2, repeats)
        post = per_image(lambda: processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(256, 256)] * 2), 2, repeats)
    return (f"| Mask2Former, transformers' default configuration | {forward * 1e3:.0f} | "
            f"{post * 1e3:.0f} | {post / forward:.0%} |")


def csail_rows(folder: Path, images: int, side: int, repeats: int) -> list[str]:
    from segmentation.csail import CSAIL_SCALES, build

    encoder, decoder = build({"arch_encoder": "mobilenetv2dilated", "arch_decoder": "c1",
                              "fc_dim": 320, "num_class": 150})
    target = folder / "ade20k-mobilenetv2dilated-c1"
    target.mkdir()
    torch.save(encoder.state_dict(), target / "encoder_epoch_20.pth")
    torch.save(decoder.state_dict(), target / "decoder_epoch_20.pth")
    batch = torch.rand(images, 3, side, side) * 2 - 1
    rows = []
    for scales in ["1", *map(str, CSAIL_SCALES.sizes), "csail"]:
        segmenter = load_segmenter_dir(target, device="cpu", scales=scales)
        seconds = per_image(lambda s=segmenter: s.segment(batch), images, repeats)
        label = {"1": f"one pass at {side} px", "csail": "all five (the csail preset)"}.get(
            scales, f"short side {scales} px")
        rows.append(f"| {label} | {seconds * 1e3:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    print(f"# {cpu_model()}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        print(f"\n{args.images} images of {args.side} px in one batch; ms per image (median of "
              f"{args.repeats})\n")
        print("| model | segment before | segment now | now/before | same label | "
              "attribution before | attribution now | now/before |")
        print("|---|---|---|---|---|---|---|---|")
        for row in transformers_rows(folder, args.images, args.side, args.repeats):
            print(row)
        print("\nms per image, median of 3\n")
        print("| model | forward at 384 px | post-processing to 256 px | post / forward |")
        print("|---|---|---|---|")
        print(full_size_row(3))
        print(f"\nCSAIL MobileNetV2-dilated + C1, {args.images} images of {args.side} px; "
              "ms per image\n")
        print("| scales | segment |")
        print("|---|---|")
        for row in csail_rows(folder, args.images, args.side, args.repeats):
            print(row)


if __name__ == "__main__":
    main()
