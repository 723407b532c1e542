"""The docked widget with the real engine and the tiny StyleGAN2-ADA prior (32 px, random weights)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from napari_brgm.widgets import reconstruction
from napari_brgm.widgets.reconstruction import LOAD_CHECKPOINT, ReconstructionWidget

RUN_TIMEOUT_MS = 120_000  # generous: a shared 2-core machine; the tiny runs take a few seconds


def choose_checkpoint(widget: ReconstructionWidget) -> None:
    """Pick 'Load checkpoint…' in the prior box, as a user would."""
    index = widget.prior_combo.findText(LOAD_CHECKPOINT)
    widget.prior_combo.setCurrentIndex(index)
    widget.prior_combo.activated.emit(index)


def run_and_wait(widget: ReconstructionWidget, qtbot):
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        widget.run_button.click()
    return finished.args[0]


def test_checkpoint_from_the_file_dialog_is_remembered(docked, qtbot, tiny_prior):
    _, widget = docked
    choose_checkpoint(widget)
    assert widget.prior_combo.currentData() == tiny_prior
    assert widget.prior_combo.currentText() == "network-snapshot.pkl"
    later = ReconstructionWidget(ViewerModel())  # a new session reads the remembered checkpoint
    qtbot.addWidget(later)
    assert later.prior_combo.currentData() == tiny_prior
    assert later.prior_combo.itemText(later.prior_combo.count() - 1) == LOAD_CHECKPOINT


def test_superres_x4_variational_gives_mean_samples_uncertainty_on_the_input_grid(docked, qtbot, tiny_prior):
    viewer, widget = docked
    rng = np.random.default_rng(1)
    viewer.add_image(rng.random((8, 8), dtype=np.float32) * 100, name="lowres", scale=(2.0, 3.0),
                     translate=(5.0, -3.0), metadata={"modality": "MR"})
    choose_checkpoint(widget)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("superres"))
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(4))
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.steps_spin.setValue(3)
    widget.samples_spin.setValue(3)
    widget.seed_spin.setValue(11)

    run = run_and_wait(widget, qtbot)

    assert run.result is not None and not run.result.partial
    names = [layer.name for layer in viewer.layers]
    assert names == ["lowres", "lowres SRx4 VI mean", "lowres SRx4 VI samples",
                     "lowres SRx4 VI uncertainty (uncalibrated 90 %)"]
    mean, samples, uncertainty = (viewer.layers[n] for n in names[1:])
    assert mean.data.shape == (32, 32) and samples.data.shape == (3, 32, 32) and uncertainty.data.shape == (32, 32)
    np.testing.assert_allclose(mean.scale, [0.5, 0.75])
    np.testing.assert_allclose(mean.translate, [5.0 - 2.0 * 3 / 8, -3.0 - 3.0 * 3 / 8])
    np.testing.assert_allclose(samples.scale[1:], mean.scale)
    np.testing.assert_allclose(samples.translate[1:], mean.translate)
    np.testing.assert_array_equal(samples.data, run.result.samples)
    np.testing.assert_array_equal(uncertainty.data, run.result.std)
    assert uncertainty.data.max() > 0
    assert uncertainty.colormap.name == "inferno" and uncertainty.contrast_limits[0] == 0
    brgm = mean.metadata["brgm"]
    assert (brgm["prior"], brgm["method"], brgm["seed"], brgm["slice"]) == (tiny_prior, "vi", 11, None)
    assert brgm["settings"]["steps"] == 3 and brgm["settings"]["samples"] == 3
    assert np.isfinite(brgm["final_losses"]["vi/total"])
    assert mean.metadata["modality"] == "MR"
    map_losses = run.result.losses["map/total"]
    assert run.stage_starts[:2] == [0, 3] and run.losses == map_losses  # the curve: MAP; the Laplace stage has no loss
    assert run.done == run.total_steps and run.reports > 3  # the VI (Laplace) stage advanced the bar to its end
    assert widget.loss_plot.values == run.losses
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    # the prior's resolution is now known: factors whose measurement the 8 px input outgrows are gone
    assert [widget.factor_combo.itemData(i) for i in range(widget.factor_combo.count())] == [2, 4, 8, 16]


def test_inpainting_the_displayed_slice_of_a_volume_and_rerunning_in_place(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    rng = np.random.default_rng(2)
    volume = viewer.add_image(rng.random((3, 32, 32), dtype=np.float32), name="vol", scale=(4.0, 1.0, 1.0),
                              translate=(100.0, 0.0, 0.0))
    viewer.dims.set_current_step(0, 1)
    choose_checkpoint(widget)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("inpaint"))
    widget.new_mask_button.click()
    mask = viewer.layers["vol mask"]
    assert widget.mask_combo.currentText() == "vol mask" and mask.data.shape == volume.data.shape
    mask.data[1, 8:16, 10:20] = 1
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    widget.steps_spin.setValue(2)

    run = run_and_wait(widget, qtbot)

    assert not run.result.partial
    mean, consistent = viewer.layers["vol z1 inpaint MAP mean"], viewer.layers["vol z1 inpaint MAP consistent"]
    assert "vol z1 inpaint MAP uncertainty" not in viewer.layers  # MAP has no posterior
    assert mean.data.shape == consistent.data.shape == (1, 32, 32)
    np.testing.assert_allclose(mean.translate, [104.0, 0.0, 0.0])
    np.testing.assert_allclose(mean.scale, [4.0, 1.0, 1.0])
    observed = mask.data[1] == 0
    np.testing.assert_allclose(consistent.data[0][observed], volume.data[1][observed])
    assert mean.metadata["brgm"]["slice"] == 1 and mean.metadata["brgm"]["task"] == "inpaint"
    assert mean.metadata["brgm"]["interval"] is None and any(n.endswith("vol z1 inpaint MAP finished") for n in notes)

    before = [layer.unique_id for layer in viewer.layers]
    run_and_wait(widget, qtbot)  # same input, slice, task and method: the same layers are updated
    assert [layer.unique_id for layer in viewer.layers] == before
    viewer.dims.set_current_step(0, 2)  # another slice: new layers
    mask.data[2, 0:4, 0:4] = 1
    run_and_wait(widget, qtbot)
    assert "vol z2 inpaint MAP mean" in viewer.layers and len(viewer.layers) == len(before) + 2


def test_the_event_loop_keeps_serving_during_a_run_with_a_live_preview(docked, qtbot, tiny_prior):
    viewer, widget = docked
    viewer.add_image(np.random.default_rng(3).random((8, 8), dtype=np.float32), name="busy")
    viewer.add_image(np.zeros((8, 8), np.float32), name="other")
    widget.image_combo.setCurrentText("busy")
    choose_checkpoint(widget)
    widget.steps_spin.setValue(100_000)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)

    run = widget.run()
    assert widget.runs  # run() returned while the engine works
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: len(run.losses) >= 12 and len(ticks) >= 20, timeout=RUN_TIMEOUT_MS)
    assert run.worker.is_running  # still computing while the GUI thread served timer and progress events
    preview = viewer.layers["busy SRx4 MAP preview"]
    assert preview.data.shape == (32, 32)
    assert widget.progress_bar.value() >= 12 and "MAP" in widget.progress_bar.format()

    widget.image_combo.setCurrentText("other")  # another layer may run; this one may not
    assert widget.run_button.isEnabled()
    widget.image_combo.setCurrentText("busy")
    assert not widget.run_button.isEnabled()
    timer.stop()


def test_cancel_stops_a_long_run_promptly_and_keeps_the_partial_result(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    viewer.add_image(np.random.default_rng(4).random((8, 8), dtype=np.float32), name="long")
    choose_checkpoint(widget)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.steps_spin.setValue(100_000)
    run = widget.run()
    qtbot.waitUntil(lambda: len(run.losses) >= 1, timeout=RUN_TIMEOUT_MS)

    started = time.perf_counter()
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        widget.cancel_button.click()
    assert time.perf_counter() - started < 10.0

    assert run.result.partial and len(run.losses) < 1000
    mean = viewer.layers["long SRx4 VI mean (partial)"]
    assert mean.metadata["brgm"]["partial"] is True and mean.data.shape == (32, 32)
    assert "long SRx4 VI preview" not in viewer.layers  # the partial result supersedes the preview
    assert any("Cancelled" in note for note in notes)
    assert widget.run_button.isEnabled() and "stopped" in widget.progress_bar.format()


def test_missing_layer_and_mismatched_mask_are_notifications(docked, tiny_prior, notes):
    viewer, widget = docked
    choose_checkpoint(widget)
    widget.run_button.click()
    assert widget.runs == {} and any("choose an input image layer" in note for note in notes)

    viewer.add_image(np.zeros((32, 32), np.float32), name="xray")
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("inpaint"))
    widget.run_button.click()
    assert widget.runs == {} and any("inpainting needs a mask layer" in note for note in notes)

    viewer.add_labels(np.zeros((16, 16), np.uint8), name="small mask")
    widget.mask_combo.setCurrentText("small mask")
    widget.run_button.click()
    assert widget.runs == {}
    assert any("'small mask' has shape (16, 16)" in note and "(32, 32)" in note for note in notes)
    assert [layer.name for layer in viewer.layers] == ["xray", "small mask"]
    viewer.layers["xray"].name = "chest"  # the choices follow renames
    assert widget.image_combo.currentText() == "chest"


def test_engine_errors_become_notifications(docked, qtbot, tmp_path, monkeypatch, notes):
    viewer, widget = docked
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"\x80\x04not really a network pickle")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (str(bad), "")))
    viewer.add_image(np.zeros((8, 8), np.float32), name="img")
    choose_checkpoint(widget)
    run = run_and_wait(widget, qtbot)
    assert run.result is None
    assert any("failed" in note and "broken.pkl" in note for note in notes), notes
    assert [layer.name for layer in viewer.layers] == ["img"]
    assert widget.run_button.isEnabled() and widget.progress_bar.format() == "failed"


def test_factor_choices_fit_the_image():
    assert reconstruction.fitting_factors((8, 8), resolution=32) == [2, 4, 8, 16]
    assert reconstruction.fitting_factors((977, 920), resolution=256) == []
    assert reconstruction.fitting_factors((977, 920)) == [2, 4, 8]


def test_loss_plot_draws_the_run_on_a_log_axis_and_thins_long_runs(qtbot):
    from napari_brgm.widgets.loss_plot import MAX_POINTS, LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.set_history([100.0, 10.0, 1.0, 1.0], [0, 2])
    assert plot.log_scale()
    assert plot.curve(30.0, 20.0) == [(0.0, 0.0), (10.0, 10.0), (20.0, 20.0), (30.0, 20.0)]
    plot.set_history([-1.0, 2.0, 0.5])  # negative values (an ELBO) stay on a linear axis
    assert not plot.log_scale() and plot.curve(10.0, 10.0)[1] == (5.0, 0.0)
    plot.set_history([float(v) for v in range(1, 5002)])
    curve = plot.curve(100.0, 100.0)
    assert len(curve) <= MAX_POINTS + 1 and curve[-1] == (100.0, 0.0)
    assert not plot.grab().isNull()


def test_the_method_box_offers_every_method_and_dip_runs_without_a_prior(docked, qtbot, tiny_prior):
    viewer, widget = docked
    offered = [widget.method_combo.itemData(i) for i in range(widget.method_combo.count())]
    assert offered == ["map", "vi", "csgm", "iagan", "iagan_vi", "dip", "reddiff", "flow"]
    viewer.add_image(np.random.default_rng(5).random((16, 16), dtype=np.float32) * 50, name="xr")
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("superres"))
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(2))
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("dip"))
    assert not widget.prior_combo.isEnabled() and widget.samples_spin.isEnabled()
    widget.back_project_check.setChecked(True)
    widget.steps_spin.setValue(10)
    widget.samples_spin.setValue(2)
    assert widget.advanced.value("restarts") == 1  # Deep Image Prior's default
    widget.advanced.set_value("restarts", 2)

    run = run_and_wait(widget, qtbot)

    assert run.request.options["prior"] is None and run.plan == ["dip"] and run.request.options["restarts"] == 2
    assert run.result is not None and not run.result.partial and run.result.settings["restarts_done"] == 2
    assert run.total_steps == 20 == widget.progress_bar.maximum() == widget.progress_bar.value() == len(run.losses)
    assert [layer.name for layer in viewer.layers] == ["xr", "xr SRx2 DIP mean", "xr SRx2 DIP samples",
                                                       "xr SRx2 DIP uncertainty (uncalibrated 90 %)"]
    brgm = viewer.layers["xr SRx2 DIP mean"].metadata["brgm"]
    assert brgm["method"] == "dip" and brgm["settings"]["back_project"] is True
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("iagan_vi"))
    assert widget.prior_combo.isEnabled()
    widget.prior_combo.setCurrentIndex(widget.prior_combo.findText(LOAD_CHECKPOINT))
    with pytest.raises(ValueError, match="choose a stylegan2 prior"):
        widget.request()
    choose_checkpoint(widget)
    request = widget.request()
    assert request.options["method"] == "iagan" and request.options["iagan_vi"] is True
    assert request.options["restarts"] == 2 and reconstruction.stage_steps(request.options) == 10
    widget.advanced.set_value("restarts", 4)  # IAGAN's default: not passed
    assert "restarts" not in widget.request().options
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    assert "restarts" not in widget.advanced.controls
    assert request.label == "xr SRx2 IAGAN-VI" and reconstruction.stage_plan(request.options) == ["csgm", "iagan", "vi"]


def _tiny_prior_file(kind: str, folder) -> str:
    """A 32 px diffusion or flow prior with random weights (the flow's actnorm initialised on noise)."""
    from tests.tiny_priors import tiny_diffusion_file, tiny_flow_file

    return str(tiny_diffusion_file(folder, "tiny-ddpm.safetensors") if kind == "diffusion"
               else tiny_flow_file(folder, name="tiny-glow.safetensors"))


@pytest.mark.parametrize(("kind", "method", "label"), [("diffusion", "reddiff", "RED-Diff"), ("flow", "flow", "Flow")])
def test_loading_a_diffusion_or_flow_prior_switches_the_method_and_runs(docked, qtbot, tmp_path, monkeypatch, notes,
                                                                         kind, method, label):
    viewer, widget = docked
    path = _tiny_prior_file(kind, tmp_path)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (path, "")))
    viewer.add_image(np.random.default_rng(2).random((8, 8), dtype=np.float32) * 100, name="mr")
    assert widget.method_combo.currentData() == "map"
    choose_checkpoint(widget)
    assert widget.method_combo.currentData() == method and widget.prior_combo.currentData() == path
    assert any(f"is a {kind} prior: method set to" in n for n in notes)
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(4))
    widget.steps_spin.setValue(3)
    widget.samples_spin.setValue(2)
    run = run_and_wait(widget, qtbot)
    assert run.result is not None and run.plan == reconstruction.stage_plan({"method": method})
    assert [layer.name for layer in viewer.layers] == ["mr", f"mr SRx4 {label} mean", f"mr SRx4 {label} samples",
                                                       f"mr SRx4 {label} uncertainty (uncalibrated 90 %)"]
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))  # GAN methods list GAN priors only
    listed = [widget.prior_combo.itemData(i) for i in range(widget.prior_combo.count())]
    assert path not in listed and listed[-1] is None


