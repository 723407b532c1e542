"""What the screenshot tools share: run the widget until it finishes, lay layers out in a grid, save the window."""

from __future__ import annotations

import time
from pathlib import Path


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
