"""Uncertainty evaluation on the held-out ITK head: coverage, width, calibration and ranking of the std.

Slices, tasks and method specs as in eval_brain_prior.py (SR ×4/×8 of the box-downsampled truth, inpainting
with the center/half masks, denoising at σ = 0.1 × range with sigma_y = σ); every method uses the built-in
prior of its kind. A spec is an eval_brain_prior method spec with an optional ":<vi_posterior>" (vi:meanfield)
and an optional "@<steps>" (reddiff@201: that method's steps instead of --steps). Each run is made once
(with --runs DIR its mean and std are kept there and reused by a later call, so that a new calibration file
can be evaluated without running again). The calibration found beside the prior (DIP: the shipped
dip.calibration.json; or --calibration) is applied as the engine does it (record lookup by the run's key,
then μ ∓ λ_g(σ̂ + ε)). Three central intervals at --level: μ ± z·σ̂ (plain Gaussian, z = 1.645 at 0.9),
μ ± m_S·σ̂ (Student-t multiplier for S samples, `gaussian_multiplier`) and the calibrated one when a
record matched.
Metrics are per slice, then averaged over slices (../shared/docs/uq-calibration.md §2, §8), with e = μ − x:

  cov missing / all  coverage of the three intervals z·σ̂ / m_S·σ̂ / calibrated on the missing pixels
                     (inpainting only) and on all pixels
  cal set, l-o-o     the record's own leave-one-out coverage on its calibration images (the hole's pixels
                     for masks, all pixels else): what it covers on images like those; the held-out head
                     far above it is easier for the method than the calibration set
  width all          mean width of the m_S·σ̂ and the calibrated interval (input units: [-1, 1] slices)
  ZMS                mean (e/σ̂)² over all pixels (target 1)
  ρ all / missing    Spearman ρ(σ̂, |e|) and ρ_ref, the ρ of calibrated errors for the same σ̂ map
  AUSE               sparsification error over all pixels, and AUSE_ref for errors σ̂·z', z' ~ N(0, 1)
  M9                 median σ̂ missing / median σ̂ observed (inpainting)
  calibration        the record's match text, or "none"
Second table (M7): coverage of the calibrated interval (m_S·σ̂ when uncalibrated) per σ̂ quartile (Q1 lowest)
of all pixels and of the head's pixels, the coverage of the air around it (head / air from the estimate:
μ above / below the window's floor + 5 %, never from the truth), and for masks of the observed pixels and
of the hole per σ̂ quartile of the hole. Air (31-53 % of the held-out slices) has errors below the noise
floor ε of the score, so every interval covers it and it fills the lowest-σ̂ quartile of all pixels.

    python benchmarks/eval_uncertainty.py --methods vi,vi:meanfield --tasks sr4,sr8,center,half,denoise
    python benchmarks/eval_uncertainty.py --json out/uncertainty.json   # all six default methods, all five tasks
    python benchmarks/eval_uncertainty.py --calibration none            # the uncalibrated baseline only
    python benchmarks/eval_uncertainty.py --methods reddiff@201,flow@201 --runs runs/eval  # cached runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_brain_prior import (HELD_OUT, TASKS, downsample, masks, method_options, noisy_copy,  # noqa: E402
                              pick_slices, write_json)

from napari_brgm import reconstruct  # noqa: E402
from napari_brgm.engine import metrics as M  # noqa: E402
from napari_brgm.engine.calibration import gaussian_multiplier, uncalibrated_interval  # noqa: E402
from napari_brgm.engine.uncertainty import load_calibration, pixel_groups  # noqa: E402
from napari_brgm.engine.settings import PRIOR_KINDS  # noqa: E402
from napari_brgm.training.data import load_slices  # noqa: E402

METHODS = "vi,vi:meanfield,iagan+vi,dip,reddiff,flow"
AIR_LEVEL = -0.9  # estimate at or below the window's floor (−1) + 5 % of its range: air around the head


def spec_options(spec: str) -> dict:
    """reconstruct's method options of a spec "<eval_brain_prior spec>[:<vi_posterior>][@<steps>]"."""
    spec, _, steps = spec.partition("@")
    base, _, posterior = spec.partition(":")
    return (method_options(base) | ({"vi_posterior": posterior} if posterior else {})
            | ({"steps": int(steps)} if steps else {}))