def test_the_advanced_group_shows_exactly_the_chosen_task_and_method_options(docked):
    from napari_brgm.engine.methods import METHOD_SPECS
    from napari_brgm.engine.options import names
    from napari_brgm.engine.tasks import TASK_SPECS

    _, widget = docked
    assert not widget.advanced.body.isVisibleTo(widget)  # closed at first
    widget.advanced.toggle.click()
    assert widget.advanced.body.isVisibleTo(widget)
    for task in ("superres", "inpaint"):
        widget.task_combo.setCurrentIndex(widget.task_combo.findData(task))
        for i in range(widget.method_combo.count()):
            widget.method_combo.setCurrentIndex(i)
            entry = widget.method_combo.itemData(i)
            method = "iagan" if entry == "iagan_vi" else entry
            expected = [*names(TASK_SPECS[task].options), *(n for n in names(METHOD_SPECS[method].options)
                                                            if n != "iagan_vi")]
            assert list(widget.advanced.controls) == expected, entry
            assert widget.advanced.values() == {}  # untouched: every option at its default
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("dip"))
    noise = widget.advanced.controls["dip_input_noise"]
    assert "std of the noise added to the fixed input" in noise.toolTip() and noise.text() == "0.0333333"
    assert widget.advanced.value("dip_input_noise") == 1 / 30  # the exact default, not the shown digits


