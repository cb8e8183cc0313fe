"""Multi-code inversion on a GPU: throughput, achieved FLOP/s and MFU, memory per image.

    python benchmarks/gpu.py                 # PGGAN-256 (official widths), on CUDA when present
    python benchmarks/gpu.py --tiny          # a 16 px generator on the CPU: what CI runs

A random-weight PGGAN at 256 px with the official widths (what a real PGGAN-256 costs), N = 20
codes at layers 4, 6 and 8, batches of 1, 4, 16 and 64 images, in fp32, TF32 and bf16
autocast, optionally with the head and tail under ``torch.compile`` (``--compile``). For every
cell: image-iterations per second, seconds per 1000 iterations per image,
the FLOPs of one iteration (forward and backward, counted by ``torch.utils.flop_counter``),
the achieved TFLOP/s and the MFU against the device's dense peak
for that precision, and the peak memory per image (CUDA's allocator; on the CPU the bytes
autograd saves, ``inversion.memory``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from inversion.composition import initial_alphas, render
from inversion.engine import InvertOptions, invert
from inversion.generators.base import compiled as compiled_view
from inversion.generators.pggan import PGGANGenerator
from inversion.memory import saved_bytes
from inversion.recipes import get_recipe
from inversion.tasks import Inversion
from mganprior.core.devices import resolve_device, timed

# Dense peak TFLOP/s per precision, from the vendors' data sheets (sparsity not counted).
PEAKS = {"H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
         "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
         "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}}


def peak_of(device: torch.device, precision: str, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[precision] for key, peaks in PEAKS.items() if key in name), None)


def iteration_flops(generator, targets: torch.Tensor, codes: int, layer: int, bf16: bool) -> int:
    """The FLOPs of one optimisation step's forward and backward (the Adam update is noise)."""
    batch = len(targets)
    latents = torch.randn(batch, codes, generator.z_dim, device=targets.device,
                          requires_grad=True)
    channels = generator.layer(layer).shape[0]
    alphas = initial_alphas(batch, codes, channels, targets.device).requires_grad_()
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(targets.device.type, dtype=torch.bfloat16, enabled=bf16):
            images = render(generator, latents, alphas, layer)
        torch.nn.functional.mse_loss(images.float(), targets).backward()
    return counter.get_total_flops()


def compiled(generator):
    """The same generator (shared weights) whose head and tail run through ``torch.compile``,
    compiled afresh for each cell (the code objects are shared, so are dynamo's caches)."""
    torch._dynamo.reset()
    return compiled_view(generator)


def cell(generator, plain, layer: int, batch: int, codes: int, iterations: int,
         precision: str) -> dict:
    """One cell's figures; ``plain`` is ``generator`` without compilation."""
    device = generator.device
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    targets = torch.zeros(batch, 3, generator.resolution, generator.resolution, device=device)
    recipe = get_recipe("adam", "inversion").with_overrides(codes=codes, layer=layer,
                                                           perceptual_lambda=0.0)
    bf16 = precision == "bf16"

    def run(steps: int):
        return invert(generator, targets, Inversion(), recipe.with_overrides(iterations=steps),
                      seeds=list(range(batch)), options=InvertOptions(bf16=bf16, progress=False))

    run(2)  # warm-up
    flops = iteration_flops(generator, targets, codes, layer, bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _, seconds = timed(lambda: run(iterations), device)
    _, setup = timed(lambda: run(0), device)
    per_iteration = max(seconds - setup, 1e-9) / iterations
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / batch
    else:  # the bytes autograd keeps, through the eager generator (hooks do not trace)
        with saved_bytes() as total:
            invert(plain, targets, Inversion(), recipe.with_overrides(iterations=1),
                   seeds=list(range(batch)), options=InvertOptions(bf16=bf16, progress=False))
        memory = total[0] / batch
    return {"flops": flops, "per_iteration": per_iteration, "memory": memory}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="a 16 px generator, CPU-sized cells")
    parser.add_argument("--device", default=None)
    parser.add_argument("--layers", default=None)
    parser.add_argument("--batches", default=None)
    parser.add_argument("--precisions", default=None)
    parser.add_argument("--codes", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.tiny:
        generator = PGGANGenerator(16, 8, [16, 12, 8])
        defaults = {"layers": "2,4", "batches": "1,2", "precisions": "fp32", "codes": 2,
                    "iterations": 3}
    else:
        generator = PGGANGenerator(256)
        precisions = "fp32,tf32,bf16" if device.type == "cuda" else "fp32,bf16"
        defaults = {"layers": "4,6,8", "batches": "1,4,16,64", "precisions": precisions,
                    "codes": 20, "iterations": 20}
    settings = {k: getattr(args, k) if getattr(args, k) is not None else v
                for k, v in defaults.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = generator.to(device).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; PGGAN-{generator.resolution}, "
          f"N={settings['codes']}, {settings['iterations']} timed iterations")
    print("| layer | B | precision | compiled | image-iterations/s | s per 1000 it per image | "
          "GFLOP per it | TFLOP/s | MFU | memory per image |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layer in map(int, settings["layers"].split(",")):
        for batch in map(int, settings["batches"].split(",")):
            for precision in settings["precisions"].split(","):
                for use_compile in (False, True) if args.compile else (False,):
                    subject = compiled(generator) if use_compile else generator
                    try:
                        measured = cell(subject, generator, layer, batch, settings["codes"],
                                        settings["iterations"], precision)
                    except torch.OutOfMemoryError:
                        print(f"| {layer} | {batch} | {precision} | {use_compile} | out of "
                              "memory ||||||")
                        torch.cuda.empty_cache()
                        continue
                    seconds = measured["per_iteration"]
                    tflops = measured["flops"] / seconds / 1e12
                    peak = peak_of(device, precision, args.peak_tflops)
                    mfu = f"{tflops / peak:.1%}" if peak else "n/a"
                    print(f"| {layer} | {batch} | {precision} | {use_compile} | "
                          f"{batch / seconds:.2f} | {1000 * seconds / batch:.1f} | "
                          f"{measured['flops'] / 1e9:.3g} | {tflops:.3g} | {mfu} | "
                          f"{measured['memory'] / 2**20:.3g} MiB |")

if __name__ == "__main__":
    main()
