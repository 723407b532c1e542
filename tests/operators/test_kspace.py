"""The k-space operator and its masks: fastMRI's FFT convention and mask functions, real-image algebra."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from napari_brgm.operators import KSpace, MaskError, MaskInfo, sampling_mask, user_mask
from napari_brgm.operators.fourier import fft2c, fft2c_np, ifft2c, mirror, to_complex, to_real
from napari_brgm.operators.kspace_masks import center_lines, line_mask


def rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (6, 5)])
def test_fft_is_unitary_with_dc_at_the_centre(hw):
    h, w = hw
    x = rand((1, 1, h, w), 0)
    k = fft2c(x)
    assert torch.allclose(k.abs().square().sum(), x.square().sum())
    assert torch.allclose(ifft2c(k).real, x) and float(ifft2c(k).imag.abs().max()) < 1e-12
    assert abs(complex(k[0, 0, h // 2, w // 2]) - float(x.sum()) / np.sqrt(h * w)) < 1e-12
    delta = torch.zeros(1, 1, h, w, dtype=torch.float64)
    delta[..., h // 2, w // 2] = 1
    assert torch.allclose(fft2c(delta).abs(), torch.full((1, 1, h, w), 1 / np.sqrt(h * w), dtype=torch.float64))
    np.testing.assert_allclose(fft2c_np(x.numpy()), k.numpy(), atol=1e-12)


@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
def test_spectrum_of_a_real_image_is_hermitian_about_dc(hw):
    k = fft2c(rand((1, 1, *hw), 1))
    assert torch.allclose(k, mirror(k).conj())


def test_real_storage_round_trip_and_layout():
    k = torch.complex(rand((2, 3, 4, 5), 2), rand((2, 3, 4, 5), 3))
    y = to_real(k)
    assert y.shape == (2, 6, 4, 5)
    assert torch.equal(y[:, 2], k.real[:, 1]) and torch.equal(y[:, 3], k.imag[:, 1])
    assert torch.equal(to_complex(y), k)
    with pytest.raises(ValueError, match="even"):
        to_complex(torch.zeros(1, 3, 2, 2))


def sha(mask):
    return hashlib.sha1(np.flatnonzero(mask).astype(np.int64).tobytes()).hexdigest()[:12]


# fastMRI 0.3.0 golden vectors (../shared/docs/mri-kspace.md §3), seed 42
GOLDEN = [("random", 368, 0.08, 4, 99, "979e5fe29ef8"), ("random", 368, 0.04, 8, 51, "8e16ff6890d0"),
          ("random", 256, 0.08, 4, 69, "a64a33ca6358"), ("equispaced", 368, 0.08, 4, 91, "1814b0644191"),
          ("equispaced", 256, 0.04, 8, 32, "b2c12a554f24"), ("equispaced_integer", 368, 0.08, 4, 113, "044e5ba511b4")]


@pytest.mark.parametrize("kind,n,cf,r,lines,digest", GOLDEN)
def test_masks_reproduce_fastmri(kind, n, cf, r, lines, digest):
    m = line_mask(n, r, cf, kind, seed=42)
    assert int(m.sum()) == lines and sha(m) == digest


def test_per_volume_seed_and_centre():
    m = line_mask(368, 4, 0.08, "random", seed=tuple(map(ord, "file1000000.h5")))
    assert int(m.sum()) == 88 and sha(m) == "e4e0215b1857"
    start, stop = center_lines(368, 0.08)
    assert (start, stop) == (170, 199) and m[start:stop].all()


def test_sampling_mask_axis_and_info():
    cols = sampling_mask((6, 32), 4, 0.08, seed=0)
    assert (cols == cols[:1]).all() and cols[3, 16]
    rows = sampling_mask((32, 6), 4, 0.08, seed=0, axis=-2)
    assert (rows == rows[:, :1]).all()
    np.testing.assert_array_equal(rows[:, 0], cols[0])
    info = MaskInfo.of(cols, "random")
    assert info.lines == int(cols[0].sum()) and info.effective_acceleration == pytest.approx(32 / info.lines)
    assert sampling_mask((6, 32), 4, seed=0).tolist() == sampling_mask((6, 32), 4, seed=0).tolist()
    assert sampling_mask((6, 64), 4, seed=0).tolist() != sampling_mask((6, 64), 4, seed=1).tolist()


@pytest.mark.parametrize("kwargs,match", [
    (dict(acceleration=0.5), "from 1 to 16"), (dict(acceleration=17), "from 1 to 16"),
    (dict(acceleration=4, center_fraction=0.3), "nothing is left to undersample"),
    (dict(acceleration=4, center_fraction=0.001), "keeps no line"),
    (dict(acceleration=4, mask_type="spiral"), "mask_type"),
])
def test_mask_errors(kwargs, match):
    with pytest.raises(MaskError, match=match):
        sampling_mask((32, 32), **kwargs)


def test_acceleration_above_the_line_count():
    with pytest.raises(MaskError, match="more than the 8 phase-encode lines"):
        sampling_mask((8, 8), 12)


def test_user_masks():
    m = np.zeros((8, 10))
    m[:, 5] = 1
    assert user_mask(m, (8, 10)).sum() == 8
    with pytest.raises(MaskError, match="8x10"):
        user_mask(m, (10, 8))
    with pytest.raises(MaskError, match="samples nothing"):
        user_mask(np.zeros((8, 10)), (8, 10))
    with pytest.raises(MaskError, match="DC"):
        user_mask(np.fft.ifftshift(m), (8, 10))


def test_adjoint_with_complex_inner_products():
    """⟨A·x, y⟩ over ℂ (real part) = ⟨x, Aᵀy⟩ over ℝ; A·x of a real x equals M ⊙ F_c x."""
    op = KSpace(sampling_mask((8, 10), 4, 0.2, seed=3))
    x = rand((2, 1, 8, 10), 4)
    y = torch.complex(rand((2, 1, 8, 10), 5), rand((2, 1, 8, 10), 6))
    ax = to_complex(op(x))
    assert torch.allclose(ax, fft2c(x) * op.sampled)
    lhs = float((ax.conj() * y).sum().real)
    rhs = float((x * op.adjoint(to_real(y))).sum())
    assert abs(lhs - rhs) < 1e-10


def test_pseudo_inverse_is_least_squares_not_zero_filling():
    """Real-image mode: A⁺ is numpy's lstsq over the real and imaginary rows; it differs from Re(zero-filled)
    where a line is sampled but its mirror is not."""
    sampled = sampling_mask((8, 8), 3, 0.15, seed=5)
    assert not np.array_equal(sampled, mirror(sampled))
    op = KSpace(sampled)
    x = rand((1, 1, 8, 8), 7)
    y = op(x) + 0.1 * rand((1, 2, 8, 8), 8) * torch.cat([op.sampled[None, None]] * 2, 1)
    a = np.stack([op(torch.eye(64, dtype=torch.float64)[j].view(1, 1, 8, 8)).reshape(-1).numpy()
                  for j in range(64)], axis=1)
    want = np.linalg.lstsq(a, y.reshape(-1).numpy(), rcond=None)[0]
    np.testing.assert_allclose(op.pseudo_inverse(y).reshape(-1).numpy(), want, atol=1e-10)
    zero_filled_real = op.adjoint(y)
    assert float((zero_filled_real - op.pseudo_inverse(y)).abs().max()) > 1e-3
    assert torch.allclose(op.zero_filled(op(x)), ifft2c(fft2c(x) * op.sampled))


def test_observed_count_is_re_and_im_of_sampled_entries():
    sampled = sampling_mask((8, 10), 4, 0.2, seed=3)
    op = KSpace(sampled)
    assert op.observed_count(torch.zeros(3, 2, 8, 10)) == int(sampled.sum()) * 2 * 2


def test_wrong_size_is_refused():
    op = KSpace(sampling_mask((8, 10), 4, 0.2, seed=3))
    with pytest.raises(ValueError, match="does not match the k-space mask"):
        op(torch.zeros(1, 1, 10, 8))
