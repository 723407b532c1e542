"""IAGAN (Abu Hussein, Tirer, Giryes, "Image-adaptive GAN based reconstruction").

1. CSGM stage: find ẑ (batched restarts, see `csgm.py`).
2. Image-adaptive stage: jointly fine-tune ẑ and the weights θ of the synthesis network on the data
   term mean_observed((A·G_θ(z) − y)²), with small Adam learning rates, from ẑ and the pretrained θ.
   It runs on a DEEP COPY of the generator: the loaded (cached) prior is never modified. The
   mapping network stays fixed, so the W statistics of the copy remain valid (the optional VI
   stage around the adapted generator uses them). Early stopping: the stage ends when the data
   misfit reaches σ_y² (the discrepancy principle: fitting further would fit the noise).
3. Back-projection is a separate post-step available to every method (`backproject.py`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from napari_brgm.solvers.csgm import CsgmConfig, render, solve_csgm
from napari_brgm.solvers.monitor import Monitor, end_of_step, record_step
from napari_brgm.solvers.problem import Problem


@dataclass
class IaganConfig:
    steps: int = 501  # Adam steps of the image-adaptive stage (an upper bound with early stopping)
    lr_z: float = 1e-4  # Adam learning rate on z (IAGAN: 1e-4)
    lr_g: float = 1e-4  # Adam learning rate on the synthesis weights (IAGAN: 1e-4 to 1e-3)
    early_stop: bool = True  # stop once the data misfit reaches sigma_y² (needs sigma_y)
    sigma_y: float | None = 0.05  # measurement noise std in model units; None disables early stopping
    csgm: CsgmConfig = field(default_factory=CsgmConfig)  # the latent stage

    def __post_init__(self):
        if not (self.lr_z > 0 and self.lr_g > 0):
            raise ValueError(f"IAGAN learning rates must be positive, got {self.lr_z}, {self.lr_g}")


@dataclass
class IaganOutput:
    generator: torch.nn.Module  # the adapted copy, frozen again (the given generator if cancelled before it)
    z: torch.Tensor  # [1, z_dim]
    ws: torch.Tensor  # [1, num_ws, w_dim] = mapping(z); the adapted generator renders image from it
    image: torch.Tensor  # [1, C, R, R] G_θ(z), model units
    csgm_image: torch.Tensor  # [1, C, R, R] the CSGM stage's estimate G(ẑ) (the starting point)
    losses: dict[str, list[float]] = field(default_factory=dict)  # "csgm/…" and "iagan/…" terms
    stopped: bool = False  # cancelled before the end of a stage
    early_stopped_at: int | None = None  # the adaptive step at which the discrepancy was reached


def adapt_generator(G, problem: Problem, z: torch.Tensor, cfg: IaganConfig, monitor: Monitor | None = None,
                    stage: str = "iagan"):
    """Stage 2 on a deep copy of G: returns (adapted copy, z, losses, stopped, early_stopped_at)."""
    adapted = copy.deepcopy(G)
    adapted.requires_grad_(False)
    adapted.synthesis.requires_grad_(True)
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [z], "lr": cfg.lr_z},
                            {"params": list(adapted.synthesis.parameters()), "lr": cfg.lr_g}], betas=(0.9, 0.999))
    target = None if not cfg.early_stop or cfg.sigma_y is None else cfg.sigma_y**2
    losses: dict[str, list[float]] = {}
    stopped, early = False, None
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=True)
        images = render(adapted, z)
        fit = problem.data_fit(images)[0]
        fit.backward()
        opt.step()
        record = record_step(losses, {"data": fit}, fit)
        done, stopped, early = end_of_step(monitor, stage, step, cfg.steps, record, images, target)
        if done:
            break
    adapted.requires_grad_(False)
    return adapted, z.detach(), losses, stopped, early


def solve_iagan(problem: Problem, cfg: IaganConfig, seed: int, monitor: Monitor | None = None) -> IaganOutput:
    """CSGM, then the image-adaptive stage; `problem.generator` is left untouched."""
    G = problem.generator
    latent = solve_csgm(problem, cfg.csgm, seed, monitor)
    losses = {f"csgm/{k}": v for k, v in latent.losses.items()}
    if latent.stopped:
        return IaganOutput(generator=G, z=latent.z, ws=latent.ws, image=latent.image, csgm_image=latent.image,
                           losses=losses, stopped=True)
    adapted, z, adapt_losses, stopped, early = adapt_generator(G, problem, latent.z, cfg, monitor)
    losses.update({f"iagan/{k}": v for k, v in adapt_losses.items()})
    with torch.no_grad():
        ws = adapted.mapping(z)
        image = adapted.synthesis(ws, noise_mode="const")
    return IaganOutput(generator=adapted, z=z, ws=ws, image=image, csgm_image=latent.image, losses=losses,
                       stopped=stopped, early_stopped_at=early)
