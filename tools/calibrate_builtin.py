"""Make the shipped calibration file of the built-in StyleGAN2 prior (VI with its default Laplace posterior).

    python tools/calibrate_builtin.py [--tasks inpaint,sr4,sr8,denoise] [--slices 15] [--jobs 2] [--merge-only]

Calibration images: CORONAL and SAGITTAL slices of the two training heads (MNI152, Colin27;
`tools/brain_t1_data.py`), `--slices` per plane. The prior was trained on their axial slices only,
so these are images it has not seen, though of the same subjects (optimistic: docs/evaluation.md
measures the bias on the held-out ITK head, which is never used here). Each task runs
`napari-brgm calibrate` in its own process (one torch thread each) into runs/calibration/, and the
records are merged into src/napari_brgm/priors/builtin/brain-t1-64.calibration.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

TASKS = {"sr4": ["--task", "superres", "--factor", "4"], "sr8": ["--task", "superres", "--factor", "8"],
         "inpaint": ["--task", "inpaint"], "denoise": ["--task", "denoise", "--sigma-y", "0.2"]}


def main() -> int:
    from brain_t1_data import gather

    from napari_brgm.engine.calibration import CalibrationFile
    from napari_brgm.engine.uncertainty import calibration_path
    from napari_brgm.priors import builtin_priors

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--slices", type=int, default=15, help="per plane (coronal, sagittal)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "calibration")
    ap.add_argument("--merge-only", action="store_true", help="only merge the per-task files already in --work")
    args = ap.parse_args()
    data = gather(ROOT / "runs" / "brain-t1-data")["train"]
    prior = builtin_priors()["brain-t1-64"]
    args.work.mkdir(parents=True, exist_ok=True)
    running, parts = [], []
    for task in args.tasks.split(","):
        part = args.work / f"{task}.json"
        parts.append(part)
        if args.merge_only:
            continue
        cmd = [sys.executable, "-m", "napari_brgm.cli.main", "calibrate", *map(str, data), "--prior", str(prior),
               "--method", "vi", "--plane", "coronal,sagittal", "--slices", str(args.slices), "--out", str(part),
               "--data-kind", "real-unseen-plane", *TASKS[task]]
        while len(running) >= args.jobs:  # wait for any job to end
            time.sleep(5)
            running = [p for p in running if p.poll() is None]
        log = open(args.work / f"{task}.log", "w")
        running.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        env=os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}))
    for p in running:
        p.wait()
    target = calibration_path(prior)
    merged = CalibrationFile.load(target) if target.is_file() else None
    for part in parts:
        if not part.is_file():
            print(f"{part.name}: missing (see its .log)", file=sys.stderr)
            continue
        found = CalibrationFile.load(part)
        merged = merged or CalibrationFile(found.prior_sha256, "brain-t1-64", [])
        for record in found.records:
            merged.merge(record)
    if merged is None:
        return 1
    merged.save(target)
    print(f"{len(merged.records)} records in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
