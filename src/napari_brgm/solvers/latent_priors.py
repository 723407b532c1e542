"""BRGM's priors on the W+ latent: a Gaussian around the mean w and a colinearity term.

The statistics (w̄, scalar σ, per-dimension σ_d) depend only on the generator and are cached by
it (`napari_brgm.priors`); here they arrive as tensors on the solver's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LatentStats:
    """Mapped-W statistics as tensors: mean [w_dim], scalar std, per-dimension std [w_dim]."""

    mean: torch.Tensor
    std: torch.Tensor
    std_per_dim: torch.Tensor

    @classmethod
    def of(cls, generator, device: torch.device) -> LatentStats:
        s = generator.w_stats
        as_t = lambda v: torch.as_tensor(v, dtype=torch.float32, device=device)  # noqa: E731
        return cls(as_t(s.mean), as_t(s.std), as_t(s.std_per_dim))

    def initial_ws(self, num_ws: int) -> torch.Tensor:
        """BRGM's starting point: the mean w repeated over all W+ layers, [1, num_ws, w_dim]."""
        return self.mean.reshape(1, 1, -1).repeat(1, num_ws, 1)


def w_prior(ws: torch.Tensor, stats: LatentStats) -> torch.Tensor:
    """mean(((w − w̄)/σ)²) over every element, σ the scalar W std (BRGM's λ_w term, unweighted)."""
    return ((ws - stats.mean) / stats.std).square().mean()


def colinearity(ws: torch.Tensor) -> torch.Tensor:
    """Σ_ij |1 − cos(w_i, w_j)| over all ordered pairs of W+ layers of the first latent (BRGM's λ_c term)."""
    unit = F.normalize(ws[0], dim=1)
    return (1 - unit @ unit.T).abs().sum()
