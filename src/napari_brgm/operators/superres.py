"""Super-resolution forward model: antialiased downsampling by an integer factor (box or bicubic)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from napari_brgm.operators.base import LinearOperator, check_batched

MIN_FACTOR = 2
MAX_FACTOR = 32
KINDS = ("box", "bicubic")
BICUBIC_A = -0.5  # Keys' parameter used by PIL and by torch's antialiased bicubic


def check_factor(factor) -> int:
    """An integer downsampling factor in [MIN_FACTOR, MAX_FACTOR], or ValueError."""
    if isinstance(factor, bool) or not float(factor).is_integer():
        raise ValueError(f"super-resolution factor must be an integer, got {factor!r}")
    factor = int(factor)
    if not MIN_FACTOR <= factor <= MAX_FACTOR:
        raise ValueError(f"super-resolution factor must be from {MIN_FACTOR} to {MAX_FACTOR}, got {factor}")
    return factor


def _cubic(t: np.ndarray) -> np.ndarray:
    a = BICUBIC_A
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def bicubic_matrix(n: int, factor: int) -> np.ndarray:
    """The [n/factor, n] matrix of antialiased bicubic downsampling along one axis (float64).

    Output pixel i is centred at factor·(i + ½) in input pixel units; the Keys kernel (a = −0.5)
    is stretched by the factor (support ±2·factor input pixels), truncated at the image border
    and each row renormalised to sum to 1 — the same rule as PIL's resize and torch's
    `interpolate(mode="bicubic", antialias=True)`.
    """
    centres = factor * (np.arange(n // factor) + 0.5)
    weights = _cubic((np.arange(n)[None, :] + 0.5 - centres[:, None]) / factor)
    return weights / weights.sum(axis=1, keepdims=True)


@lru_cache(maxsize=64)
def _bicubic_factors(n: int, factor: int, dtype: torch.dtype, device: torch.device):
    """(A, A⁺, U, λ) for one axis, with AAᵀ = U·diag(λ)·Uᵀ; computed in float64, then cast."""
    a = torch.from_numpy(bicubic_matrix(n, factor))
    pinv = torch.linalg.pinv(a)
    lam, u = torch.linalg.eigh(a @ a.T)
    return tuple(t.to(dtype=dtype, device=device) for t in (a, pinv, u, lam))


class SuperResolution(LinearOperator):
    """Downsampling by an integer `factor` (2–32): y = A·x has size H/factor × W/factor.

    kind="box": the mean over non-overlapping factor×factor blocks (AAᵀ = I/f², A⁺ = f²·Aᵀ, the
    adjoint spreads each value over its block divided by f²). kind="bicubic": antialiased bicubic
    downsampling, separable as A = A_h ⊗ A_w with explicit 1-D matrices (see `bicubic_matrix`),
    so A⁺ = A_h⁺ ⊗ A_w⁺ exactly. H and W must be divisible by the factor.
    """

    full_row_rank = True

    def __init__(self, factor: int, kind: str = "box", noise_sigma: float = 0.0):
        super().__init__(noise_sigma)
        self.factor = check_factor(factor)
        if kind not in KINDS:
            raise ValueError(f"super-resolution kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind

    @property
    def gram_scalar(self) -> float | None:
        """c when AAᵀ = c·I (box: 1/f²), else None."""
        return 1.0 / self.factor**2 if self.kind == "box" else None

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        h, w = (int(s) for s in input_hw)
        f = self.factor
        if h % f or w % f or h < f or w < f:
            raise ValueError(
                f"super-resolution by {f}: the image size {h}x{w} must be a positive multiple of {f} on both sides"
            )
        return h // f, w // f

    def _axes(self, hw: tuple[int, int], t: torch.Tensor):
        return [_bicubic_factors(n, self.factor, t.dtype, t.device) for n in hw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batched(x)
        self.output_shape(x.shape[-2:])
        if self.kind == "box":
            return F.avg_pool2d(x, self.factor)
        (a_h, *_), (a_w, *_) = self._axes(x.shape[-2:], x)
        return a_h @ x @ a_w.T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_batched(y, "y")
        f = self.factor
        if self.kind == "box":
            return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / f**2
        (a_h, *_), (a_w, *_) = self._axes((y.shape[-2] * f, y.shape[-1] * f), y)
        return a_h.T @ y @ a_w

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        check_batched(y, "y")
        f = self.factor
        if self.kind == "box":
            return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
        (_, p_h, *_), (_, p_w, *_) = self._axes((y.shape[-2] * f, y.shape[-1] * f), y)
        return p_h @ y @ p_w.T

    def project_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """A has full row rank, so every measurement is in range(A): the identity."""
        return y

    def _gram_solve(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        f = self.factor
        if self.kind == "box":
            return r / (1.0 / f**2 + eta)
        (_, _, u_h, l_h), (_, _, u_w, l_w) = self._axes((r.shape[-2] * f, r.shape[-1] * f), r)
        spectrum = l_h[:, None] * l_w[None, :] + eta
        return u_h @ ((u_h.T @ r @ u_w) / spectrum) @ u_w.T

    def extra_repr(self) -> str:
        return f"factor={self.factor}, kind={self.kind!r}, {super().extra_repr()}"
