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
    ws: torch.Tensor  # [B, num_ws, w_dim] the estimate (last step done); B = problem.y's batch, usually 1
    image: torch.Tensor  # [B, C, R, R] G(ws), model units
    losses: dict[str, list[float]] = field(default_factory=dict)  # B > 1: the sums over the batch
    stopped: bool = False  # cancelled before the last step
    batch_losses: list[dict[str, list[float]]] | None = None  # B > 1: each image's own history


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


def batch_terms(problem: Problem, images: torch.Tensor, ws: torch.Tensor, stats: LatentStats,
                cfg: MapConfig) -> dict[str, torch.Tensor]:
    """`brgm_terms` of B independent problems at once, one value per image [B] (no perceptual term).

    Adam is element-wise, so minimising the sum runs each image's own MAP: the batch only shares
    the generator's passes.
    """
    residual = problem.residual(images) * PIXEL_SCALE
    unit = torch.nn.functional.normalize(ws, dim=2)
    return {"pixel": cfg.lambda_pix * residual.square().flatten(1).mean(1),
            "w_prior": cfg.lambda_w * ((ws - stats.mean) / stats.std).square().flatten(1).mean(1),
            "colinearity": cfg.lambda_c * (1 - unit @ unit.transpose(1, 2)).abs().flatten(1).sum(1)}


def solve_map(problem: Problem, cfg: MapConfig, monitor: Monitor | None = None,
              ws_init: torch.Tensor | None = None, stage: str = "map") -> MapOutput:
    """Run BRGM MAP; stops early (flagged) when the monitor says so.

    A measurement batch y [B, ...] (B > 1, e.g. the slices of a volume) runs B independent MAP
    estimates through shared generator passes; the perceptual term is then not supported.
    """
    G = problem.generator
    batch = problem.y.shape[0]
    if batch > 1 and cfg.perceptual is not None:
        raise ValueError("the perceptual term is not supported for a batch of measurements")
    stats = LatentStats.of(G, problem.device)
    ws = (stats.initial_ws(G.num_ws).repeat(batch, 1, 1) if ws_init is None
          else ws_init.detach().clone()).requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=cfg.lr, betas=(0.9, 0.999))
    losses: dict[str, list[float]] = {}
    out = MapOutput(ws=ws.detach(), image=torch.empty(0), losses=losses,
                    batch_losses=[{} for _ in range(batch)] if batch > 1 else None)
    warmup = round(cfg.fp32_warmup * cfg.steps)
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=True)
        images = G.synthesis(ws, noise_mode="const", precision="fp32" if step <= warmup else None)
        if batch == 1:
            terms = brgm_terms(problem, images, ws, ws, stats, cfg)
        else:
            per_image = batch_terms(problem, images, ws, stats, cfg)
            _record_batch(out.batch_losses, per_image)
            terms = {name: v.sum() for name, v in per_image.items()}
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


def _record_batch(histories: list[dict[str, list[float]]], terms: dict[str, torch.Tensor]) -> None:
    """Append each image's loss terms (and their "total") to its own history."""
    names = list(terms)
    values = torch.stack([terms[n].detach() for n in names], dim=1)
    for history, row in zip(histories, values.tolist(), strict=True):
        for name, v in zip(names, row, strict=True):
            history.setdefault(name, []).append(v)
        history.setdefault("total", []).append(sum(row))
