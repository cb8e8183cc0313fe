"""What bounds a StyleGAN2 head's rate: the head's forward and backward (B = 4 images x N = 20
codes, the ``adam`` recipe's default cut b16), eager and under ``torch.compile``, against the same
head's convolutions replayed alone, each as a share of a 2048^3 fp32 matmul measured in the same
run (best of three rounds):

    python benchmarks/stylegan2_head.py [--repeats 4]

for a random-weight StyleGAN2 at the widths of StyleGAN2-ADA's paper256 configuration (256 px,
512 channels up to 32 px) and the zoo's bedroom-stylegan2-64. The convolutions are recorded from
one eager forward (``aten.convolution`` with its shapes, stride, padding and groups, and the
up-convolutions' shapes, which on a CPU run as a matmul and strided adds) and replayed with fresh
inputs, forward and input backward (the generator's weights are frozen in an inversion), each the
best of ``--repeats``; the up-convolutions also as oneDNN's transposed convolutions, the path
they replace. Under the command line's heap policy.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from inversion.composition import code_cuts
from inversion.engine import frozen
from inversion.generators.base import compiled
from inversion.generators.stylegan2 import (
    ModulatedConv,
    StyleGAN2Generator,
    transposed_up_convolution,
    up_convolution,
)
from mganprior.core.devices import cpu_model, matmul_rate
from mganprior.core.heap import keep_big_blocks
from mganprior.zoo import load_generator

UP = "up-convolutions (matmul, strided adds)"
UP_ONEDNN = "up-convolutions as oneDNN transposed ones (not used)"


class RecordConvolutions(TorchDispatchMode):
    """Every ``aten.convolution`` call: input and weight shapes and its settings."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            x, weight, _, stride, padding, dilation, transposed, output_padding, groups = args
            self.calls.append((tuple(x.shape), tuple(weight.shape), tuple(stride),
                               tuple(padding), tuple(dilation), bool(transposed),
                               tuple(output_padding), int(groups)))
        return func(*args, **(kwargs or {}))


def best_seconds(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def replay(convolution, x_shape: tuple, weight_shape: tuple, repeats: int) -> tuple[float, float]:
    """GFLOP and best seconds of ``convolution(x, weight)``, forward and input backward."""
    x = torch.randn(x_shape, requires_grad=True)
    weight = torch.randn(weight_shape)

    def step():
        y = convolution(x, weight)
        y.backward(torch.ones_like(y))

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 1e9, best_seconds(step, repeats)


def recorded(call: tuple):
    """The recorded ``aten.convolution`` as a function of its input and weight."""
    _, _, stride, padding, dilation, transposed, output_padding, groups = call
    if transposed:
        return lambda x, weight: F.conv_transpose2d(
            x, weight, stride=stride, padding=padding, output_padding=output_padding,
            groups=groups, dilation=dilation)
    return lambda x, weight: F.conv2d(x, weight, stride=stride, padding=padding,
                                      dilation=dilation, groups=groups)


def measure(name: str, generator, repeats: int, rate: float) -> None:
    layer = generator.layer("b16")
    z = torch.randn(4, 20, generator.z_dim, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)

    def head(model=generator):
        code_cuts(model, z, layer).features.square().mean().backward()

    with frozen(generator):
        recorder = RecordConvolutions()
        ups: list[tuple] = []
        hooks = [module.register_forward_hook(
            lambda module, args, _: ups.append((tuple(args[0].shape), tuple(module.weight.shape))))
            for module in generator.modules() if isinstance(module, ModulatedConv) and module.up]
        with recorder:
            code_cuts(generator, z.detach(), layer)
        for hook in hooks:
            hook.remove()
        with FlopCounterMode(display=False) as counter:
            head()
        gflop = counter.get_total_flops() / 1e9
        eager = best_seconds(head, repeats)
        fast = compiled(generator)
        head(fast)  # compiles
        compiled_s = best_seconds(lambda: head(fast), repeats)
    kinds: Counter = Counter()
    convs = [0.0, 0.0]

    def tally(kind: str, flops: float, seconds: float, as_the_head_runs: bool = True) -> None:
        kinds[kind, "GFLOP"] += flops
        kinds[kind, "s"] += seconds
        if as_the_head_runs:
            convs[0] += flops
            convs[1] += seconds

    for call in recorder.calls:
        kind = ("transposed convolutions" if call[5] else "depthwise (FIR) convolutions"
                if call[7] > 1 else f"{call[1][2]}x{call[1][3]} convolutions")
        tally(kind, *replay(recorded(call), call[0], call[1], repeats))
    for x_shape, weight_shape in ups:
        tally(UP, *replay(up_convolution, x_shape, weight_shape, repeats))
        tally(UP_ONEDNN, *replay(transposed_up_convolution, x_shape, weight_shape, repeats),
              as_the_head_runs=False)
    for label, flops, seconds in (("head, eager", gflop, eager),
                                  ("head, compiled", gflop, compiled_s),
                                  ("its convolutions alone", *convs),
                                  *((f"  {kind}", kinds[kind, "GFLOP"], kinds[kind, "s"])
                                    for kind in sorted({k for k, _ in kinds}))):
        print(f"| {name} | {label} | {flops:.1f} | {seconds * 1000:.0f} | "
              f"{flops / seconds:.0f} | {flops / seconds / rate:.0%} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    heap = keep_big_blocks(os.environ)
    rate = matmul_rate()
    print(f"# {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"heap policy {'on' if heap else 'off'}; fp32 matmul {rate:.0f} GFLOP/s\n")
    print("| generator | what | GFLOP | ms | GFLOP/s | of matmul rate |")
    print("|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for name, generator in (
            ("StyleGAN2-256, paper256 widths (random)", StyleGAN2Generator(resolution=256).eval()),
            ("bedroom-stylegan2-64", load_generator("bedroom-stylegan2-64").generator)):
        measure(name, generator, args.repeats, rate)


if __name__ == "__main__":
    main()
