"""Conformal calibration of pixel-wise intervals μ ± λ̂_g(σ̂ + ε), one λ̂ per pixel group (numpy only).

λ̂_g comes from conformal risk control (CRC) on the score s = |x − μ|/(σ̂ + ε) over calibration images: the
expected fraction of a new image's group pixels outside the interval is ≤ α. Records are keyed by what changes
the scores (method, task, SR factor or missing-fraction bin, steps, samples, level) and kept per prior in a JSON
file. A record fitted with `strata` = k > 1 also holds one λ̂ per σ̂ stratum of each group ("missing|q1" …
"missing|qk": the pixels of the group ranked by σ̂ within their own image, split into k equal parts), so that
low- and high-σ̂ pixels each keep their own guarantee (Mondrian CRC) instead of sharing one λ̂ that over-covers
the first and under-covers the last. Formulas: §2, §4 and §7 of ../shared/docs/uq-calibration.md.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from napari_brgm.engine.metrics import _select

SCHEMA = 1
MIN_PIXELS = 100  # per group, over all calibration images
MIN_IMAGES_ADVISED = 30  # the doc's practical floor for a ground-truth guarantee
MISSING_FRACTION_BINS = ("<=25%", "25-50%", ">50%")
STRATA = 4  # σ̂ strata per pixel group of a new record (quartiles)
_REQUIRED_KEY = ("method", "task", "steps", "samples", "level")
_NEAREST_KEY = ("steps", "samples", "factor")  # the key fields lookup does not match exactly


class CalibrationError(ValueError):
    """Calibration is impossible or refused (too little data, a file for another prior)."""


def _alpha(level: float) -> float:
    """α = 1 − level, rounded so that 1 − 0.9 is 0.1 and the n + 1 > 1/α test is exact."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return round(1.0 - level, 12)


def gaussian_multiplier(level: float, samples: int | None = None) -> float:
    """m_S = t_{S−1, (1+level)/2}·√(1 + 1/S): μ̂ ± m_S·σ̂ covers a draw of the exact posterior at `level`.

    S = 1 or None: the normal quantile z_{(1+level)/2}. At level 0.9: S = 4 → 2.63, 16 → 1.81, 64 → 1.68.
    """
    from scipy.stats import norm, t

    q = 1.0 - _alpha(level) / 2
    if samples is None or samples == 1:
        return float(norm.ppf(q))
    if int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be a whole number ≥ 1, got {samples}")
    return float(t.ppf(q, samples - 1) * math.sqrt(1.0 + 1.0 / samples))


def eps_floor(sigma_y: float, value_range: float) -> float:
    """ε = max(σ_y, 10⁻³·range): the score's denominator floor, for methods whose σ̂ ≈ 0 on observed pixels."""
    if sigma_y < 0 or not value_range > 0:
        raise ValueError(f"need sigma_y ≥ 0 and value_range > 0, got {sigma_y}, {value_range}")
    return max(float(sigma_y), 1e-3 * float(value_range))


def scores(truth, mean, std, eps: float) -> np.ndarray:
    """s = |truth − mean| / (std + ε), in the inputs' shape; std ≥ 0, std + ε > 0."""
    x, mu, s = (np.asarray(a, dtype=np.float64) for a in (truth, mean, std))
    _select(x, mu, s)
    if eps < 0 or (s < 0).any() or ((s + eps) <= 0).any():
        raise ValueError("need std ≥ 0, eps ≥ 0 and std + eps > 0 everywhere")
    return np.abs(x - mu) / (s + eps)


def missing_fraction_bin(fraction: float) -> str:
    """The inpainting key bin of a missing fraction: "<=25%", "25-50%" (upper end included) or ">50%"."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"missing fraction must lie in [0, 1], got {fraction}")
    return MISSING_FRACTION_BINS[0 if fraction <= 0.25 else 1 if fraction <= 0.5 else 2]


def stratum_name(group: str, j: int) -> str:
    """The name of stratum j (0-based) of a pixel group: "missing|q1" is the missing pixels' lowest-σ̂ part."""
    return f"{group}|q{j + 1}"


def is_stratum(name: str) -> bool:
    """Whether a λ̂ map's key names a σ̂ stratum (`stratum_name`) rather than a whole pixel group."""
    return "|" in name


