"""What the screenshot tools share: run the widget until it finishes, lay layers out in a grid, save the window."""

from __future__ import annotations

import time
from pathlib import Path


def open_in_widget(path: Path, k: int | None = None):
    """A 1600×1000 napari window with `path` opened by our reader at slice k (default: the middle one) and the
    reconstruction widget docked, its input set to that layer; returns (viewer, layer, k, widget)."""
    import napari

    from napari_brgm.widgets import ReconstructionWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    source = viewer.open(str(path), plugin="napari-brgm")[0]
    k = source.data.shape[0] // 2 if k is None else k
    viewer.dims.set_point(0, source.data_to_world([k, 0, 0])[0])
    widget = ReconstructionWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right", name="BRGM Reconstruction")
    widget.image_combo.setCurrentText(source.name)
    return viewer, source, k, widget


def run_widget(widget) -> object:
    """Press Run and process Qt events until the run ends; return the widget's Run."""
    from qtpy.QtWidgets import QApplication

    finished = []
    widget.run_finished.connect(finished.append)
    widget.run_button.click()
    while not finished:
        QApplication.processEvents()
        time.sleep(0.02)
    return finished[0]


def grid_screenshot(viewer, shown: list, out: Path) -> Path:
    """Only `shown` visible, in that order as a 1×n grid (the first layer's tile first); the window saved to `out`."""
    from qtpy.QtWidgets import QApplication

    for layer in viewer.layers:
        layer.visible = layer in shown
    for i, layer in enumerate(shown):
        viewer.layers.move(viewer.layers.index(layer), i)
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari ≥ 0.9 moved it
    grid.enabled = True
    grid.shape = (1, len(shown))
    viewer.reset_view()
    for _ in range(30):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(out), canvas_only=False)
    return Path(out)
