"""Uncertainty metrics against closed-form Gaussian references (../shared/docs/uq-calibration.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from napari_brgm.engine import metrics as m

N = 200_000
Z95 = norm.ppf(0.95)


@pytest.fixture(scope="module")
def calibrated():
    """σ lognormal with C_v = 0.5 and calibrated errors e = σ·z."""
    rng = np.random.default_rng(1)
    s = np.sqrt(np.log(1 + 0.5**2))
    sigma = rng.lognormal(-s * s / 2, s, N)
    return sigma, sigma * rng.standard_normal(N)


def _half_half(r: float, rng) -> np.ndarray:
    """The doc's table: half the pixels σ = 1, half σ = r, each with a 20 % lognormal spread."""
    return np.repeat([1.0, r], N // 2) * rng.lognormal(0.0, 0.2, N)


def test_coverage_of_gaussian_interval_is_nominal_within_sampling_error():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=(200, 200)), rng.uniform(0.5, 2.0, (200, 200))
    truth = mu + sigma * rng.standard_normal(mu.shape)
    cov = m.coverage(truth, mu - Z95 * sigma, mu + Z95 * sigma)
    assert abs(cov - 0.90) < 4 * np.sqrt(0.9 * 0.1 / mu.size)


def test_coverage_counts_both_ends_and_respects_the_mask():
    truth = np.array([[0.0, 1.0], [2.0, 5.0]])
    lower, upper = np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [1.0, 1.0]])
    assert m.coverage(truth, lower, upper) == 0.5
    assert m.coverage(truth, lower, upper, mask=np.array([[True, True], [False, False]])) == 1.0
    assert m.coverage(truth, lower, upper, mask=np.array([[False, False], [True, True]])) == 0.0


def test_interval_width_is_twice_z_sigma():
    sigma = np.full((50, 40), 0.3)
    assert m.interval_width(-Z95 * sigma, Z95 * sigma) == pytest.approx(2 * 1.6448536 * 0.3, rel=1e-7)
    mask = np.zeros((50, 40), bool)
    mask[:10] = True
    varied = np.where(mask, 1.0, 3.0)
    assert m.interval_width(-varied, varied, mask=mask) == pytest.approx(2.0)
    assert m.interval_width(-varied, varied) == pytest.approx(2 * (1.0 * 0.2 + 3.0 * 0.8))


def test_spearman_monotone_independent_ties_and_constant():
    rng = np.random.default_rng(2)
    e = np.abs(rng.standard_normal(10_000))
    assert m.spearman(np.exp(e), e) == pytest.approx(1.0)
    assert m.spearman(1.0 / (1.0 + e), e) == pytest.approx(-1.0)
    assert abs(m.spearman(rng.uniform(size=e.size), e)) < 4 / np.sqrt(e.size)
    # ranks (1.5, 1.5, 3.5, 3.5) against (1, 2, 3, 4): ρ = 4 / (2·√5)
    assert m.spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(2 / np.sqrt(5))
    assert np.isnan(m.spearman(np.ones(10), e[:10]))
    assert np.isnan(m.spearman(e[:10], np.zeros(10)))


def test_spearman_takes_the_magnitude_of_signed_errors():
    e = np.array([-3.0, 1.0, -2.0, 4.0])
    assert m.spearman([3, 1, 2, 4], e) == pytest.approx(1.0)


@pytest.mark.parametrize("r, table", [(3.0, 0.52), (1.5, 0.29), (10.0, 0.71)])
def test_reference_spearman_matches_the_doc_table_for_half_half_maps(r, table):
    sigma = _half_half(r, np.random.default_rng(3))
    assert m.reference_spearman(sigma, seed=0, repeats=3) == pytest.approx(table, abs=0.03)


def test_reference_spearman_is_seeded_and_masked():
    sigma = _half_half(3.0, np.random.default_rng(4))[:20_000]
    assert m.reference_spearman(sigma, seed=5) == m.reference_spearman(sigma, seed=5)
    low_half = np.arange(sigma.size) < sigma.size // 2  # σ = 1 only, 20 % lognormal spread (C_v ≈ 0.2)
    assert m.reference_spearman(sigma, mask=low_half, seed=5) == pytest.approx(0.21, abs=0.03)


