"""Undersampled single-coil Cartesian MRI: y = M ⊙ F_c x for a real-valued image x.

The priors output real magnitude images, so the operator maps ℝ^{H×W} → ℂ^{H×W} ("real-image
mode", ../shared/docs/mri-kspace.md §4). Its adjoint for ⟨a, b⟩ = Re Σ conj(a)·b is
Aᵀy = Re F_c^H(M ⊙ y). F_c of a real image is Hermitian (K[j] = conj K[j̃], j̃ mirrored through
DC), so AᵀA = F_c^H D F_c with D = (M + M̃)/2 ∈ {0, ½, 1}, and the pseudo-inverse is
A⁺y = F_c^H(D⁺ ⊙ F_c Aᵀy). It differs from the zero-filled image Re F_c^H(M ⊙ y) wherever a
frequency is sampled but its mirror is not (random fastMRI masks). Measurements are stored as
real tensors [N, 2C, H, W] with (re, im) channel pairs (`operators.fourier`), so the noise σ_y
is per real and imaginary part.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_brgm.operators.base import LinearOperator, check_batched
from napari_brgm.operators.fourier import fft2c, ifft2c, mirror, to_complex, to_real


class KSpace(LinearOperator):
    """y = M ⊙ F_c x with `sampled` = M, a bool [H, W] mask (True / nonzero = SAMPLED, DC at the centre).

    Note the polarity: k-space masks mark what was measured (the MRI convention), inpainting masks
    what is missing. An image [N, C, H, W] has the measurement [N, 2C, H, W] (re, im per channel).
    """

    channel_stride = 2

    def __init__(self, sampled, noise_sigma: float = 0.0):
        super().__init__(noise_sigma)
        m = sampled.detach().cpu().numpy() if isinstance(sampled, torch.Tensor) else np.asarray(sampled)
        m = m != 0
        if m.ndim != 2:
            raise ValueError(f"the k-space mask must be [H, W], got shape {m.shape}")
        if not m.any():
            raise ValueError("the k-space mask samples nothing")
        d = (m.astype(np.float64) + mirror(m).astype(np.float64)) / 2
        self.register_buffer("sampled", torch.from_numpy(m))
        self.register_buffer("gram_inverse", torch.from_numpy(np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0.0)))

    @property
    def sampled_fraction(self) -> float:
        return float(self.sampled.float().mean())

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        hw = tuple(int(s) for s in input_hw)
        if hw != tuple(self.sampled.shape):
            raise ValueError(f"image size {hw} does not match the k-space mask {tuple(self.sampled.shape)}")
        return hw

    def _m(self, t: torch.Tensor, which=None) -> torch.Tensor:
        real = t.real.dtype if t.is_complex() else t.dtype
        return (self.sampled if which is None else which).to(dtype=real, device=t.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batched(x)
        self.output_shape(x.shape[-2:])
        k = fft2c(x)
        return to_real(k * self._m(k))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_batched(y, "y")
        self.output_shape(y.shape[-2:])
        k = to_complex(y)
        return ifft2c(k * self._m(k)).real

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        k = fft2c(self.adjoint(y))
        return ifft2c(k * self._m(k, self.gram_inverse)).real

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        """F_c^H(M ⊙ y), complex [N, C, H, W]: its magnitude is the zero-filled image MRI readers show first."""
        k = to_complex(y)
        return ifft2c(k * self._m(k))

    def observed_count(self, like: torch.Tensor) -> int:
        """Real measurement entries: re and im of every sampled location and channel."""
        return int(self.sampled.sum()) * like.shape[1] * self.channel_stride

    def extra_repr(self) -> str:
        return f"mask={tuple(self.sampled.shape)}, sampled_fraction={self.sampled_fraction:.3f}, {super().extra_repr()}"
