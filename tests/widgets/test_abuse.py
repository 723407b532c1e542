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
from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import ErrorNotification, notification_manager
from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QFileDialog
from superqt.utils._qthreading import WorkerBase

from napari_brgm import reconstruct
from tests.widgets.test_widget import RUN_TIMEOUT_MS, choose_checkpoint, run_and_wait

LONG = 100_000  # steps of a run that only ends when it is stopped


@pytest.fixture(autouse=True)
def console(capfd, monkeypatch, one_thread):
    """Fails the test on any traceback: an uncaught exception (main thread or another, whether our hooks or
    napari's notification manager received it), or 'Traceback' on stderr. (pytest-qt fails on exceptions in
    Qt slots too.)"""
    hooked: list[str] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: hooked.append(f"{kind.__name__}: {value}"))
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.append(f"{args.exc_type.__name__}: "
                                                                              f"{args.exc_value}"))
    seen = len(notification_manager.records)
    yield hooked
    err = capfd.readouterr().err
    assert not hooked, hooked
    raised = [n.message for n in notification_manager.records[seen:] if isinstance(n, ErrorNotification)]
    assert not raised, raised
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


def test_deleting_a_volume_runs_input_and_a_result_layer_keeps_the_finished_slices(docked, qtbot, tiny_prior,
                                                                                    notes):
    viewer, widget = docked
    _image(viewer, "vol", 16, shape=(6, 8, 8))
    choose_checkpoint(widget)
    widget.image_combo.setCurrentText("vol")
    widget.slices_combo.setCurrentIndex(widget.slices_combo.findData("all"))
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.samples_spin.setValue(2)
    widget.steps_spin.setValue(15)
    run = widget.run()
    assert run is not None and run.volume
    qtbot.waitUntil(lambda: run.finished >= 1, timeout=RUN_TIMEOUT_MS)
    viewer.layers.remove("vol z0:6 SRx4 VI uncertainty")  # a result layer the engine is filling
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        viewer.layers.remove("vol")
    settle(widget, qtbot)

    assert run.stop.is_set() and run.result.partial and 1 <= len(run.result.done) < 6
    mean = viewer.layers["vol z0:6 SRx4 VI mean (partial)"]
    assert [layer.name for layer in viewer.layers] == [mean.name]
    done = run.result.done
    assert np.isfinite(mean.data[done]).all() and mean.metadata["brgm"]["done"] == done
    assert np.isnan(np.delete(mean.data, done, axis=0)).all()
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


def test_closing_the_dock_widget_during_a_run_stops_it_and_the_viewer_goes_on(make_napari_viewer, qtbot,
                                                                               tiny_prior):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-brgm", "BRGM Reconstruction")
    _image(viewer, "img", 17)
    choose_checkpoint(widget)
    run = long_run(widget, qtbot, "img")

    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: run.stop.is_set() and not run.worker.is_running, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not WorkerBase._worker_set and QThreadPool.globalInstance().activeThreadCount() == 0,
                    timeout=RUN_TIMEOUT_MS)
    qtbot.wait(200)
    assert run.result.partial  # closing the panel cancels its runs: the partial result is kept, as after Cancel
    assert [layer.name for layer in viewer.layers] == ["img", "img SRx4 MAP mean (partial)"]
    _image(viewer, "later", 18)  # the viewer goes on
    viewer.layers.remove("img")
    viewer.layers["later"].name = "renamed"
    assert [layer.name for layer in viewer.layers] == ["img SRx4 MAP mean (partial)", "renamed"]


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
    alone = reconstruct(second.request.image, **second.request.options)  # b's run, with nothing beside it
    np.testing.assert_allclose(second.result.mean, alone.mean, rtol=1e-5, atol=1e-5 * np.abs(alone.mean).max())
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
    data = Path(tiny_prior).read_bytes()
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


