"""Alpha ablation of N codes for B images: one batched tail pass vs N full generator forwards per
image (the obvious loop: zero alpha_n's large entries, call the whole generator, repeat).

    python benchmarks/attribution.py [--generators NAME,NAME,...] [--images 4]
                                     [--codes 20] [--repeats 3] [--device cpu]

Both arms render the same ablations from the same codes and alphas (checked equal). The batched
arm is timed with cached head features (as after an in-process inversion) and with a head pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import platform
import statistics

import torch

from analysis.attribution import ablated_renders, ablation_mask
from inversion.composition import code_cuts, fuse, latent_carry, resolve_carry
from inversion.recipes import get_recipe
from mganprior.core.devices import timed
from mganprior.zoo import load_generator


def median_seconds(fn, device: torch.device, repeats: int) -> tuple[object, float]:
    runs = [timed(fn, device) for _ in range(repeats)]
    return runs[-1][0], statistics.median(seconds for _, seconds in runs)


@torch.no_grad()
def measure(name: str, images: int, codes: int, repeats: int, device: str | None) -> dict:
    generator = load_generator(name, device=device).generator
    device_ = generator.device
    layer = get_recipe("adam", "inversion").resolve_layer(generator)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(images, codes, generator.z_dim, generator=gen).to(device_)
    # alphas as inversions leave them: mostly near 1/N, a few large entries per code
    alphas = (torch.rand(images, codes, layer.channels, generator=gen) * 0.25).to(device_)
    zeroed = ablation_mask(alphas, 0.2)

    cached = code_cuts(generator, z, layer)
    # the family's carry rules, and the extra latents they need (StyleGAN2's W+ tail) at their
    # starting values: the same ones for every arm
    rules = resolve_carry(generator, layer)
    extras = generator.extra_latents(layer, rules, cached) if "latent" in rules.values() else None

    def batched_cached():
        return ablated_renders(generator, cached, alphas, zeroed, layer, "sum", rules=rules,
                               extras=extras)[1]

    def batched_with_head():
        features = code_cuts(generator, z, layer)
        return ablated_renders(generator, features, alphas, zeroed, layer, "sum", rules=rules,
                               extras=extras)[1]

    def naive():
        # per ablation: the head of all N codes, the fusion, the tail. As in attribution, the
        # ablation edits the features only; carried tensors keep the inversion's fusion
        out = torch.empty(images, codes, 3, generator.resolution, generator.resolution,
                          device=device_)
        for b in range(images):
            own = {name: value[b:b + 1] for name, value in (extras or {}).items()}
            carried = latent_carry(generator, layer, rules, own or None)
            for n in range(codes):
                cut = code_cuts(generator, z[b:b + 1], layer)
                ablated = alphas[b:b + 1].clone()
                ablated[0, n] = torch.where(zeroed[b, n], 0.0, alphas[b, n])
                features = fuse(cut, ablated, "sum", rules, carried).features
                carry = fuse(cut, alphas[b:b + 1], "sum", rules, carried).carry
                out[b, n] = generator.tail(type(cut)(features, carry), layer)[0].clamp(-1, 1)
        return out

    fast, fast_s = median_seconds(batched_cached, device_, repeats)
    _, head_s = median_seconds(batched_with_head, device_, repeats)
    slow, slow_s = median_seconds(naive, device_, repeats)
    return {"generator": name, "layer": f"{layer.name} {'x'.join(map(str, layer.shape))}",
            "cached": fast_s, "head": head_s, "naive": slow_s,
            "max_diff": float((fast - slow).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generators",
                        default="bedroom-pggan64,digiface-dcgan64,bedroom-stylegan2-64")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--codes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, B={args.images}, N={args.codes}")
    print("| generator | layer | batched, cached features (s) | batched + head pass (s) | "
          "naive N forwards/image (s) | naive / batched | naive / batched+head | max diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.generators.split(","):
        r = measure(name, args.images, args.codes, args.repeats, args.device)
        print(f"| {r['generator']} | {r['layer']} | {r['cached']:.3f} | {r['head']:.3f} | "
              f"{r['naive']:.3f} | {r['naive'] / r['cached']:.1f}x | "
              f"{r['naive'] / r['head']:.1f}x | {r['max_diff']:.1e} |")


if __name__ == "__main__":
    main()
