"""Make the shipped OOD references of the built-in priors (`<prior>.ood.json`, engine/ood.py).

    python tools/ood_reference.py [--step 2] [--data runs/brain-t1-data] [--check]

Reference slices: the CORONAL and SAGITTAL planes of the two training heads (tools/brain_t1_data.py),
the planes the shipped calibration uses (tools/calibrate_builtin.py), every `--step`-th usable slice
(the calibration CLI's rule: at least 25 % tissue). Every view (the slice, SR ×2-×16 measurements,
inpainting with the calibration masks of each missing-fraction bin, denoising at each noise level)
is scored by the built-in flow, and the 99th percentile per view becomes its threshold. All three
built-in priors were trained on the same axial slices, so they share the flow as scorer and these
thresholds. Cheap (about two minutes on one core): it re-runs no reconstruction. `--check` only
prints the thresholds of the shipped files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

SCORER = "brain-t1-64-glow"
PLANES = ("coronal", "sagittal")


def views(resolution: int) -> list[str]:
    """Every view a run of a built-in prior can be judged by."""
    from napari_brgm.engine.calibration import MISSING_FRACTION_BINS
    from napari_brgm.engine.ood import NOISE_LEVELS

    factors = [f for f in (2, 4, 8, 16) if resolution % f == 0]
    return ["image", *(f"sr{f}" for f in factors), *(f"inpaint {b}" for b in MISSING_FRACTION_BINS),
            *(f"denoise {s:g}" for s in NOISE_LEVELS)]


def reference_slices(volumes, resolution: int, step: int) -> tuple[np.ndarray, list[str]]:
    """Usable coronal and sagittal slices (model units) of the volumes, every `step`-th, and their names."""
    from napari_brgm.cli.calibrate import MIN_FOREGROUND
    from napari_brgm.training.data import load_slices

    images, sources = [], []
    for plane in PLANES:
        data = load_slices(volumes, resolution, plane=plane)
        lo = data.images.amin(dim=(1, 2, 3), keepdim=True)
        foreground = ((data.images - lo) > 0.2).float().mean(dim=(1, 2, 3)).numpy()
        usable = np.flatnonzero(foreground >= MIN_FOREGROUND)[::step]
        images += [data.images[i, 0].numpy() for i in usable]
        sources += [data.sources[i] for i in usable]
    return np.stack(images), sources


def main() -> int:
    from brain_t1_data import gather

    from napari_brgm.engine import ood
    from napari_brgm.priors import builtin_priors
    from napari_brgm.priors.glow import load_flow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", type=int, default=2, help="use every step-th usable slice (default 2)")
    ap.add_argument("--check", action="store_true", help="print the shipped thresholds and stop")
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "brain-t1-data",
                    help="tools/brain_t1_data.py's folder (made when missing)")
    args = ap.parse_args()
    priors = builtin_priors()
    if args.check:
        for name, path in priors.items():
            ref = ood.load_reference(ood.reference_path(path))
            print(name, {v: round(e["threshold"], 3) for v, e in ref["views"].items()})
        return 0
    import torch

    torch.set_num_threads(1)
    flow = load_flow(SCORER)
    data = sorted((args.data / "train").glob("*.nii.gz")) or gather(args.data)["train"]
    slices, sources = reference_slices(data, flow.img_resolution, args.step)
    print(f"{len(slices)} reference slices ({', '.join(PLANES)}) of {', '.join(p.name for p in data)}")
    scored = {}
    for view in views(flow.img_resolution):
        started = time.perf_counter()
        scored[view] = ood.reference_scores(flow, slices, view)
        print(f"{view}: threshold {ood.threshold_of(scored[view]):.3f} (median {np.median(scored[view]):.3f}, "
              f"n {len(scored[view])}, {time.perf_counter() - started:.0f} s)", flush=True)
    for name, path in priors.items():
        ref = ood.make_reference(path, priors[SCORER], scored, scorer_name=SCORER, data_kind="real-unseen-plane",
                                 sources=sorted({s.split("[")[0] for s in sources}))
        ood.save_reference(ood.reference_path(path), ref, merge=False)
        print(f"wrote {ood.reference_path(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
