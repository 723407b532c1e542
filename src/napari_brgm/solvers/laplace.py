"""Gauss–Newton Laplace posterior over W+ at the MAP point: a full-covariance Gaussian, no optimisation.

In prior-whitened coordinates u (w = w* + σ_d ⊙ u) the negative log posterior near the MAP w* is
    ½ ‖J u‖² / σ_y²  +  ½ ‖u‖²,   J = ∂(A·G)/∂u at w*,
so q(u) = N(0, (JᵀJ/σ_y² + I)⁻¹). Its eigen-decomposition keeps every direction the measurement does
not pin down at the prior's spread: e.g. the W+ directions that change only the missing half of an
image, which a mean-field q over W+ collapses (docs/engine.md, "posterior families").

J is formed column by column with forward differences of the generator (one batched forward pass
per `batch` directions: no backward pass), so the cost is num_ws·w_dim generator images and the
memory measurement size × num_ws·w_dim floats; `MAX_ENTRIES` bounds the latter.

Predictive (`PREDICTIVES`): "linear" renders G(w*) + J_G·(w − w*), the generator linearised at w*, which
is the model this Gauss–Newton posterior is exact for (the "GLM predictive", Immer, Korzepa & Bauer,
AISTATS 2021): an observed pixel's variance is then σ_y²·h ≤ σ_y² (h its leverage). "generator"
renders G(w) itself: the free directions, taken at the prior's spread, bend the observed pixels away
from the data by the generator's curvature (3.3–4.3× σ_y on untrained generators), so the std no longer
says which pixels were measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from napari_brgm.solvers.latent_priors import LatentStats
from napari_brgm.solvers.monitor import Monitor
from napari_brgm.solvers.problem import Problem

MAX_ENTRIES = 200_000_000  # measurement entries × latent dimensions of J (800 MB in float32)
STEP = 1e-2  # forward-difference step in prior-whitened units
PREDICTIVES = ("linear", "generator")  # how samples of q become images (module docstring)


@dataclass
class LaplaceFactor:
    """q(w) = N(w*, diag(σ_d)·L·Lᵀ·diag(σ_d)), L = V·diag((1 + λ)^-½), λ the eigenvalues of JᵀJ/σ_y²."""

    ws: torch.Tensor  # w* [1, num_ws, w_dim]
    prior_scale: torch.Tensor  # σ_d over W+, flattened [D]
    factor: torch.Tensor  # L [D, D] in whitened units
    eigenvalues: torch.Tensor  # λ [D], ascending

    def sample(self, count: int, gen: torch.Generator) -> torch.Tensor:
        """`count` latents w* + σ_d ⊙ (L ε), ε ~ N(0, I): [count, num_ws, w_dim]."""
        eps = torch.randn((count, self.factor.shape[1]), generator=gen, device=self.ws.device)
        return self.ws + ((eps @ self.factor.T) * self.prior_scale).reshape(count, *self.ws.shape[1:])

    def render(self, G, latents: torch.Tensor, predictive: str, batch: int) -> torch.Tensor:
        """Images of `latents` [S, num_ws, w_dim] under `predictive`, `batch` per generator call: [S, C, R, R].

        "linear": G(w*) + (G(w* + t·δ) − G(w*)) / t with δ = w − w* and t = STEP, a directional forward
        difference (J_G·δ without forming J_G over every pixel), in fp32 like J itself.
        """
        if predictive not in PREDICTIVES:
            raise ValueError(f"predictive must be one of {PREDICTIVES}, got {predictive!r}")
        if predictive == "generator":
            return torch.cat([G.synthesis(chunk, noise_mode="const") for chunk in latents.split(batch)])
        base = G.synthesis(self.ws, noise_mode="const", precision="fp32")
        near = self.ws + STEP * (latents - self.ws)
        moved = torch.cat([G.synthesis(chunk, noise_mode="const", precision="fp32") for chunk in near.split(batch)])
        return base + (moved - base) / STEP

    @property
    def free_directions(self) -> int:
        """Directions the measurement leaves at more than half the prior's variance (λ < 1)."""
        return int((self.eigenvalues < 1).sum())


def check_size(problem: Problem) -> None:
    """ValueError when J would not fit in `MAX_ENTRIES` (large generators: use a low-rank VI posterior)."""
    G = problem.generator
    d = G.num_ws * G.w_dim
    m = problem.y.numel()
    if m * d > MAX_ENTRIES:
        raise ValueError(f"the Laplace posterior needs a {m} × {d} Jacobian, more than this machine budget of "
                         f"{MAX_ENTRIES:,} entries; use vi_posterior='lowrank' for this prior")


@torch.no_grad()
def laplace_factor(problem: Problem, ws: torch.Tensor, sigma_y: float, batch: int = 32,
                   monitor: Monitor | None = None, stage: str = "vi") -> LaplaceFactor | None:
    """The Laplace posterior at `ws`; None when the monitor stopped the run while J was being formed."""
    check_size(problem)
    G = problem.generator
    stats = LatentStats.of(G, problem.device)
    scale = stats.std_per_dim.reshape(1, 1, -1).expand(1, G.num_ws, -1).reshape(-1)
    d = scale.numel()
    base = problem.operator.forward(G.synthesis(ws, noise_mode="const", precision="fp32")).reshape(-1)
    columns = []
    chunks = range(0, d, batch)
    for i, start in enumerate(chunks, 1):
        idx = torch.arange(start, min(start + batch, d), device=ws.device)
        shift = torch.zeros((len(idx), d), device=ws.device)
        shift[torch.arange(len(idx)), idx] = STEP * scale[idx]
        images = G.synthesis(ws + shift.reshape(len(idx), *ws.shape[1:]), noise_mode="const", precision="fp32")
        columns.append((problem.operator.forward(images).reshape(len(idx), -1) - base) / (STEP * sigma_y))
        if monitor is not None and not monitor(stage, i, len(chunks), {"total": float("nan")}, None):
            return None
    J = torch.cat(columns).double()  # [D, M]: row i = column i of J/σ_y
    lam, V = torch.linalg.eigh(J @ J.T)
    lam = lam.clamp_min(0)
    factor = (V * (1 + lam).rsqrt()).float()
    return LaplaceFactor(ws=ws.detach(), prior_scale=scale, factor=factor, eigenvalues=lam.float())
