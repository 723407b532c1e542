"""Held-out evaluation of the brain priors: learned methods against classical baselines.

On axial slices of the held-out head (prepared exactly like the training slices: 64×64, each
slice mapped to [-1, 1] by the engine's percentile rule), for SR ×4, SR ×8 (box downsampling of
the truth), inpainting with a central square and a half mask, and denoising (Gaussian noise of
std 0.1 × the slice's range, seeded), it prints PSNR / SSIM (MONAI, data range of the truth) and
seconds per slice for each method, and for methods with samples the Pearson correlation between
the std and the absolute error (over the missing pixels for inpainting, the whole image
otherwise). Inpainting scores are on the data-consistent images. Each method uses the prior of
its kind: --prior (StyleGAN2: map, vi, csgm, iagan), --diffusion-prior (reddiff), --flow-prior
(flow); dip needs none. --heldout takes any file `load_slices` reads (a 2-D DICOM gives one
slice): use it for out-of-distribution data such as a head CT.

    python benchmarks/eval_brain_prior.py --prior runs/brain-t1-64/brain-t1-64.safetensors
    python benchmarks/eval_brain_prior.py --methods map,vi,csgm,iagan,iagan+bp,dip --tasks sr4,half --json out/eval.json
    python benchmarks/eval_brain_prior.py --methods map,vi,dip,reddiff,flow --tasks sr4,half,denoise
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from brain_t1_data import HELD_OUT  # noqa: E402

from napari_brgm import reconstruct  # noqa: E402
from napari_brgm.engine.metrics import psnr, ssim  # noqa: E402
from napari_brgm.operators import make_operator  # noqa: E402
from napari_brgm.engine.settings import PRIOR_KINDS  # noqa: E402
from napari_brgm.solvers.classical import bicubic_upsample, biharmonic_inpaint, nlm_denoise  # noqa: E402
from napari_brgm.training.data import load_slices  # noqa: E402

TASKS = {"sr4": ("superres", 4), "sr8": ("superres", 8), "center": ("inpaint", "center"), "half": ("inpaint", "half"),
         "denoise": ("denoise", 0.1)}
CLASSICAL = {"superres": "bicubic", "inpaint": "biharmonic", "denoise": "nlm"}


def masks(r: int) -> dict[str, np.ndarray]:
    """NONZERO = MISSING. center: the central square of side r/2; half: the right half of the image
    (the patient's left in radiological display)."""
    center = np.zeros((r, r), np.uint8)
    center[r // 4: 3 * r // 4, r // 4: 3 * r // 4] = 1
    half = np.zeros((r, r), np.uint8)
    half[:, r // 2:] = 1
    return {"center": center, "half": half}


def downsample(x: np.ndarray, factor: int) -> np.ndarray:
    op = make_operator("superres", factor=factor)
    return op.forward(torch.from_numpy(x)[None, None])[0, 0].numpy()


def pick_slices(images: torch.Tensor, count: int) -> list[int]:
    """`count` slices evenly spaced over the middle 60% of the head (skull base to vertex excluded)."""
    n = images.shape[0]
    return [int(round(v)) for v in np.linspace(0.2 * (n - 1), 0.8 * (n - 1), count)]


def method_options(spec: str) -> dict:
    """"map", "vi", "csgm", "iagan", "dip", with suffixes "+bp" (back-projection) and "+vi" (IAGAN then VI)."""
    name, *extras = spec.split("+")
    options = {"method": name}
    for extra in extras:
        if extra == "bp":
            options["back_project"] = True
        elif extra == "vi" and name == "iagan":
            options["iagan_vi"] = True
        else:
            raise ValueError(f"unknown method suffix +{extra} in {spec!r}")
    return options


def noisy_copy(truth: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, float]:
    """truth + Gaussian noise of std fraction × (max − min), seeded; and that std."""
    sigma = fraction * float(truth.max() - truth.min())
    rng = np.random.default_rng(seed)
    return (truth + sigma * rng.standard_normal(truth.shape)).astype(np.float32), sigma


def run_one(truth, task, arg, method, prior, steps, samples, seed):
    """(estimate, std or None, seconds) for one slice, task and method spec."""
    t0 = time.perf_counter()
    if task == "denoise":
        noisy, sigma = noisy_copy(truth, arg, seed)
        if method == "nlm":
            return nlm_denoise(noisy, sigma), None, time.perf_counter() - t0
        r = reconstruct(noisy, task="denoise", prior=prior, steps=steps, samples=samples, seed=seed, sigma_y=sigma,
                        **method_options(method))
        return r.mean, r.std, time.perf_counter() - t0
    if task == "superres":
        y = downsample(truth, arg)
        if method == "bicubic":
            return bicubic_upsample(y, arg), None, time.perf_counter() - t0
        r = reconstruct(y, task="superres", factor=arg, prior=prior, steps=steps, samples=samples, seed=seed,
                        **method_options(method))
        return r.mean, r.std, time.perf_counter() - t0
    mask = masks(truth.shape[0])[arg]
    if method == "biharmonic":
        return biharmonic_inpaint(truth, mask), None, time.perf_counter() - t0
    r = reconstruct(np.where(mask != 0, 0, truth), task="inpaint", mask=mask, prior=prior, steps=steps,
                    samples=samples, seed=seed, **method_options(method))
    return r.consistent, r.std, time.perf_counter() - t0


def write_json(path: Path, args, rows: list, per_slice: list) -> None:
    """The run's arguments, its table rows and every per-slice figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                "per_slice": per_slice}, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="brain-t1-64", help="StyleGAN2 prior: built-in name or path (default brain-t1-64)")
    p.add_argument("--diffusion-prior", default="brain-t1-64-ddpm", help="diffusion prior of reddiff (default brain-t1-64-ddpm)")
    p.add_argument("--flow-prior", default="brain-t1-64-glow", help="flow prior of flow (default brain-t1-64-glow)")
    p.add_argument("--heldout", type=Path, default=HELD_OUT, help="held-out head (NIfTI), or any image to test on")
    p.add_argument("--slices", type=int, default=6, help="number of held-out slices (default 6)")
    p.add_argument("--methods", default="map,vi", help="learned methods, comma-separated (default map,vi)")
    p.add_argument("--tasks", default="sr4,sr8,center,half", help=f"any of {','.join(TASKS)}")
    p.add_argument("--steps", type=int, default=300, help="solver steps per stage (default 300)")
    p.add_argument("--samples", type=int, default=16, help="samples behind the std (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write all per-slice figures here")
    args = p.parse_args(argv)

    from napari_brgm.priors import load_prior

    priors = {"stylegan2": args.prior, "diffusion": args.diffusion_prior, "flow": args.flow_prior}
    methods = args.methods.split(",")
    used = {priors[kind] for kind in (PRIOR_KINDS[method_options(m)["method"]] for m in methods) if kind}
    sizes = {load_prior(p).img_resolution for p in used} or {64}
    if len(sizes) > 1:
        p.error(f"the priors have different resolutions {sorted(sizes)}")
    resolution = sizes.pop()
    data = load_slices([args.heldout], resolution)
    chosen = sorted(set(pick_slices(data.images, args.slices)))
    print(f"priors {sorted(used)} ({resolution} px); held-out {args.heldout.name}: slices "
          f"{[data.sources[i] for i in chosen]}; {args.steps} steps per stage")
    print("| task | method | PSNR dB | SSIM | seconds | corr(std, abs error) |\n|---|---|---|---|---|---|")
    rows, per_slice = [], []
    for key in args.tasks.split(","):
        task, arg = TASKS[key]
        for method in [CLASSICAL[task], *methods]:
            kind = PRIOR_KINDS.get(method_options(method)["method"])
            figs = []
            for i in chosen:
                truth = data.images[i, 0].numpy()
                est, std, secs = run_one(truth, task, arg, method, priors.get(kind), args.steps, args.samples,
                                         args.seed)
                rec = {"task": key, "method": method, "slice": data.sources[i], "psnr": psnr(est, truth),
                       "ssim": ssim(est, truth), "seconds": secs}
                if std is not None:
                    err = np.abs(est - truth)
                    region = masks(truth.shape[0])[arg] != 0 if task == "inpaint" else np.ones_like(err, bool)
                    rec["std_error_corr"] = float(np.corrcoef(std[region], err[region])[0, 1])
                figs.append(rec)
            per_slice += figs
            row = {"task": key, "method": method, **{k: float(np.mean([f[k] for f in figs]))
                                                   for k in ("psnr", "ssim", "seconds")}}
            if "std_error_corr" in figs[0]:
                row["std_error_corr"] = float(np.mean([f["std_error_corr"] for f in figs]))
            rows.append(row)
            corr = f"{row['std_error_corr']:.2f}" if "std_error_corr" in row else "–"
            print(f"| {key} | {method} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['seconds']:.1f} | {corr} |",
                  flush=True)
    if args.json:
        write_json(args.json, args, rows, per_slice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