def test_options_set_in_the_advanced_group_reach_the_run(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    viewer.add_image(np.random.default_rng(6).random((8, 8), dtype=np.float32) * 100, name="adv")
    choose_checkpoint(widget)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("csgm"))
    widget.steps_spin.setValue(2)
    widget.advanced.set_value("sr_kind", "bicubic")
    widget.advanced.set_value("restarts", 2)
    widget.advanced.controls["lambda_z"].setText("abc")
    widget.run_button.click()
    assert widget.runs == {} and any("lambda_z must be a number, got 'abc'" in note for note in notes)
    widget.advanced.controls["lambda_z"].setText("0.01")

    run = run_and_wait(widget, qtbot)

    assert run.request.options["restarts"] == 2 and run.request.options["lambda_z"] == 0.01
    settings = run.result.settings
    assert settings["method_options"] == {"restarts": 2, "lambda_z": 0.01}
    assert settings["task_options"] == {"sr_kind": "bicubic"} and len(settings["restart_data_fits"]) == 2


def _vi_form(widget, steps=3, samples=3) -> None:
    """Variational ×4 super-resolution with the tiny prior, a few steps."""
    choose_checkpoint(widget)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(4))
    widget.steps_spin.setValue(steps)
    widget.samples_spin.setValue(samples)


