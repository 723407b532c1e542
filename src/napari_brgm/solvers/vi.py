"""Variational inference over W+ (and optionally the noise inputs) of a frozen StyleGAN2.

Posterior families (`posterior`):
- "meanfield": BRGM's q(w) = N(μ, diag(σ²)) over W+, σ = softplus(ρ); noise inputs frozen.
- "lowrank": q(w) = N(μ, diag(σ²) + UUᵀ), U [num_ws·w_dim, rank]: the rank correlated directions
  let q move the whole W+ along directions the observed pixels do not pin down (those change
  only the missing region), which a diagonal q cannot.
- "noise" / "lowrank+noise": the same over W+, plus the per-layer noise maps as latent variables
  with their exact N(0, I) prior and a mean-field q (BRGM freezes them): spatially local freedom,
  as large as the generator's learned noise strengths allow.
- "laplace": no optimisation of q; the Gauss–Newton Laplace posterior at the MAP point, a
  full-covariance Gaussian over W+ (`solvers.laplace`): every direction the measurement leaves
  free keeps the prior's spread. It needs the MAP warm start. Its samples are rendered through the
  generator linearised at the MAP point by default (`predictive`, `solvers.laplace.PREDICTIVES`).

Two objectives:
- "elbo" (default): the negative evidence lower bound, every term a sum in consistent units,
      E_q[‖A·G(w, n) − y‖²] / (2σ_y²)  +  E_q[½ Σ ((w − w̄)/σ_d)²]  +  E_q[½ ‖n‖²]  −  H(q)
  with σ_y the stated measurement noise (model units), a Gaussian prior per W+ layer with the
  per-dimension W std σ_d (its expectation is exact: ((μ − w̄)² + diag Σ)/σ_d²) and the exact
  entropy (matrix-determinant lemma for the low-rank part). The expected likelihood uses K
  reparameterised samples per step, rendered in ONE generator call. By default μ starts at the
  MAP estimate and σ at a fraction of σ_d.
- "brgm": the reference code's loss (`vi_recon.py`), for comparison, mean-field only: the BRGM MAP
  terms averaged over K samples (sample 0 at μ), colinearity on μ, and an inverse-gamma(0.1, 0.95)
  hyperprior on σ/2; its q term has no gradient, so it is not an ELBO.
After optimisation, S samples from q are rendered; the engine takes their pixel-wise mean and
standard deviation in the input's units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from napari_brgm.solvers.laplace import PREDICTIVES, laplace_factor
from napari_brgm.solvers.latent_priors import LatentStats
from napari_brgm.solvers.map import MapConfig, brgm_terms
from napari_brgm.solvers.monitor import Monitor, record_step
from napari_brgm.solvers.problem import Problem

MODES = ("elbo", "brgm")
POSTERIORS = ("meanfield", "lowrank", "noise", "lowrank+noise", "laplace")


@dataclass
class ViConfig:
    steps: int = 501  # Adam steps on the parameters of q
    lr: float = 0.1  # Adam learning rate
    mc_samples: int = 6  # K: samples of q per step, batched in one generator call
    samples: int = 16  # S: samples drawn at the end for the pixel-wise mean / std
    render_batch: int = 8  # samples per generator call when rendering the S samples
    mode: str = "elbo"  # "elbo" or "brgm"
    posterior: str = "meanfield"  # family of q: POSTERIORS (the engine's default is "laplace")
    rank: int = 16  # columns of U in the low-rank families
    rank_lr: float = 0.05  # Adam step of a column of V (U = σ_d ⊙ V) in prior-whitened norm per step
    init_rank_norm: float = 0.3  # norm of V's columns at the start (1: the prior's spread)
    sigma_y: float = 0.05  # measurement noise std in model units ([-1, 1]); elbo mode
    init_sigma_scale: float = 0.1  # σ (and U's column scale) starts at this fraction of σ_d when μ starts at the MAP
    init_noise_sigma: float = 0.5  # std of q over the noise maps at the start (their prior's is 1)
    predictive: str | None = None  # "linear" (laplace only) or "generator"; None: linear for laplace, else generator
    map: MapConfig = field(default_factory=MapConfig)  # weights of the brgm mode; MAP warm start

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"VI mode must be one of {MODES}, got {self.mode!r}")
        if self.posterior not in POSTERIORS:
            raise ValueError(f"VI posterior must be one of {POSTERIORS}, got {self.posterior!r}")
        if self.mode == "brgm" and self.posterior != "meanfield":
            raise ValueError(f"the brgm VI mode is BRGM's mean-field posterior; posterior={self.posterior!r} "
                             "needs mode 'elbo'")
        if self.mc_samples < 1 or self.samples < 1:
            raise ValueError("VI needs at least one sample per step and one output sample")
        if self.sigma_y <= 0:
            raise ValueError(f"sigma_y must be positive, got {self.sigma_y}")
        if self.rank < 1 and "lowrank" in self.posterior:
            raise ValueError(f"a low-rank posterior needs rank >= 1, got {self.rank}")
        self.predictive = default_predictive(self.posterior, self.predictive)

    @property
    def low_rank(self) -> int:
        return self.rank if "lowrank" in self.posterior else 0

    @property
    def noise_latents(self) -> bool:
        return "noise" in self.posterior


def default_predictive(posterior: str, predictive: str | None) -> str:
    """The predictive a posterior family renders with: "linear" is the Laplace posterior's (and its default)."""
    if predictive is None:
        return "linear" if posterior == "laplace" else "generator"
    if predictive not in PREDICTIVES:
        raise ValueError(f"VI predictive must be one of {PREDICTIVES}, got {predictive!r}")
    if predictive == "linear" and posterior != "laplace":
        raise ValueError(f"the linear predictive is the Laplace posterior's; posterior {posterior!r} renders "
                         "with the generator (predictive 'generator')")
    return predictive