class Run:
    """What the metrics need of one reconstruction, cacheable: mean, std, sample count, the calibration key."""

    def __init__(self, mean, std, n_samples, key, eps, prior_path, seconds):
        self.mean, self.std, self.n_samples, self.key = mean, std, int(n_samples), key
        self.eps, self.prior_path, self.seconds = float(eps), prior_path, float(seconds)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"n_samples": self.n_samples, "key": self.key, "eps": self.eps, "prior_path": self.prior_path,
                "seconds": self.seconds}
        np.savez_compressed(path, mean=self.mean, std=self.std, meta=json.dumps(meta))

    @classmethod
    def load(cls, path: Path) -> "Run":
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            return cls(z["mean"], z["std"], meta["n_samples"], meta["key"], meta["eps"], meta["prior_path"],
                       meta["seconds"])


def calibrated(r: Run, missing, requested, level):
    """(lower, upper, match text, record) of the record the engine would use for this run, or None."""
    from napari_brgm.engine.uncertainty import file_sha256

    calibration, _ = load_calibration(requested, r.prior_path)
    if calibration is None:
        return None
    sha = file_sha256(r.prior_path) if r.prior_path else "none"
    if calibration.prior_sha256 != sha:
        return None
    found = calibration.lookup(sha, r.key | {"level": level})
    if found is None:
        return None
    record, match = found
    groups = pixel_groups(missing, r.mean.shape)
    lo, hi = record.interval(r.mean, r.std, r.eps, groups)  # as the engine: per σ̂ quartile when fitted so
    return lo, hi, match.text + (" ×q" if record.stratified(groups) else ""), record


def run(truth, key, spec, args, cache: Path | None = None):
    """(Run, missing mask or None) of one slice; from `cache` when it is there."""
    task, arg = TASKS[key]
    kw = dict(task=task, prior=None, steps=args.steps, samples=args.samples, seed=args.seed, interval=args.level,
              calibration="none") | spec_options(spec)
    missing = None
    if task == "denoise":
        y, kw["sigma_y"] = noisy_copy(truth, arg, args.seed)
    elif task == "superres":
        y, kw["factor"] = downsample(truth, arg), arg
    else:
        missing = masks(truth.shape[0])[arg] != 0
        y, kw["mask"] = np.where(missing, 0, truth), missing.astype(np.uint8)
    if cache is not None and cache.is_file():
        return Run.load(cache), missing
    t0 = time.perf_counter()
    r = reconstruct(y, **kw)
    if r.std is None:
        raise ValueError("the method gives no samples, so no std or interval")
    info = r.settings["interval"]
    out = Run(r.mean, r.std, len(r.samples), {k: v for k, v in info["key"].items() if k != "level"}, info["eps"],
              r.settings["prior_path"], time.perf_counter() - t0)
    if cache is not None:
        out.save(cache)
    return out, missing


