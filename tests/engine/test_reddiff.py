"""`reconstruct(method="reddiff")`: a diffusion prior file through the engine, in input units."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brgm.engine import reconstruct
from tests.tiny_priors import tiny_diffusion_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def diffusion_file(tmp_path_factory):
    return tiny_diffusion_file(tmp_path_factory.mktemp("diff"))


@pytest.fixture(scope="module")
def hu_image(truth):
    return (400.0 * truth[1][0, 0].numpy() - 200.0).astype(np.float32)


def test_reddiff_superres_returns_seeds_their_spread_and_keeps_units(diffusion_file, hu_image):
    low = hu_image.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    r = reconstruct(low, task="superres", factor=4, prior=diffusion_file, method="reddiff", steps=6, samples=3,
                    device="cpu", seed=2)
    assert r.mean.shape == (32, 32) and r.samples.shape == (3, 32, 32) and r.std.shape == (32, 32)
    np.testing.assert_allclose(r.mean, r.samples.mean(0), rtol=1e-5, atol=1e-3)
    assert r.std.max() > 0 and r.map is None and not r.partial
    assert r.settings["prior_kind"] == "diffusion" and len(r.losses["reddiff/data"]) == 6
    assert abs(float(np.median(r.mean)) - float(np.median(hu_image))) < 150  # HU in, HU out


def test_reddiff_inpainting_keeps_observed_pixels_and_refuses_a_gan_prior(diffusion_file, hu_image, half_mask,
                                                                         tiny_prior):
    r = reconstruct(hu_image, task="inpaint", mask=half_mask, prior=diffusion_file, method="reddiff", steps=4,
                    samples=2, device="cpu")
    observed = half_mask == 0
    np.testing.assert_allclose(r.consistent[observed], hu_image[observed], rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="is a stylegan2 prior; this method needs a diffusion prior"):
        reconstruct(hu_image, task="inpaint", mask=half_mask, prior=tiny_prior, method="reddiff", steps=2)
    with pytest.raises(ValueError, match="is a diffusion prior; this method needs a stylegan2 prior"):
        reconstruct(hu_image, task="inpaint", mask=half_mask, prior=diffusion_file, method="map", steps=2)
    with pytest.raises(ValueError, match="reddiff_weighting"):
        reconstruct(hu_image, task="denoise", prior=diffusion_file, method="reddiff", reddiff_weighting="cubic")