@dataclass
class ViOutput:
    mu: torch.Tensor  # [1, num_ws, w_dim]
    sigma: torch.Tensor  # [1, num_ws, w_dim] diagonal part of q's std over W+
    samples: torch.Tensor  # [S, C, R, R] model units; pixel statistics are taken after mapping back
    losses: dict[str, list[float]] = field(default_factory=dict)
    stopped: bool = False
    factor: torch.Tensor | None = None  # U [num_ws·w_dim, rank] of the low-rank families


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class Posterior:
    """The variational family: parameters, reparameterised samples, E_q[prior energy], entropy."""

    def __init__(self, G, mu: torch.Tensor, sigma0: torch.Tensor, prior_sigma: torch.Tensor, cfg: ViConfig,
                 gen: torch.Generator):
        self.shape = tuple(mu.shape[1:])  # (num_ws, w_dim)
        self.mu = mu.detach().clone().requires_grad_(True)
        self.rho = _inverse_softplus(sigma0.clone()).requires_grad_(True)
        self.V, self.prior_scale = None, prior_sigma.reshape(-1, 1)
        if cfg.low_rank:  # U = σ_d ⊙ V: V's columns are directions in prior-whitened W+ (norm 1 = the prior's spread)
            d = self.prior_scale.shape[0]
            V = torch.randn((d, cfg.low_rank), generator=gen, device=mu.device) * (cfg.init_rank_norm / d**0.5)
            self.V = V.requires_grad_(True)
        self.noise_mu, self.noise_rho = [], []
        if cfg.noise_latents:
            s0 = _inverse_softplus(torch.tensor(cfg.init_noise_sigma, device=mu.device))
            for layer in G.synthesis.noise_layers():
                self.noise_mu.append(layer.noise_const.detach().clone()[None, None].requires_grad_(True))
                self.noise_rho.append(torch.full_like(self.noise_mu[-1], float(s0)).requires_grad_(True))

    def parameter_groups(self, cfg: ViConfig) -> list[dict]:
        """Adam groups; V's entries move at lr/√d, so a column's norm moves about lr per step."""
        groups = [{"params": [self.mu, self.rho] + self.noise_mu + self.noise_rho, "lr": cfg.lr}]
        if self.V is not None:
            groups.append({"params": [self.V], "lr": cfg.rank_lr / self.V.shape[0] ** 0.5})
        return groups

    @property
    def U(self) -> torch.Tensor | None:
        return None if self.V is None else self.prior_scale * self.V

    @property
    def sigma(self) -> torch.Tensor:
        return F.softplus(self.rho)

    def sample(self, k: int, gen: torch.Generator, zero_first: bool = False):
        """K latents ws [K, num_ws, w_dim] and noise maps (None: the generator's constant noise)."""
        eps = torch.randn((k, *self.shape), generator=gen, device=self.mu.device)
        if zero_first:
            eps[0] = 0  # the reference code's sample 0 sits at μ
        ws = self.mu + self.sigma * eps
        if self.V is not None:
            eta = torch.randn((k, self.V.shape[1]), generator=gen, device=self.mu.device)
            ws = ws + (eta @ self.U.T).reshape(k, *self.shape)
        noise = None
        if self.noise_mu:
            noise = [m + F.softplus(r) * torch.randn((k, *m.shape[1:]), generator=gen, device=m.device)
                     for m, r in zip(self.noise_mu, self.noise_rho)]
        return ws, noise

    def prior_energy(self, stats: LatentStats) -> torch.Tensor:
        """E_q[½ Σ ((w − w̄)/σ_d)²] + E_q[½ ‖n‖²], exact for a Gaussian q."""
        var = self.sigma.square()
        if self.V is not None:
            var = var + self.U.square().sum(1).reshape(1, *self.shape)
        energy = 0.5 * (((self.mu - stats.mean).square() + var) / stats.std_per_dim.square()).sum()
        for m, r in zip(self.noise_mu, self.noise_rho):
            energy = energy + 0.5 * (m.square() + F.softplus(r).square()).sum()
        return energy

    def entropy(self) -> torch.Tensor:
        """H(q) up to a constant: ½ log det Σ, Σ = D + UUᵀ by the matrix-determinant lemma."""
        sigma = self.sigma.reshape(-1)
        h = torch.log(sigma).sum()
        if self.V is not None:
            scaled = self.U / sigma[:, None]
            inner = torch.eye(self.V.shape[1], device=sigma.device) + scaled.T @ scaled
            h = h + 0.5 * torch.logdet(inner)
        for r in self.noise_rho:
            h = h + torch.log(F.softplus(r)).sum()
        return h


