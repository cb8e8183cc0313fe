"""The statistics of W that NVIDIA's projector starts from, estimated as it estimates them.

``w_avg`` and ``w_std`` come from 10,000 ``z`` drawn by ``numpy.random.RandomState(123)``
(a local generator: no global state changes), mapped without truncation:
``w_std = sqrt(sum((w - w_avg)^2) / 10000)``. The same seed and count give NVIDIA's numbers for
the same generator. A run computes them once and keeps them beside its images
(``RunDirectory.latent_stats``), so every image and every process starts from the same point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inversion.generators.base import LayeredGenerator
from mganprior.core.errors import InputError

W_AVG_SAMPLES = 10_000
W_AVG_SEED = 123


@dataclass(frozen=True)
class LatentStats:
    """The mean ``w_avg`` ``[w_dim]`` of mapped samples and their spread ``w_std`` (a scalar:
    the root of the summed squared deviations over the sample count)."""

    w_avg: torch.Tensor
    w_std: float
    samples: int = W_AVG_SAMPLES

    def start(self, generator: LayeredGenerator, batch: int, codes: int) -> torch.Tensor:
        """Initial codes ``[B, N, Z]`` at ``w_avg`` in the generator's space (W or W+)."""
        space = generator.latent_space
        if space not in ("w", "w+"):
            raise InputError(f"init w_avg needs codes in W or W+, not {space}", field="init")
        row = self.w_avg if space == "w" else self.w_avg.repeat(generator.num_ws)
        return row.view(1, 1, -1).expand(batch, codes, -1).clone()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"w_avg": self.w_avg.contiguous(), "w_std": torch.tensor(self.w_std),
                "samples": torch.tensor(self.samples)}


@torch.no_grad()
def estimate_latent_stats(generator: LayeredGenerator, samples: int = W_AVG_SAMPLES,
                          seed: int = W_AVG_SEED, chunk: int = 1000) -> LatentStats:
    """``w_avg`` and ``w_std`` of ``samples`` mapped ``z`` (NVIDIA's projector's estimate)."""
    if not hasattr(generator, "map"):
        raise InputError(f"a {generator.family} generator has no mapping network, so no W "
                         "statistics", field="init")
    z = np.random.RandomState(seed).randn(samples, generator.mapping_z_dim)
    z = torch.from_numpy(z.astype(np.float32))
    ws = torch.cat([generator.map(part.to(generator.device)).float().cpu()
                    for part in z.split(chunk)])
    w_avg = ws.mean(dim=0)
    w_std = float(((ws - w_avg).square().sum() / samples).sqrt())
    return LatentStats(w_avg, w_std, samples)
