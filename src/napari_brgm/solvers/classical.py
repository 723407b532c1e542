"""Classical baselines every learned method must beat.

Bicubic interpolation (super-resolution), biharmonic inpainting, NLM denoising, zero-filled and
FISTA-TV reconstruction of undersampled single-coil Cartesian k-space, Wiener and Richardson-Lucy
deblurring, and the Gaussian / box PSFs of the deblurring task. All work on 2-D numpy arrays and need
no prior; the benchmarks compare against them.

k-space conventions (../shared/docs/mri-kspace.md §1-§4): the centred orthonormal FFT
F_c = fftshift ∘ fft2(norm="ortho") ∘ ifftshift of `napari_brgm.operators.fourier` (DC at
(H//2, W//2)); the measurement is y = M ⊙ F_c x with M a binary mask of sampled k-space entries:
either a 1-D mask over the phase-encode columns (length W, broadcast over the rows, fastMRI's
layout) or a full (H, W) mask.

Blur convention: circular convolution with a kernel whose centre is at index (kh//2, kw//2), i.e.
y = F_c^H(Ĥ ⊙ F_c x) with Ĥ = √(HW)·F_c(kernel zero-padded to H×W, centre at (H//2, W//2)), which is
also what skimage's `wiener` assumes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_brgm.operators.blur import box_psf, gaussian_psf  # noqa: F401  (the deblurring task's PSFs)
from napari_brgm.operators.fourier import fft2c_np, ifft2c_np


def bicubic_upsample(image, factor: int) -> np.ndarray:
    """[h, w] → [factor·h, factor·w], bicubic interpolation with pixel centres aligned (align_corners=False)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"bicubic_upsample needs a 2-D image, got shape {image.shape}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    t = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    up = F.interpolate(t, scale_factor=int(factor), mode="bicubic", align_corners=False)
    return up[0, 0].numpy()


def biharmonic_inpaint(image, missing) -> np.ndarray:
    """Fill the MISSING (nonzero) pixels with the smoothest (biharmonic) continuation of the observed ones."""
    from skimage.restoration import inpaint_biharmonic

    image = np.asarray(image, dtype=np.float64)
    missing = np.asarray(missing) != 0
    if image.ndim != 2 or missing.shape != image.shape:
        raise ValueError(f"biharmonic_inpaint needs a 2-D image and a same-shape mask, got {image.shape}, {missing.shape}")
    if missing.all():
        raise ValueError("the mask covers the whole image: nothing to continue from")
    if not missing.any():
        return image.astype(np.float32)
    lo, hi = float(image[~missing].min()), float(image[~missing].max())
    scale = hi - lo if hi > lo else 1.0
    filled = inpaint_biharmonic((image - lo) / scale, missing)  # skimage expects roughly unit-range values
    return (filled * scale + lo).astype(np.float32)


def nlm_denoise(image, sigma: float) -> np.ndarray:
    """Non-local means (skimage, 5×5 patches, 13×13 search, h = 0.8σ) for noise of known std `sigma`."""
    from skimage.restoration import denoise_nl_means

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"nlm_denoise needs a 2-D image, got shape {image.shape}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return denoise_nl_means(image, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma,
                            fast_mode=True).astype(np.float32)


# --- undersampled single-coil Cartesian k-space -------------------------------------------------


def _kspace_and_mask(kspace, sampled) -> tuple[np.ndarray, np.ndarray]:
    """(M ⊙ y as complex128 (H, W), M as bool (H, W)) from a 2-D k-space and a 1-D column or 2-D mask."""
    kspace = np.asarray(kspace)
    if kspace.ndim != 2:
        raise ValueError(f"k-space must be 2-D (H, W), got shape {kspace.shape}")
    mask = np.asarray(sampled)
    if mask.ndim == 1:
        if mask.shape[0] != kspace.shape[1]:
            raise ValueError(f"a 1-D mask lists the W = {kspace.shape[1]} phase-encode columns, got length {mask.shape[0]}")
        mask = np.broadcast_to(mask[None, :], kspace.shape)
    elif mask.shape != kspace.shape:
        raise ValueError(f"the mask must have shape (W,) or {kspace.shape}, got {mask.shape}")
    mask = mask != 0
    if not mask.any():
        raise ValueError("the mask samples no k-space entry")
    return np.where(mask, kspace.astype(np.complex128), 0), mask


def zero_filled(kspace, sampled) -> np.ndarray:
    """The zero-filled reconstruction |F_c^H(M ⊙ y)| (fastMRI's baseline; always report it).

    `kspace` is the (H, W) complex measurement (or the full k-space: entries outside the mask are
    zeroed here), `sampled` the mask: 1-D over the W phase-encode columns or 2-D (H, W). Returns the
    float32 magnitude image.
    """
    y, _ = _kspace_and_mask(kspace, sampled)
    return np.abs(ifft2c_np(y)).astype(np.float32)


