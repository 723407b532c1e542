"""The classical baselines (bicubic, biharmonic, NLM, k-space ZF / FISTA-TV, Wiener / RL deblurring) do what the benchmarks assume."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_brgm.operators.fourier import fft2c_np
from napari_brgm.operators.kspace_masks import line_mask
import pytest

from napari_brgm.solvers.classical import (
    bicubic_upsample,
    biharmonic_inpaint,
    box_psf,
    gaussian_psf,
    nlm_denoise,
    richardson_lucy_deblur,
    tv_kspace,
    wiener_deblur,
    zero_filled,
)


def _ramp(n=32):
    yy, xx = np.mgrid[0:n, 0:n]
    return (0.03 * yy + 0.02 * xx).astype(np.float32)


def test_bicubic_keeps_constants_and_biharmonic_continues_a_ramp():
    up = bicubic_upsample(np.full((4, 5), 7.0), 3)
    assert up.shape == (12, 15) and np.allclose(up, 7.0, atol=1e-5)
    ramp = _ramp()
    missing = np.zeros_like(ramp, np.uint8)
    missing[10:20, 12:24] = 1
    np.testing.assert_allclose(biharmonic_inpaint(ramp, missing), ramp, atol=1e-3)


def test_nlm_removes_most_of_known_noise_and_refuses_bad_sigma():
    clean = np.kron(np.array([[0.0, 1.0], [1.0, 0.0]]), np.ones((16, 16))).astype(np.float32)
    noisy = clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    before, after = np.sqrt(np.mean((noisy - clean) ** 2)), np.sqrt(np.mean((nlm_denoise(noisy, 0.1) - clean) ** 2))
    assert after < 0.5 * before
    with pytest.raises(ValueError, match="sigma must be positive"):
        nlm_denoise(noisy, 0.0)


# --- k-space baselines ----------------------------------------------------------------------------

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")  # Debian mricron-data (../shared/docs/offline-data.md)


def test_zero_filled_is_the_magnitude_of_the_masked_inverse_fft():
    rng = np.random.default_rng(1)
    x = rng.random((16, 12))
    mask = np.zeros(12, bool)
    mask[[0, 3, 5, 6, 7, 10]] = True
    k = fft2c_np(x)
    expected = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(np.where(mask, k, 0)), norm="ortho")))
    np.testing.assert_allclose(zero_filled(k, mask), expected, atol=1e-6)  # the full k-space is masked inside
    np.testing.assert_allclose(zero_filled(np.where(mask, k, 0), np.broadcast_to(mask, k.shape)), expected, atol=1e-6)
    np.testing.assert_allclose(zero_filled(k, np.ones(12)), x, atol=1e-6)  # fully sampled: the image itself
    with pytest.raises(ValueError, match="phase-encode columns"):
        zero_filled(k, mask[:-1])
    with pytest.raises(ValueError, match="samples no k-space entry"):
        zero_filled(k, np.zeros(12))


def test_tv_kspace_fits_the_data_and_denoises_a_piecewise_constant_image():
    x = np.zeros((32, 32))
    x[8:24, 6:20] = 1.0
    x[12:18, 22:28] = 0.5
    mask = line_mask(32, 2, 0.25, "random", seed=0)
    y = np.where(mask, fft2c_np(x), 0)
    zf_error = np.abs(zero_filled(y, mask) - x).mean()
    for real in (True, False):
        rec = tv_kspace(y, mask, lam=1e-3, iterations=100, real=real)
        assert rec.shape == x.shape and rec.dtype == np.float32
        assert np.abs(rec - x).mean() < 0.5 * zf_error
    np.testing.assert_allclose(tv_kspace(y, mask, lam=0.0, iterations=0), np.real(
        np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(y), norm="ortho"))), atol=1e-6)  # x0 = Re A^H y


def _colin27_slice() -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    if not COLIN27.is_file():
        pytest.skip(f"{COLIN27} missing (apt-get install mricron-data)")
    s = np.rot90(nib.load(COLIN27).get_fdata()[:, :, 90])  # axial z = 90: 217 x 181
    x = np.zeros((256, 256))
    top, left = (256 - s.shape[0]) // 2, (256 - s.shape[1]) // 2
    x[top : top + s.shape[0], left : left + s.shape[1]] = s
    return x / x.max()


def test_kspace_baselines_reproduce_the_colin27_anchor():
    """mri-kspace.md §12: Colin27 T1 z=90, 256², random R4 cf .08 seed 42, σ = 0: ZF 21.72 / .507, TV λ=1e-3 27.10 / .773."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x = _colin27_slice()
    mask = line_mask(256, 4, 0.08, "random", seed=42)
    y = np.where(mask, fft2c_np(x), 0)
    zf = zero_filled(y, mask).astype(np.float64)
    assert peak_signal_noise_ratio(x, zf, data_range=1) == pytest.approx(21.72, abs=0.05)
    assert structural_similarity(x, zf, data_range=1) == pytest.approx(0.507, abs=0.005)
    tv = np.abs(tv_kspace(y, mask, lam=1e-3, iterations=300).astype(np.float64))  # magnitude metrics, as §12
    assert peak_signal_noise_ratio(x, tv, data_range=1) == pytest.approx(27.10, abs=0.3)
    assert structural_similarity(x, tv, data_range=1) == pytest.approx(0.773, abs=0.01)
    # λ = 3e-3: 26.21 dB (the complex domain gives 26.12 dB as in §12, but takes ~6x longer: not run here)
    tv = np.abs(tv_kspace(y, mask, lam=3e-3, iterations=300).astype(np.float64))
    assert peak_signal_noise_ratio(x, tv, data_range=1) == pytest.approx(26.21, abs=0.1)


