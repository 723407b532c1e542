"""MaskedOperator: super-resolution with MISSING measurement entries (padded measurements)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.operators import Inpainting, MaskedOperator, SuperResolution


def test_missing_measurements_are_zero_and_never_reach_the_image():
    mask = np.zeros((4, 4), bool)
    mask[:, 2:] = True  # right half of the measurement is missing
    op = MaskedOperator(SuperResolution(2, "box"), mask)
    x = torch.ones(1, 1, 8, 8)
    assert torch.equal(op(x)[..., 2:], torch.zeros(1, 1, 4, 2))
    y = torch.full((1, 1, 4, 4), 7.0)
    assert torch.all(op.pseudo_inverse(y)[..., 4:] == 0)
    assert torch.allclose(op.pseudo_inverse(y)[..., :4], torch.full((1, 1, 8, 4), 7.0))


def test_box_pseudo_inverse_is_f2_times_the_adjoint_of_the_masked_measurement():
    mask = np.random.default_rng(0).random((3, 3)) < 0.5
    op = MaskedOperator(SuperResolution(4, "box"), mask)
    y = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    observed = torch.from_numpy(~mask).double()
    assert torch.allclose(op.pseudo_inverse(y), 16 * op.inner.adjoint(observed * y))


def test_bicubic_back_projection_fits_observed_measurements_only():
    mask = np.zeros((8, 8), bool)
    mask[5:, :] = True
    op = MaskedOperator(SuperResolution(4, "bicubic"), mask)
    y = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    bp = op.back_project(torch.zeros(1, 1, 32, 32, dtype=torch.float64), y)
    fitted = op.inner(bp)
    assert torch.allclose(fitted[..., :5, :], y[..., :5, :], atol=1e-10)
    assert not torch.allclose(fitted[..., 5:, :], y[..., 5:, :], atol=1e-2)


def test_noise_sigma_defaults_to_the_inner_operator():
    inner = SuperResolution(2, noise_sigma=0.03)
    assert MaskedOperator(inner, np.zeros((2, 2))).noise_sigma == 0.03
    assert MaskedOperator(inner, np.zeros((2, 2)), noise_sigma=0.1).noise_sigma == 0.1


def test_errors():
    with pytest.raises(TypeError, match="full row rank"):
        MaskedOperator(Inpainting(np.zeros((4, 4))), np.zeros((4, 4)))
    op = MaskedOperator(SuperResolution(2), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="does not match"):
        op(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        op.output_shape((8, 8))
