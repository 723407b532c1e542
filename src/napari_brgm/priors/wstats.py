"""Statistics of the mapped latent W that BRGM's prior uses (mean, scalar std, per-dimension std).

As in the reference code (StyleGAN2-ADA projector / BRGM): 10,000 z drawn by
`numpy.random.RandomState(123).randn`, mapped without truncation; population (ddof 0) moments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NUM_SAMPLES = 10_000
SEED = 123
_CHUNK = 1000


@dataclass(frozen=True)
class WStats:
    """mean [w_dim]; std: sqrt of the total variance summed over w_dim dims (scalar); std_per_dim [w_dim]."""

    mean: torch.Tensor
    std: float
    std_per_dim: torch.Tensor
    num_samples: int = NUM_SAMPLES
    seed: int = SEED

    def __post_init__(self) -> None:
        assert self.mean.ndim == 1 and self.std_per_dim.shape == self.mean.shape, (
            tuple(self.mean.shape), tuple(self.std_per_dim.shape))


@torch.no_grad()
def compute_w_stats(mapping, num_samples: int = NUM_SAMPLES, seed: int = SEED) -> WStats:
    """Map `num_samples` z ~ N(0, I) (fixed seed) through `mapping.map_single`; moments in float64."""
    z = np.random.RandomState(seed).randn(num_samples, mapping.z_dim)
    device = mapping.w_avg.device
    ws = torch.cat([mapping.map_single(torch.from_numpy(chunk).to(device=device, dtype=torch.float32))
                    for chunk in np.array_split(z, max(1, num_samples // _CHUNK))]).double()
    mean = ws.mean(dim=0)
    var = (ws - mean).square().mean(dim=0)
    return WStats(mean=mean.float().cpu(), std=float(var.sum().sqrt()), std_per_dim=var.sqrt().float().cpu(),
                  num_samples=num_samples, seed=seed)
