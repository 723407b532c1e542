"""`reconstruct(method="flow")`: a flow prior file through the engine: MAP in z, Langevin samples, input units."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brgm.engine import reconstruct
from tests.tiny_priors import tiny_flow_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory, truth):
    return tiny_flow_file(tmp_path_factory.mktemp("flow"), truth[1])


@pytest.fixture(scope="module")
def hu_image(truth):
    return (400.0 * truth[1][0, 0].numpy() - 200.0).astype(np.float32)


def test_flow_inpainting_gives_map_samples_and_a_std_larger_in_the_hole(flow_file, hu_image, half_mask):
    r = reconstruct(hu_image, task="inpaint", mask=half_mask, prior=flow_file, method="flow", steps=30, samples=4,
                    device="cpu", seed=1, flow_langevin_steps=10)
    assert r.samples.shape == (4, 32, 32) and r.map.shape == (32, 32) and r.std.shape == (32, 32)
    np.testing.assert_allclose(r.mean, r.samples.mean(0), rtol=1e-5, atol=1e-3)
    assert r.settings["prior_kind"] == "flow" and len(r.losses["flow/data"]) == 30
    hole, seen = half_mask != 0, half_mask == 0
    assert r.std[hole].mean() > r.std[seen].mean()
    np.testing.assert_allclose(r.consistent[seen], hu_image[seen], rtol=0, atol=1e-3)


def test_flow_without_sampling_is_a_point_estimate_and_wrong_kinds_are_refused(flow_file, hu_image, tiny_prior):
    low = hu_image.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    r = reconstruct(low, task="superres", factor=2, prior=flow_file, method="flow", steps=5, device="cpu",
                    flow_langevin_steps=0)
    assert r.std is None and r.samples.shape == (1, 32, 32)
    np.testing.assert_allclose(r.mean, r.map)
    with pytest.raises(ValueError, match="is a stylegan2 prior; this method needs a flow prior"):
        reconstruct(low, task="superres", factor=2, prior=tiny_prior, method="flow")
    with pytest.raises(ValueError, match="flow_gamma"):
        reconstruct(low, task="superres", factor=2, prior=flow_file, method="flow", flow_gamma=-1)
