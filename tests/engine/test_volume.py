"""`reconstruct_volume`: slices of a volume through one prior, batched MAP, per-slice masks, cancel."""

from __future__ import annotations

import numpy as np
import pytest

import napari_brgm
from napari_brgm.engine import reconstruct
from napari_brgm.engine.volume import parse_axis, parse_slices, reconstruct_volume


@pytest.fixture(scope="module")
def volume(tiny_generator):
    """Three 32×32 generator images (different latents) in MR-like units, stacked along z."""
    import torch

    z = torch.randn(3, tiny_generator.z_dim, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        x = tiny_generator.synthesis(tiny_generator.mapping(z), noise_mode="const")[:, 0].numpy()
    return (300.0 * x + 500.0).astype(np.float32)


def _down(vol, f):
    n, h, w = vol.shape
    return vol.reshape(n, h // f, f, w // f, f).mean(axis=(2, 4))


def test_parse_slices_and_axis():
    assert parse_slices(None, 5) == [0, 1, 2, 3, 4] == parse_slices("all", 5)
    assert parse_slices("1:3", 5) == [1, 2] and parse_slices(":2", 5) == [0, 1] and parse_slices("-2:", 5) == [3, 4]
    assert parse_slices(2, 5) == [2] == parse_slices("2", 5) and parse_slices([4, 1, 1], 5) == [1, 4]
    assert parse_axis("y") == 1 and parse_axis(-1) == 2
    for bad in ("5", "1:9", "3:1", [7], "a:b", "1:2:3"):
        with pytest.raises(ValueError):
            parse_slices(bad, 5)
    with pytest.raises(ValueError, match="does not exist"):
        parse_axis("t")
    with pytest.raises(ValueError, match="does not exist"):
        parse_axis(3)


def test_map_slices_equal_single_slice_runs_and_the_batch_agrees_to_rounding(tiny_prior, volume, one_thread):
    low = _down(volume, 4)
    kw = dict(task="superres", factor=4, prior=tiny_prior, method="map", steps=40, device="cpu")
    serial = reconstruct_volume(low, batch=1, **kw)
    single = reconstruct(low[1], **kw)
    np.testing.assert_array_equal(serial.mean[1], single.mean)
    batched = reconstruct_volume(low, batch=3, **kw)
    assert batched.mean.shape == (3, 32, 32) and batched.done == [0, 1, 2] and not batched.partial
    assert batched.std is None and batched.samples is None
    for k in range(3):
        a, b = serial.losses[k]["map/total"], batched.losses[k]["map/total"]
        assert len(b) == 40 and abs(a[0] - b[0]) <= 1e-5 * abs(a[0])  # the same problem, step for step
        assert abs(a[-1] - b[-1]) <= 1e-2 * abs(a[-1])
    assert np.abs(serial.mean - batched.mean).mean() < 0.01 * np.ptp(volume)
    assert napari_brgm.reconstruct_volume is not None


def test_axis_and_range_select_planes_and_sr_scales_the_in_plane_axes(tiny_prior, volume, one_thread):
    vol = np.stack([_down(volume, 4)[0]] * 3, axis=1)  # (8, 3, 8): planes along y are the 8×8 images
    vr = reconstruct_volume(vol, axis="y", slices="1:3", task="superres", factor=4, prior=tiny_prior,
                            method="map", steps=5, device="cpu")
    assert vr.axis == 1 and vr.slices == [1, 2] and vr.mean.shape == (32, 2, 32)
    np.testing.assert_allclose(vr.mean[:, 0], vr.mean[:, 1], atol=np.ptp(volume) * 0.02)
    assert set(vr.slice_result(2)) >= {"mean", "std"} and vr.slice_result(2)["mean"].shape == (32, 32)


def test_vi_per_slice_masks_copy_empty_slices_and_keep_samples_on_request(tiny_prior, volume, one_thread):
    mask = np.zeros(volume.shape, np.uint8)
    mask[0, :, :16] = 1
    mask[2, 8:24, 8:24] = 1  # slice 1: nothing missing
    seen = []
    vr = reconstruct_volume(volume, mask=mask, task="inpaint", prior=tiny_prior, method="vi", steps=8, samples=4,
                            device="cpu", mc_samples=2, keep_samples=True, on_slice=lambda k, r: seen.append(k))
    assert sorted(seen) == [0, 1, 2] and vr.done == [0, 1, 2] and vr.copied == {1: "empty mask: nothing to inpaint"}
    np.testing.assert_array_equal(vr.mean[1], volume[1])
    np.testing.assert_array_equal(vr.std[1], 0)
    np.testing.assert_array_equal(vr.consistent[0][:, 16:], volume[0][:, 16:])
    assert (vr.std[0][:, :16] > 0).all() and vr.samples.shape == (4, 3, 32, 32)
    assert np.isnan(vr.samples[:, 1]).all() and vr.lower.shape == vr.upper.shape == (3, 32, 32)
    assert (vr.lower[2] <= vr.upper[2]).all() and vr.settings[1] == {"copied": "empty mask: nothing to inpaint"}


def test_cancel_keeps_finished_slices_and_progress_names_the_slices(tiny_prior, volume, one_thread):
    low = _down(volume, 4)
    reports = []

    def progress(p):
        reports.append((p.slices_in_flight, p.slices_done, p.slices_total, p.step))

    def stop():  # cancel at step 3 of the second slice
        return reports[-1][0] == (1,) and reports[-1][3] >= 3

    finished = []
    vr = reconstruct_volume(low, task="superres", factor=4, prior=tiny_prior, method="map", steps=6, device="cpu",
                            batch=1, progress=progress, should_stop=stop, on_slice=lambda k, r: finished.append(k))
    assert vr.partial and vr.done == [0] == finished
    assert np.isnan(vr.mean[1:]).all() and np.isfinite(vr.mean[0]).all()
    assert reports[0] == ((0,), 0, 3, 1) and reports[-1] == ((1,), 1, 3, 3) and len(reports) == 9


@pytest.mark.parametrize("kwargs, match", [
    (dict(axis=3), "does not exist"),
    (dict(slices="0:7"), "outside"),
    (dict(mask=np.ones((2, 2, 2)), task="inpaint"), "mask has shape"),
    (dict(task="inpaint"), "needs a mask"),
    (dict(mask=np.zeros((3, 8, 8)), task="inpaint"), "empty in every"),
])
def test_bad_requests_fail_before_work(tiny_prior, volume, kwargs, match):
    low = _down(volume, 4)
    kw = dict(task="superres", prior=tiny_prior, method="map", steps=5, device="cpu") | kwargs
    with pytest.raises(ValueError, match=match):
        reconstruct_volume(low, **kw)
    with pytest.raises(ValueError, match="4-D"):
        reconstruct_volume(np.zeros((2, 3, 8, 8)), prior=tiny_prior)


def test_cancel_in_a_batched_map_keeps_nothing_of_that_batch(tiny_prior, volume, one_thread):
    low = _down(volume, 4)
    steps = []
    vr = reconstruct_volume(low, task="superres", factor=4, prior=tiny_prior, method="vi", steps=6, samples=3,
                            device="cpu", batch=3, mc_samples=2,
                            progress=lambda p: steps.append((p.stage, p.slices_in_flight)),
                            should_stop=lambda: len(steps) >= 3)
    assert vr.partial and vr.done == [] and np.isnan(vr.mean).all()
    assert steps == [("map", (0, 1, 2))] * 3  # the VI stage never started
