"""`napari-brgm demo`: napari with the brain sample, the reconstruction widget, and two real runs.

`--sample brain_t1` (default) opens the sample brain (Colin27 T1 slab), then drives the dock
widget as a user would:
×4 super-resolution of a low-resolution version of the middle slice (the slice box-averaged to
a quarter of the prior's size, i.e. a simulated coarse acquisition) and inpainting of a painted
region of the slice itself, both variational (mean, samples, uncertainty) with the built-in
brain prior, offline; `--method reddiff` or `--method flow` runs the same two examples with the
built-in diffusion or flow prior instead. `--sample chest_xray` opens the chest X-ray and inpaints a lung field with
Deep Image Prior (no trained prior exists for X-rays). Layers are shown side by side (grid).
`--no-run` only opens the viewer.

Without a display (a server, CI) the demo re-runs itself under Xvfb and writes a screenshot PNG
instead of opening a window, so the main job always produces something to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLES = ("brain_t1", "chest_xray")
DEFAULT_PNG = Path("out") / "demo.png"
DEMO_METHODS = ("vi", "map", "reddiff", "flow")  # on the brain sample
RUN_TIMEOUT_S = 900


def register(sub) -> None:
    p = sub.add_parser("demo", help="open napari with the brain sample and the reconstruction widget (headless: write a PNG)")
    p.add_argument(
        "--screenshot",
        type=Path,
        metavar="PNG",
        help="render off-screen, save a screenshot of the window to PNG and exit",
    )
    p.add_argument("--method", choices=DEMO_METHODS, default="vi", help="method of the brain examples (default vi)")
    p.add_argument("--prior", help="prior for the runs (default: the built-in prior the method uses)")
    p.add_argument("--steps", type=int, default=300, help="steps per stage (default 300)")
    p.add_argument("--sample", choices=SAMPLES, default=SAMPLES[0], help="which sample to open (default brain_t1)")
    p.add_argument("--no-run", action="store_true", help="only open the sample and the widget")
    p.set_defaults(func=run)


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args) -> int:
    screenshot = args.screenshot
    if not args.no_run and args.sample == "brain_t1":
        from napari_brgm.engine.settings import PRIOR_KINDS
        from napari_brgm.priors import CheckpointError, default_prior, prior_kind

        kind = PRIOR_KINDS[args.method]
        args.prior = args.prior or default_prior(kind)
        try:
            if args.prior is None:
                raise CheckpointError(f"no built-in {kind} prior is installed")
            if prior_kind(args.prior) != kind:
                raise CheckpointError(f"a {prior_kind(args.prior)} prior; method {args.method} needs a {kind} prior")
        except CheckpointError as err:
            print(f"napari-brgm demo: cannot use prior {args.prior!r}: {err}", file=sys.stderr)
            return 1
    if not _has_display():
        png = screenshot or DEFAULT_PNG
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("napari-brgm demo: no display and no xvfb-run; install xvfb (apt-get install xvfb)", file=sys.stderr)
            return 2
        print(f"No display: rendering under Xvfb and writing {png}")
        cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", "napari_brgm.cli.main",
               "demo", "--screenshot", str(png), "--steps", str(args.steps), "--sample", args.sample,
               "--method", args.method] + (["--prior", str(args.prior)] if args.prior else [])
        return subprocess.call(cmd + (["--no-run"] if args.no_run else []))
    return _show(screenshot, args.sample, args.prior, args.steps, args.method, run_examples=not args.no_run)


def _show(screenshot: Path | None, sample: str, prior: str | None, steps: int, method: str,
          run_examples: bool = True) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-brgm demo")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-brgm", sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-brgm", "BRGM Reconstruction")
    viewer.reset_view()
    if run_examples:
        ok = (run_brain(viewer, widget, prior, steps, method) if sample == "brain_t1"
              else run_xray(viewer, widget, steps))
        if not ok and screenshot is not None:
            viewer.close()
            return 1
    if screenshot is None:
        napari.run()
        return 0
    for _ in range(20):
        QApplication.processEvents()
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(screenshot), canvas_only=False)
    viewer.close()
    print(f"wrote {screenshot}")
    return 0


def lowres_layer(viewer, brain, k: int, size: int):
    """Slice k of `brain` box-averaged by an integer factor F so that it fits size×size: a coarse acquisition.

    The layer sits exactly over the slice in world coordinates (scale × F, pixel centres moved).
    """
    import numpy as np
    import torch

    from napari_brgm.io.geometry import resampled_scale_translate
    from napari_brgm.operators import make_operator

    image = np.asarray(brain.data[k], dtype=np.float32)
    f = int(np.ceil(max(image.shape) / size))
    h, w = image.shape[0] // f, image.shape[1] // f
    crop = torch.from_numpy(np.ascontiguousarray(image[: h * f, : w * f]))[None, None]
    low = make_operator("superres", factor=f).forward(crop)[0, 0].numpy()  # the engine's box downsampling
    scale, translate = resampled_scale_translate(brain.scale[-2:], brain.translate[-2:], 1 / f)
    return viewer.add_image(low, name=f"{brain.name} z{k} coarse (1/{f})", scale=scale, translate=translate,
                            units=brain.units[-2:], colormap="gray",
                            metadata={"source": brain.metadata.get("source"), "downsampled_by": f})


def _wait(widget, timeout: float) -> bool:
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while widget.runs and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    return not widget.runs


def run_brain(viewer, widget, prior: str, steps: int, method: str = "vi") -> bool:
    """×4 SR of a coarse version of the middle slice, then inpainting of a region of the slice; both by `method`."""
    import numpy as np

    from napari_brgm.priors import load_prior

    try:
        resolution = load_prior(prior).img_resolution
    except Exception as err:  # no such prior: say so, keep the viewer
        print(f"napari-brgm demo: cannot use prior {prior!r}: {err}", file=sys.stderr)
        return False
    brain = viewer.layers[-1]
    k = brain.data.shape[0] // 2
    viewer.dims.set_current_step(0, k)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData(method))  # lists the priors of its kind
    if widget.prior_combo.findData(prior) < 0:
        widget.prior_combo.insertItem(0, Path(prior).name, prior)
    widget.prior_combo.setCurrentIndex(widget.prior_combo.findData(prior))
    widget.steps_spin.setValue(steps)
    if method == "reddiff":
        widget.samples_spin.setValue(8)  # seeds: each costs one denoiser pass per step

    low = lowres_layer(viewer, brain, k, resolution // 4)
    widget.image_combo.setCurrentText(low.name)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("superres"))
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(4))
    print(f"demo: ×4 super-resolution of {low.name} ({low.data.shape[0]}×{low.data.shape[1]} px), "
          f"{method}, prior {prior}")
    if not _run_and_arrange(viewer, widget):
        return False

    widget.image_combo.setCurrentText(brain.name)
    mask = widget.new_mask()
    h, w = brain.data.shape[-2:]
    region = np.zeros((h, w), dtype=mask.data.dtype)
    region[int(0.30 * h): int(0.55 * h), int(0.50 * w): int(0.80 * w)] = 1  # part of the patient's left hemisphere
    if mask.data.ndim == 3:
        mask.data[k] = region
    else:
        mask.data[:] = region
    mask.refresh()
    print(f"demo: inpainting of {region.sum()} px of {brain.name} z{k}")
    return _run_and_arrange(viewer, widget)


def run_xray(viewer, widget, steps: int) -> bool:
    """Deep Image Prior inpainting of an ellipse over the right lung field of the chest X-ray."""
    import numpy as np

    xray = viewer.layers[-1]
    widget.image_combo.setCurrentText(xray.name)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("dip"))
    widget.steps_spin.setValue(steps)
    mask = widget.new_mask()
    h, w = xray.data.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    lung = (((yy - 0.45 * h) / (0.17 * h)) ** 2 + ((xx - 0.30 * w) / (0.08 * w)) ** 2) < 1
    mask.data[..., :, :] = lung.astype(mask.data.dtype)
    mask.refresh()
    print(f"demo: Deep Image Prior inpainting of {int(lung.sum())} px of {xray.name}")
    return _run_and_arrange(viewer, widget)


def _run_and_arrange(viewer, widget) -> bool:
    run = widget.run()
    if run is None or not _wait(widget, RUN_TIMEOUT_S) or run.result is None:
        print("napari-brgm demo: the run did not finish (see the notification in the window)", file=sys.stderr)
        return False
    _arrange(viewer)
    return True


def _arrange(viewer) -> None:
    """Side by side: inputs, results (the data-consistent image for inpainting) and uncertainty maps."""
    def brgm(layer) -> dict:
        return layer.metadata.get("brgm", {}) if isinstance(layer.metadata, dict) else {}

    merged = {brgm(x).get("key") for x in viewer.layers if brgm(x).get("kind") == "consistent"}
    for layer in viewer.layers:
        kind, key = brgm(layer).get("kind"), brgm(layer).get("key")
        hidden = kind in ("samples", "map") or (kind == "mean" and key in merged) or layer.name.endswith("mask")
        layer.visible = not hidden
    viewer.grid.enabled = True
    viewer.grid.stride = 1
    viewer.reset_view()
