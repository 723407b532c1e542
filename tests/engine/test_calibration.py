"""Conformal calibration against closed-form references (../shared/docs/uq-calibration.md §2, §4, §7)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from napari_brgm.engine import calibration as cal
from napari_brgm.engine.metrics import coverage

LEVEL = 0.9
KAPPA = {"missing": 2.0, "observed": 0.7}
KEY = {"method": "vi", "task": "inpaint", "missing_fraction_bin": "25-50%", "steps": 500, "samples": 16}


def _images(n: int, rng, pixels: int = 400):
    """n images of `pixels` pixels, left half "missing", right half "observed"; e = κ_g·σ·z."""
    truths, means, stds, groups = [], [], [], []
    missing = np.arange(pixels).reshape(20, -1) % 20 < 10
    for _ in range(n):
        sigma = rng.lognormal(-2.0, 0.4, missing.shape)
        kappa = np.where(missing, KAPPA["missing"], KAPPA["observed"])
        mu = rng.uniform(size=missing.shape)
        truths.append(mu + kappa * sigma * rng.standard_normal(missing.shape))
        means.append(mu)
        stds.append(sigma)
        groups.append({"missing": missing, "observed": ~missing})
    return truths, means, stds, groups


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    record = cal.fit_record(*_images(60, rng), key=KEY, level=LEVEL, eps=1e-9, data_kind="in-model")
    return record, rng


def test_gaussian_multiplier_matches_the_doc_table():
    for samples, table in [(4, 2.63), (8, 2.01), (16, 1.81), (32, 1.72), (64, 1.68)]:
        assert cal.gaussian_multiplier(LEVEL, samples) == pytest.approx(table, abs=0.005)
    assert cal.gaussian_multiplier(LEVEL) == cal.gaussian_multiplier(LEVEL, 1) == pytest.approx(1.6448536)
    assert cal.gaussian_multiplier(0.95, None) == pytest.approx(1.959964)
    with pytest.raises(ValueError):
        cal.gaussian_multiplier(1.0, 4)


def test_eps_floor_and_scores():
    assert cal.eps_floor(0.01, 1.0) == 0.01
    assert cal.eps_floor(0.0, 4000.0) == 4.0
    with pytest.raises(ValueError):
        cal.eps_floor(0.01, 0.0)
    s = cal.scores([1.0, 0.0, 2.0], [0.5, 0.5, 2.0], [0.0, 0.4, 1.0], eps=0.1)
    np.testing.assert_allclose(s, [5.0, 1.0, 0.0])
    with pytest.raises(ValueError):
        cal.scores([1.0], [0.0], [0.0], eps=0.0)


def test_missing_fraction_bins():
    assert [cal.missing_fraction_bin(f) for f in (0.0, 0.25, 0.26, 0.5, 0.51, 1.0)] == [
        "<=25%", "<=25%", "25-50%", "25-50%", ">50%", ">50%"]
    with pytest.raises(ValueError):
        cal.missing_fraction_bin(1.5)


def test_crc_with_one_pixel_per_image_is_split_conformal():
    scores = np.random.default_rng(1).permutation(np.arange(1.0, 20.0))  # n = 19: k = ⌈20·0.9⌉ = 18
    crc = cal.crc_lambda([[s] for s in scores], LEVEL)
    assert crc.lam == cal.conformal_quantile(scores, LEVEL) == 18.0
    assert crc.allowed_risk == pytest.approx(1 / 19) and crc.cal_risk == pytest.approx(1 / 19)
    assert crc.guaranteed_level == 0.9 and crc.n_images == crc.n_pixels == 19


def test_crc_by_hand_and_empty_images_drop_out():
    # level 0.5, n = 3: allowed risk (4·0.5 − 1)/3 = 1/3; R̂(4) = (0 + 1 + 0)/3, R̂(3) = (1/4 + 1 + 0)/3
    crc = cal.crc_lambda([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0], [0.5], []], 0.5)
    assert (crc.lam, crc.n_images, crc.n_pixels) == (4.0, 3, 7)
    assert crc.cal_risk == pytest.approx(1 / 3)


def test_crc_refuses_too_few_images():
    with pytest.raises(cal.CalibrationError, match="n = 9"):
        cal.crc_lambda([[1.0]] * 9, LEVEL)  # n + 1 = 10 = 1/α
    assert cal.crc_lambda([[1.0]] * 10, LEVEL).lam == 1.0


def test_conformal_quantile_infinite_when_k_exceeds_n():
    assert cal.conformal_quantile([3.0, 1.0, 2.0, 5.0, 4.0], LEVEL) == math.inf  # k = ⌈6·0.9⌉ = 6 > 5
    assert cal.conformal_quantile(np.arange(1.0, 10.0), 0.5) == 5.0  # k = ⌈10·0.5⌉ = 5


def test_fit_lambda_is_kappa_times_the_finite_n_normal_quantile(fitted):
    record, _ = fitted
    allowed = (61 * 0.1 - 1) / 60  # n = 60: R̂(λ̂) ≈ 0.085, so λ̂ ≈ κ·z_{1 − 0.085/2} (κ·z_0.95 as n → ∞)
    for g, kappa in KAPPA.items():
        assert record.lambdas[g] == pytest.approx(kappa * norm.ppf(1 - allowed / 2), rel=0.03)
        assert record.kappa[g] == pytest.approx(kappa, rel=0.03)
        assert record.allowed_miss[g] == pytest.approx(allowed)
        assert 1 - allowed - 1e-9 <= record.cal_coverage[g] < 1 - allowed + 0.005
        assert (record.n_images[g], record.n_pixels[g]) == (60, 60 * 200)
    assert record.key["level"] == LEVEL and record.guaranteed_level == 0.9 and record.data_kind == "in-model"


def test_calibrated_interval_covers_new_images_at_the_level(fitted):
    record, rng = fitted
    truths, means, stds, groups = _images(200, rng)
    for g in KAPPA:
        covered = [coverage(x, *record.interval(mu, s, 1e-9, gr), mask=gr[g])
                   for x, mu, s, gr in zip(truths, means, stds, groups)]
        assert 0.87 <= np.mean(covered) <= 0.93


def test_leave_one_out_coverage_is_the_level_plus_the_crc_margin_and_splits_by_label():
    """Exchangeable images: about 1 − ((n)α − 1)/(n − 1) (the CRC target with n − 1 images, 0.926 at n = 30).
    Half the images three times harder than the rest: their coverage falls below, the easy ones' rises."""
    rng = np.random.default_rng(5)
    truths, means, stds, groups = _images(30, rng)
    loo = cal.leave_one_out_coverage(truths, means, stds, groups, KEY, LEVEL, 1e-9, labels={"plane": ["a"] * 30})
    target = 1 - (30 * 0.1 - 1) / 29
    assert loo["images"] == 30 and set(loo["groups"]) == {"missing", "observed"}
    for g in KAPPA:
        assert target - 0.02 <= loo["groups"][g] <= target + 0.02, loo
    assert loo["by_plane"] == {"a": loo["groups"]}
    i = 7  # one image by hand: the record of the other 29, applied to it
    rest = [j for j in range(30) if j != i]
    rec = cal.fit_record(*([a[j] for j in rest] for a in (truths, means, stds, groups)), KEY, LEVEL, 1e-9, "x")
    lo, hi = rec.interval(means[i], stds[i], 1e-9, groups[i])
    hard = [k % 2 == 1 for k in range(30)]
    truths_mixed = [mu + (3.0 if h else 1.0) * (x - mu) for x, mu, h in zip(truths, means, hard)]
    loo_mixed = cal.leave_one_out_coverage(truths_mixed, means, stds, groups, KEY, LEVEL, 1e-9,
                                           labels={"shape": ["hard" if h else "easy" for h in hard]})
    by = loo_mixed["by_shape"]
    assert by["hard"]["missing"] < LEVEL - 0.03 and by["easy"]["missing"] > LEVEL + 0.05, by
    per_image = cal.leave_one_out_coverage([truths[i]] + [truths[j] for j in rest],
                                           [means[i]] + [means[j] for j in rest], [stds[i]] + [stds[j] for j in rest],
                                           [groups[i]] + [groups[j] for j in rest], KEY, LEVEL, 1e-9,
                                           labels={"one": ["me"] + [None] * 29})
    assert per_image["by_one"]["me"]["missing"] == pytest.approx(coverage(truths[i], lo, hi, groups[i]["missing"]))
    with pytest.raises(ValueError, match="labels"):
        cal.leave_one_out_coverage(truths, means, stds, groups, KEY, LEVEL, 1e-9, labels={"plane": ["a"]})