def strata_groups(std, groups: dict, k: int) -> dict[str, np.ndarray]:
    """Each group's pixels ranked by σ̂ (stable order) within this image and split into k near-equal parts.

    Depends on σ̂ only, never on the truth, so a new image's strata are defined as the calibration images' were.
    """
    s = np.asarray(std, dtype=np.float64)
    if int(k) != k or k < 2:
        raise ValueError(f"strata must be a whole number ≥ 2, got {k}")
    out = {}
    for g, mask in groups.items():
        m = np.asarray(mask, bool)
        where = np.flatnonzero(m.ravel())
        order = where[np.argsort(s.ravel()[where], kind="stable")]
        for j, part in enumerate(np.array_split(order, int(k))):
            sub = np.zeros(s.size, bool)
            sub[part] = True
            out[stratum_name(g, j)] = sub.reshape(s.shape)
    return out


@dataclass(frozen=True)
class CRCResult:
    """λ̂ of conformal risk control and its bookkeeping."""

    lam: float
    n_images: int  # images with a non-empty score array
    n_pixels: int
    alpha: float
    allowed_risk: float  # ((n+1)α − 1)/n: the largest calibration miss rate R̂_n(λ̂) may have
    cal_risk: float  # R̂_n(λ̂): image-averaged fraction of calibration pixels with s > λ̂
    guaranteed_level: float  # 1 − α: E[covered fraction of a new exchangeable image] ≥ this


def crc_lambda(per_image_scores, level: float) -> CRCResult:
    """λ̂ = inf{λ : (n/(n+1))·R̂_n(λ) + 1/(n+1) ≤ α}, R̂_n(λ) = mean_i (fraction of image i's scores > λ).

    R̂_n is a step function falling at the score values, so λ̂ is found exactly among the pooled scores. Empty
    arrays drop out of n. Raises CalibrationError if n + 1 ≤ 1/α (λ̂ would be the largest score or +∞).
    """
    alpha = _alpha(level)
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in per_image_scores]
    arrays = [a for a in arrays if a.size]
    n = len(arrays)
    if (n + 1) * alpha <= 1.0:
        raise CalibrationError(
            f"conformal risk control at level {level} needs n + 1 > 1/α = {1 / alpha:g} calibration images "
            f"with pixels in the group, got n = {n}")
    pooled = np.concatenate(arrays)
    if not np.isfinite(pooled).all():
        raise ValueError("scores must be finite")
    weights = np.concatenate([np.full(a.size, 1.0 / (n * a.size)) for a in arrays])
    values, inverse = np.unique(pooled, return_inverse=True)
    mass = np.bincount(inverse, weights, values.size)
    risk_at = np.append(np.cumsum(mass[::-1])[::-1], 0.0)[1:]  # R̂_n(values[u]) = weight of scores > values[u]
    allowed = ((n + 1) * alpha - 1.0) / n
    u = int(np.argmax(risk_at <= allowed + 1e-12))  # the last value has risk 0, so one always qualifies
    return CRCResult(float(values[u]), n, int(pooled.size), alpha, allowed, float(risk_at[u]), 1.0 - alpha)


def conformal_quantile(unit_scores, level: float) -> float:
    """Split conformal: the k-th smallest of n scores, k = ⌈(n+1)·level⌉; +inf if k > n.

    P(s_{n+1} ≤ q̂) ≥ level for a new exchangeable unit (one score per image, not pooled pixels).
    """
    _alpha(level)
    s = np.sort(np.asarray(unit_scores, dtype=np.float64).ravel())
    k = math.ceil((s.size + 1) * level - 1e-9)
    return float(s[k - 1]) if k <= s.size else math.inf


def _check_key(key: dict) -> dict:
    """A copy of a record key with its required fields checked and numpy scalars made plain (JSON-safe)."""
    key = {k: v.item() if isinstance(v, np.generic) else v for k, v in key.items()}
    missing = [k for k in _REQUIRED_KEY if k not in key]
    if missing:
        raise ValueError(f"calibration key lacks {missing}")
    _alpha(key["level"])
    for name in ("steps", "samples"):
        if not (isinstance(key[name], int) and key[name] >= 1):
            raise ValueError(f"calibration key: {name} must be a whole number ≥ 1, got {key[name]!r}")
    if key["task"] == "superres" and not (isinstance(key.get("factor"), (int, float)) and key["factor"] > 1):
        raise ValueError(f"a super-resolution key needs a numeric factor > 1, got {key.get('factor')!r}")
    if key["task"] == "inpaint":
        if "missing_fraction" in key:
            key["missing_fraction_bin"] = missing_fraction_bin(key.pop("missing_fraction"))
        if key.get("missing_fraction_bin") not in MISSING_FRACTION_BINS:
            raise ValueError(f"an inpainting key needs missing_fraction_bin in {MISSING_FRACTION_BINS}, "
                             f"got {key.get('missing_fraction_bin')!r}")
    return key


