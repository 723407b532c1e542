"""The blur operator: FFT circular convolution equals direct circular convolution; PSFs; truncated pinv."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.operators import Blur, MaskedOperator, box_psf, gaussian_psf


def circular_convolve(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Direct sum: y[i, j] = Σ k[a, b]·x[i − a + ka//2, j − b + kb//2] with periodic indices."""
    h, w = x.shape
    kh, kw = k.shape
    y = np.zeros_like(x)
    for a in range(kh):
        for b in range(kw):
            y += k[a, b] * np.roll(x, (a - kh // 2, b - kw // 2), axis=(0, 1))
    return y


@pytest.mark.parametrize("psf", [gaussian_psf(0.8), box_psf(3), np.arange(15.0).reshape(3, 5)])
def test_fft_blur_is_circular_convolution(psf):
    x = np.random.default_rng(0).standard_normal((9, 12))
    op = Blur(psf)
    got = op(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, circular_convolve(x, psf / psf.sum()), atol=1e-12)


def test_psfs():
    g = gaussian_psf(1.5)
    assert g.shape == (13, 13) and g.sum() == pytest.approx(1) and np.allclose(g, g.T) and np.allclose(g, g[::-1])
    assert np.unravel_index(g.argmax(), g.shape) == (6, 6)
    b = box_psf(3)
    assert b.shape == (3, 3) and np.allclose(b, 1 / 9)
    frac = box_psf(2.5)  # edge pixels weighted by overlap: 0.75, 1, 0.75 along an axis
    np.testing.assert_allclose(frac[1] / frac[1, 1], [0.75, 1, 0.75])
    for bad in (lambda: gaussian_psf(0), lambda: box_psf(0.5), lambda: Blur(np.ones((2, 2))),
                lambda: Blur(np.zeros((3, 3)))):
        with pytest.raises(ValueError):
            bad()


def test_a_psf_larger_than_the_image_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        Blur.of("gaussian", 3.0)(torch.zeros(1, 1, 16, 16))


def test_pseudo_inverse_restores_what_the_blur_keeps():
    """A narrow Gaussian damps nothing below RCOND on 16²: A⁺ inverts it exactly."""
    op = Blur.of("gaussian", 0.6)
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(op.pseudo_inverse(op(x)), x, atol=1e-9)


def test_masked_blur_has_a_regularised_pseudo_inverse():
    """Padding around a blurred image: the padded entries are missing; A⁺ is data-consistent to ~η."""
    observed_missing = np.zeros((12, 12), bool)
    observed_missing[:, :3] = True
    op = MaskedOperator(Blur.of("gaussian", 0.7), observed_missing)
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = op(x)
    assert float((op(op.pseudo_inverse(y)) - y).abs().max()) < 1e-3 * float(y.abs().max())
    with pytest.raises(TypeError, match="full row rank"):
        from napari_brgm.operators import Inpainting

        MaskedOperator(Inpainting(observed_missing), observed_missing)
