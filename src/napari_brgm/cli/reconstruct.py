"""`napari-brgm reconstruct`: super-resolution, inpainting or denoising of a slice or a volume from the terminal.

Writes into --out: mean.nii.gz, std.nii.gz and lower/upper.nii.gz (the central interval; methods
with samples), samples.nii.gz (one slice: 4-D, one volume per sample), consistent.nii.gz
(inpainting), panel.png (input, mean, std heatmap, a few samples) and summary.json (settings,
timings, final losses). NIfTI outputs keep the input's geometry (a super-resolved slice sits on
a grid `factor`× finer over the same field of view). With --slices (all, K or A:B along --axis)
every slice is written to --out/slices/ as it finishes; Ctrl-C stops, writes the volumes of what
is done (unfinished slices NaN), and a rerun with the same --out continues where it stopped.
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
    add_request_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    _add_option_flags(p)
    p.set_defaults(func=run)


def add_request_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of one request (task, method, prior, slices, formats...): shared by `reconstruct` and `batch`."""
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
    p.add_argument("--slice", type=int, dest="slice_index", help="one axial slice of a volume (default: the middle)")
    p.add_argument("--slices", help="volumes: reconstruct slices all, K or A:B (B excluded) along --axis and write "
                   "them as a volume (resumable)")
    p.add_argument("--axis", choices=("z", "y", "x"), default="z",
                   help="with --slices: the axis the slices are perpendicular to (default z, the stored slices)")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out made with other parameters "
                   "(--slices) and existing DICOM series instead of refusing")
    p.add_argument("--format", choices=("nifti", "dicom", "both"), dest="out_format",
                   help="outputs as NIfTI, as DICOM derived series (--out/dicom/<kind>/) or both (default: DICOM "
                   "for DICOM input, else NIfTI)")
    p.add_argument("--dicom-uncertainty", choices=("auto", "image", "pm", "both", "none"), default="auto",
                   help="how DICOM output stores the std: a derived image, a float Parametric Map, both, none "
                   "(auto: both for MR/CT, image otherwise)")
    p.add_argument("--sigma-y", type=float, help="measurement noise std in input units (default: 2.5%% of range)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--interval", type=float, choices=(0.8, 0.9, 0.95), default=0.9,
                   help="level of the central interval written as lower/upper.nii.gz (methods with samples)")
    p.add_argument("--calibration", help="calibration file of the prior (default: <prior>.calibration.json beside "
                   "it, if any; 'none': uncalibrated); made by napari-brgm calibrate")
    p.add_argument("--self-check", action="store_true", help="inpainting: a second run with 10%% of the observed "
                   "pixels hidden reports their coverage (a check without ground truth)")
    p.add_argument("--nonfinite", choices=("refuse", "missing"), default="refuse",
                   help="NaN/inf pixels in the input: refuse (default; the message says how many and where) or, "
                   "for inpainting, treat them as missing (they join --mask, which may then be omitted)")


# Python-API spellings of flags whose argparse dest differs
_ALIASES = {"format": "out_format", "slice": "slice_index"}


def request_args(input, out, **options) -> argparse.Namespace:
    """The Namespace `napari-brgm reconstruct INPUT --out OUT` would build, with `options` (flag dests) applied.

    Defaults are the command line's; an unknown option is a ValueError naming it.
    """
    parser = argparse.ArgumentParser(prog="napari-brgm")
    register(parser.add_subparsers())
    args = parser.parse_args(["reconstruct", str(input), "--out", str(out)])
    known = {a.dest for a in parser._subparsers._group_actions[0].choices["reconstruct"]._actions} - {"help"}
    for name, value in options.items():
        dest = _ALIASES.get(name, name)
        if dest not in known or dest in ("input", "out"):
            raise ValueError(f"unknown reconstruct option {name!r}")
        if value is None and dest in OPTIONS:
            continue  # a method option left unset stays absent, as on the command line
        if dest in ("mask", "input") and value is not None:
            value = Path(value)
        setattr(args, dest, value)
    return args


def describe_interval(info: dict) -> str:
    """One line on a run's interval: its level and calibration."""
    from napari_brgm.engine.uncertainty import strata_text

    level = f"{info['level']:.0%} interval"
    if info["calibrated"]:
        return (f"{level} calibrated with {Path(info['calibration']).name} ({info['match']}, {info['data_kind']}"
                f"{strata_text(info)})")
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
    except (ReadError, CheckpointError, OptionError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"napari-brgm reconstruct: {exc}", file=sys.stderr)
        return 2


