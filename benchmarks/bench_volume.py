"""Volume runs: slices batched through the generator versus slice by slice, on the built-in 64 px prior.

    python benchmarks/bench_volume.py                  # 8 slices, MAP and VI, 201 steps
    python benchmarks/bench_volume.py --slices 16 --steps 501

The slices are axial planes of the Colin27 sample slab at 4 mm (×4 super-resolution). Each
configuration runs in the same process, alternating, so machine load affects them alike.
Prints seconds per slice, the speed-up over slice by slice and the largest difference of the
batched mean from the serial one (mean and largest) (float rounding grows through Adam: expect a small fraction
of the intensity range, not zero).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_brgm.engine.volume import reconstruct_volume
from napari_brgm.io import load_image
from napari_brgm.io.samples import BRAIN_T1, sample_path


def low_res_slab(n: int) -> np.ndarray:
    """n central axial slices of the sample slab, box-averaged to 4 mm in-plane."""
    data = load_image(sample_path(BRAIN_T1)).data
    k0 = data.shape[0] // 2 - n // 2
    d = data[k0 : k0 + n, :216, :180]
    return d.reshape(n, 54, 4, 45, 4).mean(axis=(2, 4)).astype(np.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--steps", type=int, default=201)
    p.add_argument("--methods", default="map,vi")
    p.add_argument("--batches", default="1,4,8")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 on a busy machine)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    vol = low_res_slab(args.slices)
    reconstruct_volume(vol[:1], task="superres", factor=4, method="map", steps=2)  # load the prior once
    import torch

    print(f"{args.slices} slices {vol.shape[1:]} → ×4, {args.steps} steps per stage, {torch.get_num_threads()} threads")
    print("| method | batch | s / slice | speed-up | mean |Δ mean| / range | max |Δ mean| / range |")
    print("|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        ref = serial_s = None
        for batch in (int(b) for b in args.batches.split(",")):
            t = time.perf_counter()
            vr = reconstruct_volume(vol, task="superres", factor=4, method=method, steps=args.steps, samples=16,
                                    batch=batch)
            seconds = (time.perf_counter() - t) / args.slices
            if ref is None:
                ref, serial_s = vr.mean, seconds
            diff = np.abs(vr.mean - ref) / np.ptp(ref)
            print(f"| {method} | {batch} | {seconds:.2f} | {serial_s / seconds:.2f}× | {diff.mean():.4f} | "
                  f"{diff.max():.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