def test_the_mask_grid_rule():
    from napari.layers import Image, Labels

    from napari_brgm.widgets import layers as L
    from napari_brgm.widgets import volume as V

    volume = Image(np.zeros((4, 8, 8)), name="vol", scale=(3.0, 0.5, 0.5), translate=(10.0, 1.0, 2.0), rotate=20)
    L.check_mask_grid(L.new_mask_layer(volume), volume)  # New mask: the image's grid
    plane = Labels(np.ones((8, 8), np.uint8), name="plane", scale=(0.5, 0.5), translate=(1.0, 2.0))
    with pytest.raises(ValueError, match="'plane' lies on another grid"):  # not rotated as the volume is
        L.mask_slice(plane, volume, 1)
    flat = Image(np.zeros((4, 8, 8)), name="flat", scale=(3.0, 0.5, 0.5), translate=(10.0, 1.0, 2.0))
    assert L.mask_slice(plane, flat, 1).all()  # one mask for every slice, on the slices' grid
    assert V.volume_mask(plane, flat, [0, 1]).all()
    other_z = Labels(np.ones((4, 8, 8), np.uint8), name="other z", scale=(2.0, 0.5, 0.5), translate=(10.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="another grid"):
        V.volume_mask(other_z, flat, [0, 1])
    with pytest.raises(ValueError, match="another grid"):
        L.mask_slice(other_z, flat, 1)


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


def _drain(qtbot) -> None:
    """Let Qt run its deferred deletions, then collect."""
    from qtpy.QtCore import QCoreApplication, QEvent

    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
        qtbot.wait(10)
        gc.collect()


def test_runs_workers_results_and_the_generator_are_released_when_their_layers_are_deleted(docked, qtbot,
                                                                                           tiny_prior):
    import torch

    from napari_brgm.engine import reconstruction as engine

    viewer, widget = docked
    _image(viewer, "img", 13)
    choose_checkpoint(widget)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.steps_spin.setValue(2)
    widget.samples_spin.setValue(2)
    run = run_and_wait(widget, qtbot)
    settle(widget, qtbot)
    generator = engine._load(str(tiny_prior), "stylegan2", torch.device("cpu"))  # the cached one the run used
    refs = {"run": weakref.ref(run), "worker": weakref.ref(run.worker), "result": weakref.ref(run.result),
            "generator": weakref.ref(generator)}
    refs.update({layer.name: weakref.ref(layer) for layer in viewer.layers if "brgm" in layer.metadata})
    assert len(refs) == 4 + 3  # mean, samples, uncertainty
    del run, generator

    for name in [layer.name for layer in viewer.layers if "brgm" in layer.metadata]:
        viewer.layers.remove(name)
    engine._load.cache_clear()  # the engine's cache of the last three priors is the only holder left
    _drain(qtbot)

    alive = [name for name, ref in refs.items() if ref() is not None]
    # napari keeps every worker it made in the window's task list (for its close dialog): the worker may live on,
    # but it must not keep the run, its request or its result
    assert set(alive) <= {"worker"}, alive


VIEWER_RUNS, ENGINE_CALLS, WARMUP = 15, 50, 5
VIEWER_GROWTH_MB, ENGINE_GROWTH_MB = 2.0, 0.2  # stated bounds: mean RSS growth per run after the warm-up runs


def test_a_long_session_in_one_viewer_releases_its_runs_and_bounds_memory(docked, qtbot, tiny_prior):
    viewer, widget = docked
    _image(viewer, "img", 14)
    choose_checkpoint(widget)
    widget.steps_spin.setValue(3)
    refs, rss = [], {}
    for i in range(VIEWER_RUNS):
        widget.seed_spin.setValue(i)
        run = run_and_wait(widget, qtbot)
        assert run.result is not None and not run.result.partial
        refs.append(weakref.ref(run))
        del run
        if i % 5 == 4:  # the user clears the results now and then
            for layer in [x for x in viewer.layers if "brgm" in x.metadata]:
                viewer.layers.remove(layer)
        if i + 1 in (WARMUP, VIEWER_RUNS):
            _drain(qtbot)
            rss[i + 1] = _rss()
    settle(widget, qtbot)

    assert [layer.name for layer in viewer.layers] == ["img"]
    alive = [i for i, ref in enumerate(refs) if ref() is not None]
    assert alive == [], alive  # no run (request, result) outlives its layers
    growth = (rss[VIEWER_RUNS] - rss[WARMUP]) / (VIEWER_RUNS - WARMUP) / 2**20
    print(f"viewer: RSS {rss[WARMUP] / 2**20:.1f} MB after {WARMUP} runs, {rss[VIEWER_RUNS] / 2**20:.1f} MB after "
          f"{VIEWER_RUNS}: {growth:+.3f} MB per run")
    assert growth < VIEWER_GROWTH_MB, f"RSS grew {growth:.2f} MB per run"


def test_a_long_session_of_engine_calls_bounds_memory(tiny_prior):
    from napari_brgm import reconstruct

    image = np.random.default_rng(15).random((8, 8), dtype=np.float32)
    rss = {}
    for i in range(ENGINE_CALLS):
        result = reconstruct(image, prior=tiny_prior, method="vi" if i % 10 == 9 else "map", steps=2, samples=2, seed=i,
                             device="cpu")
        assert result.mean.shape == (32, 32)
        del result
        if i + 1 in (WARMUP, ENGINE_CALLS):
            rss[i + 1] = _rss()
    growth = (rss[ENGINE_CALLS] - rss[WARMUP]) / (ENGINE_CALLS - WARMUP) / 2**20
    print(f"engine: RSS {rss[WARMUP] / 2**20:.1f} MB after {WARMUP} calls, {rss[ENGINE_CALLS] / 2**20:.1f} MB after "
          f"{ENGINE_CALLS}: {growth:+.3f} MB per call")
    assert growth < ENGINE_GROWTH_MB, f"RSS grew {growth:.3f} MB per call"
