"""Central intervals of runs with samples: uncalibrated m_S·std, calibrated per pixel group from a file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from napari_brgm import reconstruct
from napari_brgm.engine.calibrate import calibrate, simulate
from napari_brgm.engine.calibration import (STRATA, CalibrationError, CalibrationFile, gaussian_multiplier,
                                            strata_groups)
from napari_brgm.engine.metrics import coverage
from napari_brgm.engine.uncertainty import calibration_path, file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")
WINDOW = (0.0, 2.0)  # the tiny generator's images are in model units already
RUN = dict(method="vi", steps=20, samples=8, window=WINDOW)


def in_model_images(G, count, seed):
    """Images of the prior itself (D0, "in-model"): G(mapping(z)), z seeded."""
    z = torch.randn(count, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return list(G.synthesis(G.mapping(z, truncation_psi=0.7))[:, 0].numpy())


@pytest.fixture
def hu_image(truth):
    """The tiny prior's own 32×32 image (model units)."""
    return truth[1][0, 0].numpy().astype(np.float32)


@pytest.fixture(scope="module")
def prior_copy(tiny_prior, tmp_path_factory):
    """The tiny prior in a folder of its own, so that a calibration file can sit beside it."""
    return str(shutil.copy(tiny_prior, tmp_path_factory.mktemp("prior") / "tiny.pkl"))


@pytest.fixture(scope="module")
def calibrated(prior_copy, tiny_generator):
    """CRC calibration on 20 in-model images, inpainting with half masks (bin 25-50 %), written beside the prior."""
    images = in_model_images(tiny_generator, 20, seed=10)
    _, records = calibrate(images, prior=prior_copy, task="inpaint", out=calibration_path(prior_copy),
                           data_kind="in-model", levels=(0.9,), bins=("25-50%",), **RUN)
    return records


