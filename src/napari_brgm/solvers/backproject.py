"""Back-projection (IAGAN, Abu Hussein et al.): a post-step that makes any estimate agree with y.

x_BP = x + A⁺(y − A·x) (η = 0): A·x_BP = A·A⁺·y, i.e. the estimate reproduces the measurement
exactly wherever it is observed, and only the null space of A (what y cannot see) keeps the
solver's content. For inpainting that copies the observed pixels; for super-resolution it adds the
exact pseudo-inverse of the downsampling to the residual. The regularised form
x + Aᵀ(AAᵀ + ηI)⁻¹(y − A·x) (η > 0) moves only part of the way, the safer choice for noisy y.
The operators implement both (`LinearOperator.back_project`); this applies them to a batch.
"""

from __future__ import annotations

import torch

from napari_brgm.solvers.problem import Problem


@torch.no_grad()
def back_project(problem: Problem, images: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
    """Back-project every image of a batch [N, C, R, R] onto the measurement of `problem`."""
    if images.numel() == 0:
        return images
    x = images.detach().float()
    return problem.operator.back_project(x, problem.y.to(x.dtype).expand(x.shape[0], -1, -1, -1), eta)
