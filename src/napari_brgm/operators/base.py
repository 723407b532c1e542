"""The contract every forward model honours: A, Aᵀ, A⁺ and back-projection on [N, C, H, W] tensors."""

from __future__ import annotations

import torch

from napari_brgm.operators.cg import gram_solve


class LinearOperator(torch.nn.Module):
    """A linear forward model y = A·x acting on batched images x [N, C, H, W].

    Subclasses implement `forward`, `adjoint`, `pseudo_inverse` and `output_shape`; all are built
    from differentiable torch ops so solvers can backpropagate through them, and they keep the
    dtype and device of their input. `noise_sigma` is the stated measurement noise σ_y in the
    generator's [-1, 1] units (see `IntensityMap.scale_sigma`).

    `_gram_solve(r, eta)` = (AAᵀ + ηI)⁻¹·r is the hook behind the regularised back-projection;
    the default solves it by conjugate gradients, subclasses override it with the exact closed
    form when AAᵀ is diagonal or separable.
    """

    full_row_rank: bool = False  # True when AAᵀ is invertible (every measurement is in range(A))
    gram_scalar: float | None = None  # c when AAᵀ = c·I, which makes A⁺ = Aᵀ/c
    channel_stride: int = 1  # measurement channels per image channel (2: complex values stored as (re, im))

    def __init__(self, noise_sigma: float = 0.0):
        super().__init__()
        noise_sigma = float(noise_sigma)
        if not noise_sigma >= 0:
            raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
        self.noise_sigma = noise_sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A·x."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Aᵀ·y."""
        raise NotImplementedError

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """A⁺·y, the Moore–Penrose pseudo-inverse (minimum-norm least-squares solution)."""
        raise NotImplementedError

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) of A·x for an input of spatial size `input_hw`; ValueError if unsupported."""
        raise NotImplementedError

    def observed_count(self, like: torch.Tensor) -> int:
        """How many real measurement entries one image shaped like `like` [N, C, H, W] has (σ_y²'s dof)."""
        with torch.no_grad():
            return int((self.forward(torch.ones_like(like[:1])) != 0).sum())

    def project_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """A·A⁺·y: the orthogonal projection onto range(A), i.e. zero the unobserved entries of y.

        A measurement must lie in range(A) for the data term ‖A·x − y‖ to ignore missing pixels.
        """
        return self.forward(self.pseudo_inverse(y))

    def back_project(self, x: torch.Tensor, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """IAGAN's back-projection: x + A⁺(y − A·x) (eta = 0) or x + Aᵀ(AAᵀ + ηI)⁻¹(y − A·x).

        With eta = 0 the result agrees with y exactly where y is observed (A·x_BP = A·A⁺·y); a
        positive eta only moves part of the way, which is the safer choice for noisy y.
        """
        eta = float(eta)
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        residual = y - self.forward(x)
        if eta == 0:
            return x + self.pseudo_inverse(residual)
        return x + self.adjoint(self._gram_solve(residual, eta))

    def _gram_solve(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        """(AAᵀ + ηI)⁻¹·r for eta > 0 (conjugate gradients; exact overrides in subclasses)."""
        return gram_solve(lambda v: self.forward(self.adjoint(v)), r, eta)

    def extra_repr(self) -> str:
        return f"noise_sigma={self.noise_sigma:g}"


def check_batched(t: torch.Tensor, name: str = "x") -> None:
    """Operators act on [N, C, H, W]; say so clearly instead of failing deep inside torch."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 4:
        raise ValueError(f"{name} must be a batched image tensor [N, C, H, W], got shape {tuple(t.shape)}")
