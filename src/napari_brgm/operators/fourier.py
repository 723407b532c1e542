"""The centred orthonormal 2-D FFT of fastMRI, and the storage of complex measurements as real channels.

F_c(x) = fftshift(fft2(ifftshift(x), norm="ortho")) over the last two axes: unitary for even and
odd sizes, DC at index (H//2, W//2) with value Σx/√(HW) — the convention of fastMRI's `fft2c`,
deepinv's MRI operators, sigpy's `fft(center=True)` and MONAI's `fftn_centered`
(../shared/docs/mri-kspace.md §1).

Complex measurements live in real tensors so that every solver, the contract suite and the
likelihood ‖A·x − y‖²/(2σ²) stay real: an image [N, C, H, W] has the measurement
[N, 2C, H, W] with channels (re₀, im₀, re₁, im₁, …) — for a gray image [N, 2, H, W] =
(real, imaginary), deepinv's layout. `to_complex` / `to_real` convert.
"""

from __future__ import annotations

import numpy as np
import torch

DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal FFT over the last two axes (real or complex in, complex out)."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=DIMS), norm="ortho"), dim=DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of `fft2c` (= its adjoint: F_c is unitary)."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=DIMS), norm="ortho"), dim=DIMS)


def fft2c_np(x: np.ndarray) -> np.ndarray:
    """`fft2c` for numpy arrays (complex128 out)."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=DIMS), norm="ortho"), axes=DIMS)


def ifft2c_np(k: np.ndarray) -> np.ndarray:
    """`ifft2c` for numpy arrays (complex128 out)."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=DIMS), norm="ortho"), axes=DIMS)


def mirror(t, dims=DIMS):
    """t[j̃] with j̃ the index mirrored through DC along each axis: the partner of j in a Hermitian spectrum.

    With DC at n//2, F_c of a real image satisfies K[j] = conj(K[j̃]), j̃ = (2·(n//2) − j) mod n: for
    even n the first row/column (index 0, the Nyquist frequency) is its own partner. Works on
    numpy arrays and torch tensors.
    """
    for d in dims:
        n = t.shape[d]
        idx = (2 * (n // 2) - np.arange(n)) % n
        t = t[(slice(None),) * (d % t.ndim) + (idx,)] if isinstance(t, np.ndarray) else \
            t.index_select(d, torch.as_tensor(idx, device=t.device))
    return t


def to_real(k: torch.Tensor) -> torch.Tensor:
    """Complex [N, C, H, W] → real [N, 2C, H, W] with channels (re₀, im₀, re₁, im₁, …)."""
    n, c, h, w = k.shape
    return torch.view_as_real(k).permute(0, 1, 4, 2, 3).reshape(n, 2 * c, h, w)


def to_complex(y: torch.Tensor) -> torch.Tensor:
    """Real [N, 2C, H, W] (re₀, im₀, …) → complex [N, C, H, W]; the inverse of `to_real`."""
    n, c2, h, w = y.shape
    if c2 % 2:
        raise ValueError(f"a complex measurement stored as real needs an even channel count, got {c2}")
    return torch.complex(y[:, 0::2], y[:, 1::2])
