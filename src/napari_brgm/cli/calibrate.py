"""`napari-brgm calibrate`: fit a prior's interval calibration on your own images (conformal, per pixel group).

Simulates the task on slices of DATA (SR: box-averaged slices; inpainting: masks of every
missing-fraction bin; denoising: seeded noise of --sigma-y), runs the method as `reconstruct`
does, and merges one record per level (80, 90, 95 %) into --out, by default
`<prior>.calibration.json` beside a prior file, which later runs pick up by themselves. Use
images the prior was NOT trained on. Ctrl-C stops after the current run and fits what is done.
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_brgm.cli.reconstruct import OPTIONS, _add_option_flags
from napari_brgm.engine.calibration import STRATA
from napari_brgm.engine.methods import METHODS
from napari_brgm.engine.tasks import TASKS

PLANES = ("axial", "coronal", "sagittal")
MIN_FOREGROUND = 0.25  # slices with less tissue than this (mostly air) are not used


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="calibrate a prior's uncertainty intervals on your own images",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", type=Path, help="NIfTI volumes, DICOM series folders or 2-D images "
                   "(ground truth; not images the prior was trained on)")
    p.add_argument("--prior", help="built-in prior name or prior file (default: the built-in one of the method)")
    p.add_argument("--method", choices=METHODS, default="vi")
    p.add_argument("--task", choices=TASKS, default="superres")
    p.add_argument("--factor", type=int, default=4, help="super-resolution factor")
    p.add_argument("--plane", default="axial", help="slice plane(s) of volumes: axial, coronal, sagittal, or a "
                   "comma-separated list (e.g. coronal,sagittal)")
    p.add_argument("--slices", type=int, default=30, help="slices used per plane, spread over the usable ones (a "
                   "larger number keeps the slices of a smaller one, so a --cache grows)")
    p.add_argument("--steps", type=int, default=501)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sigma-y", type=float, help="noise std of denoising, in the slices' units (model units after "
                   "per-slice percentile scaling; default 0.1)")
    p.add_argument("--bins", help="inpainting: missing-fraction bins to calibrate, comma-separated (default all: "
                   "'<=25%%,25-50%%,>50%%')")
    p.add_argument("--data-kind", default="real-heldout", help="label stored with the records")
    p.add_argument("--out", type=Path, help="calibration file (default: <prior>.calibration.json beside the prior)")
    p.add_argument("--strata", type=int, default=STRATA, help="σ̂ strata per pixel group, each with its own λ "
                   "(default %(default)s: quartiles; 1: one λ per group)")
    p.add_argument("--cache", type=Path, help="folder keeping every run's mean and std: an interrupted or "
                   "enlarged calibration reuses them, a refit (--strata) runs nothing again")
    _add_option_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from napari_brgm.io import ReadError
    from napari_brgm.priors import CheckpointError

    try:
        return _run(args)
    except (ReadError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"napari-brgm calibrate: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import itertools
    import signal

    import numpy as np
    from tqdm import tqdm

    from napari_brgm.engine.calibrate import calibrate, spread_order
    from napari_brgm.engine.methods import PRIOR_KINDS
    from napari_brgm.engine.reconstruction import _resolve_prior
    from napari_brgm.engine.uncertainty import calibration_path
    from napari_brgm.priors import load_prior
    from napari_brgm.training.data import load_slices

    kind = PRIOR_KINDS[args.method]
    prior_path = None if kind is None else _resolve_prior(args.prior, kind)
    out = args.out or (calibration_path(prior_path) if prior_path is not None else None)
    if out is None:
        raise ValueError("--method dip has no prior file to sit beside: give --out")
    resolution = load_prior(prior_path).img_resolution if prior_path is not None else 64
    picked = []  # per plane: (image, source) in spread order
    for plane in args.plane.split(","):
        if plane not in PLANES:
            raise ValueError(f"--plane: {plane!r} is not one of {PLANES}")
        data = load_slices(args.data, resolution, plane=plane)
        lo = data.images.amin(dim=(1, 2, 3), keepdim=True)
        foreground = ((data.images - lo) > 0.2).float().mean(dim=(1, 2, 3))  # 10 % of the [-1, 1] range
        usable = np.flatnonzero(foreground.numpy() >= MIN_FOREGROUND)
        if not len(usable):
            raise ValueError(f"no {plane} slice of {', '.join(map(str, args.data))} has {MIN_FOREGROUND:.0%} tissue")
        pick = usable[spread_order(len(usable), args.slices)]
        picked.append([(data.images[i, 0].numpy(), data.sources[i]) for i in pick])
    # the planes interleaved, so that more --slices appends images and keeps each one's index (and seed)
    pairs = [p for row in itertools.zip_longest(*picked) for p in row if p is not None]
    images, sources = [p[0] for p in pairs], [p[1] for p in pairs]
    bins = {}
    if args.bins:
        from napari_brgm.engine.calibrate import MASK_SHAPES

        bins["bins"] = tuple(b.strip() for b in args.bins.split(","))
        if unknown := [b for b in bins["bins"] if b not in MASK_SHAPES]:
            raise ValueError(f"--bins: unknown {unknown}; choose from {', '.join(MASK_SHAPES)}")
    sigma_y = args.sigma_y if args.sigma_y is not None or args.task != "denoise" else 0.1
    interrupted = False

    def on_sigint(*_):
        nonlocal interrupted
        interrupted = True

    bar = tqdm(desc="calibration runs", unit="run")

    def progress(i, n, text):
        bar.total = n
        bar.update(i - bar.n)
        bar.set_postfix_str(text, refresh=False)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        options = {name: getattr(args, name) for name in OPTIONS if hasattr(args, name)}
        _, records = calibrate(images, prior=None if prior_path is None else str(prior_path), method=args.method,
                               task=args.task, factor=args.factor, steps=args.steps, samples=args.samples,
                               seed=args.seed, sigma_y=sigma_y, data_kind=args.data_kind, sources=sources, out=out,
                               strata=args.strata, cache=args.cache,
                               progress=progress, should_stop=lambda: interrupted, **bins, **options)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    for rec in records:
        lams = ", ".join(f"{g} {v:.2f}" for g, v in rec.lambdas.items())
        where = rec.key.get("factor") or rec.key.get("missing_fraction_bin") or ""
        loo = ", ".join(f"{g} {v:.3f}" for g, v in rec.notes["leave_one_out"].get("groups", {}).items())
        print(f"{rec.key['task']} {where} level {rec.key['level']:.2f}: λ {lams} "
              f"(n {min(rec.n_images.values())} slices; leave-one-out coverage {loo or 'not measured: too few'})")
    print(f"wrote {len(records)} records to {out}" + (" (interrupted: fitted the runs done)" if interrupted else ""))
    return 0
