"""CSGM (Bora et al., "Compressed sensing using generative models"): optimise z, not W+.

loss_k = mean_observed((A·G(z_k) − y)²) + λ_z·‖z_k‖² for K random restarts z_k ~ N(0, I), all
rendered in ONE batched generator call per step; Adam (lr 0.1) on every z_k at once (Adam is
element-wise, so the restarts do not interact), then the restart with the best data fit is kept.
G(z) = synthesis(mapping(z)) with frozen noise. StyleGAN2's mapping normalises z, so the image
depends only on z's direction and the ‖z‖² term mainly keeps z's scale bounded. The data term is
the mean over the observed measurement entries, so λ_z means the same at every image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from napari_brgm.solvers.monitor import Monitor, record_step
from napari_brgm.solvers.problem import Problem


@dataclass
class CsgmConfig:
    steps: int = 501  # Adam steps
    lr: float = 0.1  # Adam learning rate on z (Bora et al.)
    restarts: int = 4  # K random starting points, optimised together in one batch
    lambda_z: float = 0.001  # weight of the Gaussian prior ‖z‖²

    def __post_init__(self):
        if self.restarts < 1:
            raise ValueError(f"CSGM needs at least one restart, got {self.restarts}")
        if self.lambda_z < 0:
            raise ValueError(f"lambda_z must be >= 0, got {self.lambda_z}")


@dataclass
class CsgmOutput:
    z: torch.Tensor  # [1, z_dim] the best restart
    ws: torch.Tensor  # [1, num_ws, w_dim] = mapping(z)
    image: torch.Tensor  # [1, C, R, R] G(z), model units
    data_fits: torch.Tensor  # [K] final data term of every restart (the best one was kept)
    losses: dict[str, list[float]] = field(default_factory=dict)
    stopped: bool = False  # cancelled before the last step


def render(G, z: torch.Tensor) -> torch.Tensor:
    """G(z) with the frozen noise the BRGM solvers use."""
    return G.synthesis(G.mapping(z), noise_mode="const")


def initial_z(G, restarts: int, seed: int, device: torch.device) -> torch.Tensor:
    """K starting latents z ~ N(0, I), [K, z_dim], reproducible for a seed."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn((restarts, G.z_dim), generator=gen, device=device)


def solve_csgm(problem: Problem, cfg: CsgmConfig, seed: int, monitor: Monitor | None = None,
               z_init: torch.Tensor | None = None, stage: str = "csgm") -> CsgmOutput:
    """Run CSGM with `cfg.restarts` batched restarts; keep the restart with the lowest data term."""
    G = problem.generator
    z = (initial_z(G, cfg.restarts, seed, problem.device) if z_init is None
         else z_init.detach().clone()).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr, betas=(0.9, 0.999))
    losses: dict[str, list[float]] = {}
    stopped = False
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=True)
        images = render(G, z)
        fits = problem.data_fit(images)
        priors = cfg.lambda_z * z.square().sum(1)
        (fits + priors).sum().backward()
        opt.step()
        terms = {"data": fits.mean(), "z_prior": priors.mean(), "best_data": fits.min()}
        record = record_step(losses, terms, terms["data"] + terms["z_prior"])
        if monitor is not None and not monitor(stage, step, cfg.steps, record, images[int(fits.argmin())][None]):
            stopped = step < cfg.steps
            break
    z = z.detach()
    with torch.no_grad():
        images = render(G, z)
        fits = problem.data_fit(images)
    best = int(fits.argmin())
    ws = G.mapping(z[best : best + 1]).detach()
    return CsgmOutput(z=z[best : best + 1], ws=ws, image=images[best : best + 1], data_fits=fits,
                      losses=losses, stopped=stopped)
