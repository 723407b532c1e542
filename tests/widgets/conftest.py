"""Fixtures for the dock-widget tests: isolated widget settings, the docked widget, waiting for runs, the tiny
prior behind the file dialog, the notifications raised."""

from __future__ import annotations

import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QSettings
from qtpy.QtWidgets import QFileDialog

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
    qtbot.waitUntil(lambda: not widget.runs, timeout=60_000)  # `finished` handled: nothing queued for a closed viewer


@pytest.fixture
def tiny_prior(tiny_fixture_dir, monkeypatch) -> str:
    """The file dialog answers with the tiny network pickle."""
    path = str(tiny_fixture_dir / "network-snapshot.pkl")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (path, "")))
    return path


@pytest.fixture
def notes():
    """Messages of the napari notifications raised during the test."""
    seen: list[str] = []

    def record(event):
        notification = getattr(event, "value", event)
        seen.append(f"{notification.severity}: {notification.message}")

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)
