"""Undersampled single-coil MRI (task kspace) and deblurring (task deblur): priors against classical baselines.

Truth: axial slices of the held-out head, prepared exactly like the training slices and like the other
evaluations (64×64, each slice mapped to [-1, 1] by the engine's percentile rule, `load_slices`), then
shifted to x = (t + 1)/2 so that the background is 0: a magnitude image, which is what an MRI scanner
measures (a [-1, 1] image would put the background at |−1| = 1 in the zero-filled magnitude). Each
learned method gets x with window=(0.5, 1), i.e. [0, 1] ↦ [-1, 1]: the model image is the training
slice exactly and the model grid is the image grid (64 px for the built-in priors; Deep Image Prior
works at 64 px too for a 64 px input).

kspace: the engine simulates y = M ⊙ (F_c x + n) at that grid (real image, Hermitian k-space; fastMRI
masks along the columns, mask_seed = --mask-seed + slice number j = 0, 1, …; n = complex Gaussian of σ
--kspace-noise per real and imaginary part, in the units of x). The baselines use the SAME measurement:
it is taken from `napari_brgm.engine.reconstruction.prepare` (the engine's own y, mapped to the units of
x) and, for σ = 0, checked against M ⊙ fft2c_np(x) with M = Result.sampling_mask. Baselines: zero-filled
|F_c^H(M ⊙ y)| and FISTA-TV (real domain, 300 iterations, skimage's Chambolle prox) with λ ∈ --tv-lams
(for images with max 1, ../shared/docs/mri-kspace.md §10: x here has its 99.5th percentile at 1, so the
doc's λ apply unscaled), reported at the oracle λ (the best mean PSNR over the slices of that setting)
and at the fixed --tv-fixed.

deblur (--tasks deblur): circular Gaussian blur of σ ∈ --psf-sigmas px (the engine's operator,
`operators.Blur`), plus Gaussian noise of std --deblur-noise; baselines Wiener (balance ∈ --wiener-balances)
and Richardson-Lucy (iterations ∈ --rl-iterations), both at the oracle setting.

Metrics: PSNR and SSIM (MONAI, `engine.metrics`) in the units of x with data_range = max − min of the
truth (= the slice's maximum, as the background is 0: fastMRI's slice-max convention, and the same
numbers as the other evaluations' PSNR on the [-1, 1] slices), on Result.mean and, for kspace, on
Result.consistent (DC: the measured k-space lines re-inserted). For methods with samples (vi, dip,
reddiff, flow, iagan+vi): coverage of Result.lower/upper (the --level interval, calibrated when a
calibration record matched, else the Student-t m_S·σ̂ one) over all pixels, and Spearman ρ(σ̂, |mean − x|)
with the reference ρ_ref of errors drawn from the σ̂ map itself (`engine.metrics`).

    python benchmarks/eval_kspace.py --slices 3 --steps 300 --json runs/kspace.json
    python benchmarks/eval_kspace.py --ood --methods map,dip --json runs/kspace-ood.json
    python benchmarks/eval_kspace.py --tasks deblur --methods map,vi,dip
    python benchmarks/eval_kspace.py --merge runs/a.json runs/b.json    # one table from several runs
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

from eval_brain_prior import HELD_OUT, method_options, pick_slices  # noqa: E402

from napari_brgm import reconstruct  # noqa: E402
from napari_brgm.engine import metrics as M  # noqa: E402
from napari_brgm.engine.settings import PRIOR_KINDS  # noqa: E402
from napari_brgm.operators.fourier import fft2c_np, to_complex  # noqa: E402
from napari_brgm.solvers.classical import (gaussian_psf, richardson_lucy_deblur, tv_kspace,  # noqa: E402
                                           wiener_deblur, zero_filled)
from napari_brgm.training.data import load_slices  # noqa: E402

METHODS = "map,vi,csgm,iagan,dip,reddiff,flow"
OOD = ("MR2_UNCR.dcm", "693_UNCR.dcm")  # pydicom-data: shoulder MR T1, head CT (CQ500: evaluation only, not shipped)
WINDOW = (0.5, 1.0)  # [0, 1] ↦ [-1, 1]: the model image is the training-style slice t = 2x − 1


def spec_options(spec: str) -> dict:
    """eval_brain_prior's method spec (map, vi, csgm, iagan, dip; +bp, +vi) plus "+r<N>": restarts = N."""
    parts = spec.split("+")
    restarts = [p for p in parts[1:] if p.startswith("r") and p[1:].isdigit()]
    opts = method_options("+".join(p for p in parts if p not in restarts))
    if restarts:
        opts["restarts"] = int(restarts[-1][1:])
    return opts


