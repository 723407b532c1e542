"""The out-of-distribution flag: the flow score of the input against the reference shipped with the prior."""

import shutil

import numpy as np
import pytest

from napari_brgm import reconstruct
from napari_brgm.engine import ood
from napari_brgm.engine.calibrate import box_downsample, simulation_mask
from napari_brgm.engine.geometry import area_matrix
from napari_brgm.engine.uncertainty import file_sha256
from napari_brgm.io import load_image
from napari_brgm.io.samples import sample_path
from napari_brgm.priors import builtin_priors


def _reduce(x: np.ndarray, side: int) -> np.ndarray:
    h, w = x.shape
    s = side / max(h, w)
    return area_matrix(h, round(h * s)) @ x @ area_matrix(w, round(w * s)).T


@pytest.fixture(scope="module")
def xray64() -> np.ndarray:
    x = np.asarray(load_image(sample_path("chest_xray_rg1.dcm")).data, np.float64)
    return _reduce(x[0] if x.ndim == 3 else x, 64)


@pytest.fixture(scope="module")
def brain64() -> np.ndarray:
    """An axial slice of Colin27, one of the two heads the built-in priors were trained on."""
    return _reduce(np.asarray(load_image(sample_path("brain_t1_colin27_slab.nii.gz")).data[18], np.float64), 64)


def _shipped(view: str) -> float:
    return ood.load_reference(ood.reference_path(builtin_priors()["brain-t1-64"]))["views"][view]["threshold"]


@pytest.mark.parametrize("method", ["map", "flow", "reddiff"])
def test_the_chest_xray_is_flagged_and_a_training_head_is_not(xray64, brain64, method):
    xray = ood.score_input(box_downsample(xray64, 4), method=method, task="superres", factor=4)
    assert xray["ok"] is False and xray["view"] == "sr4" and xray["scorer"] == "brain-t1-64-glow"
    assert xray["threshold"] == _shipped("sr4") and xray["score"] > xray["threshold"]
    assert "q99 of 295" in xray["threshold_from"] and xray["score_kind"] == ood.SCORE_KIND
    brain = ood.score_input(box_downsample(brain64, 4), method=method, task="superres", factor=4)
    assert brain["ok"] is True and brain["score"] < brain["threshold"] - 0.1


def test_noisy_inputs_are_judged_after_smoothing_at_their_noise_level(xray64, brain64):
    for image, ok in ((brain64, True), (xray64, False)):
        lo, hi = np.percentile(image, [0.5, 99.5])
        sigma = 0.025 * (hi - lo)  # 0.05 in model units
        noisy = image + sigma * np.random.default_rng(1).standard_normal(image.shape)
        record = ood.score_input(noisy, task="denoise", sigma_y=sigma)
        assert record["view"] == "denoise 0.05" and record["ok"] is ok, record


def test_masked_pixels_do_not_count(xray64, brain64):
    mask = simulation_mask(brain64.shape, "left")
    first = ood.score_input(np.where(mask, 0.0, brain64), task="inpaint", mask=mask)
    noise = np.random.default_rng(0).normal(0, 1e4, brain64.shape)
    second = ood.score_input(np.where(mask, noise, brain64), task="inpaint", mask=mask)
    assert first["score"] == second["score"] and first["view"] == "inpaint 25-50%" and first["ok"] is True
    xmask = simulation_mask(xray64.shape, "left")
    assert ood.score_input(np.where(xmask, 0.0, xray64), task="inpaint", mask=xmask)["ok"] is False
    unmasked = ood.score_input(np.where(mask, noise, brain64), task="inpaint", mask=np.zeros(mask.shape))
    assert unmasked["view"] == "image" and unmasked["score"] > first["score"] + 1  # the noise counts there


def test_harmonic_fill_continues_a_linear_ramp_exactly():
    ramp = np.add.outer(np.arange(12.0), 0.5 * np.arange(9.0))
    hole = np.zeros(ramp.shape, bool)
    hole[3:8, 2:6] = True
    np.testing.assert_allclose(ood.harmonic_fill(np.where(hole, 99.0, ramp), hole), ramp, atol=1e-9)
    hole[0, :] = True  # along the border the continuation is flat (no flux out): within the observed range
    filled = ood.harmonic_fill(np.where(hole, 99.0, ramp), hole)
    assert ramp[~hole].min() <= filled.min() and filled.max() <= ramp[~hole].max()
    with pytest.raises(ValueError, match="every pixel"):
        ood.harmonic_fill(ramp, np.ones(ramp.shape, bool))


