"""Inverse problems with an invertible prior (Asim et al., "Invertible generative models for inverse problems").

x = G(z) = flow.inverse(z), with z ~ N(0, I) exactly (the flow's latents are whitened), so G has
no representation error. The solver minimises the negative log posterior in z, in nats,

    U(z) = ‖A·G(z) − y‖² / (2σ_y²)  +  γ·‖z‖² / 2,

the squared norm taken over the observed measurement entries; γ = 1 is the exact posterior
under the flow prior and Gaussian noise σ_y, γ < 1 tempers the prior (GlowIP tunes the weight of
its latent penalty per problem). Adam on z from z0 = 0 ("zero", the default: lower U and higher
PSNR than "pinv" in our 64 px brain tests) or from a shrunk encoding of the pseudo-inverse image,
z0 = init_scale·flow(A⁺y) ("pinv"); the estimate is G(z*). A step that lands where the inverse
overflows is undone and the learning rate halved.

Uncertainty: S chains of Metropolis-adjusted Langevin dynamics (MALA; unadjusted if
`metropolis` is off) target exp(−U(z)/T) starting at z*, all chains decoded in ONE batched flow
call per step. The proposals are preconditioned by a fixed diagonal M ∝ 1/√v, v being Adam's
second-moment estimate at the end of the MAP stage (as in pSGLD, Li et al. 2016): latents the data
barely constrain take larger steps. M is fixed, so MALA still targets exactly exp(−U/T); the step
size, shared by the chains, adapts toward 57% acceptance during the first half and is then fixed.
The decoded final states are the samples. Their pixel-wise std is the spread of the approximate
posterior p(x | y) under the flow prior and Gaussian noise σ_y, as far as `langevin_steps` steps
from z* explore it: a short chain stays near z* and under-states the spread, mostly where the data
do not constrain the image. It is a posterior spread only when γ = T = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from napari_brgm.solvers.monitor import Monitor, record_step
from napari_brgm.solvers.problem import Problem

INITS = ("pinv", "zero")
TARGET_ACCEPT = 0.574  # optimal MALA acceptance rate (Roberts & Rosenthal 1998)
ADAPT_RATE = 2.0  # change of log η per unit of acceptance error (averaged over the chains) while adapting
BLOW_UP = 4.0  # |pixel| above this (model units; images span about [-1, 1]) means the inverse blew up


@dataclass
class FlowSolverConfig:
    steps: int = 300  # Adam steps on z (the MAP stage)
    lr: float = 0.1  # Adam learning rate on z (0.05 and LBFGS reach higher U in 300 steps)
    gamma: float = 1.0  # weight of the prior term ‖z‖²/2 (1: exact posterior; < 1 tempers the prior)
    sigma_y: float = 0.05  # measurement noise std in model units ([-1, 1])
    init: str = "zero"  # "zero": z0 = 0, the prior's mode (lower U than "pinv" in our tests); "pinv": see init_scale
    init_scale: float = 0.1  # "pinv": z0 = init_scale · flow(A⁺y), shrunk toward the high-likelihood z = 0
    samples: int = 16  # S Langevin chains, decoded together in one flow call per step
    langevin_steps: int = 50  # steps of every chain (0: no sampling; the samples are the estimate)
    langevin_step_size: float = 1e-5  # step size η of the chains (MALA adapts it, see the docstring)
    precondition: float = 1000.0  # cap of the diagonal preconditioner M (its minimum is 1; ≤ 1: none)
    metropolis: bool = True  # MALA (accept/reject) rather than the unadjusted Langevin algorithm
    temperature: float = 1.0  # T: the chains target exp(−U/T)

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not self.precondition > 0:
            raise ValueError(f"precondition must be positive, got {self.precondition}")
        if self.steps < 0 or self.langevin_steps < 0 or self.samples < 1:
            raise ValueError("steps and langevin_steps must be ≥ 0 and samples ≥ 1")
        if not (self.lr > 0 and self.sigma_y > 0 and self.gamma >= 0 and self.langevin_step_size > 0
                and self.temperature > 0 and self.init_scale >= 0):
            raise ValueError("lr, sigma_y, langevin_step_size and temperature must be > 0; gamma, init_scale ≥ 0")


@dataclass
class FlowOutput:
    image: torch.Tensor  # [1, C, R, R] G(z*), model units
    samples: torch.Tensor  # [S, C, R, R] decoded final Langevin states (the estimate alone if none ran)
    losses: dict[str, list[float]] = field(default_factory=dict)  # MAP terms; "langevin_*": chain averages
    stopped: bool = False  # cancelled before the end of either stage
    z: torch.Tensor | None = None  # [1, D] z*


class _Posterior:
    """U(z) and its gradient for a batch of latents, one flow call."""

    def __init__(self, problem: Problem, flow, cfg: FlowSolverConfig, like: torch.Tensor) -> None:
        self.problem, self.flow, self.cfg = problem, flow, cfg
        self.observed = problem.observed_count(like)

    def __call__(self, z: torch.Tensor):
        """(U [N], ∇U [N, D], data_fit [N], prior term [N], images [N, C, R, R]) — gradients w.r.t. z only."""
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            images = self.flow.inverse(z)
            fit = self.problem.data_fit(images)
            prior = self.cfg.gamma * z.square().sum(1) / 2
            energy = fit * self.observed / (2 * self.cfg.sigma_y ** 2) + prior
            (grad,) = torch.autograd.grad(energy.sum(), z)
        # A latent where the inverse blows up (finite but huge pixels, often in unobserved regions) is
        # treated like an overflow: the MAP stage steps back, the chains reject it.
        blown = images.detach().flatten(1).abs().amax(1) > BLOW_UP
        energy = torch.where(blown, torch.full_like(energy, math.inf), energy.detach())
        return energy, grad, fit.detach(), prior.detach(), images.detach()


def initial_z(problem: Problem, flow, cfg: FlowSolverConfig) -> torch.Tensor:
    """z0 [1, D]: zero, or the shrunk encoding of A⁺y clamped to [-1, 1] (zero if that is not finite)."""
    z0 = torch.zeros((1, flow.z_dim), device=problem.device)
    if cfg.init == "pinv" and cfg.init_scale > 0:
        with torch.no_grad():
            z, _ = flow(problem.operator.pseudo_inverse(problem.y).clamp(-1, 1))
        if bool(torch.isfinite(z).all()):
            z0 = cfg.init_scale * z
    return z0


def solve_flow(problem: Problem, flow, cfg: FlowSolverConfig, seed: int, monitor: Monitor | None = None,
               stage: str = "flow") -> FlowOutput:
    """MAP in z by Adam, then `cfg.samples` batched Langevin chains from z* (see the module docstring)."""
    if not flow.initialized:
        raise ValueError("the flow prior is not initialised (train it or load one with load_flow)")
    shape = (flow.img_channels, flow.img_resolution, flow.img_resolution)
    posterior = _Posterior(problem, flow, cfg, torch.zeros((1, *shape), device=problem.device))
    gen = torch.Generator(device=problem.device).manual_seed(seed)
    z = initial_z(problem, flow, cfg).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    losses: dict[str, list[float]] = {}
    last = None  # (z, posterior(z)) of the last finite iterate
    for step in range(1, cfg.steps + 1):
        current = posterior(z)
        if not _finite(current):  # the step overshot to where the inverse overflows: back, and halve the lr
            with torch.no_grad():
                z.copy_(last[0] if last is not None else torch.zeros_like(z))
            for group in opt.param_groups:
                group["lr"] /= 2
            current = last[1] if last is not None else posterior(z)
        last = (z.detach().clone(), current)
        energy, grad, fit, prior, image = current
        opt.zero_grad(set_to_none=True)
        z.grad = grad
        opt.step()
        record = record_step(losses, {"data": fit[0], "z_prior": prior[0]}, energy[0])
        if monitor is not None and not monitor(stage, step, cfg.steps, record, image):
            z_map, image = _decode(flow, z.detach(), last)
            stopped = step < cfg.steps or cfg.langevin_steps > 0  # the sampling stage did not run either
            return FlowOutput(image=image, samples=image, losses=losses, stopped=stopped, z=z_map)
    z_map, image = _decode(flow, z.detach(), last)
    if cfg.langevin_steps == 0:
        return FlowOutput(image=image, samples=image, losses=losses, z=z_map)
    m = preconditioner(opt.state[z].get("exp_avg_sq"), z.shape[1], cfg.precondition, z.device)
    samples, stopped = _langevin(posterior, z_map, cfg, gen, m, losses, monitor, stage + "-langevin")
    return FlowOutput(image=image, samples=samples, losses=losses, stopped=stopped, z=z_map)


def preconditioner(exp_avg_sq: torch.Tensor | None, dim: int, cap: float, device) -> torch.Tensor:
    """Diagonal M [D] ∝ 1/√v (Adam's second moments at z*), scaled to min 1 and capped at `cap`; ones without v."""
    if exp_avg_sq is None or cap <= 1:
        return torch.ones(dim, device=device)
    m = 1 / (exp_avg_sq.detach().reshape(-1).sqrt() + 1e-12)
    return (m / m.min()).clamp(max=cap)


def _finite(values) -> bool:
    return bool(torch.isfinite(values[0]).all()) and bool(torch.isfinite(values[1]).all())


@torch.no_grad()
def _decode(flow, z: torch.Tensor, last) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, G(z)), or the last finite iterate if the final step overflowed."""
    image = flow.inverse(z)
    if last is not None and not bool(torch.isfinite(image).all()):
        z, image = last[0], last[1][4]
    return z, image


def _langevin(posterior: _Posterior, z_map: torch.Tensor, cfg: FlowSolverConfig, gen: torch.Generator,
              m: torch.Tensor, losses: dict, monitor: Monitor | None, stage: str) -> tuple[torch.Tensor, bool]:
    """Run the S chains from z*; (decoded final states [S, C, R, R], cancelled)."""
    s, t = cfg.samples, cfg.temperature
    z = z_map.expand(s, -1).clone()
    energy, grad, fit, _, images = posterior(z)
    log_eta = torch.tensor(math.log(cfg.langevin_step_size), device=z.device)  # shared by the chains
    adapt_until = cfg.langevin_steps // 2 if cfg.metropolis else 0
    chain: dict[str, list[float]] = {}
    stopped = False
    for step in range(1, cfg.langevin_steps + 1):
        eta = log_eta.exp()
        noise = torch.randn(z.shape, generator=gen, device=z.device)
        proposal = z - eta * m * grad / t + (2 * eta * m).sqrt() * noise
        e_new, g_new, f_new, _, i_new = posterior(proposal)
        finite = torch.isfinite(e_new) & torch.isfinite(g_new).all(1)  # overflowing proposals are rejected
        if cfg.metropolis:
            forward = ((proposal - z + eta * m * grad / t).square() / m).sum(1)
            backward = ((z - proposal + eta * m * g_new / t).square() / m).sum(1)
            log_alpha = -(e_new - energy) / t - (backward - forward) / (4 * eta)
            log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf)
            accept = (torch.rand(s, generator=gen, device=z.device).log() < log_alpha) & finite
            if step <= adapt_until:
                log_eta += ADAPT_RATE * (log_alpha.clamp(max=0).exp().mean() - TARGET_ACCEPT)
        else:
            accept = finite
        z = torch.where(accept[:, None], proposal, z)
        grad = torch.where(accept[:, None], g_new, grad)
        energy, fit = torch.where(accept, e_new, energy), torch.where(accept, f_new, fit)
        images = torch.where(accept[:, None, None, None], i_new, images)
        terms = {"data": fit.mean(), "accept": accept.float().mean(), "step_size": eta}
        record = record_step(chain, terms, energy.mean())
        if monitor is not None and not monitor(stage, step, cfg.langevin_steps, record, images.mean(0, keepdim=True)):
            stopped = step < cfg.langevin_steps
            break
    losses |= {f"langevin_{k}": v for k, v in chain.items()}
    return images, stopped
