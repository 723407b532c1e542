"""Make the shipped calibration files of the built-in priors, for every sampling method.

    python tools/calibrate_builtin.py [--methods vi,iagan+vi,dip,reddiff,flow] [--tasks sr4,sr8,center,half,...]
                                      [--slices N] [--steps N] [--jobs 2] [--merge-only]

Calibration images: CORONAL and SAGITTAL slices of the two training heads (MNI152, Colin27;
`tools/brain_t1_data.py`), `--slices` per plane (default: the method's, below). The priors were
trained on their axial slices only, so these are images they have not seen, though of the same
subjects (optimistic: docs/evaluation.md measures the bias on the held-out ITK head, which is never
used here). Each (method, task) runs `napari-brgm calibrate` in its own process (one torch thread
each) into runs/calibration/<method>-<task>.json, and the records are merged into the method's file.
Every run is kept in runs/calibration/cache (`calibrate --cache`): a killed job resumes where it
stopped, a larger --slices adds slices to those done, and a refit (strata, levels) runs nothing again.

  method     prior (file in src/napari_brgm/priors/builtin/)   steps  slices/plane  s/run (1 thread)
  vi         brain-t1-64.calibration.json                       501    15            23
  iagan+vi   brain-t1-64.calibration.json (method iagan)        201    5             32
  dip        dip.calibration.json (no prior; found for every DIP run)  501  15     11
  reddiff    brain-t1-64-ddpm.calibration.json                  201    5             58
  flow       brain-t1-64-glow.calibration.json                  201    8             30

Steps: RED-Diff costs ~115 s per slice at 501 steps on one thread, so the costly methods are
calibrated at 201 steps; a run with other steps uses the record of the nearest steps (the match
text says so, `settings["interval"]["match"]`). Tasks: sr4, sr8, denoise (σ_y 0.2 in model units,
as for VI), and inpainting by missing-fraction bin: `center` = the "<=25%" bin, `half` = "25-50%",
`border` = ">50%" (`inpaint` = all three), and undersampled k-space `k4`, `k8` (random fastMRI
masks, a new mask per slice). The shipped files were made with the commands in
docs/evaluation.md ("Uncertainty: coverage of the intervals"); fewer than 30 images per key (the costly
methods) make CRC conservative.
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
         "inpaint": ["--task", "inpaint"], "center": ["--task", "inpaint", "--bins", "<=25%"],
         "half": ["--task", "inpaint", "--bins", "25-50%"], "border": ["--task", "inpaint", "--bins", ">50%"],
         "denoise": ["--task", "denoise", "--sigma-y", "0.2"],
         "k4": ["--task", "kspace", "--acceleration", "4"], "k8": ["--task", "kspace", "--acceleration", "8"]}
# method spec → (built-in prior name or None, `napari-brgm calibrate` method flags, default steps, slices per plane)
METHODS = {"vi": ("brain-t1-64", ["--method", "vi"], 501, 15),
           "iagan+vi": ("brain-t1-64", ["--method", "iagan", "--iagan-vi"], 201, 5),
           "dip": (None, ["--method", "dip"], 501, 15),
           "reddiff": ("brain-t1-64-ddpm", ["--method", "reddiff"], 201, 5),
           "flow": ("brain-t1-64-glow", ["--method", "flow"], 201, 8)}


def target_file(spec: str) -> Path:
    from napari_brgm.engine.uncertainty import builtin_dip_calibration, calibration_path
    from napari_brgm.priors import builtin_priors

    name = METHODS[spec][0]
    return builtin_dip_calibration() if name is None else calibration_path(builtin_priors()[name])


def main() -> int:
    from brain_t1_data import gather

    from napari_brgm.engine.calibration import CalibrationFile
    from napari_brgm.priors import builtin_priors

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="vi", help=f"any of {','.join(METHODS)} (default vi)")
    ap.add_argument("--tasks", default="inpaint,sr4,sr8,denoise", help=f"any of {','.join(TASKS)}")
    ap.add_argument("--slices", type=int, help="per plane (coronal, sagittal); default: the method's")
    ap.add_argument("--steps", type=int, help="default: the method's (table above)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "calibration")
    ap.add_argument("--merge-only", action="store_true", help="only merge the per-task files already in --work")
    args = ap.parse_args()
    specs, tasks = args.methods.split(","), args.tasks.split(",")
    if bad := [s for s in specs if s not in METHODS] + [t for t in tasks if t not in TASKS]:
        ap.error(f"unknown method or task {bad}")
    data = gather(ROOT / "runs" / "brain-t1-data")["train"]
    args.work.mkdir(parents=True, exist_ok=True)
    running, parts = [], {}
    for spec in specs:
        name, flags, steps, slices = METHODS[spec]
        prior = ["--prior", str(builtin_priors()[name])] if name else []
        for task in tasks:
            part = args.work / f"{spec}-{task}.json"
            parts.setdefault(spec, []).append(part)
            if args.merge_only:
                continue
            cmd = [sys.executable, "-m", "napari_brgm.cli.main", "calibrate", *map(str, data), *prior, *flags,
                   "--steps", str(args.steps or steps), "--plane", "coronal,sagittal",
                   "--slices", str(args.slices or slices), "--out", str(part), "--data-kind", "real-unseen-plane",
                   "--cache", str(args.work / "cache"),
                   *TASKS[task]]
            while len(running) >= args.jobs:  # wait for any job to end
                time.sleep(5)
                running = [p for p in running if p.poll() is None]
            log = open(args.work / f"{spec}-{task}.log", "w")
            running.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            env=os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}))
    for p in running:
        p.wait()
    status = 0
    for spec, files in parts.items():
        target = target_file(spec)
        merged = CalibrationFile.load(target) if target.is_file() else None
        for part in files:
            if not part.is_file():
                print(f"{part.name}: missing (see its .log)", file=sys.stderr)
                status = 1
                continue
            found = CalibrationFile.load(part)
            if merged is not None and merged.prior_sha256 != found.prior_sha256:
                print(f"{part.name}: for prior {found.prior_sha256[:12]}…, not {target.name}'s", file=sys.stderr)
                status = 1
                continue
            merged = merged or CalibrationFile(found.prior_sha256, METHODS[spec][0] or "dip (no prior)", [])
            for record in found.records:
                merged.merge(record)
        if merged is not None:
            merged.save(target)
            print(f"{spec}: {len(merged.records)} records in {target}")
    return status


if __name__ == "__main__":
    sys.exit(main())
