"""Multi-code composition at a cut: ``F = scale * sum_n alpha_n * G1(z_n)``, ``x = G2(F, carry)``.

Shapes: codes ``[B, N, Z]``, alphas ``[B, N, C]`` (one weight per channel of the layer), per-code
cuts ``[B, N, ...]`` (features ``[B, N, C, h, w]``), fused cuts ``[B, ...]``.

Two conventions for ``scale`` (``fusion``):

- ``"sum"``: ``scale = 1``. With alphas initialised to 1/N the fused feature starts as the mean of
  the N features, a typical feature of the generator. The default of the ``adam`` recipe.
- ``"mean"``: ``scale = 1/N``, as in the official mGANprior code (``sum(...) / z_number``).
  Under PGGAN's pixel-norm, which starts the layer after every cut, a global scale is invisible,
  so both conventions give identical images there. Generators without a normalisation after the
  cut (DCGAN: transposed conv then eval-mode BatchNorm) see features N times too small.

Alphas are initialised to 1/N under both conventions, so the attribution threshold on alpha
(0.2 by default) means the same thing for runs made with either.

What else crosses the cut (a family's ``carry_specs``) is fused by the rule chosen for it
(``CARRY_RULES`` in ``inversion.generators.base``): weighted by each code's mean alpha, the plain
mean, dropped, or computed from a latent optimised beside the codes. PGGAN, DCGAN and hooked
modules carry nothing, so for them a fused cut is just the fused features.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from inversion.generators.base import CARRY_RULES, Cut, Layer, LayeredGenerator
from inversion.options import FUSIONS, parse_carry
from mganprior.core.errors import InputError


def fusion_scale(fusion: str, codes: int) -> float:
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    return 1.0 if fusion == "sum" else 1.0 / codes


def resolve_carry(generator: LayeredGenerator, layer: Layer,
                  requested: str | Mapping[str, str] | None = None) -> dict[str, str]:
    """The rule for every tensor the cut at ``layer`` carries: the requested ones, the family's
    defaults for the rest. Unknown names or rules are refused, listing the valid ones."""
    specs = {spec.name: spec for spec in generator.carry_specs(layer)}
    wanted = parse_carry(requested)
    unknown = sorted(set(wanted) - set(specs))
    if unknown:
        carried = ", ".join(specs) or "nothing"
        raise InputError(f"carry names {', '.join(unknown)}, but the {generator.family} cut at "
                         f"{layer.name} carries {carried}", field="carry")
    rules = {}
    for name, spec in specs.items():
        rule = wanted.get(name, spec.default)
        if rule not in spec.rules:
            raise InputError(f"carry {name}={rule} is not a rule for {name}; rules: "
                             f"{', '.join(f'{r} ({CARRY_RULES[r]})' for r in spec.rules)}",
                             field="carry")
        rules[name] = rule
    return rules


def code_cuts(generator: LayeredGenerator, codes: torch.Tensor, layer: Layer) -> Cut:
    """Per-code cuts ``[B, N, ...]`` from codes ``[B, N, Z]``: one batched head pass."""
    batch, n, z_dim = codes.shape
    cut = generator.head(codes.reshape(batch * n, z_dim), layer)
    return cut.apply(lambda t: t.reshape(batch, n, *t.shape[1:]))


def fuse_features(features: torch.Tensor, alphas: torch.Tensor,
                  fusion: str = "sum") -> torch.Tensor:
    """``scale * sum_n alphas[:, n, :, None, None] * features[:, n]`` -> ``[B, C, h, w]``."""
    if features.dim() != 5 or alphas.shape != features.shape[:3]:
        raise ValueError(f"features [B, N, C, h, w] and alphas [B, N, C] do not match: "
                         f"{list(features.shape)} vs {list(alphas.shape)}")
    scale = fusion_scale(fusion, features.shape[1])
    fused = (features * alphas.to(features.dtype)[..., None, None]).sum(dim=1)
    return fused * scale if scale != 1.0 else fused


def code_weights(alphas: torch.Tensor, fusion: str = "sum") -> torch.Tensor:
    """Each code's weight for the ``alpha`` carry rule, ``[B, N]``: its mean alpha times the
    fusion scale (so 1/N per code, summing to 1, at the ``sum`` fusion's initial alphas)."""
    return alphas.mean(dim=-1) * fusion_scale(fusion, alphas.shape[1])


def fuse(cut: Cut, alphas: torch.Tensor, fusion: str = "sum",
         rules: Mapping[str, str] | None = None,
         latent_carry: Mapping[str, torch.Tensor] | None = None) -> Cut:
    """Fuse a per-code cut ``[B, N, ...]`` into one cut per image ``[B, ...]``.

    The features are alpha-weighted channel by channel; each carried tensor follows its rule
    (``rules`` must name every one; ``latent_carry`` gives those whose rule is ``latent``).
    """
    rules = dict(rules or {})
    missing = sorted(set(cut.carry) - set(rules))
    if missing:
        raise ValueError(f"no fusion rule for carried {', '.join(missing)}")
    carry: dict[str, torch.Tensor] = {}
    for name, rule in rules.items():
        if rule == "latent":
            if latent_carry is None or name not in latent_carry:
                raise ValueError(f"carry {name} follows a latent that was not given")
            carry[name] = latent_carry[name]
        elif rule == "drop":
            continue
        elif rule == "mean":
            carry[name] = cut.carry[name].mean(dim=1)
        elif rule == "alpha":
            value = cut.carry[name]
            weights = code_weights(alphas, fusion).to(value.dtype)
            carry[name] = (value * weights.view(*weights.shape, *[1] * (value.dim() - 2))).sum(1)
        else:
            raise ValueError(f"unknown carry rule {rule!r}")
    return Cut(fuse_features(cut.features, alphas, fusion), carry)


def render(generator: LayeredGenerator, codes: torch.Tensor, alphas: torch.Tensor, layer: Layer,
           fusion: str = "sum", rules: Mapping[str, str] | None = None,
           extras: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``x_inv = tail(fuse(head(codes), alphas))``: images ``[B, 3, H, W]``. ``rules`` default to
    the family's; ``extras`` are the latents a ``latent`` rule needs (an inversion's; without
    them, their starting values)."""
    rules = resolve_carry(generator, layer) if rules is None else rules
    cut = code_cuts(generator, codes, layer)
    if extras is None and "latent" in rules.values():
        extras = generator.extra_latents(layer, rules, cut)
    return generator.tail(fuse(cut, alphas, fusion, rules,
                               latent_carry(generator, layer, rules, extras)), layer)


def latent_carry(generator: LayeredGenerator, layer: Layer, rules: Mapping[str, str],
                 extras: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The carried tensors that come from extra latents (none when no rule is ``latent``)."""
    if "latent" not in rules.values():
        return {}
    return generator.carry_from_latents(layer, rules, extras or {})


def initial_alphas(batch: int, codes: int, channels: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.full((batch, codes, channels), 1.0 / codes, device=device)
