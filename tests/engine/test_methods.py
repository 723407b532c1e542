"""`reconstruct` with CSGM, IAGAN and Deep Image Prior, and back-projection as a post-step of every method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.engine import reconstruct


@pytest.fixture(scope="module")
def hu_image(truth):
    _, x = truth
    return (400.0 * x[0, 0].numpy() - 200.0).astype(np.float32)


def _down(img, f):
    h, w = img.shape
    return img.reshape(h // f, f, w // f, f).mean(axis=(1, 3))


FAST = {"map": {}, "vi": dict(samples=3, mc_samples=2), "csgm": dict(restarts=2),
        "iagan": dict(restarts=2), "iagan+vi": dict(restarts=2, iagan_vi=True, samples=3, mc_samples=2), "dip": {}}


def _method(name):
    return ("iagan", FAST[name]) if name == "iagan+vi" else (name, FAST[name])


@pytest.mark.parametrize("name", list(FAST))
def test_back_projection_makes_every_method_reproduce_the_measurement_in_input_units(tiny_prior, hu_image, name):
    method, kw = _method(name)
    low = _down(hu_image, 4)
    r = reconstruct(low, task="superres", factor=4, prior=tiny_prior, method=method, steps=4, device="cpu",
                    back_project=True, **kw)
    span = float(low.max() - low.min())
    np.testing.assert_allclose(_down(r.mean, 4), low, rtol=0, atol=1e-4 * span)
    for sample in r.samples:
        np.testing.assert_allclose(_down(sample, 4), low, rtol=0, atol=1e-4 * span)
    assert r.settings["back_project"] is True and r.mean.shape == (32, 32)
    spread = name in ("vi", "iagan+vi")  # DIP keeps an iterate every 10 steps: 4 steps give a point estimate
    assert (r.std is not None) == spread and (r.map is not None) == (name in ("map", "vi"))


@pytest.mark.parametrize("name", ["csgm", "iagan", "dip"])
def test_new_methods_return_the_same_result_shape_and_keep_observed_pixels(tiny_prior, hu_image, half_mask, name):
    method, kw = _method(name)
    r = reconstruct(hu_image, task="inpaint", mask=half_mask, prior=tiny_prior, method=method, steps=3,
                    device="cpu", **kw)
    observed = half_mask == 0
    np.testing.assert_array_equal(r.consistent[observed], hu_image[observed])
    assert r.mean.shape == (32, 32) and r.samples.shape[1:] == (32, 32) and not r.partial
    assert any(k.startswith(f"{'csgm' if method == 'iagan' else method}/") for k in r.losses)
    if method == "iagan":
        assert len(r.losses["iagan/data"]) == 3 and "early_stopped_at" in r.settings


def test_iagan_never_modifies_the_cached_prior(tiny_prior, hu_image):
    import napari_brgm.engine.reconstruction as rec

    cached = rec._load(tiny_prior, "stylegan2", torch.device("cpu"))
    before = {k: v.clone() for k, v in cached.state_dict().items()}
    r = reconstruct(_down(hu_image, 4), task="superres", factor=4, prior=tiny_prior, method="iagan", steps=5,
                    device="cpu", restarts=2, iagan_lr=1e-2, early_stop=False, iagan_vi=True, samples=2,
                    mc_samples=2, vi_posterior="meanfield")
    assert len(r.losses["iagan/data"]) == 5 and len(r.losses["vi/total"]) == 5
    assert rec._load(tiny_prior, "stylegan2", torch.device("cpu")) is cached
    assert all(torch.equal(before[k], v) for k, v in cached.state_dict().items())
    assert not any(p.requires_grad for p in cached.parameters())


def test_dip_needs_no_prior_even_when_none_is_installed(hu_image, monkeypatch):
    import napari_brgm.engine.reconstruction as rec
    import napari_brgm.priors.builtin as builtin

    monkeypatch.setattr(builtin, "builtin_priors", lambda: {})
    monkeypatch.setattr(rec, "_load", lambda *a: pytest.fail("a prior was loaded"))
    r = reconstruct(_down(hu_image, 2), task="superres", factor=2, prior=None, method="dip", steps=12, samples=3,
                    device="cpu", seed=1)
    assert r.mean.shape == (32, 32) and r.samples.shape == (2, 32, 32) and r.std.shape == (32, 32)  # steps 10, 12
    s = r.settings
    assert s["prior_path"] is None and s["prior_resolution"] is None and s["model_resolution"] == 32
    with pytest.raises(ValueError, match="no built-in stylegan2 prior"):
        reconstruct(hu_image, task="denoise", method="map")


def test_dip_uncertainty_is_the_spread_of_its_last_iterates(hu_image, half_mask):
    r = reconstruct(hu_image, task="inpaint", mask=half_mask, method="dip", steps=40, samples=3, device="cpu",
                    early_stop=False)
    assert r.samples.shape == (3, 32, 32) and r.std.min() >= 0 and r.std.max() > 0
    np.testing.assert_allclose(r.std, r.samples.std(axis=0, ddof=1), rtol=1e-4, atol=1e-3)


def test_dip_restarts_average_into_the_mean_and_their_iterates_give_the_spread(hu_image):
    low = _down(hu_image, 4)
    common = dict(task="superres", factor=4, method="dip", steps=20, samples=4, device="cpu", early_stop=False)
    one = reconstruct(low, **common)
    two = reconstruct(low, restarts=2, **common)
    assert one.settings["method_options"]["restarts"] == 1
    assert two.settings["method_options"]["restarts"] == two.settings["restarts_done"] == 2
    assert two.samples.shape == (4, 32, 32) and len(two.losses["dip/data"]) == 40  # iterates 10 and 20 of each
    np.testing.assert_array_equal(two.samples[:2], one.samples)  # restart 0 is the single run of that seed
    assert not np.allclose(two.mean, one.mean)
    np.testing.assert_allclose(two.std, two.samples.std(axis=0, ddof=1), rtol=1e-4, atol=1e-3)


def test_restarts_default_per_method(tiny_prior, hu_image):
    low = _down(hu_image, 4)
    r = reconstruct(low, task="superres", factor=4, prior=tiny_prior, method="csgm", steps=1, device="cpu")
    assert r.settings["method_options"]["restarts"] == 4 and len(r.settings["restart_data_fits"]) == 4


def test_dip_picks_a_model_size_from_the_output(hu_image):
    from napari_brgm.engine.reconstruction import _dip_resolution

    assert _dip_resolution((8, 8), 4, None) == 32 and _dip_resolution((20, 30), 4, None) == 128
    assert _dip_resolution((1000, 800), 1, None) == 256 and _dip_resolution((8, 8), 4, 64) == 64
    r = reconstruct(hu_image[:20, :24], task="denoise", method="dip", steps=2, device="cpu", dip_resolution=64)
    assert r.mean.shape == (20, 24) and r.settings["model_resolution"] == 64


@pytest.mark.parametrize("name", ["csgm", "iagan", "dip"])
def test_cancel_returns_within_a_step_with_a_partial_result(tiny_prior, hu_image, name):
    method, kw = _method(name)
    reports = []
    r = reconstruct(_down(hu_image, 4), task="superres", factor=4, prior=tiny_prior, method=method, steps=100_000,
                    device="cpu", progress=reports.append, should_stop=lambda: len(reports) >= 2, **kw)
    stage = "csgm" if method == "iagan" else method
    assert r.partial and [p.step for p in reports] == [1, 2] and reports[0].stage == stage
    assert len(r.losses[f"{stage}/total"]) == 2 and r.mean.shape == (32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="dip", dip_resolution=48), "dip_resolution"),
        (dict(bp_eta=-1.0), "bp_eta"),
        (dict(method="csgm", restarts=0), "restarts"),
        (dict(method="dip", dip_ema=1.0), "dip_ema"),
    ],
)
def test_bad_method_options_raise_before_any_work(hu_image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        reconstruct(hu_image, task="denoise", **kwargs)


def test_dip_says_its_working_size_when_the_input_is_far_too_large():
    big = np.tile(np.arange(920, dtype=np.float32), (977, 1))
    with pytest.raises(ValueError, match=r"Deep Image Prior's working size \(dip_resolution 256\).*crop a region"):
        reconstruct(big, task="superres", factor=2, method="dip", device="cpu")