def _progress_bars(volume: bool = False):
    """(progress callback, close): a bar per stage's steps, and one over the slices for a volume run."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(p):
        if volume:
            outer = bars.get("slices")
            if outer is None:
                outer = bars["slices"] = tqdm(total=p.slices_total, desc="SLICES", unit="slice", position=0)
            outer.update(p.slices_done - outer.n)
            flight = p.slices_in_flight
            outer.set_postfix_str(f"z{flight[0]}" + (f"-{flight[-1]}" if len(flight) > 1 else ""), refresh=False)
        key = f"{p.stage}:{p.slices_in_flight}"
        bar = bars.get(key)
        if bar is None:
            for name in [n for n in bars if n != "slices"]:
                bars.pop(name).close()
            bar = bars[key] = tqdm(total=p.total, desc=p.stage.upper(), unit="step", leave=not volume,
                                   position=1 if volume else 0)
        bar.update(p.step - bar.n)
        if p.loss == p.loss:  # the Laplace stage reports no loss (NaN)
            bar.set_postfix(loss=f"{p.loss:.4g}", refresh=False)

    def close(done: int | None = None):
        if done is not None and "slices" in bars:
            bars["slices"].update(done - bars["slices"].n)
        for bar in bars.values():
            bar.close()

    return progress, close


def _interrupt_flag():
    """(should_stop, restore): Ctrl-C sets the flag instead of raising, so the run ends cleanly."""
    import signal

    state = {"stop": False}

    def on_sigint(*_):
        state["stop"] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    return (lambda: state["stop"]), (lambda: signal.signal(signal.SIGINT, previous))


def _engine_options(args) -> dict:
    """The keyword options `reconstruct` / `reconstruct_volume` take from the command line."""
    return dict(task=args.task, factor=args.factor, prior=args.prior, method=args.method, steps=args.steps,
                samples=args.samples, seed=args.seed, device=args.device, sigma_y=args.sigma_y,
                back_project=args.back_project, bp_eta=args.bp_eta, interval=args.interval,
                calibration=args.calibration, self_check=args.self_check, nonfinite=args.nonfinite,
                **{name: getattr(args, name) for name in OPTIONS if hasattr(args, name)})


def _run(args, interactive: bool = True) -> int:
    """One `reconstruct` request; `interactive=False` (a batch item on a worker thread): no progress bars,
    no Ctrl-C handler (signals belong to the main thread), nothing printed. Errors are raised."""
    from napari_brgm.io import load_image

    if args.slices is not None and args.slice_index is not None:
        raise ValueError("give --slice K (one slice) or --slices (a volume), not both")
    image = load_image(args.input)
    if args.slices is not None:
        return _run_volume(args, image, interactive)
    return _run_slice(args, image, interactive)


def _quiet(*_args, **_kwargs) -> None:
    pass


def _session(interactive: bool, volume: bool = False):
    """(progress, should_stop, done): bars and the Ctrl-C flag in a terminal, none of them for a batch item."""
    if not interactive:
        return None, None, (lambda *_: None)
    progress, close = _progress_bars(volume=volume)
    should_stop, restore = _interrupt_flag()

    def done(*a):
        restore()
        close(*a)

    return progress, should_stop, done


def _run_slice(args, image, interactive: bool = True) -> int:
    say = print if interactive else _quiet
    import numpy as np

    from napari_brgm.cli.panel import write_panel
    from napari_brgm.engine import nonfinite, reconstruct
    from napari_brgm.engine.ood import screen
    from napari_brgm.io import save_nifti

    geometry = _slice_of(image, args.slice_index)
    data = geometry.data[0]
    mask = _mask_of(args.mask, data.shape, args.slice_index) if args.mask else None
    nonfinite.check_choice(args.nonfinite, args.task)
    # before the out-of-distribution screen: the non-finite pixels are refused, or join the mask
    data, mask = nonfinite.resolve(data, mask, args.nonfinite, args.task,
                                   what=f"slice {geometry.metadata['slice_of']['index']} of {args.input}")
    if args.task == "inpaint" and mask is None:
        raise ValueError("--task inpaint needs --mask MASK (nonzero = missing)"
                         + ("; the slice has no NaN/inf pixels for --nonfinite missing to mark"
                            if args.nonfinite == "missing" else ""))

    pre = {"ok": None}
    if interactive:  # the out-of-distribution flag, before the run
        pre = screen(data, args.prior, method=args.method, task=args.task, factor=args.factor, mask=mask,
                     sigma_y=args.sigma_y)
        _warn_ood(pre)
    progress, should_stop, done = _session(interactive)
    try:
        result = reconstruct(data, mask=mask, progress=progress, should_stop=should_stop, **_engine_options(args))
    finally:
        done()

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    factor = result.settings["factor"]
    grid = geometry.resampled(result.mean[None], factor) if factor > 1 else geometry
    formats = _formats(args, image)
    written = []
    if "nifti" in formats:
        outputs = {"mean": result.mean, "std": result.std, "lower": result.lower, "upper": result.upper,
                   "consistent": result.consistent, "zero_filled": result.zero_filled}
        written = [save_nifti(out / f"{name}.nii.gz", a[None], grid) for name, a in outputs.items() if a is not None]
        written.append(save_nifti(out / "samples.nii.gz", result.samples[:, None], grid))
    if result.sampling_mask is not None:  # k-space grid (centred, DC in the middle), not the image's geometry
        np.save(out / "sampling_mask.npy", result.sampling_mask)
        written.append(out / "sampling_mask.npy")
    written.append(write_panel(out / "panel.png", data, result, mask))
    if "dicom" in formats:
        outputs = {name: getattr(result, name)[None] for name in DICOM_KINDS if getattr(result, name) is not None}
        written += _write_dicom(args, image, outputs, 0, [geometry.metadata["slice_of"]["index"]], result.settings)
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
    say(f"{state}: wrote {', '.join(p.name for p in written)} and summary.json to {out}")
    if result.std is not None:
        say(describe_interval(result.settings["interval"]))
    check = result.settings["interval"].get("self_check")
    if check and check["coverage"] is not None:
        what = (f"{check['entries']} hidden k-space values (re, im)" if check.get("space") == "k-space"
                else f"{check['pixels']} hidden observed pixels")
        say(f"self-check: {check['coverage']:.0%} of {what} inside the interval"
            + ("" if check["ok"] else " — below 80 %: the intervals look too narrow for this image"))
    if interactive:
        if pre["ok"] is not False:  # not said twice
            _warn_ood(result.settings["in_distribution"])
        _warn_detail(result.settings)
    return 0


DICOM_KINDS = ("mean", "consistent", "std", "lower", "upper")


def _formats(args, image) -> set[str]:
    """The output formats: as asked, else DICOM for a DICOM input and NIfTI for the others."""
    fmt = args.out_format or ("dicom" if image.metadata.get("format", "").startswith("dicom") else "nifti")
    return {"nifti", "dicom"} if fmt == "both" else {fmt}


def _write_dicom(args, image, arrays: dict, axis: int, slices: list[int], settings: dict) -> list[Path]:
    """The outputs (planes first, input units) as DICOM derived series in --out/dicom/<kind>/; their folders."""
    from napari_brgm.io.dicom_out import describe_run, write_dicom
    from napari_brgm.io.slice_store import params_hash

    outputs = {name: arrays[name] for name in DICOM_KINDS if name in arrays}
    factor = args.factor if args.task == "superres" else 1
    description = describe_run(settings) | {"factor": factor}
    run_id = params_hash({"input": str(Path(args.input).resolve()), "axis": axis, "slices": slices,
                          "settings": {k: v for k, v in settings.items() if k not in ("timings", "device_used")}})
    written = write_dicom(args.out / "dicom", image, outputs, factor=factor, axis=axis, slices=slices,
                          description=description, run_id=run_id, uncertainty=args.dicom_uncertainty,
                          overwrite=args.overwrite)
    return [args.out / "dicom" / kind for kind in written]


def _warn_detail(settings: dict) -> None:
    """Say when the input was reduced to fit the prior: the result has at most the prior's resolution."""
    from napari_brgm.engine.geometry import detail_lost

    note = detail_lost(settings.get("fit"))
    if note is not None:
        print(f"note: {note}", file=sys.stderr)


