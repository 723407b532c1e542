"""Image-quality figures (PSNR, SSIM by MONAI's metrics) and pixel-wise uncertainty metrics.

The uncertainty metrics are numpy in, float out, and follow §2 of the developer reference
../shared/docs/uq-calibration.md; torch is imported only by PSNR/SSIM, so calibration code imports this cheaply.
"""

from __future__ import annotations

import numpy as np


def _batch(a):
    import torch

    t = torch.as_tensor(np.asarray(a, dtype=np.float32))
    assert t.ndim == 2, f"expected a 2-D image, got shape {tuple(t.shape)}"
    return t[None, None]


def psnr(estimate, reference, data_range: float | None = None) -> float:
    """PSNR in dB; `data_range` defaults to the reference's max − min."""
    from monai.metrics import PSNRMetric

    ref = np.asarray(reference, dtype=np.float32)
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    return float(PSNRMetric(max_val=rng)(_batch(estimate), _batch(ref)).item())


def ssim(estimate, reference, data_range: float | None = None) -> float:
    """SSIM (MONAI's Gaussian-window SSIM, window 11, σ 1.5) on a 2-D image."""
    from monai.metrics import SSIMMetric

    ref = np.asarray(reference, dtype=np.float32)
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    return float(SSIMMetric(spatial_dims=2, data_range=rng)(_batch(estimate), _batch(ref)).item())


# ---- pixel-wise uncertainty metrics (numpy in, float out) ----


def _select(*arrays, mask=None) -> list[np.ndarray]:
    """The arrays as flat float64 over the mask's True pixels; ValueError on shape mismatch or an empty selection."""
    arrs = [np.asarray(a, dtype=np.float64) for a in arrays]
    shape = arrs[0].shape
    if any(a.shape != shape for a in arrs[1:]):
        raise ValueError(f"arrays must have one shape, got {[a.shape for a in arrs]}")
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(f"mask must be boolean (True = included), got dtype {m.dtype}")
        if m.shape != shape:
            raise ValueError(f"mask shape {m.shape} differs from the arrays' shape {shape}")
        arrs = [a[m] for a in arrs]
    else:
        arrs = [a.ravel() for a in arrs]
    if arrs[0].size == 0:
        raise ValueError("empty selection: no pixel to evaluate")
    if not all(np.isfinite(a).all() for a in arrs):
        raise ValueError("inputs must be finite (NaN or inf found in the selected pixels)")
    return arrs


def _std_err(std, abs_error, mask) -> tuple[np.ndarray, np.ndarray]:
    """Flat σ ≥ 0 and |e| over the mask; signed errors are accepted, their magnitude is used."""
    s, e = _select(std, abs_error, mask=mask)
    if (s < 0).any():
        raise ValueError("std must be ≥ 0")
    return s, np.abs(e)


def coverage(truth, lower, upper, mask=None) -> float:
    """Fraction of pixels with lower ≤ truth ≤ upper (PICP), over the mask's True pixels.

    One image (or one pooled set); the doc's Cov_g averages this over images.
    """
    x, lo, hi = _select(truth, lower, upper, mask=mask)
    return float(np.mean((lo <= x) & (x <= hi)))


def interval_width(lower, upper, mask=None) -> float:
    """Mean interval width (MPIW) = mean(upper − lower): report it next to coverage, a wide interval covers."""
    lo, hi = _select(lower, upper, mask=mask)
    return float(np.mean(hi - lo))


def spearman(std, abs_error, mask=None) -> float:
    """Spearman ρ(σ, |e|) = Pearson correlation of the (tie-averaged) ranks; nan when either input is constant.

    No absolute target: compare with `reference_spearman` of the same σ map.
    """
    from scipy.stats import spearmanr

    s, e = _std_err(std, abs_error, mask)
    if s.size < 2 or np.ptp(s) == 0 or np.ptp(e) == 0:
        return float("nan")
    return float(spearmanr(s, e).statistic)


