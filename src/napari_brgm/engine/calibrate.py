"""Calibrate a prior's intervals on the user's own images: simulate the task, run the method, fit CRC.

For each ground-truth slice the task is simulated as a user would meet it (super-resolution: the
box-averaged slice; inpainting: masks of each missing-fraction bin; denoising: seeded Gaussian
noise of `sigma_y`; k-space: the slice itself, which the engine undersamples with the run's mask
options; deblurring: the slice blurred by the task's PSF), the method runs through `reconstruct`
exactly as in a user's run (same steps, samples and options), and `engine.calibration.fit_record`
fits λ̂ per pixel group (and per σ̂ quartile of each group) from the scores |truth − mean| / (std + ε).
With `cache=DIR` every run's mean and std are kept there, keyed by its input and settings: an
interrupted calibration resumes, more slices add to the runs done, and a record can be refitted
(other strata, levels) without running the method again. Records are merged into
`<prior>.calibration.json`; for a flow prior the out-of-distribution reference of the same slices
goes to `<prior>.ood.json` (engine/ood.py). Use images the prior was not trained on: a prior
reconstructs its training images too well, so their intervals come out too narrow
(docs/evaluation.md measures that bias).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_brgm.engine.calibration import (STRATA, CalibrationError, CalibrationFile, CalibrationRecord,
                                            fit_record, leave_one_out_coverage, missing_fraction_bin)
from napari_brgm.engine.ood import calibration_reference
from napari_brgm.engine.uncertainty import LEVELS, file_sha256

# Inpainting masks, NONZERO = MISSING, one per missing-fraction bin (<=25 %, 25-50 %, >50 %): each
# calibration image is run once per bin, so that every bin has as many images as there are slices.
MASK_SHAPES = {"<=25%": ("centre", "quadrant"), "25-50%": ("left", "right", "top", "bottom"),
               ">50%": ("border", "three-quarters")}


def simulation_mask(shape: tuple[int, int], kind: str) -> np.ndarray:
    """A missing-region mask (True = missing) of one of the `MASK_SHAPES` kinds."""
    h, w = shape
    m = np.zeros(shape, bool)
    if kind == "centre":
        m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
    elif kind == "quadrant":
        m[: h // 2, w // 2:] = True
    elif kind in ("left", "right"):
        m[:, : w // 2] = True
        m = m if kind == "left" else m[:, ::-1].copy()
    elif kind in ("top", "bottom"):
        m[: h // 2] = True
        m = m if kind == "top" else m[::-1].copy()
    elif kind == "border":
        m[:] = True
        m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = False
    elif kind == "three-quarters":
        m[:] = True
        m[h // 2:, : w // 2] = False
    else:
        raise ValueError(f"unknown mask kind {kind!r}; choose one of {sorted(sum(MASK_SHAPES.values(), ()))}")
    return m


def spread_order(count: int, n: int) -> np.ndarray:
    """n of the indices 0..count−1, spread evenly (golden-ratio sequence); the first n of a larger n are these.

    So calibrating on more slices later keeps the earlier ones (and their cached runs).
    """
    if count < 0 or n < 0:
        raise ValueError(f"need count ≥ 0 and n ≥ 0, got {count}, {n}")
    order, seen, k = [], set(), 0
    while len(order) < min(n, count):
        i = int(((0.5 + k * 0.6180339887498949) % 1.0) * count)
        k += 1
        if i not in seen:
            seen.add(i)
            order.append(i)
        if k > 64 * count + 64:  # the sequence misses some index: fill in order
            order += [j for j in range(count) if j not in seen][: min(n, count) - len(order)]
    return np.array(order, dtype=int)


def box_downsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Area average over factor×factor blocks (the engine's "box" SR operator); the slice is cropped to fit."""
    h, w = (s - s % factor for s in x.shape)
    return x[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


@dataclass
class Case:
    """One simulated run: the input the method sees, the truth at output size and the pixel groups."""

    image: np.ndarray
    mask: np.ndarray | None
    truth: np.ndarray
    groups: dict[str, np.ndarray]
    bin: str | None  # inpainting's missing-fraction bin
    kind: str | None = None  # inpainting's mask shape (`MASK_SHAPES`)


def blur_as_the_engine(truth: np.ndarray, psf: dict | None) -> np.ndarray:
    """The truth blurred by the deblurring task's PSF (`psf`: psf, psf_sigma, psf_width; defaults as the task's)."""
    import torch

    from napari_brgm.engine.tasks import DeblurOptions
    from napari_brgm.operators import Blur

    opts = DeblurOptions(**{k: v for k, v in (psf or {}).items() if k in ("psf", "psf_sigma", "psf_width")})
    op = Blur.of(opts.psf, opts.psf_sigma if opts.psf == "gaussian" else opts.psf_width)
    return op(torch.from_numpy(np.asarray(truth, np.float64))[None, None])[0, 0].numpy()


def simulate(truth: np.ndarray, task: str, *, factor: int = 4, sigma_y: float | None = None, seed: int = 0,
             bins: Sequence[str] = tuple(MASK_SHAPES), psf: dict | None = None):
    """The cases of one truth slice for `task`: one for SR, denoising, k-space (the engine undersamples the truth)
    and deblurring (`psf`: the task's PSF options), one per mask bin (`bins`) for inpainting."""
    truth = np.asarray(truth, np.float32)
    if task == "superres":
        t = truth[: truth.shape[0] - truth.shape[0] % factor, : truth.shape[1] - truth.shape[1] % factor]
        return [Case(box_downsample(t, factor), None, t, {"all": np.ones(t.shape, bool)}, None)]
    if task == "denoise":
        if sigma_y is None:
            raise ValueError("denoising calibration needs the noise level sigma_y (input units)")
        noisy = truth + sigma_y * np.random.default_rng(seed).standard_normal(truth.shape).astype(np.float32)
        return [Case(noisy, None, truth, {"all": np.ones(truth.shape, bool)}, None)]
    if task == "kspace":  # the engine simulates the k-space from the truth itself
        return [Case(truth, None, truth, {"all": np.ones(truth.shape, bool)}, None)]
    if task == "deblur":
        blurred = blur_as_the_engine(truth, psf)
        if sigma_y is not None:
            blurred = blurred + sigma_y * np.random.default_rng(seed).standard_normal(truth.shape).astype(np.float32)
        return [Case(blurred.astype(np.float32), None, truth, {"all": np.ones(truth.shape, bool)}, None)]
    if task != "inpaint":
        raise ValueError(f"task must be 'superres', 'inpaint', 'denoise', 'kspace' or 'deblur', got {task!r}")
    rng = np.random.default_rng(seed)
    cases = []
    for fraction_bin in bins:
        kinds = MASK_SHAPES[fraction_bin]
        kind = kinds[rng.integers(len(kinds))]
        m = simulation_mask(truth.shape, kind)
        assert missing_fraction_bin(float(m.mean())) == fraction_bin, (fraction_bin, m.mean())
        cases.append(Case(np.where(m, 0, truth).astype(np.float32), m.astype(np.uint8), truth,
                          {"missing": m, "observed": ~m}, fraction_bin, kind))
    return cases


@dataclass
class CachedRun:
    """What calibration uses of a run (`Result`'s mean, std and the settings it reads), as kept in a cache."""

    mean: np.ndarray
    std: np.ndarray
    settings: dict

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(tmp, mean=self.mean, std=self.std, settings=json.dumps(self.settings))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> CachedRun | None:
        """The kept run, or None when the file is absent or unreadable (then the run is redone)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["mean"], z["std"], json.loads(str(z["settings"])))
        except (OSError, ValueError, KeyError):
            return None

    @classmethod
    def of(cls, result) -> CachedRun:
        st = result.settings
        return cls(np.asarray(result.mean, np.float32), np.asarray(result.std, np.float32),
                   {"interval": {"key": st["interval"]["key"], "eps": st["interval"]["eps"]},
                    "in_distribution": {"score": st["in_distribution"]["score"]}, "prior_path": st["prior_path"]})


def run_id(case: Case, **settings) -> str:
    """A run's cache name: SHA-256 of its input, mask and every setting that changes its result."""
    digest = hashlib.sha256()
    for a in (case.image, case.mask):
        if a is not None:
            digest.update(f"{a.dtype}{a.shape}".encode())
            digest.update(np.ascontiguousarray(a).tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def _prior_identity(prior, method: str) -> str:
    """The prior file's SHA-256 ("none" for Deep Image Prior), so a cache never mixes two priors."""
    from napari_brgm.engine.methods import PRIOR_KINDS
    from napari_brgm.engine.reconstruction import _resolve_prior

    kind = PRIOR_KINDS.get(method)
    return "none" if kind is None else file_sha256(_resolve_prior(prior, kind))


def _vi_identity(method: str, task: str, options: dict) -> dict:
    """A VI stage's resolved posterior and predictive, for the cache name: a run under an older default re-runs."""
    from napari_brgm.engine.reconstruction import _vi_stage
    from napari_brgm.engine.settings import Settings

    settings = Settings.from_flat(task=task, method=method, **options)
    settings.resolve_defaults()
    posterior, predictive = _vi_stage(settings)
    return {} if posterior is None else {"vi": [posterior, predictive]}


def calibrate(images: Sequence[np.ndarray], *, prior, method: str = "vi", task: str = "superres", factor: int = 4,
              steps: int = 501, samples: int = 16, levels: Sequence[float] = LEVELS, seed: int = 0,
              sigma_y: float | None = None, data_kind: str = "real-heldout", sources: Sequence[str] | None = None,
              out=None, bins: Sequence[str] = tuple(MASK_SHAPES), strata: int = STRATA, cache=None,
              progress: Callable[[int, int, str], None] | None = None,
              should_stop: Callable[[], bool] | None = None, **options) -> tuple[CalibrationFile, list]:
    """Run `method` on the simulated task over `images` and fit one record per key and level.

    `bins`: inpainting's missing-fraction bins to calibrate (each image is run once per bin); `strata`: σ̂
    strata per pixel group (1: one λ̂ per group); `cache`: a folder keeping every run (`CachedRun`), reused
    when the same input meets the same settings. Returns the calibration file (merged into `out` and written
    there when `out` is given) and the new records. `progress(i, n, text)` after every run; `should_stop()`
    between runs ends early and fits what is done. `options` go to `reconstruct` (method options, window, ...).
    """
    from napari_brgm import reconstruct

    cases = [(i, c) for i, x in enumerate(images)
             for c in simulate(x, task, factor=factor, sigma_y=sigma_y, seed=seed + i, bins=bins, psf=options)]
    if not cases:
        raise ValueError("no calibration images given")
    if cache is not None:
        cache = Path(cache)
        cache.mkdir(parents=True, exist_ok=True)
        prior_id = _prior_identity(prior, method)
        vi_id = _vi_identity(method, task, options)
    runs: dict[str, list] = {}  # the runs of one calibration key (the key a user's run looks up, but its level)
    prior_path = None
    for n, (i, case) in enumerate(cases, 1):
        if should_stop is not None and should_stop():
            break
        kept = r = None
        if cache is not None:
            kept = cache / (run_id(case, prior=prior_id, method=method, task=task, factor=factor, steps=steps,
                                   samples=samples, seed=seed + i, sigma_y=sigma_y, options=options,
                                   **vi_id) + ".npz")
            r = CachedRun.load(kept) if kept.is_file() else None
        if r is None:
            result = reconstruct(case.image, task=task, factor=factor, mask=case.mask, prior=prior, method=method,
                                 steps=steps, samples=samples, seed=seed + i, calibration="none",
                                 **({"sigma_y": sigma_y} if sigma_y is not None else {}), **options)
            if result.std is None:
                raise ValueError(f"method {method!r} gives no samples here: nothing to calibrate")
            r = CachedRun.of(result)
            if kept is not None:
                r.save(kept)
        prior_path = r.settings["prior_path"]
        # the engine's own key, but the level; and but the sample count, which early stopping (DIP) can lower
        # in some runs: those stay in (dropping them would bias the set), the record takes the usual count
        key = {k: v for k, v in r.settings["interval"]["key"].items() if k not in ("level", "samples")}
        runs.setdefault(json.dumps(key, sort_keys=True), []).append((i, case, r))
        if progress is not None:
            progress(n, len(cases), f"slice {i + 1}/{len(images)}" + (f", mask {case.bin}" if case.bin else ""))
    sha = file_sha256(prior_path) if prior_path is not None else "none"
    name = None if prior is None else Path(str(prior)).name.split(".")[0]
    target = CalibrationFile.load(out) if out is not None and Path(out).is_file() else CalibrationFile(sha, name, [])
    if target.prior_sha256 != sha:
        raise CalibrationError(f"{out} holds the calibration of another prior ({target.prior_sha256[:12]}…); "
                               "write to a new file")
    records: list[CalibrationRecord] = []
    for done in runs.values():
        _, case0, r0 = done[0]
        mean_missing = np.mean([c.mask.mean() for _, c, _ in done]) if case0.mask is not None else None
        counts = [r.settings["interval"]["key"]["samples"] for _, _, r in done]
        usual = max(set(counts), key=lambda c: (counts.count(c), c))
        data = ([c.truth for _, c, _ in done], [r.mean for _, _, r in done], [r.std for _, _, r in done],
                [c.groups for _, c, _ in done])
        epss = [r.settings["interval"]["eps"] for _, _, r in done]
        labels = {"plane": [_plane(sources, i) for i, _, _ in done]}
        if case0.kind is not None:
            labels["shape"] = [c.kind for _, c, _ in done]
        for level in levels:
            key = r0.settings["interval"]["key"] | {"level": level, "samples": usual}
            try:
                rec = fit_record(*data, key, level, epss, data_kind,
                                 notes={"sources": list(sources or [])[: len(images)],
                                        "misfit_q99": _q99([r.settings["in_distribution"]["score"] for *_, r in done]),
                                        "mean_missing_fraction": mean_missing,
                                        **({"samples_seen": sorted(set(counts))} if len(set(counts)) > 1 else {}),
                                        "options": {k: str(v) for k, v in options.items()}},
                                 strata=strata)
            except CalibrationError as err:  # too few images for this level: the others may still be fitted
                warnings.warn(f"level {level}: not calibrated: {err}", stacklevel=2)
                continue
            try:
                rec.notes["leave_one_out"] = leave_one_out_coverage(*data, key, level, epss, strata, labels)
            except CalibrationError as err:  # one image fewer is too few: the record stands, without the check
                rec.notes["leave_one_out"] = {"images": len(done), "skipped": str(err)}
            target.merge(rec)
            records.append(rec)
    if not records:
        raise CalibrationError(f"nothing could be calibrated from {len(runs)} group(s) of runs: give more images")
    if out is not None:
        target.save(out)
        calibration_reference(images, prior_path, task, factor, bins, out, sources or (), data_kind)
    return target, records


def _plane(sources: Sequence[str] | None, i: int) -> str | None:
    """The slice plane in a calibration image's source name ("head.nii.gz[coronal 40]"), or None."""
    match = re.search(r"\[(\w+) \d+\]$", sources[i]) if sources is not None and i < len(sources) else None
    return match.group(1) if match else None


def _q99(scores: list) -> float | None:
    """99th percentile of the calibration runs' data misfits: the out-of-distribution threshold."""
    values = [v for v in scores if v is not None]
    return float(np.quantile(values, 0.99)) if values else None
