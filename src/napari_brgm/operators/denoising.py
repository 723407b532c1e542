"""Denoising forward model: the identity, with a stated measurement noise σ."""

from __future__ import annotations

import torch

from napari_brgm.operators.base import LinearOperator, check_batched


class Denoising(LinearOperator):
    """A = I; `sigma` is the noise standard deviation in the generator's [-1, 1] units."""

    full_row_rank = True
    gram_scalar = 1.0

    def __init__(self, sigma: float = 0.0):
        super().__init__(noise_sigma=sigma)

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        return tuple(int(s) for s in input_hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batched(x)
        return x.clone()

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_batched(y, "y")
        return y.clone()

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        check_batched(y, "y")
        return y.clone()

    def project_measurement(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def _gram_solve(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        return r / (1.0 + eta)