def _elbo_terms(problem: Problem, images, q: Posterior | None, stats: LatentStats, cfg: ViConfig,
                mode: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The negative ELBO's terms; with q None, the negative log posterior at the point `mode` (Laplace)."""
    k = images.shape[0]
    nll = problem.residual(images).square().sum() / (k * 2 * cfg.sigma_y**2)
    if q is None:
        return {"nll": nll, "prior": 0.5 * ((mode - stats.mean) / stats.std_per_dim).square().sum()}
    return {"nll": nll, "prior": q.prior_energy(stats), "neg_entropy": -q.entropy()}


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
    """Fit q by Adam; then draw `cfg.samples` samples. Deterministic for a given seed."""
    G = problem.generator
    device = problem.device
    stats = LatentStats.of(G, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    if cfg.posterior == "laplace":
        return _solve_laplace(problem, cfg, stats, gen, monitor, mu_init, stage)
    prior_sigma = stats.std_per_dim.reshape(1, 1, -1).expand(1, G.num_ws, -1)
    if mu_init is None:
        mu, sigma0 = stats.initial_ws(G.num_ws), prior_sigma
    else:
        mu, sigma0 = mu_init, prior_sigma * cfg.init_sigma_scale
    q = Posterior(G, mu, sigma0, prior_sigma, cfg, gen)
    opt = torch.optim.Adam(q.parameter_groups(cfg), betas=(0.9, 0.999))
    k = cfg.mc_samples
    losses: dict[str, list[float]] = {}
    stopped = False
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=True)
        ws, noise = q.sample(k, gen, zero_first=cfg.mode == "brgm")
        images = G.synthesis(ws, noise_mode="const", noise_inputs=noise)
        if cfg.mode == "elbo":
            terms = _elbo_terms(problem, images, q, stats, cfg)
        else:
            terms = _brgm_terms(problem, images, ws, q.mu, q.sigma, stats, cfg)
        total = sum(terms.values())
        total.backward()
        opt.step()
        record = record_step(losses, terms, total)
        if monitor is not None and not monitor(stage, step, cfg.steps, record, images[:1]):
            stopped = step < cfg.steps
            break
    count = cfg.samples if not stopped else min(cfg.samples, max(k, 2))
    samples = sample_images(G, q, count, gen, cfg.render_batch)
    return ViOutput(mu=q.mu.detach(), sigma=q.sigma.detach(), samples=samples, losses=losses, stopped=stopped,
                    factor=None if q.V is None else q.U.detach())


def _solve_laplace(problem: Problem, cfg: ViConfig, stats: LatentStats, gen: torch.Generator, monitor: Monitor | None,
                   mu_init: torch.Tensor | None, stage: str) -> ViOutput:
    if mu_init is None:
        raise ValueError("the Laplace posterior is taken at the MAP point: it needs the MAP warm start (mode 'elbo')")
    factor = laplace_factor(problem, mu_init.detach(), cfg.sigma_y, batch=cfg.render_batch * 4, monitor=monitor,
                            stage=stage)
    G = problem.generator
    if factor is None:  # cancelled while J was formed: the MAP image alone
        with torch.no_grad():
            image = G.synthesis(mu_init, noise_mode="const")
        return ViOutput(mu=mu_init.detach(), sigma=torch.zeros_like(mu_init), samples=image, stopped=True)
    with torch.no_grad():
        samples = factor.render(G, factor.sample(cfg.samples, gen), cfg.predictive, cfg.render_batch)
        at_mode = _elbo_terms(problem, G.synthesis(mu_init, noise_mode="const"), None, stats, cfg, mu_init)
    sigma = (factor.factor.square().sum(1).sqrt() * factor.prior_scale).reshape(mu_init.shape)
    losses = {name: [float(v)] for name, v in at_mode.items()} | {"total": [float(sum(at_mode.values()))],
                                                                  "free_directions": [float(factor.free_directions)]}
    return ViOutput(mu=mu_init.detach(), sigma=sigma, samples=samples, losses=losses, factor=factor.factor)


@torch.no_grad()
def sample_images(G, q: Posterior, count: int, gen: torch.Generator, batch: int) -> torch.Tensor:
    """Render `count` images from q, `batch` latents per generator call."""
    ws, noise = q.sample(count, gen)
    chunks = []
    for start in range(0, count, batch):
        part = None if noise is None else [n[start:start + batch] for n in noise]
        chunks.append(G.synthesis(ws[start:start + batch], noise_mode="const", noise_inputs=part))
    return torch.cat(chunks)