# --- deblurring baselines -------------------------------------------------------------------------


def test_psfs_are_normalised_symmetric_odd_and_centred():
    for psf, size in ((gaussian_psf(1.5), 13), (gaussian_psf(2.0, size=7), 7), (box_psf(5), 5), (box_psf(4), 5),
                      (box_psf(1), 1), (box_psf(2.5), 3)):
        assert psf.shape == (size, size) and psf.dtype == np.float64
        assert psf.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(psf, psf[::-1, :], atol=1e-15)
        np.testing.assert_allclose(psf, psf[:, ::-1], atol=1e-15)
        np.testing.assert_allclose(psf, psf.T, atol=1e-15)
        assert psf[size // 2, size // 2] == psf.max()
    np.testing.assert_allclose(box_psf(3), np.full((3, 3), 1 / 9))
    np.testing.assert_allclose(box_psf(2)[1], [0.125, 0.25, 0.125])  # width 2: [½, 1, ½] / 2 per axis
    np.testing.assert_allclose(box_psf(2.5)[1] / box_psf(2.5)[1, 1], [0.75, 1, 0.75])  # partial edge pixels
    for bad in (lambda: gaussian_psf(0), lambda: gaussian_psf(1, size=4), lambda: box_psf(0.5)):
        with pytest.raises(ValueError):
            bad()


def _circular_blur(x, psf):
    """y = F^H(Ĥ ⊙ F x) with the kernel centred at (H//2, W//2), the deblur task's operator."""
    pad = np.zeros_like(x)
    kh, kw = psf.shape
    top, left = x.shape[0] // 2 - kh // 2, x.shape[1] // 2 - kw // 2
    pad[top : top + kh, left : left + kw] = psf
    otf = np.fft.fft2(np.fft.ifftshift(pad))
    return np.real(np.fft.ifft2(np.fft.fft2(x) * otf))


def test_wiener_and_richardson_lucy_undo_a_known_blur():
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    x = resize(shepp_logan_phantom(), (96, 96), anti_aliasing=True) * 3.0 - 1.0  # not in [0, 1]: RL must shift back
    x = np.roll(x, 40, axis=0)  # the object crosses the border: the baselines must treat the blur as circular
    rng = np.random.default_rng(0)
    for psf in (gaussian_psf(1.5), box_psf(5)):
        blurred = _circular_blur(x, psf) + 0.002 * rng.standard_normal(x.shape)
        before = np.sqrt(np.mean((blurred - x) ** 2))
        for deblurred in (wiener_deblur(blurred, psf, balance=0.01), richardson_lucy_deblur(blurred, psf, iterations=30)):
            assert deblurred.shape == x.shape and deblurred.dtype == np.float32
            assert np.sqrt(np.mean((deblurred - x) ** 2)) < 0.85 * before
    with pytest.raises(ValueError, match="larger than the image"):
        wiener_deblur(np.zeros((4, 4)), box_psf(5), 0.1)