def images(args) -> list[tuple[str, np.ndarray]]:
    """(name, x in [0, 1]-ish with background 0) of every evaluated slice."""
    if args.ood:
        from pydicom.data import get_testdata_file

        paths = [Path(get_testdata_file(name)) for name in OOD]
        out = []
        for path in paths:
            data = load_slices([path], args.resolution)
            out += [(data.sources[i], (data.images[i, 0].numpy() + 1) / 2) for i in range(len(data.sources))]
        return out
    data = load_slices([args.heldout], args.resolution)
    chosen = sorted(set(pick_slices(data.images, args.slices)))
    return [(data.sources[i], (data.images[i, 0].numpy() + 1) / 2) for i in chosen]


def engine_kspace(x, kw) -> tuple[np.ndarray, np.ndarray]:
    """The engine's own measurement of this run, in the units of x: (complex k-space [H, W] = M ⊙ (F_c x + n), mask)."""
    from napari_brgm.engine.reconstruction import prepare

    prep = prepare(x, task="kspace", **(kw | {"method": "dip"}))  # dip: no prior to load; same mask and noise
    y = to_complex(prep.problem.y)[0, 0].cpu().numpy().astype(np.complex128)  # model units
    imap, (h, w) = prep.imap, y.shape
    k = (imap.width / 2) * y  # F_c(a·m + b) = a·F_c(m) + b·√(HW)·δ_DC, DC at (H//2, W//2)
    sampled = prep.problem.operator.sampled.cpu().numpy().astype(bool)
    k[h // 2, w // 2] += imap.centre * np.sqrt(h * w) * sampled[h // 2, w // 2]
    return k, sampled


def blurred(x, sigma, noise, seed) -> np.ndarray:
    """x blurred circularly by the deblur task's Gaussian PSF of σ px, plus seeded Gaussian noise of std `noise`."""
    from napari_brgm.operators import Blur

    op = Blur.of("gaussian", float(sigma))
    y = op.forward(torch.from_numpy(x.astype(np.float32))[None, None])[0, 0].numpy().astype(np.float64)
    if noise > 0:
        y = y + noise * np.random.default_rng(seed).standard_normal(y.shape)
    return y.astype(np.float32)


def scores(est, truth, prefix="") -> dict:
    rng = float(truth.max() - truth.min())
    return {f"{prefix}psnr": M.psnr(est, truth, rng), f"{prefix}ssim": M.ssim(est, truth, rng)}


def uq(r, truth, seed) -> dict:
    """Coverage of Result.lower/upper over all pixels and Spearman ρ(σ̂, |e|) (and ρ_ref) of a sampling method."""
    if r.std is None:
        return {}
    err = r.mean.astype(np.float64) - truth
    info = r.settings["interval"]
    return {"coverage": M.coverage(truth, r.lower, r.upper), "rho": M.spearman(r.std, err),
            "rho_ref": M.reference_spearman(r.std, None, seed), "width": M.interval_width(r.lower, r.upper),
            "calibrated": bool(info.get("calibrated")), "samples": len(r.samples)}


def run_kspace(name, j, x, R, mask, methods, priors, args, baselines) -> list[dict]:
    """Every method (and, if asked, the baselines) on one slice at one (R, mask) setting."""
    kw = dict(acceleration=R, mask_type=mask, mask_seed=args.mask_seed + j, seed=args.seed, window=WINDOW,
              kspace_noise=args.kspace_noise, steps=args.steps, samples=args.samples)
    k, sampled = engine_kspace(x, kw)
    info = {"R_eff": x.shape[1] / int(sampled[0].sum()), "lines": int(sampled[0].sum()), "mask_seed": kw["mask_seed"]}
    if args.kspace_noise == 0:
        ref = np.where(sampled, fft2c_np(x.astype(np.float64)), 0)
        assert np.abs(k - ref).max() < 1e-4 * np.abs(ref).max(), "the engine's k-space is not M ⊙ F_c x"
    base = {"task": "kspace", "image": name, "R": R, "mask": mask, "sigma": args.kspace_noise, **info}
    out = []
    if baselines:
        t0 = time.perf_counter()
        out.append(base | {"method": "zero-filled", "seconds": time.perf_counter() - t0,
                           **scores(zero_filled(k, sampled), x)})
        for lam in args.tv_lams:
            t0 = time.perf_counter()
            est = tv_kspace(k, sampled, lam, iterations=args.tv_iterations, real=True)
            out.append(base | {"method": f"TV λ={lam:g}", "lam": lam, "seconds": time.perf_counter() - t0,
                               **scores(est, x)})
    for spec in methods:
        opts = spec_options(spec)
        t0 = time.perf_counter()
        r = reconstruct(x, task="kspace", prior=priors.get(PRIOR_KINDS[opts["method"]]), interval=args.level,
                        **kw, **opts)
        secs = time.perf_counter() - t0
        assert np.array_equal(r.sampling_mask, sampled), "the run's mask differs from the measurement's"
        if args.kspace_noise == 0:
            assert np.abs(r.zero_filled - zero_filled(k, sampled)).max() < 1e-4, "Result.zero_filled differs"
        out.append(base | {"method": spec, "seconds": secs, **scores(r.mean, x), **scores(r.consistent, x, "dc_"),
                           **uq(r, x, args.seed), "R_eff_engine": r.settings["kspace"]["effective_acceleration"]})
    return out


def run_deblur(name, j, x, sigma, methods, priors, args, baselines) -> list[dict]:
    y = blurred(x, sigma, args.deblur_noise, args.seed + j)
    base = {"task": "deblur", "image": name, "R": sigma, "mask": "gaussian", "sigma": args.deblur_noise}
    out = []
    if baselines:
        psf = gaussian_psf(sigma)
        for bal in args.wiener_balances:
            t0 = time.perf_counter()
            out.append(base | {"method": f"Wiener b={bal:g}", "lam": bal, "seconds": time.perf_counter() - t0,
                               **scores(wiener_deblur(y, psf, bal), x)})
        for it in args.rl_iterations:
            t0 = time.perf_counter()
            out.append(base | {"method": f"RL {it} it", "lam": it, "seconds": time.perf_counter() - t0,
                               **scores(richardson_lucy_deblur(y, psf, it), x)})
    for spec in methods:
        opts = spec_options(spec)
        t0 = time.perf_counter()
        r = reconstruct(y, task="deblur", psf="gaussian", psf_sigma=sigma, window=WINDOW, seed=args.seed,
                        steps=args.steps, samples=args.samples, interval=args.level,
                        sigma_y=args.deblur_noise if args.deblur_noise > 0 else None,
                        prior=priors.get(PRIOR_KINDS[opts["method"]]), **opts)
        out.append(base | {"method": spec, "seconds": time.perf_counter() - t0, **scores(r.mean, x),
                           **uq(r, x, args.seed)})
    return out


def mean_of(figs, key):
    vals = [f[key] for f in figs if f.get(key) is not None]
    return float(np.mean(vals)) if len(vals) == len(figs) and vals else None


def aggregate(per_slice: list[dict]) -> list[dict]:
    """Slice means per (task, image group, R, mask, σ, method); the TV / Wiener / RL sweeps reduced to their oracle
    row (best mean PSNR) plus the fixed-λ TV row."""
    groups: dict[tuple, list[dict]] = {}
    for f in per_slice:
        group = "OOD " + f["image"] if f.get("ood") else "held-out"
        groups.setdefault((f["task"], group, f["R"], f["mask"], f["sigma"], f["method"]), []).append(f)
    rows = []
    for (task, group, R, mask, sigma, method), figs in groups.items():
        row = {"task": task, "images": group, "R": R, "mask": mask, "sigma": sigma, "method": method, "n": len(figs)}
        for key in ("psnr", "ssim", "dc_psnr", "dc_ssim", "coverage", "rho", "rho_ref", "width", "seconds", "R_eff",
                    "lam"):
            row[key] = mean_of(figs, key)
        row["calibrated"] = any(f.get("calibrated") for f in figs)
        rows.append(row)
    out = []
    setting = lambda r: (r["task"], r["images"], r["R"], r["mask"], r["sigma"])  # noqa: E731
    for key in dict.fromkeys(setting(r) for r in rows):
        mine = [r for r in rows if setting(r) == key]
        for family, label in (("TV λ=", "TV oracle"), ("Wiener", "Wiener oracle"), ("RL ", "RL oracle")):
            sweep = [r for r in mine if r["method"].startswith(family)]
            if sweep:
                best = max(sweep, key=lambda r: r["psnr"])
                out.append(best | {"method": f"{label} ({best['method']})"})
        out += [r for r in mine if not r["method"].startswith(("TV λ=", "Wiener", "RL "))]
        out += [r | {"method": f"TV fixed ({r['method']})"} for r in mine
                if r["method"].startswith("TV λ=") and np.isclose(r["lam"], FIXED["tv"])]
    return out


FIXED = {"tv": 3e-3}


def fmt(v, digits=2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def print_table(rows: list[dict]) -> None:
    print("| images | task | R (R_eff) / PSF σ | mask | noise σ | method | n | PSNR dB | SSIM | DC PSNR | DC SSIM "
          "| cov90 | ρ(σ̂,|e|) (ρ_ref) | s/slice |\n" + "|---" * 14 + "|")
    for r in rows:
        setting = f"{r['R']:g} ({r['R_eff']:.2f})" if r["task"] == "kspace" else f"{r['R']:g}"
        rho = "–" if r["rho"] is None else f"{r['rho']:.2f} ({r['rho_ref']:.2f})"
        cov = "–" if r["coverage"] is None else fmt(r["coverage"], 3) + ("" if r["calibrated"] else "ᵘ")
        print(f"| {r['images']} | {r['task']} | {setting} | {r['mask']} | {r['sigma']:g} | {r['method']} | {r['n']} "
              f"| {fmt(r['psnr'])} | {fmt(r['ssim'], 3)} | {fmt(r['dc_psnr'])} | {fmt(r['dc_ssim'], 3)} | {cov} "
              f"| {rho} | {fmt(r['seconds'], 1)} |")


def print_targets(rows: list[dict]) -> None:
    """The issue's targets at R = 4 (k-space, held-out head): best prior method ≥ ZF + 4 dB and ≥ TV + 1 dB."""
    keys = dict.fromkeys((r["images"], r["mask"], r["sigma"]) for r in rows if r["task"] == "kspace" and r["R"] == 4)
    for images_, mask, sigma in keys:
        mine = [r for r in rows if r["task"] == "kspace" and r["R"] == 4 and (r["images"], r["mask"], r["sigma"])
                == (images_, mask, sigma)]
        zf = next((r for r in mine if r["method"] == "zero-filled"), None)
        tv = next((r for r in mine if r["method"].startswith("TV oracle")), None)
        learned = [r for r in mine if r["method"] != "zero-filled" and not r["method"].startswith("TV")]
        if not (zf and tv and learned):
            continue
        for key, label in (("psnr", "mean"), ("dc_psnr", "DC")):
            best = max(learned, key=lambda r: r[key])
            print(f"{images_}, R=4 {mask}, σ={sigma:g}, {label}: best {best['method']} {best[key]:.2f} dB; "
                  f"vs ZF {best[key] - zf['psnr']:+.2f} dB (target ≥ +4: {'met' if best[key] - zf['psnr'] >= 4 else 'NOT met'}), "
                  f"vs oracle TV {best[key] - tv['psnr']:+.2f} dB (target ≥ +1: "
                  f"{'met' if best[key] - tv['psnr'] >= 1 else 'NOT met'})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="brain-t1-64", help="StyleGAN2 prior (default brain-t1-64)")
    p.add_argument("--diffusion-prior", default="brain-t1-64-ddpm", help="diffusion prior of reddiff")
    p.add_argument("--flow-prior", default="brain-t1-64-glow", help="flow prior of flow")
    p.add_argument("--heldout", type=Path, default=HELD_OUT, help="held-out head (NIfTI), or any image load_slices reads")
    p.add_argument("--ood", action="store_true", help=f"evaluate on the out-of-distribution {' and '.join(OOD)} instead")
    p.add_argument("--slices", type=int, default=3, help="number of held-out slices (default 3)")
    p.add_argument("--methods", default=METHODS, help=f"method specs, comma-separated (default {METHODS}; '' = none)")
    p.add_argument("--no-baselines", action="store_true", help="skip ZF / TV (Wiener / RL): e.g. in a second process")
    p.add_argument("--tasks", default="kspace", help="kspace, deblur or both (default kspace)")
    p.add_argument("--accelerations", default="4,8", help="k-space accelerations R (default 4,8)")
    p.add_argument("--masks", default="random,equispaced", help="fastMRI mask types (default random,equispaced)")
    p.add_argument("--mask-seed", type=int, default=42, help="mask seed of slice j is this + j (default 42)")
    p.add_argument("--kspace-noise", type=float, default=0.0, help="k-space noise σ per real/imag part (units of x)")
    p.add_argument("--tv-lams", default="1e-3,3e-3,1e-2", help="TV λ sweep (default 1e-3,3e-3,1e-2)")
    p.add_argument("--tv-iterations", type=int, default=300)
    p.add_argument("--psf-sigmas", default="1,2", help="deblur: Gaussian PSF σ in px (default 1,2)")
    p.add_argument("--deblur-noise", type=float, default=0.01, help="deblur: noise std in units of x (default 0.01)")
    p.add_argument("--wiener-balances", default="1e-3,1e-2,1e-1", help="deblur: Wiener balance sweep")
    p.add_argument("--rl-iterations", default="10,30,100", help="deblur: Richardson-Lucy iteration sweep")
    p.add_argument("--steps", type=int, default=300, help="solver steps per stage (default 300)")
    p.add_argument("--samples", type=int, default=16, help="samples behind the std (default 16)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="write the arguments, rows and per-slice figures here (after each slice)")
    p.add_argument("--merge", type=Path, nargs="+", help="only print the table of these JSON files' per-slice figures")
    args = p.parse_args(argv)
    if args.merge:
        per_slice = [f for path in args.merge for f in json.loads(path.read_text())["per_slice"]]
        rows = aggregate(per_slice)
        print_table(rows)
        print()
        print_targets(rows)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    args.tv_lams = [float(v) for v in args.tv_lams.split(",")]
    FIXED["tv"] = 3e-3 if 3e-3 in args.tv_lams else args.tv_lams[0]
    args.wiener_balances = [float(v) for v in args.wiener_balances.split(",")]
    args.rl_iterations = [int(v) for v in args.rl_iterations.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    priors = {"stylegan2": args.prior, "diffusion": args.diffusion_prior, "flow": args.flow_prior}

    from napari_brgm.priors import load_prior

    used = {priors[k] for k in (PRIOR_KINDS[spec_options(m)["method"]] for m in methods) if k}
    sizes = {load_prior(u).img_resolution for u in used} or {64}
    if len(sizes) > 1:
        p.error(f"the priors have different resolutions {sorted(sizes)}")
    args.resolution = sizes.pop()
    slices = images(args)
    print(f"{'OOD' if args.ood else 'held-out ' + args.heldout.name}: {[n for n, _ in slices]} at {args.resolution} px; "
          f"{args.steps} steps, S = {args.samples}, seed {args.seed}, mask seeds {args.mask_seed}+j; methods {methods}",
          flush=True)
    per_slice = []
    t_start = time.perf_counter()
    for task in args.tasks.split(","):
        settings = ([(float(R), m) for R in args.accelerations.split(",") for m in args.masks.split(",")]
                    if task == "kspace" else [(float(s), None) for s in args.psf_sigmas.split(",")])
        for R, mask in settings:
            for j, (name, x) in enumerate(slices):
                if task == "kspace":
                    figs = run_kspace(name, j, x, R, mask, methods, priors, args, not args.no_baselines)
                else:
                    figs = run_deblur(name, j, x, R, methods, priors, args, not args.no_baselines)
                for f in figs:
                    f["ood"] = args.ood
                    print(f"  {task} {name} {R:g} {mask or ''} {f['method']}: {f['psnr']:.2f} dB / {f['ssim']:.3f}"
                          + (f", cov {f['coverage']:.3f} ρ {f['rho']:.2f}" if "coverage" in f else "")
                          + f" ({f['seconds']:.1f} s; total {time.perf_counter() - t_start:.0f} s)",
                          file=sys.stderr, flush=True)
                per_slice += figs
                if args.json:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "per_slice": per_slice}, indent=1))
    rows = aggregate(per_slice)
    print_table(rows)
    print()
    print_targets(rows)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "per_slice": per_slice}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