def test_interval_layers_at_the_chosen_level_and_the_notification_names_the_calibration(docked, qtbot, tiny_prior,
                                                                                        monkeypatch):
    viewer, widget = docked
    infos: list[str] = []
    monkeypatch.setattr(reconstruction, "show_info", infos.append)
    viewer.add_image(np.random.default_rng(7).random((8, 8), dtype=np.float32) * 100, name="lr", colormap="magma",
                     contrast_limits=(10, 90), scale=(2.0, 2.0))
    _vi_form(widget)
    widget.interval_check.setChecked(True)
    widget.level_combo.setCurrentIndex(widget.level_combo.findData(0.8))
    assert widget.level_combo.currentText() == "80 %"

    run = run_and_wait(widget, qtbot)

    result = run.result
    assert result.settings["interval"]["level"] == 0.8 and result.settings["interval"]["calibrated"] is False
    assert [layer.name for layer in viewer.layers][3:] == ["lr SRx4 VI uncertainty (uncalibrated 80 %)",
                                                           "lr SRx4 VI lower 80 %", "lr SRx4 VI upper 80 %"]
    mean, uncertainty = viewer.layers["lr SRx4 VI mean"], viewer.layers["lr SRx4 VI uncertainty (uncalibrated 80 %)"]
    lower, upper = viewer.layers["lr SRx4 VI lower 80 %"], viewer.layers["lr SRx4 VI upper 80 %"]
    np.testing.assert_array_equal(lower.data, result.lower)
    np.testing.assert_array_equal(upper.data, result.upper)
    assert (upper.data >= lower.data).all() and (upper.data > lower.data).any()
    assert lower.colormap.name == "magma" and tuple(upper.contrast_limits) == (10, 90)
    np.testing.assert_allclose(lower.scale, mean.scale)
    np.testing.assert_allclose(upper.translate, mean.translate)
    assert uncertainty.metadata["brgm"]["interval"] == result.settings["interval"]
    assert uncertainty.metadata["brgm"]["interval"]["level"] == 0.8
    multiplier = result.settings["interval"]["multiplier"]
    assert infos == [f"lr SRx4 VI finished: 80 % interval uncalibrated (no calibration file): "
                     f"mean ± {multiplier:.2f}·std"]

    widget.level_combo.setCurrentIndex(widget.level_combo.findData(0.95))
    before = [layer.unique_id for layer in viewer.layers]
    run = run_and_wait(widget, qtbot)  # another level: the same layers, renamed
    assert [layer.unique_id for layer in viewer.layers] == before
    assert [layer.name for layer in viewer.layers][3:] == ["lr SRx4 VI uncertainty (uncalibrated 95 %)",
                                                           "lr SRx4 VI lower 95 %", "lr SRx4 VI upper 95 %"]
    assert run.result.settings["interval"]["multiplier"] > multiplier and "95 % interval" in infos[-1]


