"""Central intervals for a run's samples: calibrated per pixel group when a calibration file matches.

A run with samples gets `Result.lower/upper` = μ ∓ λ_g(σ̂ + ε) on each pixel group g (inpainting:
"missing" and "observed"; other tasks: "all"; per σ̂ quartile of each group when the record has strata),
with λ_g from `<prior>.calibration.json` beside the prior file (or `calibration=PATH`), made by
`napari-brgm calibrate`. Without a matching record the
interval is μ ∓ m_S·σ̂ (m_S: the Student-t multiplier for S samples, `gaussian_multiplier`) and is
flagged uncalibrated; a cancelled run is always flagged uncalibrated.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from napari_brgm.engine.calibration import (CalibrationFile, eps_floor, gaussian_multiplier, interval,
                                            missing_fraction_bin)

LEVELS = (0.8, 0.9, 0.95)  # the interval levels offered (Settings.interval)
MISFIT_THRESHOLD: float | None = None  # misfit / σ_y² flagged without a calibration reference (None: not judged)
SUFFIX = ".calibration.json"


def calibration_path(prior_path) -> Path:
    """Where a prior's calibration file lives: `<prior stem>.calibration.json` beside it."""
    p = Path(prior_path)
    return p.with_name(p.name.split(".")[0] + SUFFIX)


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a prior file (cached per path, size and modification time)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime)


def pixel_groups(missing: np.ndarray | None, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """The calibration groups of an output: missing/observed for inpainting, else one group "all"."""
    if missing is None:
        return {"all": np.ones(shape, bool)}
    return {"missing": np.asarray(missing, bool), "observed": ~np.asarray(missing, bool)}


NOISE_BINS = (0.01, 0.03, 0.1, 0.3)  # edges of the σ_y bins, model units ([-1, 1] = the intensity window)


def noise_bin(sigma_y_model: float) -> str:
    """The σ_y bin of a run, e.g. "0.03-0.1" for the default 0.05 (2.5 % of the window)."""
    edges = (0.0, *NOISE_BINS, float("inf"))
    for lo, hi in zip(edges, edges[1:]):
        if sigma_y_model <= hi:
            return f"{lo:g}-{hi:g}"
    raise ValueError(f"sigma_y must be finite, got {sigma_y_model}")


def calibration_key(method: str, task: str, factor: int, missing: np.ndarray | None, steps: int, samples: int,
                    level: float, sigma_y_model: float, posterior: str | None = None, extra: dict | None = None,
                    predictive: str | None = None) -> dict:
    """The record key a run looks up (and `calibrate` writes); `posterior`, `predictive`: VI's family and how its
    samples became images, when VI ran; `extra`: the task's own fields (k-space acceleration and mask type, the
    deblurring PSF), matched exactly. "generator" is not written: records made before the Laplace posterior's
    linear predictive have no such field, and they are the generator's."""
    key = {"method": method, "task": task, "steps": int(steps), "samples": int(samples), "level": float(level),
           "noise_bin": noise_bin(sigma_y_model)} | dict(extra or {})
    if posterior is not None:
        key["posterior"] = posterior
        if predictive not in (None, "generator"):
            key["predictive"] = predictive
    if task == "superres":
        key["factor"] = int(factor)
    if task == "inpaint":
        key["missing_fraction_bin"] = missing_fraction_bin(float(np.mean(missing)))
    return key


DIP_CALIBRATION = "dip.calibration.json"  # Deep Image Prior's shipped file, beside the built-in priors


def builtin_dip_calibration() -> Path:
    """Where Deep Image Prior's shipped calibration lives (it has no prior file to sit beside).

    Its records are keyed with prior_sha256 "none" and were fitted on brain T1 slices
    (tools/calibrate_builtin.py): other modalities should calibrate DIP on their own images.
    """
    return Path(__file__).resolve().parents[1] / "priors" / "builtin" / DIP_CALIBRATION


def load_calibration(requested, prior_path) -> tuple[CalibrationFile | None, str | None]:
    """The calibration file of a run: `requested` (a path; "none" disables) or the one beside the prior.

    A run without a prior file (Deep Image Prior) finds `builtin_dip_calibration()` when it exists.
    """
    if requested is not None and str(requested).lower() == "none":
        return None, None
    if requested is not None:
        path = Path(requested).expanduser()
        if not path.is_file():
            raise ValueError(f"calibration file not found: {path}")
    elif prior_path is not None and calibration_path(prior_path).is_file():
        path = calibration_path(prior_path)
    elif prior_path is None and builtin_dip_calibration().is_file():
        path = builtin_dip_calibration()
    else:
        return None, None
    return CalibrationFile.load(path), str(path)


def run_intervals(mean: np.ndarray, std: np.ndarray, samples: int, missing: np.ndarray | None, *, key: dict,
                  level: float, sigma_y: float, value_range: float, calibration: CalibrationFile | None,
                  source: str | None, prior_sha256: str | None, partial: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """(lower, upper, record for Result.settings["interval"]) of one run, in the input's units."""
    groups = pixel_groups(missing, mean.shape)
    eps = eps_floor(sigma_y, value_range)
    info = {"level": level, "calibrated": False, "calibration": None, "match": None, "groups": sorted(groups),
            "eps": eps, "key": key, "file": source}
    found = None
    if calibration is not None and not partial:
        found = calibration.lookup(prior_sha256 or "none", key)
    if found is None:
        m = gaussian_multiplier(level, samples)
        lower, upper = interval(mean, std, 0.0, groups, {g: m for g in groups})
        info |= {"multiplier": m, "reason": "cancelled run" if partial and calibration is not None
                 else "no matching calibration record" if calibration is not None else "no calibration file"}
    else:
        record, match = found
        lower, upper = record.interval(mean, std, eps, groups)
        info |= {"calibrated": True, "calibration": source, "match": match.text, "lambdas": dict(record.lambdas),
                 "strata": record.strata if record.stratified(groups) else 1,
                 "misfit_q99": record.notes.get("misfit_q99"), "data_kind": record.data_kind, "n_images": dict(record.n_images)}
    return lower.astype(np.float32), upper.astype(np.float32), info


def strata_text(info: dict) -> str:
    """", per std quartile" for an interval calibrated per σ̂ stratum (`settings["interval"]`), else ""."""
    k = info.get("strata", 1)
    return "" if k == 1 else ", per std quartile" if k == 4 else f", per std {k}-quantile"


def in_distribution(misfit: float | None, calibrated_q99: float | None) -> dict:
    """Out-of-distribution flag: the estimate's data misfit (σ_y² units) against the calibration set's 99th percentile.

    A prior that has never seen anything like the input cannot reproduce even its observed part.
    Without a calibration reference (a record fitted with the misfit) and with `MISFIT_THRESHOLD`
    None the input is not judged (ok None): on the built-in brain prior the misfit alone does not
    separate a chest X-ray from unseen brain planes (docs/evaluation.md). Deep Image Prior (no
    trained prior) is never judged.
    """
    if misfit is None:
        return {"score": None, "threshold": None, "ok": None, "score_kind": "none: the method has no trained prior"}
    threshold = float(calibrated_q99) if calibrated_q99 else MISFIT_THRESHOLD
    return {"score": misfit, "threshold": threshold, "ok": None if threshold is None else bool(misfit <= threshold),
            "score_kind": "data misfit / sigma_y^2",
            "threshold_from": "calibration" if calibrated_q99 else None if threshold is None else "default"}
