"""What the style-based families (StyleGAN v1, StyleGAN2) share, written once.

A mapping network turns ``z`` into ``w``; every synthesis layer takes its own style (one of
``num_ws`` rows of ``w_dim``); truncation pulls the rows toward the stored ``w_avg``; codes can
live in three latent spaces; and at a cut the styles of the layers after it cross the cut beside
the features (the ``styles`` carry, with the rules below). A family provides the mapping, the
synthesis and its layer names; this class provides the latents, truncation and the style carry.

**Latent spaces** (``in_space``): ``z`` (through the mapping, the default), ``w`` (one w for every
layer) and ``w+`` (one w per layer, ``num_ws * w_dim``). Initial codes in ``w``/``w+`` are the
mapping of seeded z: random points of W, i.e. ``w_avg`` plus W's own spread.

**Truncation** (``with_truncation(psi, layers)``): for codes in Z, ``w_avg + (w - w_avg) * psi``
on the first ``layers`` rows (all rows when ``layers`` is None, NVIDIA's default; the first 8 in
the official StyleGAN v1 models).

**The styles carry**: ``[B, L, w_dim]``, the rows of the layers after the cut. Rules: ``latent``
(a separate W+ tail optimised beside the codes, starting at the codes' mean; the default),
``mean`` (the codes' mean rows) or ``alpha``.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from inversion.generators.base import CarrySpec, Cut, Layer, LayeredGenerator
from mganprior.core.errors import InputError

LATENT_SPACES = ("z", "w", "w+")
STYLES = CarrySpec("styles", ("latent", "mean", "alpha"), "latent",
                   "the w of every layer after the cut")


def check_truncation(psi: Any, layers: Any = None) -> None:
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not math.isfinite(psi) \
            or not 0 <= psi <= 1:
        raise InputError(f"truncation_psi must be in [0, 1], got {psi!r}", field="truncation_psi")
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)
                               or layers < 0):
        raise InputError(f"truncation_layers must be a count of layers (0 or more) or None, got "
                         f"{layers!r}", field="truncation_layers")


class StyleBasedGenerator(LayeredGenerator):
    """A generator whose synthesis layers each take a style row of ``w`` (see the module
    docstring). Subclasses set ``mapping_z_dim``, ``w_dim``, ``num_ws``, ``truncation_psi``,
    ``truncation_layers`` and a ``mapping`` module in ``__init__`` and provide :attr:`w_avg`."""

    latent_spaces: ClassVar[tuple[str, ...]] = LATENT_SPACES
    latent_space: str = "z"
    mapping_z_dim: int
    w_dim: int
    num_ws: int
    truncation_psi: float = 1.0
    truncation_layers: int | None = None  # None: every row
    c_dim: int = 0  # classes of a conditional mapping (0: unconditional)
    label: int | None = None  # the class a conditional generator makes

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``[B, mapping_z_dim]`` to ``w`` ``[B, w_dim]`` (no truncation): the family's
        ``mapping`` module, which a conditional generator also gives the one-hot label of
        :meth:`with_label`."""
        if not self.c_dim:
            return self.mapping(z)
        if self.label is None:
            raise InputError(f"label: this generator is conditional ({self.c_dim} classes); "
                             f"choose a class with with_label(k), k in 0..{self.c_dim - 1}",
                             field="label")
        c = F.one_hot(torch.full((z.shape[0],), self.label, device=z.device),
                      self.c_dim).to(z.dtype)
        return self.mapping(z, c)

    def with_label(self, label: int | None) -> StyleBasedGenerator:
        """This conditional generator making class ``label`` (sharing every weight); an
        unconditional one refuses a label."""
        if label is None:
            return self
        if not self.c_dim:
            raise InputError(f"label {label}: this generator is unconditional and takes no "
                             "label", field="label")
        if isinstance(label, bool) or not isinstance(label, int) or \
                not 0 <= label < self.c_dim:
            raise InputError(f"label must be a class in 0..{self.c_dim - 1}, got {label!r}",
                             field="label")
        view = copy.copy(self)
        view.label = label
        return view

    @property
    @abstractmethod
    def w_avg(self) -> torch.Tensor:
        """The stored mean of ``w`` that truncation pulls toward ``[w_dim]``."""

    @property
    def z_dim(self) -> int:  # the size of one code in the current latent space
        return {"z": self.mapping_z_dim, "w": self.w_dim,
                "w+": self.num_ws * self.w_dim}[self.latent_space]

    def in_space(self, space: str) -> StyleBasedGenerator:
        """This generator with codes in another latent space (shares every weight)."""
        if space not in LATENT_SPACES:
            raise InputError(f"latent_space {space!r} is not one of {', '.join(LATENT_SPACES)}",
                             field="latent_space")
        if space == self.latent_space:
            return self
        view = copy.copy(self)
        view.latent_space = space
        view._layers = None
        return view

    def with_truncation(self, psi: float, layers: int | str | None = "keep"
                        ) -> StyleBasedGenerator:
        """This generator with ``w`` pulled toward ``w_avg`` by ``psi`` on the first ``layers``
        rows (``keep``: the generator's own cut-off), sharing every weight."""
        layers = self.truncation_layers if layers == "keep" else layers
        check_truncation(psi, layers)
        view = copy.copy(self)
        view.truncation_psi, view.truncation_layers = float(psi), layers
        return view

    def ws(self, latents: torch.Tensor) -> torch.Tensor:
        """Codes of the current latent space ``[B, z_dim]`` to per-layer styles
        ``[B, num_ws, w_dim]``."""
        latents = self._check_latents(latents)
        if self.latent_space == "w+":
            return latents.reshape(-1, self.num_ws, self.w_dim)
        w = self.map(latents) if self.latent_space == "z" else latents
        truncated = self.latent_space == "z" and self.truncation_psi != 1
        if truncated and self.truncation_layers is None:
            w = self.w_avg.lerp(w, self.truncation_psi)
        rows = w[:, None].expand(-1, self.num_ws, -1)
        if truncated and self.truncation_layers is not None:
            keep = torch.arange(self.num_ws, device=w.device) >= self.truncation_layers
            coefficients = torch.where(keep, 1.0, self.truncation_psi).to(w)[None, :, None]
            rows = self.w_avg + (rows - self.w_avg) * coefficients
        return rows

    def initial_latents(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """``n`` starting codes: standard normal z, or their mapping for codes in W or W+."""
        z = torch.randn(n, self.mapping_z_dim, generator=rng)
        if self.latent_space == "z":
            return z
        with torch.no_grad():
            w = self.map(z.to(self.device)).cpu()
        return w if self.latent_space == "w" else w.repeat(1, self.num_ws)

    def sample_latents(self, n: int, seed: int) -> torch.Tensor:
        return self.initial_latents(n, torch.Generator().manual_seed(int(seed))).to(self.device)

    @abstractmethod
    def style_layers(self) -> list[str]:
        """The layers whose affine turns w into a style, in ``ws`` order."""

    @abstractmethod
    def style_weight(self, name: str) -> torch.Tensor:
        """The affine weight ``[C, w_dim]`` of style layer ``name``, with its gain."""

    def sefa_layers(self) -> list[str]:
        """The style layers in SeFa's numbering, which is also its default set."""
        return self.style_layers()

    def latent_weight(self, layers: str = "all") -> tuple[torch.Tensor, str]:
        """The style affines of ``layers`` stacked as ``[sum of widths, w_dim]``: ``all``
        (SeFa's default set, :meth:`sefa_layers`), or comma-separated indices into
        :meth:`sefa_layers` or names from :meth:`style_layers`. They act on w."""
        numbered, names = self.sefa_layers(), self.style_layers()
        if layers == "all":
            return torch.cat([self.style_weight(name) for name in numbered]), "w"
        chosen = []
        for part in filter(None, (p.strip() for p in layers.split(","))):
            name = numbered[int(part)] if part.lstrip("-").isdigit() and \
                -len(numbered) <= int(part) < len(numbered) else part
            if name not in names:
                extra = [n for n in names if n not in numbered]
                raise InputError(f"layers {part!r} is not a style layer; style layers: "
                                 f"{', '.join(f'{i} {n}' for i, n in enumerate(numbered))}"
                                 + (f" (also by name: {', '.join(extra)})" if extra else ""),
                                 field="layers")
            chosen.append(name)
        return torch.cat([self.style_weight(name) for name in chosen]), "w"

    def describe(self) -> str:
        rows = "every layer" if self.truncation_layers is None else \
            f"the first {self.truncation_layers} layers"
        return (f"{super().describe()}; {self.num_ws} style rows of {self.w_dim}; truncation "
                f"psi {self.truncation_psi:g} on {rows} (with_truncation, --truncation-psi)")

    def truncation_config(self) -> dict[str, Any]:
        return {"truncation_psi": self.truncation_psi,
                "truncation_layers": self.truncation_layers}

    # -- the styles that cross a cut ---------------------------------------------------------
    def extra_latents(self, layer: Layer, rules: Mapping[str, str], cut: Cut,
                      seeds: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        if rules.get("styles") != "latent":
            return {}
        return {"styles": cut.carry["styles"].mean(dim=1)}

    def carry_from_latents(self, layer: Layer, rules: Mapping[str, str],
                           extras: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"styles": extras["styles"]} if rules.get("styles") == "latent" else {}
