"""docs/screenshot-uncertainty.png: the held-out head's right half painted missing, reconstructed in napari with VI.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot_uncertainty.py [--input FILE] [--slice K]

As a user would: napari opens the held-out ITK head (never seen in training or calibration) with our
reader, a Labels layer paints the right half of the displayed slice missing, and the widget runs
inpainting with BRGM VI (the Laplace posterior) with "Interval layers" ticked. The grid shows the
input, the posterior mean, the uncertainty (its name says calibrated and the level) and the lower and
upper ends of the 90 % interval. The script prints the widget's notification text and, against the
slice (known here), the coverage of the interval in the hole and outside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
HELD_OUT = ROOT / "runs" / "brain-t1-data" / "heldout" / "itk_kmeans_t1.nii.gz"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", type=Path, default=HELD_OUT, help="default: the held-out ITK head "
                   "(tools/brain_t1_data.py puts it there)")
    p.add_argument("--slice", type=int, default=None, help="z slice (default: the middle one)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot-uncertainty.png")
    args = p.parse_args(argv)

    from napari.utils.notifications import notification_manager
    from napari_shots import grid_screenshot, open_in_widget, run_widget

    from napari_brgm.engine.metrics import coverage

    viewer, source, k, widget = open_in_widget(args.input, args.slice)
    painted = np.zeros(source.data.shape, np.uint8)
    painted[k, :, painted.shape[2] // 2:] = 1  # the right half of the displayed slice: missing
    labels = viewer.add_labels(painted, name="missing", scale=source.scale, translate=source.translate,
                               units=source.units, axis_labels=source.axis_labels, opacity=0.3)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("inpaint"))
    widget.mask_combo.setCurrentText(labels.name)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.interval_check.setChecked(True)
    said = []
    notification_manager.notification_ready.connect(lambda n: said.append(n.message))
    started = time.time()
    run = run_widget(widget)
    print(f"run: {time.time() - started:.0f} s; layers: " + ", ".join(layer.name for layer in viewer.layers))
    print("notifications:", *said, sep="\n  ")
    r, truth, hole = run.result, source.data[k].astype(np.float64), painted[k] != 0
    for name, where in (("missing", hole), ("observed", ~hole)):
        print(f"coverage of the {r.settings['interval']['level']:.0%} interval, {name} pixels: "
              f"{coverage(truth, r.lower, r.upper, mask=where):.3f}")
    picked = {key: None for key in ("mean", "uncertainty", "lower", "upper")}
    for layer in viewer.layers:
        for key in picked:
            if layer is not source and (layer.name.split(" (")[0].endswith(key) or f" {key} " in layer.name):
                picked[key] = picked[key] or layer
    grid_screenshot(viewer, [source, *[layer for layer in picked.values() if layer is not None]], args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
