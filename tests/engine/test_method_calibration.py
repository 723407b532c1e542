"""Calibrated intervals for every sampling method (IAGAN+VI, DIP restarts, RED-Diff seeds, flow chains),
and the shipped calibration files of the built-in priors and of Deep Image Prior."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from napari_brgm import reconstruct
from napari_brgm.engine import uncertainty
from napari_brgm.engine.calibrate import box_downsample, calibrate
from napari_brgm.engine.calibration import STRATA, CalibrationFile, strata_groups
from napari_brgm.engine.uncertainty import calibration_key, calibration_path, file_sha256
from tests.tiny_priors import tiny_diffusion_file, tiny_flow_file
from napari_brgm.priors import builtin_priors

pytestmark = pytest.mark.usefixtures("one_thread")
WINDOW = (0.0, 2.0)  # the tiny test images are in model units already
N_IMAGES = 5  # CRC at level 0.8 needs n + 1 > 1/α = 5


@pytest.fixture(scope="module")
def images(truth):
    """Five 32×32 calibration images around the tiny generator's own image."""
    g = torch.Generator().manual_seed(3)
    base = truth[1][0, 0]
    return [(base + 0.05 * torch.randn(base.shape, generator=g)).clamp(0, 2).numpy().astype(np.float32)
            for _ in range(N_IMAGES)]


@pytest.fixture(scope="module")
def diffusion_file(tmp_path_factory):
    return str(tiny_diffusion_file(tmp_path_factory.mktemp("diff")))


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory, truth):
    return str(tiny_flow_file(tmp_path_factory.mktemp("flow"), truth[1]))


@pytest.fixture(scope="module")
def gan_copy(tiny_prior, tmp_path_factory):
    return str(shutil.copy(tiny_prior, tmp_path_factory.mktemp("gan") / "tiny.pkl"))


RUNS = {"iagan+vi": dict(method="iagan", iagan_vi=True, steps=3, samples=2, restarts=1),
        "dip": dict(method="dip", steps=21, samples=2, early_stop=False, dip_resolution=32),
        "reddiff": dict(method="reddiff", steps=3, samples=2),
        "flow": dict(method="flow", steps=3, samples=2, flow_langevin_steps=2)}


@pytest.mark.parametrize("spec", list(RUNS))
def test_each_sampling_method_gets_calibrated_intervals_from_its_record(spec, images, request, tmp_path, monkeypatch):
    prior = {"iagan+vi": "gan_copy", "dip": None, "reddiff": "diffusion_file", "flow": "flow_file"}[spec]
    prior = None if prior is None else request.getfixturevalue(prior)
    run = RUNS[spec] | {"window": WINDOW, "interval": 0.8}
    out = calibration_path(prior) if prior is not None else tmp_path / "dip.calibration.json"
    if prior is None:  # DIP has no prior file: a run finds the shipped dip.calibration.json
        monkeypatch.setattr(uncertainty, "builtin_dip_calibration", lambda: out)
    _, records = calibrate(images, prior=prior, task="superres", factor=2, out=out, levels=(0.8,),
                           data_kind="in-model", **{k: v for k, v in run.items() if k != "interval"})
    assert records and {r.key["method"] for r in records} == {run["method"]}
    shipped = CalibrationFile.load(out)
    assert shipped.prior_sha256 == (file_sha256(prior) if prior else "none")
    r = reconstruct(box_downsample(images[0], 2), task="superres", factor=2, prior=prior, seed=7, **run)
    info = r.settings["interval"]
    assert info["calibrated"], info
    assert info["calibration"] == str(out) and info["match"] == "exact"
    assert info["strata"] == STRATA  # one λ per σ̂ quartile, each its stratum's
    lam = np.zeros(r.std.shape)
    for name, where in strata_groups(r.std, {"all": np.ones(r.std.shape, bool)}, STRATA).items():
        lam[where] = info["lambdas"][name]
    np.testing.assert_allclose(r.upper - r.mean, lam * (r.std + info["eps"]), rtol=1e-4, atol=1e-5)
    off = reconstruct(box_downsample(images[0], 2), task="superres", factor=2, prior=prior, seed=7,
                      calibration="none", **run)
    assert not off.settings["interval"]["calibrated"]


def test_dip_without_a_shipped_file_stays_uncalibrated(monkeypatch, tmp_path, images):
    monkeypatch.setattr(uncertainty, "builtin_dip_calibration", lambda: tmp_path / "absent.json")
    r = reconstruct(box_downsample(images[0], 2), task="superres", factor=2, window=WINDOW, **RUNS["dip"])
    assert r.settings["interval"]["calibrated"] is False
    assert r.settings["interval"]["reason"] == "no calibration file"


# The shipped files: (prior name or None for DIP, method, VI posterior and predictive in the key); each holds
# records for a default run of the five evaluated tasks (tools/calibrate_builtin.py, docs/engine.md)
SHIPPED = [("brain-t1-64", "vi", "laplace", "linear"), ("brain-t1-64", "iagan", "laplace", "linear"),
           (None, "dip", None, None), ("brain-t1-64-ddpm", "reddiff", None, None),
           ("brain-t1-64-glow", "flow", None, None)]
HALF = np.arange(64 * 64).reshape(64, 64) % 64 >= 32
CENTRE = np.zeros((64, 64), bool)
CENTRE[16:48, 16:48] = True
# task → (engine task, SR factor, missing mask, σ_y in model units): the calibrated settings
TASKS = {"sr4": ("superres", 4, None, 0.05), "sr8": ("superres", 8, None, 0.05), "center": ("inpaint", 4, CENTRE, 0.05),
         "half": ("inpaint", 4, HALF, 0.05), "denoise": ("denoise", 4, None, 0.2)}


@pytest.mark.parametrize(("prior", "method", "posterior", "predictive"), SHIPPED)
def test_shipped_calibration_files_hold_records_of_each_method_for_the_shipped_prior(prior, method, posterior,
                                                                                      predictive):
    if prior is None:
        path, sha = uncertainty.builtin_dip_calibration(), "none"
    else:
        prior_path = builtin_priors()[prior]
        path, sha = calibration_path(prior_path), file_sha256(prior_path)
    shipped = CalibrationFile.load(path)
    assert shipped.prior_sha256 == sha
    mine = [r for r in shipped.records if r.key["method"] == method]
    assert mine, f"{path.name} has no record of method {method}"
    assert all(r.data_kind == "real-unseen-plane" for r in mine)
    # a default-settings run (501 steps, 16 samples, σ_y 2.5 % of the window, level 0.9) finds a record
    # (that of the nearest steps) for each evaluated task
    for name, (task, factor, missing, sigma_y) in TASKS.items():
        key = calibration_key(method, task, factor, missing, 501, 16, 0.9, sigma_y, posterior, predictive=predictive)
        assert shipped.lookup(sha, key) is not None, (path.name, name, key)