def test_a_calibration_file_of_another_prior_is_an_error_message(docked, qtbot, tiny_prior, tmp_path, monkeypatch,
                                                                 notes):
    from napari_brgm.engine.calibration import CalibrationFile

    viewer, widget = docked
    viewer.add_image(np.random.default_rng(8).random((8, 8), dtype=np.float32), name="img")
    _vi_form(widget, steps=2, samples=2)
    other = tmp_path / "other-prior.calibration.json"
    CalibrationFile("0" * 64, "other-prior").save(other)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (str(other), "")))
    assert widget.calibration_label.text() == "auto"
    widget.calibration_button.click()
    assert widget.calibration_label.text() == "other-prior.calibration.json"
    assert widget.request().options["calibration"] == str(other)

    run = run_and_wait(widget, qtbot)

    assert run.result is None and [layer.name for layer in viewer.layers] == ["img"]
    failed = [note for note in notes if "failed" in note]
    assert len(failed) == 1 and "other-prior.calibration.json" in failed[0] and "not for this prior" in failed[0]
    assert not any("Traceback" in note for note in notes)
    assert widget.run_button.isEnabled() and widget.progress_bar.format() == "failed"
    widget.auto_calibration_button.click()
    assert widget.calibration_label.text() == "auto" and widget.request().options["calibration"] is None


