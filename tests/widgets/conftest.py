"""Fixtures for the dock-widget tests: isolated widget settings, the docked widget, waiting for runs."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QSettings

from napari_brgm.widgets import reconstruction

WIDGET = "BRGM Reconstruction"  # display name in napari.yaml


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """The widget remembers checkpoints in QSettings: keep the tests' choices out of the user's file."""
    path = str(tmp_path / "widget-settings.ini")
    monkeypatch.setattr(reconstruction, "_settings", lambda: QSettings(path, QSettings.Format.IniFormat))
    return path


@pytest.fixture
def docked(make_napari_viewer, qtbot):
    """A viewer with the widget docked from the manifest; runs still in flight are stopped and awaited."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-brgm", WIDGET)
    yield viewer, widget
    for run in list(widget.runs.values()):
        run.stop.set()
        qtbot.waitUntil(lambda run=run: not run.worker.is_running, timeout=60_000)
