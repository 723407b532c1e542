"""The docked widget under abuse (a real viewer under Xvfb, the tiny 32 px prior, a few steps).

Every scenario ends with a notification or a clean result, no traceback on the console or in an excepthook, no
worker left running (the widget's runs, superqt's worker set, the global QThreadPool) and the results of any
other run intact. The long-session tests run a bounded number of runs and bound the resident memory's growth
(benchmarks/long_session.py measures the full 50 viewer runs / 200 engine calls).
"""

from __future__ import annotations

import gc
import pickle
import sys
import threading
import weakref

import numpy as np
import pytest
from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QFileDialog
from superqt.utils._qthreading import WorkerBase

from tests.widgets.test_widget import RUN_TIMEOUT_MS, choose_checkpoint, run_and_wait

LONG = 100_000  # steps of a run that only ends when it is stopped


@pytest.fixture(autouse=True)
def console(capfd, monkeypatch, one_thread):
    """Fails the test on any traceback: an uncaught exception (main thread or another), or 'Traceback' on stderr."""
    hooked: list[str] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: hooked.append(f"{kind.__name__}: {value}"))
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.append(f"{args.exc_type.__name__}: "
                                                                              f"{args.exc_value}"))
    yield hooked
    err = capfd.readouterr().err
    assert not hooked, hooked
    assert "Traceback" not in err, err


def settle(widget, qtbot) -> None:
    """Wait until no run is in flight and no worker thread is left; then nothing is left running."""
    qtbot.waitUntil(lambda: not widget.runs, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not WorkerBase._worker_set and QThreadPool.globalInstance().activeThreadCount() == 0,
                    timeout=RUN_TIMEOUT_MS)


def long_run(widget, qtbot, name: str):
    """Start a run on the layer `name` that runs until stopped; return it once the engine reports steps."""
    widget.image_combo.setCurrentText(name)
    widget.steps_spin.setValue(LONG)
    run = widget.run()
    assert run is not None
    qtbot.waitUntil(lambda: any("preview" in layer.name for layer in widget.viewer.layers), timeout=RUN_TIMEOUT_MS)
    return run


def _image(viewer, name: str, seed: int, shape=(8, 8), **kwargs):
    return viewer.add_image(np.random.default_rng(seed).random(shape, dtype=np.float32), name=name, **kwargs)


def _errors(notes: list[str]) -> list[str]:
    return [n for n in notes if n.startswith("error")]


# --- deleting layers, closing the viewer ------------------------------------------------------------------------


