"""docs/screenshot-kspace.png: a brain slice undersampled ×4 in k-space and reconstructed in napari with VI.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot_kspace.py [--input FILE] [--slice K]

As a user would: napari opens the volume with our reader (default: the Colin27 sample slab; pass the
held-out ITK head with --input), the widget runs task "MRI k-space (undersampled)" at R = 4
(random fastMRI mask) with BRGM VI on the displayed slice, and the screenshot shows in a grid the
input, the zero-filled image, the posterior mean, the uncertainty and the sampling mask. The script
prints the PSNR of the zero-filled image and of the mean against the input at the prior's grid.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def main(argv=None) -> int:
    from napari_brgm.io.samples import BRAIN_T1, sample_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", type=Path, default=sample_path(BRAIN_T1))
    p.add_argument("--slice", type=int, default=None, help="z slice (default: the middle one)")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=301)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot-kspace.png")
    args = p.parse_args(argv)

    from napari_shots import grid_screenshot, open_in_widget, run_widget

    viewer, source, k, widget = open_in_widget(args.input, args.slice)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("kspace"))
    widget.advanced.set_value("acceleration", args.acceleration)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.steps_spin.setValue(args.steps)
    started = time.time()
    run = run_widget(widget)
    print(f"run: {time.time() - started:.0f} s, {widget.progress_bar.format()}; layers: "
          + ", ".join(layer.name for layer in viewer.layers))
    r = run.result
    info = r.settings["kspace"]
    truth = source.data[k]
    span = float(truth.max() - truth.min())

    def psnr(a):
        return 10 * np.log10(span**2 / float(np.mean((a - truth) ** 2)))

    print(f"R_eff {info['effective_acceleration']:.2f} ({info['lines']} lines of {info['grid'][1]}); PSNR vs the "
          f"input slice: zero-filled {psnr(r.zero_filled):.2f} dB, mean {psnr(r.mean):.2f} dB, consistent "
          f"{psnr(r.consistent):.2f} dB; {r.settings['interval']['level']:.0%} interval calibrated: "
          f"{r.settings['interval']['calibrated']}")

    names = {"zero-filled": None, "mean": None, "uncertainty": None, "sampling mask": None}
    for layer in viewer.layers:
        for key in names:
            if layer.name.endswith(key) or f" {key} (" in layer.name:
                names[key] = layer
    mask = names["sampling mask"]  # in the grid each layer has its own tile: back from beside the input
    mask.translate = np.r_[mask.translate[:-1], source.translate[-1]]
    grid_screenshot(viewer, [source, *[layer for layer in names.values() if layer is not None]], args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
