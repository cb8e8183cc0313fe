"""The entry point's heap policy (``mganprior.core.heap``) against glibc's default, each arm in a
fresh process (the policy cannot be undone within one), arms alternating, best of ``--repeats``:

    python benchmarks/heap.py [--repeats 2]

- the head of a StyleGAN2 at the widths of StyleGAN2-ADA's 256 px models (512 channels up to
  32 px, then 256, 128, 64; random weights; B = 4 images x N = 20 codes at b16, forward and
  backward): GFLOP/s and its share of a 2048^3 fp32 matmul measured in
  the same process;
- the same for the zoo's bedroom-stylegan2-64 (widths 128 and 64);
- whole inversions (the ``adam`` recipe, 60 iterations with their alpha warm-up, pixel loss,
  3 targets) with each zoo prior: seconds.

The machine's CPU model and flags are printed with the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib.util
import json
import os
import subprocess

HERE = Path(__file__).resolve()
ARMS = ("glibc default", "heap policy")
CASES = ("head: StyleGAN2-256, paper256 widths", "head: bedroom-stylegan2-64",
         "inversion: digiface-dcgan64", "inversion: bedroom-pggan64",
         "inversion: bedroom-stylegan2-64")


def speed():
    """benchmarks/speed.py's helpers (this folder stays off the import path)."""
    if "speed" not in sys.modules:
        spec = importlib.util.spec_from_file_location("speed", HERE.parent / "speed.py")
        sys.modules["speed"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["speed"])
    return sys.modules["speed"]


def worker(arm: str, case: str) -> dict:
    from mganprior.core.heap import keep_big_blocks

    applied = keep_big_blocks(os.environ) if arm == "heap policy" else False
    if arm == "heap policy" and not applied:
        raise SystemExit("the heap policy did not apply here (not glibc 2.33+)")

    from mganprior.zoo import load_generator

    if case.startswith("head"):
        from inversion.generators.stylegan2 import StyleGAN2Generator

        generator = (StyleGAN2Generator(resolution=256).eval() if "official" in case else
                     load_generator("bedroom-stylegan2-64").generator)
        return head_rate(generator)
    psnr_of, scene_targets = speed().psnr_of, speed().scene_targets
    generator = load_generator(case.split(": ")[1]).generator
    targets = (scene_targets(generator, 3) if "bedroom" in case else
               generator.sample(3, seed=7))
    from inversion.recipes import get_recipe

    recipe = get_recipe("adam", "inversion").with_overrides(perceptual_lambda=0.0,
                                                            iterations=60)
    psnr_of(generator, targets, recipe.with_overrides(iterations=2))
    db, seconds, _ = psnr_of(generator, targets, recipe)
    return {"seconds": seconds, "db": db}


def head_rate(generator) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from inversion.composition import code_cuts
    from inversion.engine import frozen
    from mganprior.core.devices import matmul_rate, timed

    layer = generator.layer("b16")
    z = torch.randn(4, 20, generator.z_dim, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)

    def head():
        code_cuts(generator, z, layer).features.square().mean().backward()

    with frozen(generator):
        with FlopCounterMode(display=False) as counter:
            head()
        head()
        seconds = min(timed(lambda: [head() for _ in range(3)], generator.device)[1] / 3
                      for _ in range(2))
    gflop = counter.get_total_flops() / 1e9
    return {"seconds": seconds, "gflops": gflop / seconds, "matmul": matmul_rate()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("ARM", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    # glibc's defaults in both arms: no allocator setting of the user's
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    print(f"machine: {speed().cpu()}")
    print("| case | glibc default | heap policy | speed-up |")
    print("|---|---|---|---|")
    for case in CASES:
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for arm in ARMS:
                done = subprocess.run([sys.executable, str(HERE), "--worker", arm, case],
                                      env=env, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{arm}, {case}: {done.stderr.strip()[-2000:]}")
                result = json.loads(done.stdout.splitlines()[-1])
                if arm not in best or result["seconds"] < best[arm]["seconds"]:
                    best[arm] = result
        cells = [describe(best[arm]) for arm in ARMS]
        ratio = best[ARMS[0]]["seconds"] / best[ARMS[1]]["seconds"]
        print(f"| {case} | {cells[0]} | {cells[1]} | {ratio:.2f}x |", flush=True)


def describe(result: dict) -> str:
    if "gflops" in result:
        return (f"{result['seconds']:.3f} s, {result['gflops']:.0f} GFLOP/s = "
                f"{result['gflops'] / result['matmul']:.0%} of matmul ({result['matmul']:.0f})")
    return f"{result['seconds']:.2f} s ({result['db']:.2f} dB)"


if __name__ == "__main__":
    main()