def _warn_ood(ood: dict) -> None:
    from napari_brgm.engine.ood import warning_text

    text = warning_text(ood)
    if text is not None:
        print(f"warning: {text}: the result may be confident nonsense", file=sys.stderr)


def _volume_mask(path: Path | None):
    """An inpainting mask for a volume run: the volume's shape, or one slice's (used for every slice)."""
    if path is None:
        return None
    from napari_brgm.io import load_image

    return load_image(path).data


def _run_volume(args, image, interactive: bool = True) -> int:
    import numpy as np

    say = print if interactive else _quiet
    warn = (lambda text: print(text, file=sys.stderr)) if interactive else _quiet
    from napari_brgm.engine.volume import AXES, parse_slices, reconstruct_volume
    from napari_brgm.io import save_nifti
    from napari_brgm.io.slice_store import KINDS, SliceStore

    volume = image.data if image.data.ndim == 3 else image.data[None]
    if image.data.ndim == 2:
        image = replace(image, data=volume, metadata={**image.metadata, "shape": list(volume.shape)})
    axis = AXES[args.axis]
    chosen = parse_slices(args.slices, volume.shape[axis])
    mask = _volume_mask(args.mask)
    if args.task == "inpaint" and mask is None and args.nonfinite != "missing":
        raise ValueError("--task inpaint needs --mask MASK (nonzero = missing)")
    options = _engine_options(args)
    params = {"input": str(Path(args.input).resolve()), "axis": args.axis, "mask": None if args.mask is None
              else str(Path(args.mask).resolve())} | {k: v for k, v in options.items() if k != "self_check"
                                                     and (k, v) != ("nonfinite", "refuse")}  # runs made before it
    store = SliceStore(args.out / "slices", params, overwrite=args.overwrite)
    before = [k for k in store.done() if k in chosen]
    todo = [k for k in chosen if k not in before]
    if before:
        say(f"{args.out}: {len(before)} of {len(chosen)} slices already done with these parameters"
              + ("; continuing with the rest" if todo else "; nothing left to run"))
    partial = False
    if todo:
        progress, should_stop, finished_run = _session(interactive, volume=True)
        try:
            vr = reconstruct_volume(volume, axis=axis, slices=todo, mask=mask, progress=progress,
                                    should_stop=should_stop, on_slice=store.save, **options)
        finally:
            finished_run(None)
        partial = vr.partial

    factor = args.factor if args.task == "superres" else 1
    done = store.done()
    finished = [k for k in chosen if k in done]
    arrays: dict[str, np.ndarray] = {}
    settings: dict[int, dict] = {}
    plane = tuple(n * factor for n in np.delete(np.asarray(volume.shape), axis))
    for i, k in enumerate(chosen):
        if k not in done:
            continue
        outputs, settings[k] = store.load(k)
        for name, value in outputs.items():
            arrays.setdefault(name, np.full((len(chosen), *plane), np.nan, np.float32))[i] = value
    if not arrays:
        warn("interrupted before the first slice was finished: nothing written")
        return 130
    grid = image.slab(np.moveaxis(arrays["mean"], 0, axis), axis, chosen, factor)
    formats = _formats(args, image)
    written = [save_nifti(args.out / f"{name}.nii.gz", np.moveaxis(arrays[name], 0, axis), grid)
               for name in KINDS if name in arrays and "nifti" in formats]
    reconstructed = [k for k in finished if "copied" not in settings[k]]
    first = settings[reconstructed[0]] if reconstructed else {}
    if "dicom" in formats:
        if len(finished) < len(chosen):
            warn("DICOM output waits for every slice: rerun with the same --out to finish it")
        else:
            written += _write_dicom(args, image, arrays, axis, chosen, first)
    summary = {"input": str(args.input), "axis": args.axis, "slices": chosen, "done": finished,
               "partial": len(finished) < len(chosen),
               "copied": {k: settings[k]["copied"] for k in finished if "copied" in settings[k]},
               "settings": first, "slice_settings": {str(k): settings[k] for k in finished},
               "outputs": [p.name for p in written]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    state = "partial result (interrupted; rerun to continue)" if summary["partial"] else "done"
    say(f"{state}: {len(finished)}/{len(chosen)} slices; wrote {', '.join(p.name for p in written)} and "
          f"summary.json to {args.out}")
    if first.get("interval", {}).get("multiplier") is not None or first.get("interval", {}).get("calibrated"):
        say(describe_interval(first["interval"]))
    flagged = [k for k in reconstructed if settings[k].get("in_distribution", {}).get("ok") is False]
    if flagged:
        warn(f"warning: {len(flagged)} slice(s) look unlike the prior's images (e.g. z{flagged[0]}): "
             "the result may be confident nonsense there")
    if interactive:
        _warn_detail(first)
    return 130 if partial else 0