def test_images_with_an_empty_group_drop_out():
    truths, means, stds, groups = _images(40, np.random.default_rng(2))
    for g in groups[:5]:
        g["missing"] = np.zeros_like(g["missing"])
    record = cal.fit_record(truths, means, stds, groups, {**KEY, "steps": np.int64(500)}, LEVEL, 1e-9, "in-model")
    assert record.n_images == {"missing": 35, "observed": 40}
    assert json.loads(json.dumps(record.to_dict()))["key"]["steps"] == 500


def test_fit_refuses_fewer_than_100_pixels_per_group():
    truths, means, stds, groups = _images(40, np.random.default_rng(3))
    for g in groups:
        g["missing"] = np.zeros_like(g["missing"])
        g["missing"][0, :2] = True  # 2 pixels × 40 images
    with pytest.raises(cal.CalibrationError, match=r"'missing' has 80 pixels.*at least 100 pixels"):
        cal.fit_record(truths, means, stds, groups, KEY, LEVEL, 1e-9, "in-model")


def test_fit_refuses_too_few_images_and_warns_below_30():
    data = _images(9, np.random.default_rng(4))
    with pytest.raises(cal.CalibrationError, match="group 'missing'.*n = 9"):
        cal.fit_record(*data, KEY, LEVEL, 1e-9, "in-model")
    with pytest.warns(UserWarning, match="20 calibration images"):
        cal.fit_record(*_images(20, np.random.default_rng(4)), KEY, LEVEL, 1e-9, "in-model")