def test_interval_controls_only_for_methods_with_samples(docked, tiny_prior):
    viewer, widget = docked
    viewer.add_image(np.zeros((8, 8), np.float32), name="img")
    choose_checkpoint(widget)
    widget.interval_check.setChecked(True)
    widget.set_calibration("/somewhere/x.calibration.json")
    controls = (widget.level_combo, widget.interval_check, widget.calibration_button, widget.samples_spin)
    for entry in ("map", "csgm", "iagan"):
        widget.method_combo.setCurrentIndex(widget.method_combo.findData(entry))
        assert not any(control.isEnabled() for control in controls), entry
    request = widget.request()
    assert not request.interval_layers and request.options["calibration"] is None  # a point estimate: no interval
    for entry in reconstruction.SPREAD_METHODS:
        widget.method_combo.setCurrentIndex(widget.method_combo.findData(entry))
        assert all(control.isEnabled() for control in controls), entry
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    request = widget.request()
    assert request.interval_layers and request.options["calibration"] == "/somewhere/x.calibration.json"
    assert request.options["interval"] == 0.9


@pytest.mark.parametrize(("method", "threshold", "ok"), [("map", 0.0, False), ("map", 1e30, True), ("dip", 0.0, None)])
def test_an_out_of_distribution_run_warns_and_every_result_layer_records_the_flag(docked, qtbot, tiny_prior,
                                                                                  monkeypatch, method, threshold, ok):
    from napari_brgm.engine import uncertainty

    viewer, widget = docked
    warnings: list[str] = []
    monkeypatch.setattr(reconstruction, "show_warning", warnings.append)
    monkeypatch.setattr(uncertainty, "MISFIT_THRESHOLD", threshold)  # read by in_distribution at call time
    viewer.add_image(np.random.default_rng(9).random((8, 8), dtype=np.float32) * 100, name="ood")
    choose_checkpoint(widget)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData(method))
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(2 if method == "dip" else 4))
    widget.steps_spin.setValue(2)
    widget.samples_spin.setValue(2)

    run = run_and_wait(widget, qtbot)

    record = run.result.settings["in_distribution"]
    assert record["ok"] is ok
    results = [layer for layer in viewer.layers if "brgm" in layer.metadata]
    assert len(results) >= 1 and all(layer.metadata["brgm"]["in_distribution"] == record for layer in results)
    flagged = [w for w in warnings if "looks unlike the prior's training images" in w]
    if ok is False:
        assert flagged == [f"{run.request.label}: the input looks unlike the prior's training images (misfit "
                           f"{record['score']:.1f} σ_y² > 0.0): the reconstruction and its uncertainty may be "
                           "confident nonsense; Deep Image Prior needs no trained prior"]
    else:
        assert flagged == []


