"""`napari-brgm reconstruct`: super-resolution, inpainting or denoising of one slice from the terminal.

Writes into --out: mean.nii.gz, std.nii.gz and lower/upper.nii.gz (the central interval; methods
with samples), samples.nii.gz (4-D: one volume per sample),
consistent.nii.gz (inpainting), panel.png (input, mean, std heatmap, a few samples) and
summary.json (settings, timings, final losses). NIfTI outputs keep the input's geometry (a
super-resolved slice sits on a grid `factor`× finer over the same field of view). Ctrl-C stops
the optimisation and still writes the partial result.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from napari_brgm.engine.methods import METHOD_SPECS, METHODS
from napari_brgm.engine.options import OptionInfo, describe
from napari_brgm.engine.tasks import TASK_SPECS, TASKS


def _registered_options() -> dict[str, list[tuple[str, OptionInfo]]]:
    """Option name → (task or method, its field) for every task and method that has it."""
    found: dict[str, list[tuple[str, OptionInfo]]] = {}
    for specs in (TASK_SPECS, METHOD_SPECS):
        for owner, spec in specs.items():
            for info in describe(spec.options):
                found.setdefault(info.name, []).append((owner, info))
    return found


OPTIONS = _registered_options()


def _option_help(found: list[tuple[str, OptionInfo]]) -> str:
    """'csgm, iagan: <help> (default 4); dip: <help> (default 1)': the owners that share a help text together.

    A default of None is not repeated: the help says what None stands for.
    """
    by_help: dict[tuple[str, str], list[str]] = {}
    for owner, info in found:
        by_help.setdefault((info.help, "" if info.default is None else f" (default {info.default_text})"),
                           []).append(owner)
    text = "; ".join(f"{', '.join(owners)}: {help}{default}" for (help, default), owners in by_help.items())
    return text.replace("%", "%%")


def _add_option_flags(p: argparse.ArgumentParser) -> None:
    """A flag for each task and method option (dest: the option's name), present in args only when given."""
    group = p.add_argument_group("options of a task or a method",
                                 "accepted with that task or method only (tables in docs/engine.md)")
    for name, found in OPTIONS.items():
        info = found[0][1]
        kwargs = dict(dest=name, default=argparse.SUPPRESS, help=_option_help(found))
        if info.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = info.type
            if info.choices is not None:
                kwargs["choices"] = [c for c in info.choices if c is not None]
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def register(sub) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct a slice (super-resolution, inpainting, denoising)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="DICOM file or series folder, NIfTI volume or PNG")
    p.add_argument("--task", choices=TASKS, default="superres",
                   help="; ".join(f"{name}: {spec.description}" for name, spec in TASK_SPECS.items()))
    p.add_argument("--factor", type=int, default=4, help="super-resolution factor (2-32, divides the prior size)")
    p.add_argument("--mask", type=Path, help="inpainting mask image, same size as the slice; nonzero = MISSING")
    p.add_argument("--prior", help="built-in prior name or checkpoint path (.safetensors, StyleGAN2(-ADA) .pkl) "
                   "of the kind the method needs (default: the built-in one); not used by --method dip")
    p.add_argument("--method", choices=METHODS, default="map",
                   help="; ".join(f"{name}: {spec.description}" for name, spec in METHOD_SPECS.items()))
    p.add_argument("--back-project", action="store_true",
                   help="post-step x + A+(y - Ax): the result reproduces the measurement where observed")
    p.add_argument("--bp-eta", type=float, default=0.0, help="regularised back-projection eta (default 0: exact)")
    p.add_argument("--steps", type=int, default=501, help="optimisation steps per stage (default: 501, as BRGM)")
    p.add_argument("--samples", type=int, default=16,
                   help="samples for the std: VI/flow posterior samples, reddiff seeds, dip iterates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slice", type=int, dest="slice_index", help="axial slice of a volume (default: the middle)")
    p.add_argument("--sigma-y", type=float, help="measurement noise std in input units (default: 2.5%% of range)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--interval", type=float, choices=(0.8, 0.9, 0.95), default=0.9,
                   help="level of the central interval written as lower/upper.nii.gz (methods with samples)")
    p.add_argument("--calibration", help="calibration file of the prior (default: <prior>.calibration.json beside "
                   "it, if any; 'none': uncalibrated); made by napari-brgm calibrate")
    p.add_argument("--self-check", action="store_true", help="inpainting: a second run with 10%% of the observed "
                   "pixels hidden reports their coverage (a check without ground truth)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    _add_option_flags(p)
    p.set_defaults(func=run)


def describe_interval(info: dict) -> str:
    """One line on a run's interval: its level and calibration."""
    level = f"{info['level']:.0%} interval"
    if info["calibrated"]:
        return f"{level} calibrated with {Path(info['calibration']).name} ({info['match']}, {info['data_kind']})"
    return f"{level} uncalibrated ({info['reason']}): mean ± {info['multiplier']:.2f}·std"


def _slice_of(image, k: int | None):
    """Slice k (default: the middle) as a one-slice volume (1, y, x) that keeps its world position.

    A 2-D image is treated as the one-slice volume it is, so every output is written the same way.
    """
    if image.data.ndim == 2:
        image = replace(image, data=image.data[None], metadata={**image.metadata, "shape": [1, *image.data.shape]})
    depth = image.data.shape[0]
    return image.slice(depth // 2 if k is None else k)


def _mask_of(path: Path, shape, k: int | None):
    from napari_brgm.io import load_image

    data = load_image(path).data
    if data.ndim == 3:
        data = data[0] if data.shape[0] == 1 else data[data.shape[0] // 2 if k is None else k]
    if data.shape != shape:
        raise ValueError(f"mask {path} has shape {data.shape}, the slice has {shape}")
    return data != 0


def run(args) -> int:
    from napari_brgm.engine.settings import OptionError
    from napari_brgm.io import ReadError
    from napari_brgm.priors import CheckpointError

    try:
        return _run(args)
    except (ReadError, CheckpointError, OptionError, ValueError, FileNotFoundError) as exc:
        print(f"napari-brgm reconstruct: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import signal

    import numpy as np
    from tqdm import tqdm

    from napari_brgm.cli.panel import write_panel
    from napari_brgm.engine import reconstruct
    from napari_brgm.engine.ood import screen, warning_text
    from napari_brgm.io import load_image, save_nifti

    image = load_image(args.input)
    geometry = _slice_of(image, args.slice_index)
    data = geometry.data[0]
    mask = _mask_of(args.mask, data.shape, args.slice_index) if args.mask else None
    if args.task == "inpaint" and mask is None:
        raise ValueError("--task inpaint needs --mask MASK (nonzero = missing)")

    interrupted = False

    def on_sigint(*_):
        nonlocal interrupted
        interrupted = True

    bars: dict[str, tqdm] = {}

    def progress(p):
        bar = bars.get(p.stage)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[p.stage] = tqdm(total=p.total, desc=p.stage.upper(), unit="step", leave=True)
        bar.update(p.step - bar.n)
        bar.set_postfix(loss=f"{p.loss:.4g}", refresh=False)

    pre = screen(data, args.prior, method=args.method, task=args.task, factor=args.factor, mask=mask,
                 sigma_y=args.sigma_y)  # the out-of-distribution flag, before the run
    if pre["ok"] is False:
        print(f"warning: {warning_text(pre)}: the result may be confident nonsense", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = reconstruct(data, task=args.task, factor=args.factor, mask=mask, prior=args.prior,
                             method=args.method, steps=args.steps, samples=args.samples, seed=args.seed,
                             device=args.device, progress=progress, should_stop=lambda: interrupted,
                             sigma_y=args.sigma_y, back_project=args.back_project, bp_eta=args.bp_eta,
                             interval=args.interval, calibration=args.calibration, self_check=args.self_check,
                             **{name: getattr(args, name) for name in OPTIONS if hasattr(args, name)})
    finally:
        signal.signal(signal.SIGINT, previous)
        for bar in bars.values():
            bar.close()

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    factor = result.settings["factor"]
    grid = geometry.resampled(result.mean[None], factor) if factor > 1 else geometry
    written = [save_nifti(out / "mean.nii.gz", result.mean[None], grid)]
    if result.std is not None:
        written.append(save_nifti(out / "std.nii.gz", result.std[None], grid))
    written.append(save_nifti(out / "samples.nii.gz", result.samples[:, None], grid))
    if result.lower is not None:
        written.append(save_nifti(out / "lower.nii.gz", result.lower[None], grid))
        written.append(save_nifti(out / "upper.nii.gz", result.upper[None], grid))
    if result.consistent is not None:
        written.append(save_nifti(out / "consistent.nii.gz", result.consistent[None], grid))
    written.append(write_panel(out / "panel.png", data, result, mask))
    summary = {
        "input": str(args.input),
        "slice": geometry.metadata["slice_of"]["index"],
        "partial": result.partial,
        "settings": result.settings,
        "final_losses": {k: v[-1] for k, v in result.losses.items() if v},
        "outputs": [p.name for p in written],
        "mean_range": [float(np.min(result.mean)), float(np.max(result.mean))],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    state = "partial result (interrupted)" if result.partial else "done"
    print(f"{state}: wrote {', '.join(p.name for p in written)} and summary.json to {out}")
    if result.std is not None:
        print(describe_interval(result.settings["interval"]))
    check = result.settings["interval"].get("self_check")
    if check and check["coverage"] is not None:
        print(f"self-check: {check['coverage']:.0%} of {check['pixels']} hidden observed pixels inside the interval"
              + ("" if check["ok"] else " — below 80 %: the intervals look too narrow for this image"))
    ood = result.settings["in_distribution"]
    if ood["ok"] is False and pre["ok"] is not False:
        print(f"warning: {warning_text(ood)}: the result may be confident nonsense", file=sys.stderr)
    return 0