def test_interval_per_group_and_uncalibrated():
    mean, std = np.zeros((2, 2)), np.array([[0.0, 1.0], [2.0, 3.0]])
    top = np.array([[True, True], [False, False]])
    lower, upper = cal.interval(mean, std, 0.5, {"a": top, "b": ~top}, {"a": 1.0, "b": 2.0})
    np.testing.assert_allclose(upper, [[0.5, 1.5], [5.0, 7.0]])
    np.testing.assert_allclose(lower, -upper)
    lower, upper = cal.interval(mean, std, 0.5, {"a": top}, {"a": 1.0})
    assert np.isnan(upper[1]).all()
    lower, upper = cal.uncalibrated_interval(mean, std, LEVEL, 16)
    np.testing.assert_allclose(upper, cal.gaussian_multiplier(LEVEL, 16) * std)
    with pytest.raises(ValueError, match="≥ 0"):
        cal.interval(mean, std, 0.5, {"a": top}, {"a": -1.0})
    with pytest.raises(ValueError, match="overlaps"):
        cal.interval(mean, std, 0.5, {"a": top, "b": np.ones((2, 2), bool)}, {"a": 1.0, "b": 1.0})


def _record(key: dict, lambdas: dict) -> cal.CalibrationRecord:
    return cal.CalibrationRecord(
        key=cal._check_key({"level": LEVEL, **key}), lambdas=lambdas, kappa=dict(lambdas),
        n_images={g: 50 for g in lambdas}, n_pixels={g: 5000 for g in lambdas}, guaranteed_level=LEVEL,
        allowed_miss={g: 0.082 for g in lambdas}, cal_coverage={g: 0.918 for g in lambdas},
        data_kind="in-model", created="2025-01-01", version="0.1.0")


SR = {"method": "vi", "task": "superres", "steps": 500, "samples": 16}
HASH = "a" * 64


@pytest.fixture
def sr_file():
    return cal.CalibrationFile(HASH, "tiny", [_record({**SR, "factor": 4}, {"all": 2.0}),
                                              _record({**SR, "factor": 8}, {"all": 3.0})])


def test_sr_factor_interpolates_in_log_factor_and_never_extrapolates(sr_file):
    rec, how = sr_file.lookup(HASH, {**SR, "factor": 4 * math.sqrt(2), "level": LEVEL})
    assert rec.lambdas["all"] == pytest.approx(2.5) and how.interpolated and not how.exact
    assert rec.key["factor"] == pytest.approx(5.657, abs=1e-3)
    rec, how = sr_file.lookup(HASH, {**SR, "factor": 8, "level": LEVEL})
    assert rec.lambdas["all"] == 3.0 and how.exact and how.text == "exact"
    assert sr_file.lookup(HASH, {**SR, "factor": 16, "level": LEVEL}) is None
    assert sr_file.lookup(HASH, {**SR, "factor": 2, "level": LEVEL}) is None