def test_a_radiograph_defaults_to_deep_image_prior_until_a_method_is_chosen_for_it(docked, monkeypatch):
    viewer, widget = docked
    infos: list[str] = []
    monkeypatch.setattr(reconstruction, "show_info", infos.append)
    viewer.add_image(np.zeros((8, 8), np.float32), name="mr", metadata={"modality": "MR"})
    viewer.add_image(np.zeros((8, 8), np.float32), name="cxr", metadata={"modality": "CR"})
    assert widget.image_combo.currentText() == "mr" and widget.method_combo.currentData() == "map"

    widget.image_combo.setCurrentText("cxr")
    assert widget.method_combo.currentData() == "dip" and not widget.prior_combo.isEnabled()
    assert infos == ["cxr is CR: no X-ray prior is installed: Deep Image Prior, which needs none, is selected"]

    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))  # chosen by hand for cxr: kept
    widget.image_combo.setCurrentText("mr")
    widget.image_combo.setCurrentText("cxr")
    assert widget.method_combo.currentData() == "vi" and len(infos) == 1

    viewer.add_image(np.zeros((8, 8), np.float32), name="dx", metadata={"modality": " dx"})
    widget.image_combo.setCurrentText("dx")  # another radiograph, no method chosen for it yet
    assert widget.method_combo.currentData() == "dip" and infos[-1].startswith("dx is DX: no X-ray prior")

    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    monkeypatch.setattr(reconstruction, "builtin_priors", lambda: {"cxr-256": "/priors/cxr-256.safetensors"})
    viewer.add_image(np.zeros((8, 8), np.float32), name="cr2", metadata={"modality": "CR"})
    widget.image_combo.setCurrentText("cr2")  # an X-ray prior is installed: the method stays
    assert widget.method_combo.currentData() == "map" and len(infos) == 2


