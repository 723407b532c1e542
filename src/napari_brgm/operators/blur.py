"""Deblurring forward model: circular convolution with a point-spread function, by FFT.

y = F_c^H(Ĥ ⊙ F_c x) with Ĥ = √(HW)·F_c(k), the kernel k zero-padded to H×W with its centre at
(H//2, W//2) (the algebra of `operators.kspace`, ../shared/docs/mri-kspace.md §4). The boundary is
periodic: structure near one edge blurs into the opposite edge, which is harmless for images with
a dark background and otherwise a known limit (the engine pads the input first). Aᵀ multiplies by
conj(Ĥ); a blur is not invertible where Ĥ vanishes (box PSFs) or nearly (wide Gaussians), so the
pseudo-inverse is truncated: 1/Ĥ where |Ĥ| > rcond·max|Ĥ|, else 0 (`RCOND`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from napari_brgm.operators.base import LinearOperator, check_batched
from napari_brgm.operators.fourier import fft2c, fft2c_np, ifft2c

PSF_KINDS = ("gaussian", "box")
RCOND = 1e-3  # relative cut of the pseudo-inverse: frequencies the blur damps below this are not restored
GAUSSIAN_SUPPORT = 4.0  # the Gaussian kernel is cut at ±4σ


def gaussian_psf(sigma: float, size: int | None = None) -> np.ndarray:
    """A normalised 2-D Gaussian kernel (float64, odd side `size`, default 2·⌈4σ⌉ + 1, centre at size//2)."""
    sigma = float(sigma)
    if not sigma > 0:
        raise ValueError(f"the PSF sigma must be positive, got {sigma:g}")
    size = 2 * int(np.ceil(GAUSSIAN_SUPPORT * sigma)) + 1 if size is None else int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the PSF size must be a positive odd number, got {size}")
    t = np.arange(size) - size // 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def box_psf(width: float) -> np.ndarray:
    """A normalised 2-D box (uniform) kernel `width` pixels wide (float64).

    Per axis each pixel [t − ½, t + ½] is weighted by its overlap with the box [−width/2, width/2], on
    the odd support 2·⌈width/2 − ½⌉ + 1 centred at size//2: odd integer widths give width × width
    ones, even ones [½, 1, …, 1, ½], non-integer ones partial edge weights — symmetric about the
    centre and averaging over exactly `width` pixels, so a box scaled with the image keeps its width.
    """
    width = float(width)
    if not width >= 1:
        raise ValueError(f"the box PSF width must be at least 1 pixel, got {width:g}")
    half = width / 2
    n = int(np.ceil(half - 0.5))
    t = np.arange(-n, n + 1)
    w = np.clip(np.minimum(t + 0.5, half) - np.maximum(t - 0.5, -half), 0, None)
    k = np.outer(w, w)
    return k / k.sum()


def make_psf(kind: str, size: float) -> np.ndarray:
    """The kernel of `kind` ("gaussian": size = σ in pixels; "box": size = width in pixels)."""
    if kind == "gaussian":
        return gaussian_psf(size)
    if kind == "box":
        return box_psf(size)
    raise ValueError(f"PSF kind must be one of {PSF_KINDS}, got {kind!r}")


def transfer_function(psf: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Ĥ [H, W] (complex128, centred layout) of the kernel padded to hw; ValueError when it does not fit."""
    psf = np.asarray(psf, dtype=np.float64)
    h, w = hw
    kh, kw = psf.shape
    if kh > h or kw > w:
        raise ValueError(f"the {kh}x{kw} PSF does not fit the {h}x{w} image: use a smaller PSF or a larger image")
    pad = np.zeros((h, w))
    top, left = h // 2 - kh // 2, w // 2 - kw // 2
    pad[top : top + kh, left : left + kw] = psf
    return fft2c_np(pad) * np.sqrt(h * w)


class Blur(LinearOperator):
    """Circular blur by `psf` (2-D kernel, normalised to sum 1, centre at (kh//2, kw//2)).

    Build one from a kind and size with `Blur.of("gaussian", sigma)` or `Blur.of("box", width)`.
    """

    full_row_rank = False  # a blur is injective only where Ĥ ≠ 0
    pinv_eta = RCOND**2  # the Tikhonov η MaskedOperator uses for its (then regularised) pseudo-inverse

    def __init__(self, psf, noise_sigma: float = 0.0, rcond: float = RCOND):
        super().__init__(noise_sigma)
        psf = np.asarray(psf, dtype=np.float64)
        if psf.ndim != 2 or min(psf.shape) < 1 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
            raise ValueError(f"a PSF must be a 2-D kernel of odd sides, got shape {psf.shape}")
        if not np.isfinite(psf).all() or not psf.sum() > 0:
            raise ValueError("a PSF must be finite with a positive sum")
        self.register_buffer("psf", torch.from_numpy(psf / psf.sum()))
        self.rcond = float(rcond)
        self.kind, self.size = "custom", None

    @classmethod
    def of(cls, kind: str, size: float, noise_sigma: float = 0.0) -> Blur:
        op = cls(make_psf(kind, size), noise_sigma=noise_sigma)
        op.kind, op.size = kind, float(size)
        return op

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        hw = tuple(int(s) for s in input_hw)
        if self.psf.shape[0] > hw[0] or self.psf.shape[1] > hw[1]:
            raise ValueError(f"the {tuple(self.psf.shape)} PSF does not fit the image size {hw}")
        return hw

    def _spectra(self, t: torch.Tensor):
        """(Ĥ, conj Ĥ, truncated 1/Ĥ) for t's size, dtype and device."""
        return _spectra(self.psf.cpu().numpy().tobytes(), tuple(self.psf.shape), tuple(t.shape[-2:]), self.rcond,
                        t.dtype, t.device)

    def _filter(self, t: torch.Tensor, which: int, name: str) -> torch.Tensor:
        check_batched(t, name)
        self.output_shape(t.shape[-2:])
        return ifft2c(fft2c(t) * self._spectra(t)[which]).real

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._filter(x, 0, "x")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._filter(y, 1, "y")

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._filter(y, 2, "y")

    def _gram_solve(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        h = self._spectra(r)[0]
        return ifft2c(fft2c(r) / (h.abs() ** 2 + eta)).real

    def extra_repr(self) -> str:
        what = f"psf={self.kind}" + ("" if self.size is None else f"({self.size:g})")
        return f"{what}, kernel={tuple(self.psf.shape)}, {super().extra_repr()}"


@lru_cache(maxsize=32)
def _spectra(psf_bytes: bytes, psf_shape, hw, rcond: float, dtype: torch.dtype, device: torch.device):
    psf = np.frombuffer(psf_bytes, dtype=np.float64).reshape(psf_shape)
    h = transfer_function(psf, hw)
    mag = np.abs(h)
    keep = mag > rcond * mag.max()
    inv = np.where(keep, 1.0 / np.where(keep, h, 1), 0)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return tuple(torch.from_numpy(a).to(dtype=cdtype, device=device) for a in (h, np.conj(h), inv))
