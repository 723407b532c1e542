"""Items per minute: `napari-brgm batch` (1 worker × 2 threads, 2 workers × 1 thread) vs a shell loop.

    python benchmarks/bench_batch.py                     # 6 items, MAP, 101 steps, built-in prior
    python benchmarks/bench_batch.py --items 12 --steps 201 --configs loop,loop1,1x2,2x1

Items are single axial slices of the Colin27 sample slab at 4 mm (×4 super-resolution onto the
built-in 64 px prior), written as NIfTI files. Every configuration is timed as the command a user
would type (a fresh process: torch import, cluster start-up and prior loading included), in the
same run, so the ratios compare like with like; the loop is `napari-brgm reconstruct` once per
item, serially, with torch's default threads (`loop`) or OMP_NUM_THREADS=1 (`loop1`; on a loaded
machine OpenMP's spinning threads can make the default much slower). Prints items/minute per configuration and the ratio to the shell loop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_brgm.io import load_image, save_nifti
from napari_brgm.io.samples import BRAIN_T1, sample_path


def make_items(folder: Path, n: int) -> list[Path]:
    image = load_image(sample_path(BRAIN_T1))
    data = image.data
    k0 = data.shape[0] // 2 - n // 2
    affine = np.diag([4.0, 4.0, 1.0, 1.0])
    paths = []
    for i in range(n):
        plane = data[k0 + i, :216, :180].reshape(54, 4, 45, 4).mean(axis=(1, 3)).astype(np.float32)
        paths.append(save_nifti(folder / f"slice{i:02d}.nii.gz", plane[None], affine))
    return paths


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_brgm.cli.main", *args]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=6)
    p.add_argument("--steps", type=int, default=101)
    p.add_argument("--method", default="map")
    p.add_argument("--configs", default="loop,loop1,1x2,2x1",
                   help="comma list of loop, loop1 (one thread) and WxT (workers × threads)")
    args = p.parse_args(argv)
    request = ["--method", args.method, "--steps", str(args.steps), "--device", "cpu"]
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = make_items(tmp, args.items)
        for config in args.configs.split(","):
            out = tmp / f"out-{config}"
            started = time.perf_counter()
            if config.startswith("loop"):
                env = os.environ | ({"OMP_NUM_THREADS": "1"} if config == "loop1" else {})
                for item in items:
                    subprocess.run(_cli("reconstruct", str(item), *request, "--out", str(out / item.stem)),
                                   check=True, capture_output=True, env=env)
            else:
                w, t = config.split("x")
                done = subprocess.run(_cli("batch", *map(str, items), *request, "--out", str(out), "--workers", w,
                                           "--threads-per-worker", t), capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
            seconds = time.perf_counter() - started
            rates[config] = args.items / seconds * 60
            print(f"{config:>5}: {seconds:7.1f} s for {args.items} items = {rates[config]:6.2f} items/min", flush=True)
    base = rates.get("loop")
    print(f"\n{'config':>9} {'items/min':>10} {'vs loop':>8}")
    for config, rate in rates.items():
        ratio = f"{rate / base:.2f}×" if base else "-"
        label = {"loop": "loop", "loop1": "loop 1 t"}.get(config) or f"{config[0]} w × {config[-1]} t"
        print(f"{label:>9} {rate:10.2f} {ratio:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