def reference_errors(std, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Calibrated errors for the same σ map: e' = σ·z', z' ~ N(0, 1) per pixel (seeded).

    Feed them to `ause`, `aurg`, `ence` for the doc's AUSE_ref / ENCE_ref.
    """
    s = np.asarray(std, dtype=np.float64)
    return s * np.random.default_rng(seed).standard_normal(s.shape)


def reference_spearman(std, mask=None, seed: int | np.random.Generator = 0, repeats: int = 10) -> float:
    """ρ_ref = mean over `repeats` draws of Spearman(σ, |σ·z'|), z' ~ N(0, 1): the ρ a calibrated σ map reaches.

    The ceiling is set by the contrast of σ (half σ = 1, half σ = 3: ≈ 0.52), not by calibration quality.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    (s,) = _select(std, mask=mask)
    rng = np.random.default_rng(seed)
    return float(np.mean([spearman(s, reference_errors(s, rng)) for _ in range(repeats)]))


def _removal_curve(order_key: np.ndarray, sq_err: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """RMSE of the pixels left after removing the ⌊fN⌋ with the largest key, divided by the RMSE of all.

    Tied keys are broken in expectation: each pixel of a tie counts with the tie's mean squared error.
    """
    order = np.argsort(-order_key, kind="stable")
    key, sq = order_key[order], sq_err[order]
    _, start, counts = np.unique(-key, return_index=True, return_counts=True)
    sq = np.repeat(np.add.reduceat(sq, start) / counts, counts)
    tail = np.append(np.cumsum(sq[::-1])[::-1], 0.0)
    removed = np.floor(fractions * sq.size).astype(int)
    return np.sqrt(tail[removed] / (sq.size - removed)) / np.sqrt(tail[0] / sq.size)


def sparsification_curves(std, abs_error, mask=None, fractions: int = 100):
    """(f, E_u, E_o): normalised sparsification curves on the grid f = linspace(0, 0.99, fractions).

    E_u(f) = RMSE of the pixels left after removing the ⌊fN⌋ with the largest σ, / RMSE of all (E(0));
    E_o the same removing the largest |e| (oracle). Random removal gives E_r ≡ 1. All-zero errors: nan curves.
    (Ilg et al. 2018; Poggi et al. 2020.)
    """
    if fractions < 2:
        raise ValueError(f"fractions must be ≥ 2, got {fractions}")
    s, e = _std_err(std, abs_error, mask)
    f = np.linspace(0.0, 0.99, fractions)
    if not e.any():
        nan = np.full_like(f, np.nan)
        return f, nan, nan.copy()
    sq = e**2
    return f, _removal_curve(s, sq, f), _removal_curve(e, sq, f)


def ause(std, abs_error, mask=None, fractions: int = 100) -> float:
    """AUSE = ∫ (E_u − E_o) df over f ∈ [0, 0.99] (trapezoid), RMSE-based and normalised; lower is better.

    0 when σ orders pixels like |e|; compare with `ause(std, reference_errors(std))`.
    """
    f, e_u, e_o = sparsification_curves(std, abs_error, mask, fractions)
    return float(np.trapezoid(e_u - e_o, f))


def aurg(std, abs_error, mask=None, fractions: int = 100) -> float:
    """AURG = ∫ (E_r − E_u) df with E_r ≡ 1 (random removal), f ∈ [0, 0.99]; > 0 means better than random."""
    f, e_u, _ = sparsification_curves(std, abs_error, mask, fractions)
    return float(np.trapezoid(1.0 - e_u, f))


def uce(std, abs_error, bins: int = 10, mask=None) -> float:
    """Uncertainty calibration error in variance units: Σ_m (|B_m|/N)·|mean_{B_m} e² − mean_{B_m} σ²|.

    B_m: `bins` equal-width bins of σ² from its min to its max, both ends included (one bin if σ is constant).
    Laves et al. report it ×100 with 15 bins; this returns the plain value.
    """
    if bins < 1:
        raise ValueError(f"bins must be ≥ 1, got {bins}")
    s, e = _std_err(std, abs_error, mask)
    var, sq = s**2, e**2
    span = var.max() - var.min()
    idx = np.zeros(var.size, int) if span == 0 else np.minimum((bins * (var - var.min()) / span).astype(int), bins - 1)
    n = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, sq, bins) - np.bincount(idx, var, bins))  # = |B_m|·|mean e² − mean σ²|
    return float(gap.sum() / n.sum())


def ence(std, abs_error, bins: int = 10, mask=None) -> float:
    """ENCE = (1/B) Σ_b |RMV_b − RMSE_b| / RMV_b, RMV_b = √mean_b σ², RMSE_b = √mean_b e² (Levi et al.).

    B equal-count bins of pixels sorted by σ. Grows like √(B/N) even when calibrated: compare with
    `ence(std, reference_errors(std))`. A bin with σ ≡ 0 gives inf.
    """
    if bins < 1:
        raise ValueError(f"bins must be ≥ 1, got {bins}")
    s, e = _std_err(std, abs_error, mask)
    if s.size < bins:
        raise ValueError(f"{s.size} pixels cannot fill {bins} bins")
    order = np.argsort(s, kind="stable")
    terms = []
    for part in np.array_split(order, bins):
        rmv, rmse = np.sqrt(np.mean(s[part] ** 2)), np.sqrt(np.mean(e[part] ** 2))
        terms.append(np.inf if rmv == 0 else abs(rmv - rmse) / rmv)
    return float(np.mean(terms))


def zms(std, abs_error, mask=None) -> float:
    """ZMS = mean (e/σ)², target 1; σ scaled by κ gives ≈ 1/κ² (Pernot). σ = 0 gives inf, or 0 where e = 0 too.

    κ = √ZMS is the σ-scaling factor (the Gaussian-NLL optimum).
    """
    s, e = _std_err(std, abs_error, mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        z2 = np.where(e == 0, 0.0, e**2 / s**2)
    return float(np.mean(z2))