def tv_kspace(kspace, sampled, lam: float = 3e-3, iterations: int = 300, real: bool = True) -> np.ndarray:
    """FISTA for min_x ½‖M ⊙ F_c x − y‖² + λ·TV_iso(x) (../shared/docs/mri-kspace.md §10, the primary baseline).

    Step 1 (‖M F_c‖ = 1), `iterations` FISTA steps from x₀ = A^H y (the zero-filled image, real part
    if `real`); the prox of λ·TV is skimage's `denoise_tv_chambolle(v, weight=λ, max_num_iter=50)`,
    argmin_u TV_iso(u) + ‖u − v‖²/(2λ). `real=True`: x ∈ ℝ^{H×W} (the gradient is
    Re F_c^H(M ⊙ (F_c x − y)); suits real / phase-corrected images and sees each sampled column and its
    mirror); `real=False`: x ∈ ℂ^{H×W} with the TV prox on the real and imaginary parts separately.
    λ is in the units of the image (λ ∈ {1e-3, 3e-3, 1e-2} for images with max 1). Returns the real
    image (`real=True`) or |x| as float32.
    """
    from skimage.restoration import denoise_tv_chambolle

    if not lam >= 0:
        raise ValueError(f"lam must be non-negative, got {lam}")
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations}")
    y, mask = _kspace_and_mask(kspace, sampled)

    def grad(x):
        r = ifft2c_np(np.where(mask, fft2c_np(x) - y, 0))
        return r.real if real else r

    def prox(v):
        if lam == 0:
            return v
        if real:
            return denoise_tv_chambolle(v, weight=lam, max_num_iter=50)
        u = denoise_tv_chambolle(np.stack([v.real, v.imag], axis=-1), weight=lam, max_num_iter=50, channel_axis=-1)
        return u[..., 0] + 1j * u[..., 1]

    x = ifft2c_np(y)
    x = x.real if real else x
    z, t = x, 1.0
    for _ in range(int(iterations)):
        x_new = prox(z - grad(z))
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return (x if real else np.abs(x)).astype(np.float32)


# --- deblurring -----------------------------------------------------------------------------------


def _check_blur_inputs(image, psf) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    if image.ndim != 2 or psf.ndim != 2:
        raise ValueError(f"deblurring needs a 2-D image and a 2-D PSF, got {image.shape}, {psf.shape}")
    if psf.shape[0] > image.shape[0] or psf.shape[1] > image.shape[1]:
        raise ValueError(f"the PSF {psf.shape} is larger than the image {image.shape}")
    if not np.isfinite(psf).all() or not psf.sum() > 0:
        raise ValueError("the PSF must be finite with a positive sum")
    return image, psf / psf.sum()


def wiener_deblur(image, psf, balance: float) -> np.ndarray:
    """Wiener-Hunt deconvolution (skimage `restoration.wiener`, Laplacian regulariser, no clipping).

    x̂ = F^H( conj(Ĥ) ⊙ F y / (|Ĥ|² + balance·|L̂|²) ): the minimiser of ‖h ⊛ x − y‖² + balance·‖l ⊛ x‖²
    with l the discrete Laplacian, for circular convolution with the PSF centred at
    (kh//2, kw//2) (the deblur task's operator). `balance` ~ noise-to-signal power; the PSF is
    normalised to sum 1. Returns float32 in the units of `image`.
    """
    from skimage.restoration import wiener

    image, psf = _check_blur_inputs(image, psf)
    if not balance >= 0:
        raise ValueError(f"balance must be non-negative, got {balance}")
    return wiener(image, psf, balance, clip=False).astype(np.float32)


def richardson_lucy_deblur(image, psf, iterations: int = 30) -> np.ndarray:
    """Richardson-Lucy deconvolution (skimage `restoration.richardson_lucy`, no clipping).

    RL is the EM algorithm for Poisson data, x ← x · (h̃ ⊛ (y / (h ⊛ x))), and needs non-negative
    data: the image is shifted and scaled to [0, 1] (exact for a PSF with sum 1: h ⊛ (a·x + b) =
    a·(h ⊛ x) + b), deconvolved, and mapped back to its units. skimage convolves with zero
    boundaries ("same"); to match the circular blur of the deblur task the image is padded
    periodically (`np.pad(mode="wrap")`) by twice the PSF size on each side, and cropped after.
    More iterations sharpen more and amplify noise (the iteration count is the regulariser).
    Returns float32.
    """
    from skimage.restoration import richardson_lucy

    image, psf = _check_blur_inputs(image, psf)
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations}")
    lo, hi = float(image.min()), float(image.max())
    scale = hi - lo if hi > lo else 1.0
    pad = [(2 * n, 2 * n) for n in psf.shape]
    padded = np.pad((image - lo) / scale, pad, mode="wrap")
    out = richardson_lucy(padded, psf, num_iter=int(iterations), clip=False)
    out = out[pad[0][0] : pad[0][0] + image.shape[0], pad[1][0] : pad[1][0] + image.shape[1]]
    return (out * scale + lo).astype(np.float32)
