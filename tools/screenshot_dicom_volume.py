"""docs/screenshot-dicom-volume.png: a DICOM series in, a slab reconstructed in napari, the mean saved as DICOM and re-opened.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot_dicom_volume.py [--work /tmp/brgm-dicom]

Steps, as a user would take them: a coarse (1/14 in-plane) MR series is made from the Colin27
sample slab (DICOM, fresh study); napari opens the folder with our reader; the widget runs ×4 VI
on slices 16:20; the mean layer is saved with the plugin's DICOM writer and the written series is
opened again. The screenshot shows, in a grid at z 18, the input series, the re-opened DICOM
mean and the uncertainty layer; the script prints the checks (shapes, world extents, values).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
COARSE = 14  # in-plane box size: 15×12 px slices, the built-in 64 px prior's ×4 measurement size


def make_series(work: Path) -> Path:
    """The coarse series as DICOM MR (one file per slice) from the sample slab."""
    from napari_brgm.io import load_image, save_nifti
    from napari_brgm.io.dicom_out import write_dicom
    from napari_brgm.io.geometry import resampled_affine
    from napari_brgm.io.samples import BRAIN_T1, sample_path

    img = load_image(sample_path(BRAIN_T1))
    z, h, w = img.data.shape
    h, w = h // COARSE, w // COARSE
    data = img.data[:, : h * COARSE, : w * COARSE].reshape(z, h, COARSE, w, COARSE).mean(axis=(2, 4))
    nifti = save_nifti(work / "coarse.nii.gz", data.astype(np.float32), resampled_affine(img.affine, 1 / COARSE))
    write_dicom(work / "dicom", load_image(nifti), {"mean": data.astype(np.float32)},
                description={"method": f"box average {COARSE}x{COARSE}", "task": "coarse copy"},
                run_id="coarse-colin27", uncertainty="none", overwrite=True)
    series = work / "brain_t1_coarse_series"
    shutil.move(work / "dicom" / "mean", series)
    return series


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/brgm-dicom"))
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot-dicom-volume.png")
    p.add_argument("--steps", type=int, default=301)
    args = p.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    series = make_series(args.work)

    import napari
    from napari_shots import grid_screenshot, run_widget

    from napari_brgm.io.napari_writer import write_dicom_series
    from napari_brgm.widgets import ReconstructionWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    source = viewer.open(str(series), plugin="napari-brgm")[0]
    widget = ReconstructionWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right", name="BRGM Reconstruction")
    widget.image_combo.setCurrentText(source.name)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("superres"))
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(4))
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.steps_spin.setValue(args.steps)
    widget.slices_combo.setCurrentIndex(widget.slices_combo.findData("range"))
    widget.range_edit.setText("16:20")
    started = time.time()
    run_widget(widget)
    print(f"run: {time.time() - started:.0f} s, {widget.progress_bar.format()}")

    mean = next(layer for layer in viewer.layers if layer.name.endswith(" mean"))
    spread = next(layer for layer in viewer.layers if " uncertainty" in layer.name)
    meta = {"metadata": mean.metadata, "scale": mean.scale, "translate": mean.translate, "name": mean.name}
    written = [Path(p) for p in write_dicom_series(str(args.work / "saved"), mean.data, meta)]
    back = viewer.open(str(written[0].parent), plugin="napari-brgm")[0]
    back.name = "mean, saved as DICOM and re-opened"
    print(f"saved {len(written)} files in {written[0].parent}; re-opened {back.data.shape}, "
          f"max |re-opened − mean| {float(np.abs(back.data - mean.data).max()):.4f}")
    print("world extent re-opened", np.round(back.extent.world, 3).tolist(), "mean",
          np.round(mean.extent.world, 3).tolist(), "input", np.round(source.extent.world, 3).tolist())
    viewer.dims.set_point(0, back.data_to_world([2, 0, 0])[0])
    grid_screenshot(viewer, [source, back, spread], args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
