"""Deep Image Prior on the real chest X-ray sample against the classical baselines.

The sample (NEMA RG1, 977×920) is area-reduced to fit 256 px (the size DIP works at on a CPU);
that image is the truth. Tasks: ×4 super-resolution (box downsampling of the truth) against
bicubic interpolation, and inpainting of a lung-shaped region (an ellipse over the right lung
field, the patient's right = image left) against biharmonic inpainting. Bicubic interpolation is
also shown back-projected (made consistent with the measurement, as DIP + back-projection is).
PSNR / SSIM (MONAI, data range of the truth) over the whole image and PSNR over the missing region;
seconds per run. `--restarts R` averages R independently initialised DIP networks.

    python benchmarks/eval_xray_dip.py [--steps 1000 2000] [--restarts 4] [--tasks sr] [--json out/xray.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_brgm import reconstruct
from napari_brgm.engine.geometry import area_matrix
from napari_brgm.engine.metrics import psnr, ssim
from napari_brgm.io import load_image
from napari_brgm.io.samples import sample_path
from napari_brgm.operators import make_operator
from napari_brgm.solvers.classical import bicubic_upsample, biharmonic_inpaint

SIZE = 256


def truth_image() -> np.ndarray:
    img = load_image(sample_path("chest_xray_rg1.dcm")).data.astype(np.float64)
    img = img[0] if img.ndim == 3 else img
    h, w = img.shape
    s = SIZE / max(h, w)
    oh, ow = int(round(h * s)) // 16 * 16, int(round(w * s)) // 16 * 16
    return (area_matrix(h, oh) @ img @ area_matrix(w, ow).T).astype(np.float32)


def lung_mask(shape) -> np.ndarray:
    """An upright ellipse over the right lung field (image left): NONZERO = MISSING."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, ry, rx = 0.45 * h, 0.30 * w, 0.17 * h, 0.08 * w
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) < 1).astype(np.uint8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[1000], help="DIP step budgets to try")
    p.add_argument("--sigma-y", type=float, default=None, help="noise std in input units (early stop at σ_y²)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restarts", type=int, default=1, help="DIP networks averaged (each costs the steps again)")
    p.add_argument("--tasks", default="sr,inpaint", help="sr and/or inpaint (default both)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    truth = truth_image()
    mask = lung_mask(truth.shape)
    rng = float(truth.max() - truth.min())
    print(f"chest X-ray truth {truth.shape}, lung mask {int(mask.sum())} px; PSNR/SSIM with data range {rng:.0f}")
    print("| task | method | PSNR dB | SSIM | PSNR in region dB | seconds |\n|---|---|---|---|---|---|")
    rows = []

    def report(task, method, est, secs, region=None):
        row = {"task": task, "method": method, "psnr": psnr(est, truth, rng), "ssim": ssim(est, truth, rng),
               "seconds": secs}
        if region is not None:
            row["psnr_region"] = psnr(est[region][None], truth[region][None], rng)
        rows.append(row)
        reg = f"{row['psnr_region']:.2f}" if "psnr_region" in row else "–"
        print(f"| {task} | {method} | {row['psnr']:.2f} | {row['ssim']:.3f} | {reg} | {secs:.1f} |", flush=True)

    tasks = args.tasks.split(",")
    dip = f"DIP, {args.restarts} restarts ×" if args.restarts > 1 else "DIP"
    sr = make_operator("superres", factor=4)
    y = sr.forward(torch.from_numpy(truth)[None, None])[0, 0].numpy()

    def back_projected(x: np.ndarray) -> np.ndarray:
        return sr.back_project(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None], 0.0)[0, 0].numpy()

    if "sr" in tasks:
        t = time.perf_counter()
        report("SR ×4", "bicubic", bicubic_upsample(y, 4), time.perf_counter() - t)
        t = time.perf_counter()
        report("SR ×4", "bicubic + back-projection", back_projected(bicubic_upsample(y, 4)), time.perf_counter() - t)
    for steps in args.steps if "sr" in tasks else []:
        t = time.perf_counter()
        r = reconstruct(y, task="superres", factor=4, method="dip", steps=steps, seed=args.seed,
                        restarts=args.restarts, sigma_y=args.sigma_y, early_stop=args.sigma_y is not None)
        secs = time.perf_counter() - t
        report("SR ×4", f"{dip} {steps} steps", r.mean, secs)
        report("SR ×4", f"{dip} {steps} steps + back-projection", back_projected(r.mean), secs)
    region = mask != 0
    if "inpaint" in tasks:
        t = time.perf_counter()
        report("lung inpainting", "biharmonic", biharmonic_inpaint(truth, mask), time.perf_counter() - t, region)
    for steps in args.steps if "inpaint" in tasks else []:
        t = time.perf_counter()
        r = reconstruct(np.where(region, 0, truth), task="inpaint", mask=mask, method="dip", steps=steps,
                        seed=args.seed, restarts=args.restarts, sigma_y=args.sigma_y,
                        early_stop=args.sigma_y is not None)
        report("lung inpainting", f"{dip} {steps} steps", r.consistent, time.perf_counter() - t, region)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
