"""BRGM MAP estimation in W+ (Marinescu et al., PyTorch release `bayesmap_recon.py`).

loss = λ_pix·mean((f(G(w)) − y)²) + λ_perc·perceptual + λ_w·mean(((w − w̄)/σ)²) + λ_c·Σ_ij|1 − cos(w_i, w_j)|
with images on BRGM's 0..255 scale for the pixel term, Adam(lr 0.1, betas 0.9/0.999), w initialised
at w̄ in every layer, noise inputs frozen (noise_mode="const").

With a bf16 generator (`G.precision == "bf16"`) the first `fp32_warmup` of the steps still run in
fp32: the early steps decide which local optimum the MAP lands in, and bf16 rounding there moves
the result by ±0.2-0.4 dB; after an fp32 start bf16 stays within 0.02 dB of the fp32 result
(benchmarks/precision_bf16.py). The returned image is always rendered in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from napari_brgm.solvers.latent_priors import LatentStats, colinearity, w_prior
from napari_brgm.solvers.monitor import Monitor, record_step
from napari_brgm.solvers.problem import Problem

PIXEL_SCALE = 127.5  # BRGM computes the pixel term on (G + 1)·127.5, i.e. 0..255


@dataclass
class MapConfig:
    """BRGM's defaults; `lambda_c=None` picks 0.1, or 1.0 for super-resolution factors above 16."""

    steps: int = 501  # Adam steps
    lr: float = 0.1  # Adam learning rate
    lambda_pix: float = 0.001  # pixel term weight (0..255 scale)
    lambda_w: float = 100.0  # Gaussian prior on w
    lambda_c: float = 0.1  # colinearity of the W+ layers
    lambda_perc: float = 1e7  # perceptual term weight, used only when `perceptual` is given
    fp32_warmup: float = 0.2  # bf16 generators: this fraction of the steps first runs in fp32
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # d(f(G(w)), y), 0..255 inputs

    @staticmethod
    def default_lambda_c(task: str, factor: int) -> float:
        return 1.0 if task == "superres" and factor > 16 else 0.1


@dataclass
class MapOutput:
    ws: torch.Tensor  # [1, num_ws, w_dim] the estimate (last step done)
    image: torch.Tensor  # [1, C, R, R] G(ws), model units
    losses: dict[str, list[float]] = field(default_factory=dict)
    stopped: bool = False  # cancelled before the last step


def brgm_terms(problem: Problem, images: torch.Tensor, ws: torch.Tensor, ws_for_c: torch.Tensor,
               stats: LatentStats, cfg: MapConfig) -> dict[str, torch.Tensor]:
    """The weighted BRGM loss terms (shared by MAP and the reference-VI mode)."""
    residual = problem.residual(images) * PIXEL_SCALE
    terms = {
        "pixel": cfg.lambda_pix * residual.square().mean(),
        "w_prior": cfg.lambda_w * w_prior(ws, stats),
        "colinearity": cfg.lambda_c * colinearity(ws_for_c),
    }
    if cfg.perceptual is not None:
        measured = (problem.operator.forward(images) + 1) * PIXEL_SCALE
        target = ((problem.y + 1) * PIXEL_SCALE).expand_as(measured)
        terms["perceptual"] = cfg.lambda_perc * cfg.perceptual(measured, target)
    return terms


def solve_map(problem: Problem, cfg: MapConfig, monitor: Monitor | None = None,
              ws_init: torch.Tensor | None = None, stage: str = "map") -> MapOutput:
    """Run BRGM MAP; stops early (flagged) when the monitor says so."""
    G = problem.generator
    stats = LatentStats.of(G, problem.device)
    ws = (stats.initial_ws(G.num_ws) if ws_init is None else ws_init.detach().clone()).requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=cfg.lr, betas=(0.9, 0.999))
    losses: dict[str, list[float]] = {}
    out = MapOutput(ws=ws.detach(), image=torch.empty(0), losses=losses)
    warmup = round(cfg.fp32_warmup * cfg.steps)
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=True)
        images = G.synthesis(ws, noise_mode="const", precision="fp32" if step <= warmup else None)
        terms = brgm_terms(problem, images, ws, ws, stats, cfg)
        total = sum(terms.values())
        total.backward()
        opt.step()
        record = record_step(losses, terms, total)
        if monitor is not None and not monitor(stage, step, cfg.steps, record, images):
            out.stopped = step < cfg.steps
            break
    out.ws = ws.detach()
    with torch.no_grad():
        out.image = G.synthesis(out.ws, noise_mode="const", precision="fp32")
    return out