def test_sparsification_curves_by_hand():
    f, e_u, e_o = m.sparsification_curves([4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert f[0] == 0.0 and f[-1] == 0.99 and f[50] == pytest.approx(0.5)
    assert e_u[0] == e_o[0] == 1.0
    assert e_u[50] == pytest.approx(np.sqrt(12.5 / 7.5))  # the two most uncertain (e = 1, 2) removed
    assert e_o[50] == pytest.approx(np.sqrt(2.5 / 7.5))  # the two largest errors removed


def _gaussian_oracle_area(f: np.ndarray) -> float:
    """∫(1 − E_o) df for e ~ N(0, 1): after removing |e| > q, q = Φ⁻¹(1 − f/2), E_o² = 1 − 2qφ(q)/(1 − f)."""
    q = norm.ppf(1 - f[1:] / 2)  # f = 0: nothing removed, E_o = 1
    e_o = np.r_[1.0, np.sqrt(1 - 2 * q * norm.pdf(q) / (1 - f[1:]))]
    return float(np.trapezoid(1 - e_o, f))


def test_ause_oracle_zero_and_independent_equals_oracle_vs_random_area():
    rng = np.random.default_rng(6)
    e = rng.standard_normal(N)
    assert m.ause(np.abs(e), e) == pytest.approx(0.0, abs=1e-12)
    reference = _gaussian_oracle_area(np.linspace(0, 0.99, 100))
    independent = rng.uniform(size=N)
    assert m.ause(independent, e) == pytest.approx(reference, abs=0.01)
    assert m.aurg(independent, e) == pytest.approx(0.0, abs=0.01)


def test_constant_std_is_random_removal_exactly():
    e = np.random.default_rng(7).standard_normal(1000)
    f, e_u, e_o = m.sparsification_curves(np.ones(1000), e)
    np.testing.assert_allclose(e_u, 1.0)
    assert m.aurg(np.ones(1000), e) == pytest.approx(0.0, abs=1e-12)
    assert m.ause(np.ones(1000), e) == pytest.approx(np.trapezoid(1 - e_o, f))


def test_ause_aurg_match_the_doc_table_at_cv_half(calibrated):
    sigma, e = calibrated
    assert m.ause(sigma, e) == pytest.approx(0.27, abs=0.02)
    assert m.aurg(sigma, e) == pytest.approx(0.40, abs=0.02)


def test_all_zero_errors_give_nan_curves():
    assert np.isnan(m.ause(np.arange(5.0), np.zeros(5)))


def test_uce_calibrated_near_zero_and_scaled_sigma_analytic(calibrated):
    sigma, e = calibrated
    mean_var = np.mean(sigma**2)
    assert m.uce(sigma, e) < 0.03 * mean_var
    # σ reported ×3: every bin has mean e² ≈ mean σ'²/9, so UCE = (8/9)·mean σ'² = 8·mean σ²
    assert m.uce(3 * sigma, e) == pytest.approx(8 * mean_var, rel=0.02)
    # σ reported ×1/2: UCE = |1 − 1/4|·mean σ²
    assert m.uce(sigma / 2, e) == pytest.approx(0.75 * mean_var, rel=0.02)


def test_uce_bins_by_hand():
    # σ² = 0, 1, 4, 9 in two equal-width bins [0, 4.5], (4.5, 9]: e² = 1, 1, 1, 1
    std, err = np.array([0.0, 1.0, 2.0, 3.0]), np.ones(4)
    assert m.uce(std, err, bins=2) == pytest.approx((3 / 4) * abs(1 - 5 / 3) + (1 / 4) * abs(1 - 9))
    assert m.uce(np.full(4, 2.0), err, bins=5) == pytest.approx(3.0)  # constant σ: one bin


def test_ence_calibrated_and_scaled():
    rng = np.random.default_rng(8)
    e = 2.0 * rng.standard_normal(100_000)
    # constant σ = 2, bins of 10⁴: E|√(χ²_n/n) − 1| ≈ 1/√(πn)
    assert m.ence(np.full(e.size, 2.0), e) == pytest.approx(1 / np.sqrt(np.pi * 10_000), rel=0.5)
    assert m.ence(np.full(e.size, 6.0), e) == pytest.approx(2 / 3, abs=0.005)
    assert m.ence(np.full(e.size, 1.0), e) == pytest.approx(1.0, abs=0.01)


def test_ence_reference_and_zero_sigma():
    std = np.linspace(0.5, 2.0, 1000)
    assert m.ence(std, m.reference_errors(std, seed=1), bins=10) < 3 * np.sqrt(10 / 1000)
    assert m.ence(np.r_[np.zeros(10), np.ones(10)], np.ones(20), bins=2) == np.inf


def test_zms_is_one_and_inverse_kappa_squared(calibrated):
    sigma, e = calibrated
    tol = 4 * np.sqrt(2 / N)
    assert m.zms(sigma, e) == pytest.approx(1.0, abs=tol)
    assert m.zms(2 * sigma, e) == pytest.approx(1 / 4, abs=tol / 4)
    assert m.zms(3 * sigma, e) == pytest.approx(1 / 9, abs=tol / 9)
    assert m.zms([0.0, 1.0], [0.0, 2.0]) == 2.0


def test_masks_select_pixels(calibrated):
    sigma, e = calibrated
    mask = np.zeros(N, bool)
    mask[::3] = True
    assert m.zms(sigma, e, mask=mask) == m.zms(sigma[mask], e[mask])
    assert m.ause(sigma, e, mask=mask) == m.ause(sigma[mask], e[mask])
    assert m.uce(sigma, e, mask=mask) == m.uce(sigma[mask], e[mask])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: m.coverage(np.zeros(3), np.zeros(3), np.zeros(4)), "one shape"),
        (lambda: m.zms(np.ones((2, 2)), np.ones((2, 2)), mask=np.zeros((2, 2), bool)), "empty selection"),
        (lambda: m.zms(np.ones(3), np.ones(3), mask=np.ones(3)), "boolean"),
        (lambda: m.zms(np.ones(3), np.ones(3), mask=np.ones(4, bool)), "mask shape"),
        (lambda: m.spearman(-np.ones(3), np.ones(3)), "≥ 0"),
        (lambda: m.uce(np.array([1.0, np.nan]), np.ones(2)), "finite"),
        (lambda: m.ence(np.ones(5), np.ones(5), bins=10), "cannot fill"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