def test_samples_correction_rescales_by_the_multiplier_ratio(sr_file):
    rec, how = sr_file.lookup(HASH, {**SR, "factor": 4, "samples": 32, "level": LEVEL})
    ratio = cal.gaussian_multiplier(LEVEL, 32) / cal.gaussian_multiplier(LEVEL, 16)
    assert ratio == pytest.approx(1.72 / 1.81, abs=0.003)  # the doc's table
    assert rec.lambdas["all"] == pytest.approx(2.0 * ratio) and rec.kappa["all"] == pytest.approx(2.0 * ratio)
    assert how.samples_corrected and "samples 16 → 32" in how.text and not how.exact


def test_nearest_steps_and_exact_fields():
    f = cal.CalibrationFile(HASH, "tiny", [_record({**KEY, "steps": 200}, {"missing": 1.0, "observed": 2.0}),
                                           _record({**KEY, "steps": 1000}, {"missing": 5.0, "observed": 6.0})])
    rec, how = f.lookup(HASH, {**KEY, "steps": 300, "level": LEVEL})
    assert rec.lambdas == {"missing": 1.0, "observed": 2.0} and "steps 200 (run: 300)" in how.text
    assert f.lookup(HASH, {**KEY, "method": "map", "level": LEVEL}) is None
    assert f.lookup(HASH, {**KEY, "level": 0.95}) is None


def test_inpainting_matches_the_missing_fraction_bin():
    key = {k: v for k, v in KEY.items() if k != "missing_fraction_bin"}
    f = cal.CalibrationFile(HASH, "tiny", [
        _record({**key, "missing_fraction_bin": "<=25%"}, {"missing": 1.0, "observed": 0.5}),
        _record({**key, "missing_fraction_bin": "25-50%"}, {"missing": 2.0, "observed": 0.5})])
    rec, how = f.lookup(HASH, {**key, "missing_fraction": 0.4, "level": LEVEL})
    assert rec.lambdas["missing"] == 2.0 and how.exact
    assert f.lookup(HASH, {**key, "missing_fraction": 0.2, "level": LEVEL})[0].lambdas["missing"] == 1.0
    assert f.lookup(HASH, {**key, "missing_fraction_bin": ">50%", "level": LEVEL}) is None


def test_another_prior_is_refused_naming_both_hashes(sr_file):
    other = "b" * 64
    with pytest.raises(cal.CalibrationError, match=f"{HASH}.*{other}"):
        sr_file.lookup(other, {**SR, "factor": 4, "level": LEVEL})


def test_json_round_trip_merge_and_bad_files(tmp_path, fitted):
    record, _ = fitted
    f = cal.CalibrationFile(HASH, "tiny", [record])
    f.merge(cal.CalibrationRecord.from_dict({**record.to_dict(), "lambdas": {"missing": 9.0, "observed": 1.0}}))
    assert len(f.records) == 1 and f.records[0].lambdas["missing"] == 9.0
    path = tmp_path / "prior.calibration.json"
    f.save(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temporary file was renamed
    loaded = cal.CalibrationFile.load(path)
    assert loaded.to_dict() == f.to_dict() and json.loads(path.read_text())["schema"] == 1
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad JSON"):
        cal.CalibrationFile.load(path)
    path.write_text(json.dumps({**f.to_dict(), "schema": 2}))
    with pytest.raises(ValueError, match="schema 2"):
        cal.CalibrationFile.load(path)
    broken = f.to_dict()
    del broken["records"][0]["lambdas"]
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"record 0: .*missing \['lambdas'\]"):
        cal.CalibrationFile.load(path)


def _uninformative(n: int, rng, side: int = 32):
    """n images whose σ̂ (uniform in [0.2, 2]) says nothing about the error, e ~ N(0, 1): one λ cannot fit all σ̂."""
    truths, means, stds, groups = [], [], [], []
    for _ in range(n):
        stds.append(rng.uniform(0.2, 2.0, (side, side)))
        means.append(np.zeros((side, side)))
        truths.append(rng.standard_normal((side, side)))
        groups.append({"all": np.ones((side, side), bool)})
    return truths, means, stds, groups


def test_strata_split_each_group_by_its_own_std_ranks():
    std = np.arange(16.0).reshape(4, 4)[::-1]
    missing = np.zeros((4, 4), bool)
    missing[:, :2] = True
    parts = cal.strata_groups(std, {"missing": missing, "observed": ~missing}, 4)
    assert sorted(parts) == [f"{g}|q{j}" for g in ("missing", "observed") for j in (1, 2, 3, 4)]
    for g, m in (("missing", missing), ("observed", ~missing)):
        quarters = [parts[f"{g}|q{j}"] for j in (1, 2, 3, 4)]
        assert sum(q.astype(int) for q in quarters).tolist() == m.astype(int).tolist()  # a partition of the group
        assert [q.sum() for q in quarters] == [2, 2, 2, 2]
        assert all(std[a].max() <= std[b].min() for a, b in zip(quarters, quarters[1:]))  # ranked by σ̂
    with pytest.raises(ValueError, match="strata"):
        cal.strata_groups(std, {"all": np.ones((4, 4), bool)}, 1)


def test_std_strata_give_every_quartile_its_level_where_one_lambda_cannot():
    """σ̂ uninformative: one λ under-covers the low-σ̂ quartile and over-covers the high one; strata fix both."""
    rng = np.random.default_rng(5)
    key = {"method": "vi", "task": "denoise", "steps": 500, "samples": 16}
    flat = cal.fit_record(*_uninformative(60, rng), key=key, level=LEVEL, eps=0.0, data_kind="in-model")
    strat = cal.fit_record(*_uninformative(60, rng), key=key, level=LEVEL, eps=0.0, data_kind="in-model", strata=4)
    assert flat.strata == 1 and sorted(flat.lambdas) == ["all"]
    assert strat.strata == 4 and sorted(strat.lambdas) == ["all", "all|q1", "all|q2", "all|q3", "all|q4"]
    assert strat.n_images["all|q1"] == 60 and strat.n_pixels["all|q1"] == 60 * 256
    # a stratum of σ̂ ≈ U(0.2, 0.65) needs λ ≈ z/σ̂ of its pixels: far above the top stratum's
    assert strat.lambdas["all|q1"] > 3 * strat.lambdas["all|q4"]
    per_q = {"flat": [], "strata": []}
    for x, mu, s, g in zip(*_uninformative(100, rng)):
        quarters = cal.strata_groups(s, g, 4)
        for name, rec in (("flat", flat), ("strata", strat)):
            lo, hi = rec.interval(mu, s, 0.0, g)
            per_q[name].append([coverage(x, lo, hi, mask=quarters[f"all|q{j}"]) for j in (1, 2, 3, 4)])
    flat_q, strat_q = np.mean(per_q["flat"], axis=0), np.mean(per_q["strata"], axis=0)
    assert flat_q[0] < 0.8 and flat_q[3] > 0.97
    assert all(0.87 <= c <= 0.93 for c in strat_q), strat_q


def test_records_before_strata_load_as_one_lambda_per_group(fitted):
    record, rng = fitted
    old = record.to_dict()
    del old["strata"]
    loaded = cal.CalibrationRecord.from_dict(old)
    assert loaded.strata == 1 and not loaded.stratified({"missing": None})
    truths, means, stds, groups = _images(1, rng)
    np.testing.assert_array_equal(loaded.interval(means[0], stds[0], 1e-9, groups[0])[1],
                                  cal.interval(means[0], stds[0], 1e-9, groups[0], record.lambdas)[1])
    with pytest.raises(ValueError, match="strata"):
        cal.CalibrationRecord.from_dict({**old, "strata": 0})


def test_a_stratified_record_falls_back_to_the_group_lambda_for_a_group_without_strata():
    rng = np.random.default_rng(6)
    truths, means, stds, groups = _images(40, rng)
    rec = cal.fit_record(truths, means, stds, groups, KEY, LEVEL, 1e-9, "in-model", strata=4)
    thin = cal.CalibrationRecord.from_dict({**rec.to_dict(), "lambdas": {
        g: v for g, v in rec.lambdas.items() if not g.startswith("observed|")}})
    assert rec.stratified(groups[0]) and not thin.stratified(groups[0])
    lo, hi = thin.interval(means[0], stds[0], 1e-9, groups[0])
    per_group = cal.interval(means[0], stds[0], 1e-9, groups[0], rec.lambdas)[1]
    np.testing.assert_allclose(hi - means[0], per_group - means[0])