def slice_metrics(truth, r: Run, missing, level, seed, requested=None) -> dict:
    """Every per-slice number of the tables."""
    mu, std, n_samples = r.mean.astype(np.float64), r.std.astype(np.float64), r.n_samples
    err = mu - truth
    intervals = {"z": uncalibrated_interval(mu, std, level, None),
                 "mS": uncalibrated_interval(mu, std, level, n_samples)}
    cal = calibrated(r, missing, requested, level)
    if cal is not None:
        intervals["cal"] = cal[:2]
    groups = {"all": None} if missing is None else {"all": None, "missing": missing}
    loo = {} if cal is None else cal[3].notes.get("leave_one_out", {}).get("groups", {})
    out = {"samples": n_samples, "m_S": gaussian_multiplier(level, n_samples),
           **({"cov_loo": loo.get("missing", loo.get("all"))} if loo else {}),
           "calibration": cal[2] if cal is not None else "none",
           "zms": M.zms(std, err), "ause": M.ause(std, err), "ause_ref": M.ause(std, M.reference_errors(std, seed))}
    for g, mask in groups.items():
        for name, (lo, hi) in intervals.items():
            out[f"cov_{g}_{name}"] = M.coverage(truth, lo, hi, mask)
        out[f"rho_{g}"] = M.spearman(std, err, mask)
        out[f"rho_ref_{g}"] = M.reference_spearman(std, mask, seed)
    for name, (lo, hi) in intervals.items():
        out[f"width_all_{name}"] = M.interval_width(lo, hi)
    if missing is not None:
        out["m9"] = float(np.median(std[missing]) / np.median(std[~missing]))
    lo, hi = intervals.get("cal", intervals["mS"])
    order = np.argsort(std, axis=None, kind="stable")
    inside = ((lo <= truth) & (truth <= hi)).ravel()
    out["cov_quartiles"] = [float(inside[q].mean()) for q in np.array_split(order, 4)]
    air = (mu <= AIR_LEVEL).ravel()
    head = order[~air[order]]
    out["cov_quartiles_head"] = [float(inside[q].mean()) for q in np.array_split(head, 4)]
    out["cov_air"] = float(inside[air].mean()) if air.any() else None
    out["air_fraction"] = float(air.mean())
    out["quartile_interval"] = "calibrated" if "cal" in intervals else "m_S·σ"
    if missing is not None:  # the same per region: observed pixels, and the hole by its own σ̂ quartiles
        hole = np.flatnonzero(np.asarray(missing).ravel()[order])
        out["cov_observed"] = float(inside[~np.asarray(missing).ravel()].mean())
        out["cov_quartiles_missing"] = [float(inside[order[q]].mean()) for q in np.array_split(hole, 4)]
    return out


def fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def aggregate(figs: list[dict]) -> dict:
    """Slice means of every number present in all slices; None where absent."""
    keys = {k for f in figs for k, v in f.items() if isinstance(v, float)}
    row = {k: float(np.mean([f[k] for f in figs])) if all(k in f for f in figs) else None for k in keys}
    for name in ("cov_quartiles", "cov_quartiles_missing", "cov_quartiles_head"):
        row[name] = np.mean([f[name] for f in figs], axis=0).tolist() if all(name in f for f in figs) else None
    row["calibration"] = "; ".join(sorted({f["calibration"] for f in figs}))
    row["quartile_interval"] = "; ".join(sorted({f["quartile_interval"] for f in figs}))
    return row