def test_the_xray_prior_rule():
    assert not reconstruction.xray_prior_installed(["brain-t1-64", "brain-t1-64-ddpm", "brain-t1-64-glow"])
    assert not reconstruction.xray_prior_installed([])
    for name in ("cxr-256", "chest-pa-128-ddpm", "XRay-flow", "hand-x-ray", "/models/Chest_Xray.pkl"):
        assert reconstruction.looks_like_xray_prior(name), name
        assert reconstruction.xray_prior_installed(["brain-t1-64", name]), name
    assert reconstruction.xray_modality(Image(np.zeros((2, 2)), metadata={"modality": "CR"})) == "CR"
    assert reconstruction.xray_modality(Image(np.zeros((2, 2)), metadata={"modality": "CT"})) is None
    assert reconstruction.xray_modality(Image(np.zeros((2, 2)))) is None


def test_running_a_radiograph_with_a_trained_prior_warns_at_run_and_still_runs(docked, qtbot, tiny_prior,
                                                                               monkeypatch):
    from napari_brgm.engine import uncertainty

    viewer, widget = docked
    warnings: list[str] = []
    monkeypatch.setattr(reconstruction, "show_warning", warnings.append)
    monkeypatch.setattr(uncertainty, "MISFIT_THRESHOLD", 1e30)  # no out-of-distribution warning after the run
    viewer.add_image(np.random.default_rng(10).random((8, 8), dtype=np.float32) * 100, name="cxr",
                     metadata={"modality": "CR"})
    assert widget.method_combo.currentData() == "dip"
    widget._warn_xray_prior(viewer.layers["cxr"], widget.request())  # Deep Image Prior: no warning
    assert warnings == []
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    widget.prior_combo.setCurrentIndex(widget.prior_combo.findData("brain-t1-64"))
    widget._warn_xray_prior(viewer.layers["cxr"], widget.request())  # a built-in prior
    assert warnings == ["cxr SRx4 MAP: cxr is CR, and the built-in priors are brain MRI priors: on an X-ray they "
                        "give confident nonsense; Deep Image Prior needs no trained prior"]
    warnings.clear()
    choose_checkpoint(widget)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("vi"))
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(4))
    widget.steps_spin.setValue(2)
    widget.samples_spin.setValue(2)

    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        widget.run_button.click()
        at_run = list(warnings)
    run = finished.args[0]

    assert at_run == warnings == [
        "cxr SRx4 VI: cxr is CR, and the built-in priors are brain MRI priors and network-snapshot.pkl is not named "
        "as an X-ray prior: unless it was trained on X-rays, it gives confident nonsense; Deep Image Prior needs no "
        "trained prior"]
    assert run.result is not None and "cxr SRx4 VI mean" in viewer.layers


def test_a_non_brain_input_with_a_built_in_prior_is_warned_about_before_the_solver_starts(docked, qtbot,
                                                                                          monkeypatch):
    from napari_brgm.engine.geometry import area_matrix
    from napari_brgm.io import load_image
    from napari_brgm.io.samples import sample_path

    viewer, widget = docked
    warnings: list[str] = []
    monkeypatch.setattr(reconstruction, "show_warning", warnings.append)
    xray = np.asarray(load_image(sample_path("chest_xray_rg1.dcm")).data, np.float64)
    xray = xray[0] if xray.ndim == 3 else xray
    viewer.add_image((area_matrix(xray.shape[0], 16) @ xray @ area_matrix(xray.shape[1], 15).T).astype(np.float32),
                     name="plain")  # no modality: only the score can tell
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    widget.prior_combo.setCurrentIndex(widget.prior_combo.findData("brain-t1-64"))
    widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(4))
    widget.steps_spin.setValue(2)
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        widget.run()
    run = finished.args[0]

    flagged = [w for w in warnings if "looks unlike the prior's training images (OOD score" in w]
    assert len(flagged) == 1 and flagged[0].startswith("plain SRx4 MAP: ") and run.warned_ood
    assert run.result.settings["in_distribution"]["ok"] is False
