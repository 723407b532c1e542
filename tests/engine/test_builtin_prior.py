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
MARGIN = 2.0  # std inside the missing half / outside, at least (measured: 2.71; generator predictive 1.91; mean-field 1.11)
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


def test_the_builtin_prior_ships_a_calibration_for_vi_with_its_defaults():
    from napari_brgm.engine.calibration import CalibrationFile
    from napari_brgm.engine.uncertainty import calibration_key, calibration_path, file_sha256

    path = builtin_priors()[NAME]
    cal = CalibrationFile.load(calibration_path(path))
    half = np.zeros((64, 64), bool)
    half[:, 32:] = True
    for task, factor, missing, sigma in (("superres", 4, None, 0.05), ("superres", 8, None, 0.05),
                                         ("inpaint", 1, half, 0.05), ("denoise", 1, None, 0.2)):
        for level in (0.8, 0.9, 0.95):
            found = cal.lookup(file_sha256(path), calibration_key("vi", task, factor, missing, 501, 16, level, sigma,
                                                                        "laplace", predictive="linear"))
            assert found is not None and found[1].exact, (task, factor, level)
            record = found[0]
            assert min(record.n_images.values()) >= 20 and all(v > 0 for v in record.lambdas.values())
    lam = {lv: cal.lookup(file_sha256(path), calibration_key("vi", "superres", 4, None, 501, 16, lv, 0.05, "laplace",
                                                           predictive="linear"))[0].lambdas["all"]
           for lv in (0.8, 0.9, 0.95)}
    assert lam[0.8] < lam[0.9] < lam[0.95]
    meanfield = calibration_key("vi", "superres", 4, None, 501, 16, 0.9, 0.05, "meanfield")
    assert cal.lookup(file_sha256(path), meanfield) is None  # a record is for one posterior family