def table_row(spec, key, n, row) -> str:
    g = row.get

    def cov(grp):
        return " / ".join(fmt(g(f"cov_{grp}_{i}")) for i in ("z", "mS", "cal"))

    def rho(grp):
        return f"{fmt(g(f'rho_{grp}'), 2)} ({fmt(g(f'rho_ref_{grp}'), 2)})"

    cells = [spec, key, str(n), cov("missing") if g("cov_missing_z") is not None else "–", cov("all"),
             fmt(g("cov_loo")),
             f"{fmt(g('width_all_mS'))} / {fmt(g('width_all_cal'))}", fmt(g("zms"), 2), rho("all"),
             rho("missing") if g("rho_missing") is not None else "–",
             f"{fmt(g('ause'))} ({fmt(g('ause_ref'))})", fmt(g("m9"), 2), row["calibration"], fmt(g("seconds"), 1)]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=METHODS, help=f"method specs, comma-separated (default {METHODS})")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"any of {','.join(TASKS)} (default all)")
    p.add_argument("--slices", type=int, default=4, help="number of held-out slices (default 4)")
    p.add_argument("--steps", type=int, default=501, help="solver steps (default 501, the engine's)")
    p.add_argument("--samples", type=int, default=16, help="samples S behind the std (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=Path, default=HELD_OUT, help="held-out head, or any image load_slices reads")
    p.add_argument("--level", type=float, default=0.9, choices=(0.8, 0.9, 0.95), help="interval level (default 0.9)")
    p.add_argument("--calibration", help='calibration file (default: the one beside each prior; "none": off)')
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, help="also write every per-slice number here")
    p.add_argument("--runs", type=Path, help="keep each run's mean and std here, and reuse those already there")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from napari_brgm.priors import default_prior, load_prior

    methods, keys = args.methods.split(","), args.tasks.split(",")
    if unknown := [k for k in keys if k not in TASKS]:
        p.error(f"unknown tasks {unknown}; choose from {','.join(TASKS)}")
    kinds = {PRIOR_KINDS.get(spec.partition("@")[0].partition(":")[0].split("+")[0]) for spec in methods}
    names = {default_prior(k) for k in kinds if k} - {None}
    sizes = {load_prior(n).img_resolution for n in names} or {64}
    if len(sizes) > 1:
        p.error(f"the built-in priors have different resolutions {sorted(sizes)}")
    data = load_slices([args.heldout], sizes.pop())
    chosen = sorted(set(pick_slices(data.images, args.slices)))
    pct = f"cov{round(100 * args.level)}"
    print(f"held-out {args.heldout.name}: slices {[data.sources[i] for i in chosen]}; {args.steps} steps, "
          f"S = {args.samples}, level {args.level}, seed {args.seed}\n")
    print(f"| method | task | n | {pct} missing z·σ / m_S·σ / cal | {pct} all z·σ / m_S·σ / cal "
          "| cal set, leave-one-out (missing or all) | width all m_S·σ / cal | ZMS | ρ all (ρ_ref) "
          "| ρ missing (ρ_ref) | AUSE (ref) | M9 | calibration | s/slice |\n" + "|---" * 14 + "|", flush=True)
    rows, per_slice = [], []
    for spec in methods:
        for key in keys:
            figs = []
            try:
                for i in chosen:
                    truth = data.images[i, 0].numpy()
                    cache = None if args.runs is None else args.runs / (
                        f"{spec}-{key}-{data.sources[i]}-S{args.samples}-seed{args.seed}".replace("/", "_") + ".npz")
                    r, missing = run(truth, key, spec, args, cache)
                    figs.append({"method": spec, "task": key, "slice": data.sources[i], "seconds": r.seconds,
                                 **slice_metrics(truth, r, missing, args.level, args.seed, args.calibration)})
                    print(f"{spec} {key} {data.sources[i]} {r.seconds:.1f}s", file=sys.stderr, flush=True)
            except Exception as err:  # a missing prior, an unknown spec, an unsupported task: skip the row
                print(f"skipped {spec} {key}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                continue
            per_slice += figs
            rows.append({"method": spec, "task": key, "n": len(figs), **aggregate(figs)})
            print(table_row(spec, key, len(figs), rows[-1]), flush=True)
    print(f"\nM7: {pct} coverage per σ̂ quartile over all pixels (Q1 = lowest σ̂); masks: the observed pixels, "
          "and the hole's pixels per σ̂ quartile of the hole\n\n"
          "| method | task | interval | all Q1 / Q2 / Q3 / Q4 | head Q1 / Q2 / Q3 / Q4 | air (fraction) | observed "
          "| hole Q1 / Q2 / Q3 / Q4 |\n|---|---|---|---|---|---|---|---|")

    def quarters(values):
        return " / ".join(fmt(c) for c in values) if values else "–"

    for row in rows:
        print(f"| {row['method']} | {row['task']} | {row['quartile_interval']} | {quarters(row['cov_quartiles'])} | "
              f"{quarters(row['cov_quartiles_head'])} | {fmt(row.get('cov_air'))} ({fmt(row.get('air_fraction'), 2)}) | "
              f"{fmt(row.get('cov_observed'))} | {quarters(row.get('cov_quartiles_missing'))} |")
    if args.json:
        write_json(args.json, args, rows, per_slice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
