"""Composition A = O·B: a forward model B whose measurement has MISSING entries (O = observed)."""

from __future__ import annotations

import torch

from napari_brgm.operators.base import LinearOperator, check_batched
from napari_brgm.operators.cg import gram_solve
from napari_brgm.operators.mask import check_mask_fits, missing_to_observed


class MaskedOperator(LinearOperator):
    """`inner` followed by a measurement-domain mask whose NONZERO entries mark MISSING values.

    Same polarity as `Inpainting`: nonzero / True = MISSING. With O = diag(observed):
    forward = O·B(x), adjoint = Bᵀ(O·y), and since B has full row rank (B = SuperResolution or
    Denoising), A⁺·y = Bᵀ(O·B·Bᵀ·O)⁺·O·y — exactly f²·Bᵀ(O·y) for box super-resolution
    (BBᵀ = I/f²), conjugate gradients on the observed entries for bicubic. A blur (not injective) has a
    regularised pseudo-inverse instead: Bᵀ(O·B·Bᵀ·O + η·I)⁻¹·O·y with η = `inner.pinv_eta`. The engine uses it
    for super-resolution of an input smaller than the prior: the padded measurement pixels are
    missing and never act as data. `noise_sigma` defaults to the inner operator's.
    """

    def __init__(self, inner: LinearOperator, mask, noise_sigma: float | None = None):
        if not (getattr(inner, "full_row_rank", False) or getattr(inner, "pinv_eta", 0) > 0):
            raise TypeError(
                f"MaskedOperator needs an inner operator with full row rank (super-resolution, denoising) or a "
                f"regularised pseudo-inverse (blur), got {type(inner).__name__}; for inpainting, combine the masks instead"
            )
        super().__init__(inner.noise_sigma if noise_sigma is None else noise_sigma)
        self.inner = inner
        self.register_buffer("observed", missing_to_observed(mask, "measurement mask"))

    @property
    def missing_fraction(self) -> float:
        """Fraction of measurement entries marked missing."""
        return 1.0 - float(self.observed.float().mean())

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        hw = self.inner.output_shape(input_hw)
        if tuple(hw) != tuple(self.observed.shape[-2:]):
            raise ValueError(
                f"measurement size {tuple(hw)} does not match the measurement mask {tuple(self.observed.shape[-2:])}"
            )
        return hw

    def _keep(self, y: torch.Tensor, name: str = "y") -> torch.Tensor:
        check_batched(y, name)
        check_mask_fits(self.observed, y, name)
        return y * self.observed.to(dtype=y.dtype, device=y.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._keep(self.inner.forward(x), "A·x")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self._keep(y))

    def _masked_gram(self, v: torch.Tensor) -> torch.Tensor:
        return self._keep(self.inner.forward(self.inner.adjoint(self._keep(v))))

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        c = getattr(self.inner, "gram_scalar", None)
        if c is not None:
            return self.inner.adjoint(self._keep(y)) / c
        return self.adjoint(gram_solve(self._masked_gram, self._keep(y), getattr(self.inner, "pinv_eta", 0.0)))

    def project_measurement(self, y: torch.Tensor) -> torch.Tensor:
        return self._keep(y)

    def _gram_solve(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        c = getattr(self.inner, "gram_scalar", None)
        if c is not None:
            return r / (c * self.observed.to(dtype=r.dtype, device=r.device) + eta)
        return gram_solve(self._masked_gram, r, eta)

    def extra_repr(self) -> str:
        mask = f"mask={tuple(self.observed.shape)}, missing_fraction={self.missing_fraction:.3f}"
        return f"{mask}, {super().extra_repr()}"