@dataclass
class CalibrationRecord:
    """One calibration key's result: per group g the CRC λ̂_g and the σ-scaling κ_g, with its provenance.

    κ_g = √ZMS of the scores, image-averaged: it scales σ̂ + ε (the floored scale of the score), no guarantee.
    `strata` > 1: the per-group maps also hold each group's σ̂ strata ("g|q1" …), which `interval` uses.
    """

    key: dict
    lambdas: dict
    kappa: dict
    n_images: dict
    n_pixels: dict
    guaranteed_level: float  # CRC: expected covered fraction of a new image's group pixels ≥ this
    allowed_miss: dict  # per group ((n+1)α − 1)/n, the calibration miss rate CRC allowed
    cal_coverage: dict  # per group, image-averaged coverage on the calibration data after calibration
    data_kind: str  # "real-heldout", "in-model", or another label
    created: str  # ISO date
    version: str  # napari-brgm version that fitted it
    score: str = "abs_resid/(std+eps)"
    eps_rule: str = "max(sigma_y, 1e-3*range)"
    wrapper: str = "crc"
    notes: dict = field(default_factory=dict)  # free-form provenance: d0_prior, image split hashes, …
    strata: int = 1  # σ̂ strata per group (1: one λ̂ per group, as records before strata)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CalibrationRecord:
        """Validated: every field without a default present, λ̂ finite and ≥ 0."""
        if not isinstance(d, dict):
            raise ValueError(f"a calibration record must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        needed = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if needed - d.keys() or d.keys() - names:
            raise ValueError(f"calibration record: missing {sorted(needed - d.keys())}, "
                             f"unknown {sorted(d.keys() - names)}")
        lams = d["lambdas"]
        if not isinstance(lams, dict) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in lams.values()):
            raise ValueError(f"calibration record: lambdas must map groups to finite numbers ≥ 0, got {lams!r}")
        if not (isinstance(d.get("strata", 1), int) and d.get("strata", 1) >= 1):
            raise ValueError(f"calibration record: strata must be a whole number ≥ 1, got {d.get('strata')!r}")
        return cls(**{**d, "key": _check_key(d["key"])})

    def stratified(self, groups: dict) -> bool:
        """Whether every group of a run has its σ̂-stratum λ̂s here (else the group's own λ̂ is used)."""
        return self.strata > 1 and all(stratum_name(g, j) in self.lambdas for g in groups for j in range(self.strata))

    def interval(self, mean, std, eps: float, groups: dict) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated interval μ ∓ λ̂(σ̂ + ε): per σ̂ stratum of each group when fitted so, else per group."""
        if self.stratified(groups):
            return interval(mean, std, eps, strata_groups(std, groups, self.strata), self.lambdas)
        return interval(mean, std, eps, groups, self.lambdas)


def fit_record(truths, means, stds, groups_per_image, key: dict, level: float, eps, data_kind: str,
               notes: dict | None = None, strata: int = 1) -> CalibrationRecord:
    """Calibrate one key: CRC λ̂_g and κ_g per group over the calibration images.

    truths, means, stds: one array per image; groups_per_image: per image a dict group → boolean mask (an
    image whose mask of a group is empty drops out of that group); eps: one ε for all images or one each.
    strata > 1: also each group's σ̂ strata (`strata_groups`), fitted alike. Raises CalibrationError if a group
    has < 100 pixels in all or too few images for the level; a stratum with too few pixels is left out (the run
    then uses its group's λ̂).
    """
    n = len(truths)
    if not n == len(means) == len(stds) == len(groups_per_image):
        raise ValueError("truths, means, stds and groups_per_image must have one entry per image")
    epss = list(eps) if np.ndim(eps) else [float(eps)] * n
    if len(epss) != n:
        raise ValueError(f"eps: {len(epss)} values for {n} images")
    key = _check_key({**key, "level": level} if "level" not in key else key)
    if not math.isclose(key["level"], level):
        raise ValueError(f"key level {key['level']} differs from level {level}")
    per_group: dict[str, list[np.ndarray]] = {}
    for x, mu, s, e, groups in zip(truths, means, stds, epss, groups_per_image):
        score = scores(x, mu, s, e)
        for g, mask in groups.items():
            m = np.asarray(mask)
            if m.dtype != bool or m.shape != score.shape:
                raise ValueError(f"group {g!r}: the mask must be boolean of the image's shape {score.shape}")
            per_group.setdefault(g, []).append(score[m])
        if strata > 1:
            for g, m in strata_groups(s, groups, strata).items():
                per_group.setdefault(g, []).append(score[m])
    if not per_group:
        raise ValueError("no pixel group given")
    lambdas, kappa, n_images, n_pixels, allowed, cal_cov = {}, {}, {}, {}, {}, {}
    for g, arrays in per_group.items():
        arrays = [a for a in arrays if a.size]
        total = sum(a.size for a in arrays)
        if total < MIN_PIXELS and is_stratum(g):
            continue
        if total < MIN_PIXELS:
            raise CalibrationError(f"group {g!r} has {total} pixels over {len(arrays)} images; calibration needs "
                                   f"at least {MIN_PIXELS} pixels per group")
        try:
            crc = crc_lambda(arrays, level)
        except CalibrationError as err:
            raise CalibrationError(f"group {g!r}: {err}") from None
        if crc.n_images < MIN_IMAGES_ADVISED and not is_stratum(g):
            warnings.warn(f"group {g!r}: {crc.n_images} calibration images; a ground-truth guarantee wants "
                          f"≥ {MIN_IMAGES_ADVISED}", stacklevel=2)
        lambdas[g] = crc.lam
        kappa[g] = float(np.sqrt(np.mean([np.mean(a**2) for a in arrays])))
        n_images[g], n_pixels[g], allowed[g] = crc.n_images, crc.n_pixels, crc.allowed_risk
        cal_cov[g] = 1.0 - crc.cal_risk
    from napari_brgm import __version__

    return CalibrationRecord(key=key, lambdas=lambdas, kappa=kappa, n_images=n_images, n_pixels=n_pixels,
                             guaranteed_level=1.0 - _alpha(level), allowed_miss=allowed, cal_coverage=cal_cov,
                             data_kind=str(data_kind), created=datetime.date.today().isoformat(),
                             version=__version__, notes=dict(notes or {}), strata=int(strata))


def leave_one_out_coverage(truths, means, stds, groups_per_image, key: dict, level: float, eps, strata: int = 1,
                           labels: dict[str, Sequence[str | None]] | None = None) -> dict:
    """What a record covers on new images like its calibration set: each image's interval from the record
    fitted on the other n − 1, its coverage per group averaged over images (as `fit_record`'s inputs).

    CRC's finite-n margin puts this at or above the level in expectation (n = 30, 90 %: about 0.93); a
    held-out set covered well above it is easier for the method than the calibration images.
    `labels`: per kind of label (e.g. "shape", "plane") one label per image; the coverage is also given
    per label. Returns {"images": n, "groups": {g: cov}, "by_<kind>": {label: {g: cov}}}.
    """
    n = len(truths)
    epss = list(eps) if np.ndim(eps) else [float(eps)] * n
    covered: list[dict[str, float]] = []
    for i in range(n):
        rest = [j for j in range(n) if j != i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = fit_record([truths[j] for j in rest], [means[j] for j in rest], [stds[j] for j in rest],
                             [groups_per_image[j] for j in rest], key, level, [epss[j] for j in rest], "loo",
                             strata=strata)
        lo, hi = rec.interval(means[i], stds[i], epss[i], groups_per_image[i])
        inside = (lo <= truths[i]) & (truths[i] <= hi)
        covered.append({g: float(inside[m].mean()) for g, m in groups_per_image[i].items() if np.any(m)})

    def average(rows: list[dict[str, float]]) -> dict[str, float]:
        names = sorted({g for r in rows for g in r})
        return {g: float(np.mean([r[g] for r in rows if g in r])) for g in names}

    out = {"images": n, "groups": average(covered)}
    for kind, per_image in (labels or {}).items():
        if len(per_image) != n:
            raise ValueError(f"labels {kind!r}: {len(per_image)} for {n} images")
        out[f"by_{kind}"] = {lab: average([c for c, la in zip(covered, per_image) if la == lab])
                             for lab in sorted({la for la in per_image if la is not None})}
    return out


def interval(mean, std, eps: float, groups: dict, lambdas: dict) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) = μ ∓ λ_g(σ̂ + ε) on each group's pixels; NaN on pixels of no group.

    Groups must not overlap; every group needs a λ ≥ 0, so upper ≥ lower.
    """
    mu, s = (np.asarray(a, dtype=np.float64) for a in (mean, std))
    _select(mu, s)
    if eps < 0 or (s < 0).any():
        raise ValueError("need std ≥ 0 and eps ≥ 0")
    half = np.full(mu.shape, np.nan)
    taken = np.zeros(mu.shape, bool)
    for g, mask in groups.items():
        m = np.asarray(mask)
        if m.dtype != bool or m.shape != mu.shape:
            raise ValueError(f"group {g!r}: the mask must be boolean of shape {mu.shape}")
        if g not in lambdas:
            raise ValueError(f"no λ for group {g!r} (calibrated groups: {sorted(lambdas)})")
        lam = float(lambdas[g])
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"group {g!r}: λ must be finite and ≥ 0, got {lam}")
        if (taken & m).any():
            raise ValueError(f"group {g!r} overlaps another group")
        taken |= m
        half[m] = lam * (s[m] + eps)
    lower, upper = mu - half, mu + half
    if not (upper[taken] >= lower[taken]).all():
        raise ValueError("interval with upper < lower")
    return lower, upper


def uncalibrated_interval(mean, std, level: float, samples: int | None, eps: float = 0.0):
    """(lower, upper) = μ ∓ m_S(σ̂ + ε), m_S = gaussian_multiplier(level, S): the interval before calibration."""
    everything = np.ones(np.shape(mean), bool)
    return interval(mean, std, eps, {"all": everything}, {"all": gaussian_multiplier(level, samples)})


@dataclass(frozen=True)
class MatchInfo:
    """How `CalibrationFile.lookup` got its record. Only an exact match carries the CRC guarantee."""

    text: str  # "exact", or the adjustments made, "; "-separated
    exact: bool
    samples_corrected: bool  # λ̂, κ rescaled by m_S'/m_S for another sample count
    interpolated: bool  # SR: λ̂, κ interpolated in log factor
    sources: tuple  # keys of the stored records used


def _log_distance(a: float, b: float) -> float:
    return abs(math.log(a / b))


def _nearest(records: list, name: str, value: float) -> list:
    """The records whose key[name] is nearest `value` in log ratio (ties: the larger)."""
    best = min({r.key[name] for r in records}, key=lambda v: (_log_distance(v, value), -v))
    return [r for r in records if r.key[name] == best]


def _at_samples(records: list, samples: int) -> tuple[CalibrationRecord, str]:
    """The record of nearest sample count, its λ̂ and κ rescaled by m_S'/m_S at the record's level."""
    rec = _nearest(records, "samples", samples)[0]
    if rec.key["samples"] == samples:
        return rec, ""
    level = rec.key["level"]
    ratio = gaussian_multiplier(level, samples) / gaussian_multiplier(level, rec.key["samples"])
    scaled = replace(rec, lambdas={g: v * ratio for g, v in rec.lambdas.items()},
                     kappa={g: v * ratio for g, v in rec.kappa.items()})
    return scaled, f"samples {rec.key['samples']} → {samples}: λ, κ × m_{samples}/m_{rec.key['samples']} = {ratio:.4f}"


def _blend(a: CalibrationRecord, b: CalibrationRecord, t: float) -> CalibrationRecord:
    """(1 − t)·a + t·b for λ̂ and κ on the groups both have; counts and coverage: the smaller."""
    groups = [g for g in a.lambdas if g in b.lambdas]

    def mix(x: dict, y: dict) -> dict:
        return {g: (1 - t) * x[g] + t * y[g] for g in groups}

    def least(x: dict, y: dict) -> dict:
        return {g: min(x[g], y[g]) for g in groups}

    return replace(a, lambdas=mix(a.lambdas, b.lambdas), kappa=mix(a.kappa, b.kappa),
                   strata=a.strata if a.strata == b.strata else 1,
                   n_images=least(a.n_images, b.n_images), n_pixels=least(a.n_pixels, b.n_pixels),
                   allowed_miss={g: max(a.allowed_miss[g], b.allowed_miss[g]) for g in groups},
                   cal_coverage=least(a.cal_coverage, b.cal_coverage))


@dataclass
class CalibrationFile:
    """The calibration records of one prior: {"schema": 1, "prior_sha256", "prior_name", "records": [...]}."""

    prior_sha256: str
    prior_name: str = ""
    records: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "prior_sha256": self.prior_sha256, "prior_name": self.prior_name,
                "records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, d, source: str = "calibration data") -> CalibrationFile:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            found = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{source}: calibration schema {found!r}, this version reads schema {SCHEMA}")
        if not isinstance(d.get("prior_sha256"), str) or not isinstance(d.get("records"), list):
            raise ValueError(f"{source}: needs a prior_sha256 string and a records list")
        records = []
        for i, r in enumerate(d["records"]):
            try:
                records.append(CalibrationRecord.from_dict(r))
            except (TypeError, ValueError) as err:
                raise ValueError(f"{source}: record {i}: {err}") from None
        return cls(d["prior_sha256"], str(d.get("prior_name", "")), records)

    def save(self, path) -> None:
        """Write JSON atomically: a temporary file in the same folder, then os.replace."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False, ensure_ascii=False)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a calibration file is shared like the prior
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path) -> CalibrationFile:
        """Read and validate a calibration file (plain JSON; ValueError on bad JSON or another schema)."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a valid calibration file (bad JSON: {err})") from None
        return cls.from_dict(d, str(path))

    def merge(self, record: CalibrationRecord) -> None:
        """Add a record, replacing the one with the same key."""
        self.records = [r for r in self.records if r.key != record.key] + [record]

    def lookup(self, prior_sha256: str, key: dict) -> tuple[CalibrationRecord, MatchInfo] | None:
        """The record for a run's key, or None (show the run as uncalibrated).

        Rule: the prior must be this file's (else CalibrationError naming both hashes); every key field but
        steps, samples and factor matches exactly (method, task, level, missing-fraction bin, any other field;
        `missing_fraction` may be given instead of the bin); then the nearest steps (log ratio); per SR factor
        the nearest samples, λ̂ and κ × m_S'/m_S; for SR a factor between two calibrated factors is
        interpolated linearly in log factor, outside them None (no extrapolation).
        """
        if prior_sha256 != self.prior_sha256:
            raise CalibrationError(f"calibration file for prior {self.prior_sha256} ({self.prior_name or 'unnamed'})"
                                   f" refused for the prior {prior_sha256}")
        q = _check_key(key)

        def fixed(k: dict) -> dict:
            return {n: v for n, v in k.items() if n not in _NEAREST_KEY}

        found = [r for r in self.records if fixed(r.key) == fixed(q)]
        if not found:
            return None
        found = _nearest(found, "steps", q["steps"])
        notes = [] if found[0].key["steps"] == q["steps"] else [f"steps {found[0].key['steps']} (run: {q['steps']})"]
        interpolated = False
        if q["task"] == "superres":
            factors = sorted({r.key["factor"] for r in found})
            at = [f for f in factors if math.isclose(f, q["factor"])]
            below, above = [f for f in factors if f < q["factor"]], [f for f in factors if f > q["factor"]]
            if not at and not (below and above):
                return None
            ends = at or [below[-1], above[0]]
            picked = [_at_samples([r for r in found if r.key["factor"] == f], q["samples"]) for f in ends]
            rec = picked[0][0]
            if not at:
                t = _log_distance(q["factor"], ends[0]) / _log_distance(ends[1], ends[0])
                rec, interpolated = _blend(picked[0][0], picked[1][0], t), True
                notes.append(f"factor {q['factor']:g} interpolated in log factor between {ends[0]:g} and "
                             f"{ends[1]:g} (t = {t:.3f})")
            sources, sample_notes = [p[0].key for p in picked], [p[1] for p in picked if p[1]]
        else:
            rec, sample_note = _at_samples(found, q["samples"])
            sources, sample_notes = [rec.key], [sample_note] if sample_note else []
        notes += sample_notes
        info = MatchInfo("; ".join(notes) or "exact", not notes, bool(sample_notes), interpolated, tuple(sources))
        if notes:
            rec = replace(rec, key=q, notes={**rec.notes, "derived": info.text})
        return rec, info
