"""Super-resolution specifics: block means, agreement with torch/PIL antialiased bicubic, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.measure import block_reduce

from napari_brgm.operators import SuperResolution, bicubic_matrix


def smooth(h, w, dtype=np.float64):
    yy, xx = np.mgrid[0:h, 0:w] / 10.0
    return (np.sin(yy) + np.cos(1.3 * xx) + 0.02 * yy * xx).astype(dtype)


@pytest.mark.parametrize("kind", ["box", "bicubic"])
@pytest.mark.parametrize("factor", [2, 3, 8, 32])
def test_constant_image_stays_constant(kind, factor):
    op = SuperResolution(factor, kind)
    x = torch.full((1, 1, 2 * factor, 3 * factor), 0.37, dtype=torch.float64)
    y = op(x)
    assert y.shape == (1, 1, 2, 3)
    assert torch.allclose(y, torch.full_like(y, 0.37), atol=1e-14)


@pytest.mark.parametrize("factor", [2, 3, 4, 5])
def test_box_is_the_block_mean(factor):
    img = np.random.default_rng(factor).random((6 * factor, 4 * factor))
    y = SuperResolution(factor, "box")(torch.from_numpy(img)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(y, block_reduce(img, (factor, factor), np.mean), rtol=1e-12)


def test_box_adjoint_and_pseudo_inverse_spread_each_value_over_its_block():
    op = SuperResolution(2, "box")
    y = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)
    expected = torch.tensor([[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    assert torch.equal(op.pseudo_inverse(y)[0, 0], expected)
    assert torch.equal(op.adjoint(y)[0, 0], expected / 4)


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 32])
def test_bicubic_matches_torch_antialiased_interpolate(factor):
    """Same kernel, same border rule (truncate and renormalise): equal to rounding, borders included."""
    h, w = 2 * factor * 3, factor * 4
    x = torch.from_numpy(smooth(h, w))[None, None]
    ref = F.interpolate(x, size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)
    np.testing.assert_allclose(SuperResolution(factor, "bicubic")(x).numpy(), ref.numpy(), atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, 4, 6, 12])
def test_bicubic_matches_pil_resize(factor):
    """PIL's float ('F') resize is an independent implementation of the same filter.

    Tolerance 1e-6: PIL stores the result in float32 (values here are of order 1); no border
    difference, as PIL also truncates the kernel at the edge and renormalises. Filters that
    reflect the image at the border (skimage, MATLAB imresize) would differ in the outer rows.
    """
    img = smooth(48, 36, np.float32)
    ref = np.asarray(Image.fromarray(img, mode="F").resize((36 // factor, 48 // factor), Image.Resampling.BICUBIC))
    y = SuperResolution(factor, "bicubic")(torch.from_numpy(img.astype(np.float64))[None, None])[0, 0].numpy()
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_bicubic_matrix_rows_sum_to_one_and_span_four_factors():
    a = bicubic_matrix(64, 4)
    assert a.shape == (16, 64)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-14)
    interior = a[8]
    assert np.count_nonzero(np.abs(interior) > 1e-15) == 4 * 4  # support ±2·factor input pixels
    assert interior.min() < 0  # the negative lobes of the cubic kernel


def test_bicubic_pseudo_inverse_reproduces_the_measurement():
    op = SuperResolution(8, "bicubic")
    y = torch.randn(1, 1, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(op(op.pseudo_inverse(y)), y, atol=1e-12)


@pytest.mark.parametrize("kind", ["box", "bicubic"])
def test_size_not_divisible_by_factor_is_a_clear_error(kind):
    op = SuperResolution(4, kind)
    with pytest.raises(ValueError, match="multiple of 4"):
        op(torch.zeros(1, 1, 16, 18))
    with pytest.raises(ValueError, match="multiple of 4"):
        op.output_shape((10, 16))


@pytest.mark.parametrize("factor", [0, 1, 33, 2.5, True, "4x"])
def test_bad_factor(factor):
    with pytest.raises(ValueError):
        SuperResolution(factor)


def test_factor_accepts_integral_numbers_and_bad_kind_is_rejected():
    assert SuperResolution(np.int64(4)).factor == 4
    assert SuperResolution(8.0).factor == 8
    with pytest.raises(ValueError, match="kind"):
        SuperResolution(4, "lanczos")


def test_needs_a_batched_tensor():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        SuperResolution(2)(torch.zeros(4, 4))
    with pytest.raises(TypeError):
        SuperResolution(2)(np.zeros((1, 1, 4, 4)))


def test_noise_sigma_and_repr():
    op = SuperResolution(4, "bicubic", noise_sigma=0.02)
    assert op.noise_sigma == 0.02
    assert "factor=4" in repr(op) and "bicubic" in repr(op)
    with pytest.raises(ValueError):
        SuperResolution(4, noise_sigma=-1)
