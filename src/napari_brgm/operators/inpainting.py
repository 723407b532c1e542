"""Inpainting forward model: keep the observed pixels, zero the MISSING ones."""

from __future__ import annotations

import torch

from napari_brgm.operators.base import LinearOperator, check_batched
from napari_brgm.operators.mask import check_mask_fits, missing_to_observed


class Inpainting(LinearOperator):
    """A = diag(observed) for a mask whose NONZERO entries mark MISSING pixels.

    The mask polarity follows the GUI, where the user paints what is missing: nonzero / True =
    MISSING, zero / False = observed. The mask is [H, W] (shared by the batch) or [N, 1, H, W]
    (one per batch element, shared by the channels). A·x zeroes the missing pixels and keeps the
    size; A is an orthogonal projection, so Aᵀ = A⁺ = A. Empty or all-missing masks are valid
    here (the engine rejects them with user-facing messages).
    """

    def __init__(self, mask, noise_sigma: float = 0.0):
        super().__init__(noise_sigma)
        self.register_buffer("observed", missing_to_observed(mask))

    @property
    def missing_fraction(self) -> float:
        """Fraction of pixels marked missing (over the whole mask)."""
        return 1.0 - float(self.observed.float().mean())

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        hw = tuple(int(s) for s in input_hw)
        if hw != tuple(self.observed.shape[-2:]):
            raise ValueError(f"image size {hw} does not match the inpainting mask {tuple(self.observed.shape[-2:])}")
        return hw

    def _keep(self, t: torch.Tensor, name: str) -> torch.Tensor:
        check_batched(t, name)
        check_mask_fits(self.observed, t, name)
        return t * self.observed.to(dtype=t.dtype, device=t.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._keep(x, "x")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._keep(y, "y")

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._keep(y, "y")

    def project_measurement(self, y: torch.Tensor) -> torch.Tensor:
        return self._keep(y, "y")

    def _gram_solve(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        return r / (self.observed.to(dtype=r.dtype, device=r.device) + eta)

    def extra_repr(self) -> str:
        mask = f"mask={tuple(self.observed.shape)}, missing_fraction={self.missing_fraction:.3f}"
        return f"{mask}, {super().extra_repr()}"
