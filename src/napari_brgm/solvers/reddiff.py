"""RED-Diff (Mardani et al., "A variational perspective on solving inverse problems with diffusion models").

The image estimate μ is optimised directly (Adam, lr 0.25, betas 0.9/0.99), starting from the
pseudo-inverse A⁺y, while the diffusion timestep walks DOWN from t_max to t_min, one t per step.
At step i with timestep t, fresh noise ε and x_t = √ᾱ_t·μ + √(1 − ᾱ_t)·ε, the loss is

    (n_obs / D)·mean_observed((A·μ − y)²) / (2σ_y²)  +  λ·w_t·mean(stopgrad(ε̂(x_t, t) − ε)·μ)

— the paper's objective ‖y − Aμ‖²/(2σ_y²) + λ_t·(ε̂ − ε)ᵀμ divided by the number of pixels D, so
λ means the same at every size. The gradient of the second term is λ·w_t·(ε̂ − ε)/D: the denoiser
pulls μ toward images it finds likely at noise level t (score matching, no backpropagation through
the network). w_t weights the timesteps by the inverse signal-to-noise ratio; "linear" is
w_t = √(1 − ᾱ_t)/√ᾱ_t (the paper's default), the others are listed in WEIGHTINGS.

Uncertainty: S runs with different noise seeds, batched (one denoiser call of S images per step;
Adam is element-wise, so the runs do not interact). Their pixel-wise std is the SPREAD OF THE
ESTIMATOR over its random timestep noise — where the prior's pull is ambiguous — not a posterior.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from napari_brgm.solvers.monitor import Monitor, record_step
from napari_brgm.solvers.problem import Problem

WEIGHTINGS = {  # w_t as a function of the inverse SNR r = (1 − ᾱ_t)/ᾱ_t
    "linear": lambda r: r.sqrt(),  # √(1 − ᾱ)/√ᾱ (RED-Diff's default)
    "sqrt": lambda r: r.sqrt().sqrt(),
    "square": lambda r: r,
    "log": lambda r: torch.log1p(r.sqrt()),
    "clip": lambda r: r.sqrt().clamp(max=1.0),  # linear, truncated at 1
    "const": lambda r: torch.ones_like(r),
}


@dataclass
class RedDiffConfig:
    steps: int = 100  # Adam steps = timesteps visited, from t_max down to t_min
    lr: float = 0.25  # Adam learning rate on the image estimate (model units)
    lam: float = 0.25  # λ: weight of the diffusion regulariser
    weighting: str = "linear"  # w_t, a key of WEIGHTINGS
    sigma_y: float = 0.05  # measurement noise std in model units (the data term's 1/(2σ_y²))
    t_max: float = 1.0  # first timestep as a fraction of T
    t_min: float | None = None  # last timestep as a fraction of T; None: where the diffusion noise reaches σ_y
    samples: int = 4  # S: independent noise seeds, batched
    init: str = "pinv"  # start: "pinv" (A⁺y, data-consistent) or "zeros" (for ablations)

    def __post_init__(self):
        if self.init not in ("pinv", "zeros"):
            raise ValueError(f"init must be 'pinv' or 'zeros', got {self.init!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {sorted(WEIGHTINGS)}, got {self.weighting!r}")
        if self.lr <= 0 or self.lam < 0 or self.sigma_y <= 0:
            raise ValueError("RED-Diff needs lr > 0, lam >= 0 and sigma_y > 0")
        if self.t_min is not None and not 0 <= self.t_min <= self.t_max <= 1:
            raise ValueError(f"need 0 <= t_min <= t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.samples < 1 or self.steps < 1:
            raise ValueError("RED-Diff needs at least one step and one sample")


@dataclass
class RedDiffOutput:
    samples: torch.Tensor  # [S, C, R, R] the S estimates, model units
    losses: dict[str, list[float]] = field(default_factory=dict)
    stopped: bool = False  # cancelled before the last step


def timestep_schedule(cfg: RedDiffConfig, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The descending integer timesteps of the run, one per step.

    By default the walk stops at the timestep whose noise-to-signal ratio √((1 − ᾱ_t)/ᾱ_t) reaches
    σ_y: below it the denoiser would remove detail finer than the measurement noise, and w_t → 0
    would hand the estimate back to the noisy data (denoising ended where it started).
    """
    T = len(alphas_cumprod)
    if cfg.t_min is None:
        ratio = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
        t_min = int(torch.searchsorted(ratio.contiguous(), torch.tensor(float(cfg.sigma_y)))) / (T - 1)
    else:
        t_min = cfg.t_min
    t_min = min(t_min, cfg.t_max)
    return torch.linspace(cfg.t_max * (T - 1), t_min * (T - 1), cfg.steps).round().long()


def solve_reddiff(problem: Problem, prior, cfg: RedDiffConfig, seed: int, monitor: Monitor | None = None,
                  stage: str = "reddiff") -> RedDiffOutput:
    """Run RED-Diff with the diffusion prior `prior` (a `DiffusionPrior`), S seeds batched."""
    device = problem.device
    start = problem.operator.pseudo_inverse(problem.y).detach()
    if cfg.init == "zeros":
        start = torch.zeros_like(start)
    assert start.shape[1:] == (prior.img_channels, prior.img_resolution, prior.img_resolution), tuple(start.shape)
    mu = start.repeat(cfg.samples, 1, 1, 1).requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=cfg.lr, betas=(0.9, 0.99))
    gen = torch.Generator(device=device).manual_seed(seed)
    abar = prior.alphas_cumprod.to(device)
    observed = problem.observed_count(start) / start[0].numel()  # n_obs / D
    weight = WEIGHTINGS[cfg.weighting]
    losses: dict[str, list[float]] = {}
    stopped = False
    ts = timestep_schedule(cfg, abar.cpu())
    for step, t in enumerate(ts.tolist(), start=1):
        a = abar[t]
        noise = torch.randn(mu.shape, generator=gen, device=device)
        with torch.no_grad():
            x_t = a.sqrt() * mu + (1 - a).sqrt() * noise
            guide = prior.eps(x_t, torch.full((cfg.samples,), t, device=device)) - noise
        fits = problem.data_fit(mu)
        data = observed * fits / (2 * cfg.sigma_y**2)
        reg = cfg.lam * weight((1 - a) / a) * (guide * mu).flatten(1).mean(1)
        opt.zero_grad(set_to_none=True)
        (data + reg).sum().backward()
        opt.step()
        record = record_step(losses, {"data": fits.mean(), "regulariser": reg.mean()}, (data + reg).mean())
        if monitor is not None and not monitor(stage, step, cfg.steps, record, mu.detach().mean(0, keepdim=True)):
            stopped = step < cfg.steps
            break
    return RedDiffOutput(samples=mu.detach(), losses=losses, stopped=stopped)