def test_uncalibrated_interval_is_mean_plus_minus_m_s_std(tiny_prior, hu_image):
    r = reconstruct(hu_image[::4, ::4], task="superres", factor=4, prior=tiny_prior, interval=0.8, **RUN)
    info = r.settings["interval"]
    m = gaussian_multiplier(0.8, 8)
    assert (info["level"], info["calibrated"], info["reason"]) == (0.8, False, "no calibration file")
    assert info["multiplier"] == pytest.approx(m)
    np.testing.assert_allclose(r.upper - r.lower, 2 * m * r.std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose((r.upper + r.lower) / 2, r.mean, rtol=1e-5, atol=1e-4)
    wider = reconstruct(hu_image[::4, ::4], task="superres", factor=4, prior=tiny_prior, interval=0.95, **RUN)
    assert (wider.upper - wider.lower).mean() > (r.upper - r.lower).mean()


def test_point_estimates_have_no_interval_and_say_so(tiny_prior, hu_image):
    r = reconstruct(hu_image[::4, ::4], task="superres", factor=4, prior=tiny_prior, method="map", steps=2)
    assert r.lower is None and r.upper is None
    assert r.settings["interval"]["calibrated"] is False and "point estimate" in r.settings["interval"]["reason"]


def test_interval_level_outside_the_offered_ones_is_refused(tiny_prior, hu_image):
    with pytest.raises(ValueError, match="interval must be one of"):
        reconstruct(hu_image[::4, ::4], prior=tiny_prior, interval=0.5, **RUN)


def test_calibration_beside_the_prior_is_found_and_covers_new_in_model_images(calibrated, prior_copy, tiny_generator):
    assert [r.key["missing_fraction_bin"] for r in calibrated] == ["25-50%"]
    assert all(r.n_images == {g: 20 for g in ("missing", "observed", *(f"{r}|q{j}" for r in ("missing", "observed")
                                                                     for j in (1, 2, 3, 4)))} for r in calibrated)
    covered = {"missing": [], "observed": []}
    for k, truth in enumerate(in_model_images(tiny_generator, 8, seed=99)):
        case, = simulate(truth, "inpaint", seed=k, bins=("25-50%",))
        r = reconstruct(case.image, task="inpaint", mask=case.mask, prior=prior_copy, seed=k, **RUN)
        info = r.settings["interval"]
        assert info["calibrated"] and info["match"] == "exact" and info["data_kind"] == "in-model"
        miss = case.mask != 0
        assert info["strata"] == STRATA
        lam = np.zeros(miss.shape)
        for name, where in strata_groups(r.std, {"missing": miss, "observed": ~miss}, STRATA).items():
            lam[where] = info["lambdas"][name]
        np.testing.assert_allclose(r.upper - r.lower, 2 * lam * (r.std + info["eps"]), rtol=1e-4)
        for g, m in (("missing", miss), ("observed", ~miss)):
            covered[g].append(coverage(truth, r.lower, r.upper, mask=m))
    for g, values in covered.items():  # CRC at n = 20 is conservative (allowed miss 0.055)
        assert 0.8 <= np.mean(values) <= 1.0, (g, values)


def test_a_calibration_file_of_another_prior_is_refused_by_name(calibrated, prior_copy, tmp_path, hu_image):
    doc = json.loads(calibration_path(prior_copy).read_text())
    doc["prior_sha256"] = "0" * 64
    other = tmp_path / "other.calibration.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(CalibrationError, match="not for this prior"):
        reconstruct(hu_image[::4, ::4], task="superres", prior=prior_copy, calibration=str(other), **RUN)
    assert CalibrationFile.load(calibration_path(prior_copy)).prior_sha256 == file_sha256(prior_copy)


def test_no_matching_record_and_cancelled_runs_stay_uncalibrated(calibrated, prior_copy, hu_image):
    sr = reconstruct(hu_image[::4, ::4], task="superres", factor=4, prior=prior_copy, **RUN)
    assert not sr.settings["interval"]["calibrated"]
    assert sr.settings["interval"]["reason"] == "no matching calibration record"
    mask = np.zeros(hu_image.shape, np.uint8)
    mask[:, : hu_image.shape[1] // 2] = 1
    calls = []
    r = reconstruct(hu_image, task="inpaint", mask=mask, prior=prior_copy, progress=calls.append,
                    should_stop=lambda: len(calls) >= 25, **RUN)
    assert r.partial and r.lower is not None
    assert not r.settings["interval"]["calibrated"] and r.settings["interval"]["reason"] == "cancelled run"
    off = reconstruct(hu_image, task="inpaint", mask=mask, prior=prior_copy, calibration="none", **RUN)
    assert off.settings["interval"]["reason"] == "no calibration file"


def test_simulated_masks_fall_in_their_missing_fraction_bins():
    from napari_brgm.engine.calibrate import MASK_SHAPES, simulation_mask
    from napari_brgm.engine.calibration import missing_fraction_bin

    for fraction_bin, kinds in MASK_SHAPES.items():
        for kind in kinds:
            assert missing_fraction_bin(simulation_mask((64, 48), kind).mean()) == fraction_bin, kind
    sr, = simulate(np.arange(36.0).reshape(6, 6), "superres", factor=2)
    np.testing.assert_allclose(sr.image[0, 0], np.mean([0, 1, 6, 7]))
    with pytest.raises(ValueError, match="sigma_y"):
        simulate(np.zeros((8, 8)), "denoise")


def test_out_of_distribution_flag_scores_the_misfit_against_a_threshold(tiny_prior, hu_image, monkeypatch):
    import napari_brgm.engine.uncertainty as U

    mask = np.zeros(hu_image.shape, np.uint8)
    mask[:, 16:] = 1
    own = reconstruct(hu_image, task="inpaint", mask=mask, prior=tiny_prior, **RUN).settings["in_distribution"]
    assert own["ok"] is None and own["threshold"] is None  # no calibration reference: not judged
    stripes = np.where(np.indices(hu_image.shape).sum(0) % 2 == 0, 1.0, -1.0).astype(np.float32)
    monkeypatch.setattr(U, "MISFIT_THRESHOLD", 3 * own["score"])
    odd = reconstruct(stripes, task="inpaint", mask=mask, prior=tiny_prior, **RUN).settings["in_distribution"]
    assert odd["score"] > 3 * own["score"] and odd["ok"] is False and odd["threshold_from"] == "default"
    assert U.in_distribution(2.0, 5.0) == {"score": 2.0, "threshold": 5.0, "ok": True,
                                           "score_kind": "data misfit / sigma_y^2", "threshold_from": "calibration"}
    dip = reconstruct(hu_image, task="inpaint", mask=mask, method="dip", steps=2, samples=2)
    assert dip.settings["in_distribution"]["ok"] is None


def test_self_check_hides_a_tenth_of_the_observed_pixels_and_reports_their_coverage(tiny_prior, hu_image):
    mask = np.zeros(hu_image.shape, np.uint8)
    mask[:, 16:] = 1
    r = reconstruct(hu_image, task="inpaint", mask=mask, prior=tiny_prior, self_check=True, **RUN)
    check = r.settings["interval"]["self_check"]
    assert check["pixels"] == round(0.1 * 512) and 0.0 <= check["coverage"] <= 1.0
    assert check["ok"] == (check["coverage"] >= 0.8)
    sr = reconstruct(hu_image[::4, ::4], task="superres", factor=4, prior=tiny_prior, self_check=True, **RUN)
    assert sr.settings["interval"]["self_check"]["coverage"] is None