def test_views():
    assert ood.view_name("superres", 8) == "sr8"
    assert ood.view_name("inpaint", 1, 0.3) == "inpaint 25-50%" and ood.view_name("inpaint", 1, 0.0) == "image"
    assert ood.view_name("denoise", 1, 0.0, 0.06) == "denoise 0.05" and ood.view_name("denoise", 1, 0.0, 1.0) == ""
    shipped = ood.load_reference(ood.reference_path(builtin_priors()["brain-t1-64"]))["views"]
    assert {"image", "sr2", "sr4", "sr8", "sr16", "inpaint <=25%", "inpaint 25-50%", "inpaint >50%",
            "denoise 0.02", "denoise 0.05", "denoise 0.1", "denoise 0.2"} == set(shipped)


def test_no_reference_means_not_judged_with_a_reason(tmp_path, brain64):
    flow = tmp_path / "my-flow.safetensors"
    shutil.copyfile(builtin_priors()["brain-t1-64-glow"], flow)
    lr = box_downsample(brain64, 4)
    record = ood.score_input(lr, flow, method="flow", task="superres", factor=4)
    assert record["ok"] is None and record["score"] is not None and "no OOD reference" in record["reason"]
    shutil.copyfile(ood.reference_path(builtin_priors()["brain-t1-64"]), ood.reference_path(flow))
    record = ood.score_input(lr, flow, method="flow", task="superres", factor=4)
    assert record["ok"] is None and "another prior file" in record["reason"]
    ref = ood.load_reference(ood.reference_path(flow)) | {"prior_sha256": file_sha256(flow)}
    del ref["views"]["sr4"]
    ood.save_reference(ood.reference_path(flow), ref, merge=False)
    record = ood.score_input(lr, flow, method="flow", task="superres", factor=4)
    assert record["ok"] is None and "no reference for sr4" in record["reason"]
    assert ood.score_input(lr, flow, method="flow", task="superres", factor=2)["ok"] is not None  # the other views
    loud = ood.score_input(brain64, method="map", task="denoise", sigma_y=np.ptp(brain64))
    assert loud["ok"] is None and "no denoising reference near sigma_y" in loud["reason"]


def test_a_run_records_the_flag_and_deep_image_prior_is_not_judged(xray64):
    run = reconstruct(box_downsample(xray64, 4), task="superres", factor=4, method="map", steps=2)
    record = run.settings["in_distribution"]
    assert record["ok"] is False and record["threshold"] == _shipped("sr4") and record["misfit"] > 0
    assert "OOD score" in ood.warning_text(record)
    dip = reconstruct(box_downsample(xray64, 4), task="superres", factor=2, method="dip", steps=2, samples=1)
    assert dip.settings["in_distribution"]["ok"] is None
    assert ood.score_input(xray64, method="dip")["score_kind"] == ood.NOT_JUDGED


def test_calibrating_a_flow_prior_writes_its_reference(tmp_path, brain64):
    from napari_brgm.engine.calibrate import calibrate

    flow = tmp_path / "my-flow.safetensors"
    shutil.copyfile(builtin_priors()["brain-t1-64-glow"], flow)
    slices = [np.roll(brain64, k, axis=1) for k in range(5)]
    out = tmp_path / "my-flow.calibration.json"
    calibrate(slices, prior=str(flow), method="flow", task="superres", factor=4, steps=2, samples=2, levels=(0.8,),
              out=out, flow_langevin_steps=2)
    ref = ood.load_reference(tmp_path / "my-flow.ood.json")
    assert (tmp_path / "my-flow.ood.json").stat().st_mode & 0o044 == 0o044  # shared like the prior
    assert set(ref["views"]) == {"image", "sr4"} and ref["views"]["sr4"]["n"] == 5 and ref["scorer"]["name"] == "self"
    record = ood.score_input(box_downsample(brain64, 4), flow, method="flow", task="superres", factor=4)
    assert record["threshold"] == ref["views"]["sr4"]["threshold"] and record["ok"] is not None
