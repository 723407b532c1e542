"""The built-in brain prior: installed, selectable by name and by default, and its posterior behaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm import load_generator, reconstruct
from napari_brgm.engine.metrics import psnr
from napari_brgm.priors import builtin_priors

NAME = "brain-t1-64"
STEPS = 200  # MAP and VI steps of the uncertainty check
MARGIN = 1.7  # posterior std inside the missing half / outside, at least (Laplace: measured 1.91; mean-field: 1.11)
PSNR_MIN = 30.0  # dB, ×4 SR of a slice the prior represents exactly (measured 34.7)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def brain_prior():
    assert NAME in builtin_priors(), f"built-in prior {NAME} is not installed: {sorted(builtin_priors())}"
    return load_generator(builtin_priors()[NAME])


@pytest.fixture(scope="module")
def brain_image(brain_prior):
    """G(w) for a z of the prior at truncation 0.7: a slice the prior can represent exactly."""
    z = torch.randn(1, brain_prior.z_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return brain_prior.synthesis(brain_prior.mapping(z, truncation_psi=0.7))[0, 0].numpy()


def test_builtin_prior_is_a_64px_grayscale_generator_with_w_statistics(brain_prior):
    assert (brain_prior.img_resolution, brain_prior.img_channels) == (64, 1)
    assert brain_prior.w_stats.std > 0 and torch.isfinite(brain_prior.w_stats.mean).all()


def test_prior_none_selects_the_builtin_prior(brain_image):
    low = brain_image.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    result = reconstruct(low, task="superres", factor=4, method="map", steps=2)
    assert result.settings["prior_path"].endswith(f"{NAME}.safetensors")
    assert result.mean.shape == (64, 64)


def test_vi_uncertainty_is_larger_where_pixels_are_missing(brain_image):
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1  # the right half is missing
    observed = np.where(mask != 0, 0, brain_image)
    result = reconstruct(observed, task="inpaint", mask=mask, prior=NAME, method="vi", steps=STEPS, samples=16,
                         seed=0)
    inside, outside = result.std[:, 32:].mean(), result.std[:, :32].mean()
    assert inside > MARGIN * outside, (inside, outside)
    np.testing.assert_array_equal(result.consistent[:, :32], brain_image[:, :32])


def test_map_recovers_a_slice_the_prior_can_represent(brain_image):
    low = brain_image.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    result = reconstruct(low, task="superres", factor=4, prior=NAME, method="map", steps=300, seed=0)
    assert psnr(result.mean, brain_image) > PSNR_MIN