def test_deleting_the_input_during_a_run_stops_it_and_drops_its_results(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    _image(viewer, "gone", 1)
    choose_checkpoint(widget)
    run = long_run(widget, qtbot, "gone")
    assert "gone SRx4 MAP preview" in viewer.layers

    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        viewer.layers.remove("gone")
    settle(widget, qtbot)

    assert run.stop.is_set() and run.result.partial  # stopped: a deleted input's run does not run on unseen
    assert [layer.name for layer in viewer.layers] == []  # no preview, no result layers
    assert any("'gone' was removed during the run" in n for n in notes), notes
    assert not _errors(notes)
    assert widget.info.text() == "add an image layer"


def test_deleting_the_mask_or_the_preview_during_a_run_changes_nothing(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    _image(viewer, "img", 2, shape=(32, 32))
    choose_checkpoint(widget)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("inpaint"))
    widget.new_mask_button.click()
    viewer.layers["img mask"].data[4:12, 4:12] = 1
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    widget.steps_spin.setValue(30)
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        run = widget.run()
        qtbot.waitUntil(lambda: len(run.losses) >= 2, timeout=RUN_TIMEOUT_MS)
        viewer.layers.remove("img mask")
        qtbot.waitUntil(lambda: "img inpaint MAP preview" in viewer.layers or not widget.runs,
                        timeout=RUN_TIMEOUT_MS)
        if "img inpaint MAP preview" in viewer.layers:
            viewer.layers.remove("img inpaint MAP preview")
    settle(widget, qtbot)

    assert finished.args[0] is run and not run.result.partial
    assert [layer.name for layer in viewer.layers] == ["img", "img inpaint MAP mean", "img inpaint MAP consistent"]
    assert not _errors(notes)


def test_closing_the_viewer_during_a_run_stops_it_quietly(make_napari_viewer, qtbot, tiny_prior):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-brgm", "BRGM Reconstruction")
    _image(viewer, "img", 3)
    choose_checkpoint(widget)
    run = long_run(widget, qtbot, "img")

    viewer.close()
    qtbot.waitUntil(lambda: run.stop.is_set() and not run.worker.is_running, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not WorkerBase._worker_set and QThreadPool.globalInstance().activeThreadCount() == 0,
                    timeout=RUN_TIMEOUT_MS)
    qtbot.wait(200)  # the worker's last queued signals reach a closed viewer


# --- the viewer changes under a run -------------------------------------------------------------------------------


def test_changing_the_slice_and_the_selection_during_a_run_keeps_the_run_on_its_slice(docked, qtbot, tiny_prior,
                                                                                       notes):
    viewer, widget = docked
    _image(viewer, "vol", 4, shape=(3, 8, 8))
    _image(viewer, "other", 5)
    viewer.dims.set_current_step(0, 1)
    choose_checkpoint(widget)
    run = long_run(widget, qtbot, "vol")

    viewer.dims.set_current_step(0, 2)  # another slice shown
    widget.image_combo.setCurrentText("other")  # another input chosen: its own Run button
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    viewer.layers.selection = {viewer.layers["other"]}  # another layer selected in the layer list
    viewer.dims.ndisplay = 3  # and a 3-D view
    qtbot.wait(100)
    viewer.dims.ndisplay = 2
    widget.image_combo.setCurrentText("vol")
    assert widget.shown is run and widget.cancel_button.isEnabled()
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        widget.cancel_button.click()
    settle(widget, qtbot)

    mean = viewer.layers["vol z1 SRx4 MAP mean (partial)"]
    assert mean.metadata["brgm"]["slice"] == 1 and mean.data.shape == (1, 32, 32)
    assert not any("preview" in layer.name for layer in viewer.layers)
    assert not _errors(notes)


def test_two_runs_cancel_one_the_other_finishes_intact(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    _image(viewer, "a", 6)
    _image(viewer, "b", 7)
    choose_checkpoint(widget)
    first = long_run(widget, qtbot, "a")
    widget.image_combo.setCurrentText("b")
    widget.steps_spin.setValue(20)
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        second = widget.run()
        assert second is not None and set(widget.runs) == {viewer.layers["a"].unique_id,
                                                            viewer.layers["b"].unique_id}
        widget.image_combo.setCurrentText("a")
        widget.cancel_button.click()
    assert finished.args[0] is first
    assert second.worker.is_running or second.result is not None  # cancelling a did not stop b
    settle(widget, qtbot)

    assert first.result.partial and not second.result.partial and not second.stop.is_set()
    assert len(second.result.losses["map/total"]) == 20
    np.testing.assert_array_equal(viewer.layers["b SRx4 MAP mean"].data, second.result.mean)
    np.testing.assert_array_equal(viewer.layers["a SRx4 MAP mean (partial)"].data, first.result.mean)
    assert not any("preview" in layer.name for layer in viewer.layers)
    assert not _errors(notes)


# --- hostile and broken files ----------------------------------------------------------------------------------------


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


def _hostile(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "hostile.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Exploit(marker)}, protocol=4))
    return path, marker


def _truncated(tmp_path, tiny_prior):
    data = open(tiny_prior, "rb").read()
    path = tmp_path / "truncated.pkl"
    path.write_bytes(data[: len(data) // 2])
    return path, None


def _text(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_text("these are my notes, not a network\n" * 20)
    return path, None


@pytest.mark.parametrize("make", ["hostile", "truncated", "text"])
def test_a_bad_checkpoint_is_a_notification_and_leaves_the_other_run_intact(docked, qtbot, tmp_path, monkeypatch,
                                                                            tiny_fixture_dir, notes, make):
    viewer, widget = docked
    tiny = str(tiny_fixture_dir / "network-snapshot.pkl")
    path, marker = {"hostile": lambda: _hostile(tmp_path), "truncated": lambda: _truncated(tmp_path, tiny),
                    "text": lambda: _text(tmp_path)}[make]()
    answer = [tiny]
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (answer[0], "")))
    _image(viewer, "good", 8)
    _image(viewer, "bad", 9)
    choose_checkpoint(widget)
    good = long_run(widget, qtbot, "good")

    widget.image_combo.setCurrentText("bad")
    answer[0] = str(path)
    choose_checkpoint(widget)
    if widget.prior_combo.currentData() == str(path):  # the widget took it for a prior: the run must refuse it
        widget.steps_spin.setValue(5)
        with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
            widget.run_button.click()
        assert finished.args[0].result is None and widget.progress_bar.format() == "failed"
        failed = [n for n in _errors(notes) if "failed" in n]
        assert len(failed) == 1 and path.name in failed[0], notes
    else:
        assert any(path.name in n and "not a prior" in n for n in _errors(notes)), notes
        assert widget.prior_combo.currentData() == tiny
    assert marker is None or not marker.exists()  # nothing from the file ran
    assert good.worker.is_running and not good.stop.is_set()
    widget.image_combo.setCurrentText("good")
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        widget.cancel_button.click()
    settle(widget, qtbot)
    assert good.result.partial and "good SRx4 MAP mean (partial)" in viewer.layers
    assert not any(layer.name.startswith("bad ") for layer in viewer.layers)
    assert not any("Traceback" in n for n in notes)


# --- requests the prior or the grid cannot serve ------------------------------------------------------------------


def test_a_factor_the_prior_cannot_do_is_a_notification(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    _image(viewer, "small", 10)
    choose_checkpoint(widget)
    widget.steps_spin.setValue(2)
    offered = [widget.factor_combo.itemData(i) for i in range(widget.factor_combo.count())]
    assert 32 in offered  # before a run the prior's resolution is unknown: every factor is offered
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(32))  # 32 px prior / 32: a 1 px measurement

    run = run_and_wait(widget, qtbot)

    assert run.result is None
    failed = [n for n in _errors(notes) if "failed" in n]
    assert len(failed) == 1 and "TypeError" not in failed[0] and "Error:" not in failed[0], notes
    assert [layer.name for layer in viewer.layers] == ["small"]
    settle(widget, qtbot)


def test_a_mask_painted_on_another_layers_grid_is_refused(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    _image(viewer, "fine", 11, shape=(32, 32))
    _image(viewer, "shifted", 12, shape=(32, 32), scale=(2.0, 2.0), translate=(5.0, 7.0))
    choose_checkpoint(widget)
    widget.image_combo.setCurrentText("fine")
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("inpaint"))
    widget.new_mask_button.click()  # a mask on fine's grid
    viewer.layers["fine mask"].data[0:8, 0:8] = 1
    widget.image_combo.setCurrentText("shifted")
    widget.mask_combo.setCurrentText("fine mask")
    widget.steps_spin.setValue(2)
    widget.run_button.click()
    assert widget.runs == {}
    refused = _errors(notes)
    assert len(refused) == 1 and "'fine mask'" in refused[0] and "grid" in refused[0], notes

    widget.image_combo.setCurrentText("fine")  # on its own grid it runs
    run = run_and_wait(widget, qtbot)
    assert run.result is not None and "fine inpaint MAP mean" in viewer.layers
    settle(widget, qtbot)


# --- long sessions -----------------------------------------------------------------------------------------------


def _rss() -> int:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss
