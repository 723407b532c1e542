"""`reconstruct`: the public engine call, from a slice in input units to a Result in input units."""

from __future__ import annotations

import numpy as np
import pytest

import napari_brgm
from napari_brgm.engine import reconstruct


@pytest.fixture(scope="module")
def hu_image(tiny_generator, truth):
    """The known image G(w_true) expressed in CT-like units (HU = 400·x − 200), 32×32."""
    _, x = truth
    return (400.0 * x[0, 0].numpy() - 200.0).astype(np.float32)


def _down(img, f):
    h, w = img.shape
    return img.reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def test_superres_map_returns_factor_times_larger_images_in_input_units(tiny_prior, hu_image):
    low = _down(hu_image, 4)
    r = reconstruct(low, task="superres", factor=4, prior=tiny_prior, method="map", steps=60, device="cpu")
    assert r.mean.shape == (32, 32) and r.samples.shape == (1, 32, 32) and r.map.shape == (32, 32)
    assert r.std is None and r.consistent is None and not r.partial
    # in input units (HU): the estimate agrees with the measurement better than a constant image does
    spread = np.abs(low - low.mean()).mean()
    assert np.abs(_down(r.mean, 4) - low).mean() < 0.5 * spread
    assert abs(r.mean.mean() - low.mean()) < 0.2 * spread
    s = r.settings
    assert (s["task"], s["factor"], s["method"], s["steps"], s["prior_path"]) == ("superres", 4, "map", 60, tiny_prior)
    assert s["timings"]["total_s"] > 0 and len(r.losses["map/total"]) == 60


def test_public_name_is_the_engine_function():
    assert napari_brgm.reconstruct is reconstruct


def test_inpainting_keeps_observed_pixels_exactly_and_vi_std_is_the_spread_of_its_samples(
        tiny_prior, hu_image, half_mask):
    r = reconstruct(hu_image, task="inpaint", mask=half_mask, prior=tiny_prior, method="vi", steps=10,
                    samples=12, seed=3, device="cpu", mc_samples=4)
    observed = half_mask == 0
    np.testing.assert_array_equal(r.consistent[observed], hu_image[observed])
    np.testing.assert_array_equal(r.consistent[~observed], r.mean[~observed])
    assert r.samples.shape == (12, 32, 32) and r.std.shape == (32, 32)
    np.testing.assert_allclose(r.std, r.samples.std(axis=0, ddof=1), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(r.mean, r.samples.mean(axis=0), rtol=1e-5, atol=1e-3)
    assert r.std.min() > 0 and r.map.shape == (32, 32)


def test_seed_makes_vi_repeatable(tiny_prior, hu_image):
    low = _down(hu_image, 4)
    kw = dict(task="superres", factor=4, prior=tiny_prior, method="vi", steps=5, samples=4, device="cpu",
              mc_samples=2)
    a, b = reconstruct(low, seed=5, **kw), reconstruct(low, seed=5, **kw)
    c = reconstruct(low, seed=6, **kw)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_cancel_returns_within_a_step_with_a_partial_result(tiny_prior, hu_image):
    reports = []
    r = reconstruct(_down(hu_image, 4), task="superres", factor=4, prior=tiny_prior, method="vi",
                    steps=100_000, device="cpu", progress=reports.append, should_stop=lambda: len(reports) >= 2)
    assert r.partial and len(r.losses["map/total"]) == 2 and "vi/total" not in r.losses
    assert r.mean.shape == (32, 32)
    assert [p.step for p in reports] == [1, 2] and reports[0].stage == "map" and reports[0].total == 100_000


def test_progress_previews_come_in_input_units_at_the_output_size(tiny_prior, hu_image):
    reports = []
    reconstruct(_down(hu_image, 4), task="superres", factor=4, prior=tiny_prior, steps=10, device="cpu",
                progress=reports.append)
    previews = [p.preview for p in reports if p.preview is not None]
    assert previews and previews[-1].shape == (32, 32)
    assert reports[-1].step == 10 and reports[-1].elapsed > 0 and "pixel" in reports[-1].terms


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task="inpaint", mask=np.zeros((5, 5))), "does not match"),
        (dict(task="inpaint", mask=np.zeros((32, 32))), "empty"),
        (dict(task="inpaint", mask=np.ones((32, 32))), "whole image"),
        (dict(task="inpaint"), "needs a mask"),
        (dict(task="superres", factor=3), "factor"),
        (dict(task="superres", factor=40), "factor"),
        (dict(task="sharpen"), "task"),
        (dict(method="magic"), "method"),
        (dict(steps=0), "steps"),
        (dict(device="cuda:7" if not __import__("torch").cuda.is_available() else "tpu"), "device"),
    ],
)
def test_bad_requests_raise_clear_errors_before_any_work(tiny_prior, hu_image, kwargs, message, monkeypatch):
    import napari_brgm.engine.reconstruction as rec

    monkeypatch.setattr(rec, "solve_map", lambda *a, **k: pytest.fail("solver ran"))
    with pytest.raises(ValueError, match=message):
        reconstruct(hu_image, prior=tiny_prior, **kwargs)


def test_nan_input_and_far_too_large_images_are_refused(tiny_prior, hu_image):
    bad = hu_image.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reconstruct(bad, task="inpaint", mask=np.eye(32), prior=tiny_prior)
    with pytest.raises(ValueError, match="larger"):
        reconstruct(np.zeros((1024, 1024), np.float32), task="inpaint", mask=np.eye(1024), prior=tiny_prior)
    with pytest.raises(TypeError, match="unknown reconstruct option"):
        reconstruct(hu_image, task="denoise", prior=tiny_prior, colour="blue")


def test_a_missing_prior_file_is_a_clear_error(tmp_path, hu_image):
    with pytest.raises(napari_brgm.CheckpointError, match="nothing.safetensors: no such file"):
        reconstruct(hu_image, task="denoise", prior=str(tmp_path / "nothing.safetensors"))


def test_bf16_precision_is_applied_per_run_and_stays_close_to_fp32(tiny_prior, tiny_generator, hu_image):
    low = _down(hu_image, 4)
    kw = dict(task="superres", factor=4, prior=tiny_prior, steps=30, device="cpu")
    exact = reconstruct(low, **kw)
    fast = reconstruct(low, precision="bf16", **kw)
    assert fast.settings["precision"] == "bf16"
    span = float(hu_image.max() - hu_image.min())
    assert np.abs(fast.mean - exact.mean).max() < 0.05 * span
    again = reconstruct(low, **kw)  # the cached generator goes back to fp32
    np.testing.assert_array_equal(again.mean, exact.mean)
    with pytest.raises(ValueError, match="precision"):
        reconstruct(low, precision="fp8", **kw)


def test_a_run_holds_the_allocator_setting_only_while_it_runs(tiny_prior, hu_image, monkeypatch):
    from napari_brgm.priors import cpu

    calls = []
    monkeypatch.setattr(cpu, "retain_freed_memory", lambda: calls.append("retain"))
    monkeypatch.setattr(cpu, "release_freed_memory", lambda: calls.append("release"))
    held = []
    reconstruct(_down(hu_image, 4), task="superres", factor=4, prior=tiny_prior, steps=2, device="cpu",
                progress=lambda p: held.append(cpu._holders))
    assert held == [1, 1] and calls == ["retain", "release"] and cpu._holders == 0
    with pytest.raises(ValueError):  # refused before any work: nothing held
        reconstruct(hu_image, task="superres", factor=3, prior=tiny_prior, device="cpu")
    assert calls == ["retain", "release"]
