"""Variational inference over W+: a mean-field Gaussian q(w) = N(μ, diag(σ²)), σ = softplus(ρ).

Two objectives:
- "elbo" (default): the negative evidence lower bound
      E_q[‖A·G(w) − y‖²] / (2σ_y²)  +  E_q[½ Σ ((w − w̄)/σ_d)²]  −  H(q)
  with σ_y the stated measurement noise (model units), a Gaussian prior per W+ layer with the
  per-dimension W std σ_d (its expectation is exact: ((μ − w̄)² + σ²)/σ_d²) and the entropy Σ log σ.
  The expected likelihood uses K reparameterised samples per step, rendered in ONE generator call.
  By default μ starts at the MAP estimate and σ at a fraction of σ_d.
- "brgm": the reference code's loss (`vi_recon.py`), for comparison: the BRGM MAP terms averaged
  over K samples (sample 0 at μ), colinearity on μ, and an inverse-gamma(0.1, 0.95) hyperprior on
  σ/2; its q term has no gradient, so it is not an ELBO.
After optimisation, S samples from q are rendered; the engine takes their pixel-wise mean and
standard deviation in the input's units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from napari_brgm.solvers.latent_priors import LatentStats, colinearity
from napari_brgm.solvers.map import MapConfig, brgm_terms
from napari_brgm.solvers.monitor import Monitor, record_step
from napari_brgm.solvers.problem import Problem

MODES = ("elbo", "brgm")


@dataclass
class ViConfig:
    steps: int = 501  # Adam steps on (μ, ρ)
    lr: float = 0.1  # Adam learning rate
    mc_samples: int = 6  # K: samples of q per step, batched in one generator call
    samples: int = 16  # S: samples drawn at the end for the pixel-wise mean / std
    render_batch: int = 8  # samples per generator call when rendering the S samples
    mode: str = "elbo"  # "elbo" or "brgm"
    sigma_y: float = 0.05  # measurement noise std in model units ([-1, 1]); elbo mode
    init_sigma_scale: float = 0.1  # σ starts at this fraction of σ_d when μ starts at the MAP
    map: MapConfig = field(default_factory=MapConfig)  # weights of the brgm mode; MAP warm start

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"VI mode must be one of {MODES}, got {self.mode!r}")
        if self.mc_samples < 1 or self.samples < 1:
            raise ValueError("VI needs at least one sample per step and one output sample")
        if self.sigma_y <= 0:
            raise ValueError(f"sigma_y must be positive, got {self.sigma_y}")


@dataclass
class ViOutput:
    mu: torch.Tensor  # [1, num_ws, w_dim]
    sigma: torch.Tensor  # [1, num_ws, w_dim]
    samples: torch.Tensor  # [S, C, R, R] model units; pixel statistics are taken after mapping back
    losses: dict[str, list[float]] = field(default_factory=dict)
    stopped: bool = False


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def _elbo_terms(problem: Problem, images, mu, sigma, stats: LatentStats, cfg: ViConfig) -> dict[str, torch.Tensor]:
    k = images.shape[0]
    nll = problem.residual(images).square().sum() / (k * 2 * cfg.sigma_y**2)
    prior = 0.5 * (((mu - stats.mean).square() + sigma.square()) / stats.std_per_dim.square()).sum()
    entropy = torch.log(sigma).sum()
    return {"nll": nll, "prior": prior, "neg_entropy": -entropy}


_IG_ALPHA, _IG_BETA = 0.1, 0.95  # the reference code's inverse-gamma hyperprior on σ/2


def _brgm_terms(problem: Problem, images, ws, mu, sigma, stats: LatentStats, cfg: ViConfig) -> dict[str, torch.Tensor]:
    terms = brgm_terms(problem, images, ws, mu, stats, cfg.map)
    hyper = torch.distributions.InverseGamma(
        torch.tensor(_IG_ALPHA, device=mu.device), torch.tensor(_IG_BETA, device=mu.device)
    )
    terms["hyperprior"] = -hyper.log_prob(sigma / 2).mean()
    return terms


def solve_vi(problem: Problem, cfg: ViConfig, seed: int, monitor: Monitor | None = None,
             mu_init: torch.Tensor | None = None, stage: str = "vi") -> ViOutput:
    """Fit q by Adam on (μ, ρ); then draw `cfg.samples` samples. Deterministic for a given seed."""
    G = problem.generator
    device = problem.device
    stats = LatentStats.of(G, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    prior_sigma = stats.std_per_dim.reshape(1, 1, -1).expand(1, G.num_ws, -1)
    if mu_init is None:
        mu = stats.initial_ws(G.num_ws)
        sigma0 = prior_sigma
    else:
        mu = mu_init.detach().clone()
        sigma0 = prior_sigma * cfg.init_sigma_scale
    mu.requires_grad_(True)
    rho = _inverse_softplus(sigma0.clone()).requires_grad_(True)
    opt = torch.optim.Adam([mu, rho], lr=cfg.lr, betas=(0.9, 0.999))
    k = cfg.mc_samples
    losses: dict[str, list[float]] = {}
    stopped = False
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=True)
        sigma = F.softplus(rho)
        eps = torch.randn((k, *mu.shape[1:]), generator=gen, device=device)
        if cfg.mode == "brgm":
            eps[0] = 0  # the reference code's sample 0 sits at μ
        ws = mu + sigma * eps
        images = G.synthesis(ws, noise_mode="const")
        if cfg.mode == "elbo":
            terms = _elbo_terms(problem, images, mu, sigma, stats, cfg)
        else:
            terms = _brgm_terms(problem, images, ws, mu, sigma, stats, cfg)
        total = sum(terms.values())
        total.backward()
        opt.step()
        record = record_step(losses, terms, total)
        if monitor is not None and not monitor(stage, step, cfg.steps, record, images[:1]):
            stopped = step < cfg.steps
            break
    mu, sigma = mu.detach(), F.softplus(rho).detach()
    count = cfg.samples if not stopped else min(cfg.samples, max(k, 2))
    samples = sample_images(G, mu, sigma, count, gen, cfg.render_batch)
    return ViOutput(mu=mu, sigma=sigma, samples=samples, losses=losses, stopped=stopped)


@torch.no_grad()
def sample_images(G, mu: torch.Tensor, sigma: torch.Tensor, count: int, gen: torch.Generator,
                  batch: int) -> torch.Tensor:
    """Render `count` images G(μ + σ·ε), `batch` latents per generator call."""
    eps = torch.randn((count, *mu.shape[1:]), generator=gen, device=mu.device)
    ws = mu + sigma * eps
    return torch.cat([G.synthesis(chunk, noise_mode="const") for chunk in ws.split(batch)])

