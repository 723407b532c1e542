"""Volume runs from the dock widget (Slices: all / range) with the real engine and the tiny prior (32 px)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import QTimer

from napari_brgm.engine import reconstruct
from napari_brgm.io.geometry import default_affine
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.layer import layer_data
from napari_brgm.io.napari_writer import layer_affine
from napari_brgm.widgets import layers as L
from napari_brgm.widgets import volume as V
from tests.widgets.test_widget import choose_checkpoint, run_and_wait

SOURCE_META = {"format": "dicom-series", "source": "/data/series", "dicom": {"files": ["a.dcm", "b.dcm", "c.dcm"]},
               "modality": "MR"}


def _volume(viewer, shape=(3, 8, 8), seed=0, **kwargs) -> Image:
    data = np.random.default_rng(seed).random(shape, dtype=np.float32) * 100
    return viewer.add_image(data, name="vol", scale=(4.0, 2.0, 3.0), translate=(100.0, 5.0, -3.0),
                            metadata=dict(SOURCE_META), **kwargs)


def _form(widget, slices="all", text="", method="map", steps=3, task="superres", factor=4) -> None:
    choose_checkpoint(widget)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData(task))
    if task == "superres":
        widget.factor_combo.setCurrentIndex(widget.factor_combo.findData(factor))
    widget.method_combo.setCurrentIndex(widget.method_combo.findData(method))
    widget.steps_spin.setValue(steps)
    widget.slices_combo.setCurrentIndex(widget.slices_combo.findData(slices))
    widget.range_edit.setText(text)


def _corners(layer: Image) -> np.ndarray:
    """World coordinates of the outer corners of the first and the last voxel (pixel edges, not centres)."""
    n = np.asarray(layer.data.shape, dtype=float)
    return np.array([layer.data_to_world(-0.5 * np.ones(3)), layer.data_to_world(n - 0.5)])


def test_all_slices_super_resolved_into_a_volume_layer_that_overlays_the_input(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    volume = _volume(viewer)
    assert widget.slices_row.isVisibleTo(widget) and widget.slices_combo.currentData() == "displayed"
    _form(widget, "all")
    assert widget.info.text() == "3 of 3 slices (z0–z2) · 8×8 px each"

    run = run_and_wait(widget, qtbot)

    result = run.result
    assert not result.partial and result.done == [0, 1, 2]
    assert [layer.name for layer in viewer.layers] == ["vol", "vol z0:3 SRx4 MAP mean"]  # no samples, no preview
    mean = viewer.layers["vol z0:3 SRx4 MAP mean"]
    assert mean.data.shape == (3, 32, 32) and np.isfinite(mean.data).all()
    np.testing.assert_allclose(mean.scale, [4.0, 0.5, 0.75])
    np.testing.assert_allclose(_corners(mean), _corners(volume), atol=1e-9)  # the same field of view, z included
    assert np.all(np.abs(np.subtract(mean.extent.world, volume.extent.world)) <= 0.5 * np.asarray(volume.scale))
    # plane 2 is slice 2's own reconstruction (batched MAP agrees with a single run to float rounding)
    alone = reconstruct(volume.data[2], task="superres", factor=4, prior=tiny_prior, method="map", steps=3, seed=0)
    np.testing.assert_allclose(mean.data[2], alone.mean, atol=1e-3 * float(np.ptp(alone.mean)))
    assert np.abs(mean.data[0] - mean.data[2]).max() > 1.0  # each plane from its own slice
    meta = mean.metadata
    assert {k: meta[k] for k in SOURCE_META} == SOURCE_META  # the source's records stay (DICOM writer)
    brgm = meta["brgm"]
    assert (brgm["axis"], brgm["slices"], brgm["done"], brgm["partial"], brgm["factor"]) == (0, [0, 1, 2],
                                                                                             [0, 1, 2], False, 4)
    assert brgm["method"] == "map" and brgm["settings"]["steps"] == 3 and sorted(brgm["slice_settings"]) == [0, 1, 2]
    assert any(note.endswith("vol z0:3 SRx4 MAP finished: 3 slices") for note in notes), notes
    assert run.total_steps == 9 == widget.progress_bar.maximum() == widget.progress_bar.value()
    assert widget.progress_bar.format() == "3/3 slices · finished"
    assert run.status().startswith("slices 1–3/3 (z0–z2) · MAP 3/3")  # the MAP batch held all three slices

    viewer.add_image(np.zeros((8, 8), np.float32), name="flat")
    widget.image_combo.setCurrentText("flat")
    assert not widget.slices_row.isVisibleTo(widget) and widget.request().slices is None  # 2-D: no Slices row


def test_a_range_gives_those_slices_at_their_world_z_with_the_reader_geometry(docked, qtbot, tiny_prior):
    viewer, widget = docked
    affine = default_affine((2.5, 0.8, 0.8))
    affine[:3, 3] = (12.0, -30.0, 7.0)
    source = MedicalImage(data=np.random.default_rng(1).random((4, 8, 8), dtype=np.float32), spacing=(2.5, 0.8, 0.8),
                          affine=affine, modality="MR", window=None,
                          metadata={"affine": affine.tolist(), "shape": [4, 8, 8], "format": "nifti"})
    data, kwargs, _ = layer_data(source)
    volume = viewer.add_image(data, **{**kwargs, "name": "vol"})
    _form(widget, "range", "1:3", steps=2)
    assert widget.range_edit.isEnabled()

    run = run_and_wait(widget, qtbot)

    mean = viewer.layers["vol z1:3 SRx4 MAP mean"]
    assert mean.data.shape == (2, 32, 32) and np.isfinite(mean.data).all() and run.result.slices == [1, 2]
    for i, k in enumerate((1, 2)):  # plane i sits at slice k's world z, centred on its in-plane pixels
        centres = np.mean([mean.data_to_world((i, 4 * 3 + a, 4 * 5 + b)) for a in range(4) for b in range(4)], axis=0)
        np.testing.assert_allclose(centres, volume.data_to_world((k, 3, 5)), atol=1e-9)
    saved = layer_affine(mean.data.shape, mean.as_layer_data_tuple()[1])  # what napari hands the NIfTI writer
    np.testing.assert_allclose(saved, np.asarray(mean.metadata["affine"]), atol=1e-9)
    np.testing.assert_allclose(saved @ [0, 0, 0, 1.0], affine @ [1, -3 / 8, -3 / 8, 1.0], atol=1e-9)
    assert mean.metadata["shape"] == [2, 32, 32] and mean.metadata["brgm"]["slices"] == [1, 2]

    before = [layer.unique_id for layer in viewer.layers]
    run_and_wait(widget, qtbot)  # the same range again: the same layers, refilled
    assert [layer.unique_id for layer in viewer.layers] == before


def test_a_variational_volume_run_names_its_interval_and_fills_every_layer(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    _volume(viewer, shape=(2, 8, 8), seed=4)
    _form(widget, "all", method="vi", steps=2)
    widget.samples_spin.setValue(3)
    widget.interval_check.setChecked(True)

    run = run_and_wait(widget, qtbot)

    label = "vol z0:2 SRx4 VI"
    assert [layer.name for layer in viewer.layers] == ["vol", f"{label} mean", f"{label} uncertainty (uncalibrated 90 %)",
                                                       f"{label} lower 90 %", f"{label} upper 90 %"]
    mean, std, lower, upper = (viewer.layers[n] for n in [layer.name for layer in viewer.layers][1:])
    assert all(x.data.shape == (2, 32, 32) and np.isfinite(x.data).all() for x in (mean, std, lower, upper))
    assert (std.data > 0).any() and (upper.data >= lower.data).all() and (upper.data > lower.data).any()
    np.testing.assert_array_equal(std.data, run.result.std)
    assert std.colormap.name == "inferno" and std.contrast_limits[1] == pytest.approx(L.uncertainty_top(std.data))
    interval = run.result.settings[0]["interval"]
    assert std.metadata["brgm"]["interval"] == interval and interval["calibrated"] is False
    assert any(note.endswith(f"{label} finished: 2 slices; 90 % interval uncalibrated (no calibration file): "
                             f"mean ± {interval['multiplier']:.2f}·std") for note in notes), notes
    assert run.reports > 4 and widget.progress_bar.value() == run.total_steps == 2 * 2 * 2  # MAP + VI per slice


def test_a_3d_labels_mask_gives_each_slice_its_region_and_an_empty_slice_is_copied(docked, qtbot, tiny_prior, notes):
    viewer, widget = docked
    volume = _volume(viewer, shape=(3, 32, 32), seed=2)
    _form(widget, "all", task="inpaint", steps=2)
    widget.new_mask_button.click()
    mask = viewer.layers["vol mask"]
    mask.data[0, 4:12, 4:20] = 1
    mask.data[2, 16:30, 2:10] = 1  # slice 1 stays empty

    run = run_and_wait(widget, qtbot)

    assert run.result.copied == {1: "empty mask: nothing to inpaint"} and not run.result.partial
    mean, consistent = viewer.layers["vol z0:3 inpaint MAP mean"], viewer.layers["vol z0:3 inpaint MAP consistent"]
    assert mean.data.shape == consistent.data.shape == (3, 32, 32)
    np.testing.assert_array_equal(consistent.data[1], volume.data[1])  # copied through unchanged
    np.testing.assert_array_equal(mean.data[1], volume.data[1])
    for k in (0, 2):
        missing = mask.data[k] != 0
        np.testing.assert_array_equal(consistent.data[k][~missing], volume.data[k][~missing])
        assert np.abs(consistent.data[k][missing] - volume.data[k][missing]).max() > 1.0  # filled in, not copied
    assert mean.metadata["brgm"]["copied"] == {1: "empty mask: nothing to inpaint"}
    assert any("finished: 3 slices (1 copied through: empty mask)" in note for note in notes), notes


def test_cancel_keeps_the_finished_slices_and_the_viewer_stays_usable(docked, qtbot, tiny_prior, notes, monkeypatch):
    viewer, widget = docked
    _volume(viewer, seed=3)
    _form(widget, "all", method="csgm", steps=40)  # CSGM runs slice after slice
    formats: list[str] = []
    on_progress = widget._on_progress

    def progress(run, report):
        on_progress(run, report)
        formats.append(widget.progress_bar.format())
        flight = report.slices_in_flight
        if flight and run.request.slices.index(flight[0]) == 1 and not run.stop.is_set():
            widget.cancel_button.click()  # at the second slice's first report: it stops after its current step

    monkeypatch.setattr(widget, "_on_progress", progress)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    started = time.perf_counter()
    run = run_and_wait(widget, qtbot)
    timer.stop()

    result = run.result
    assert result.partial and result.done == [0]
    assert len(ticks) >= 0.2 * (time.perf_counter() - started) / 0.01  # the event loop kept serving
    mean = viewer.layers["vol z0:3 SRx4 CSGM mean (partial)"]
    assert np.isfinite(mean.data[0]).all() and np.isnan(mean.data[1:]).all()
    assert mean.metadata["brgm"]["partial"] is True and mean.metadata["brgm"]["done"] == [0]
    assert "vol z0:3 SRx4 CSGM preview" not in viewer.layers
    assert any("slice 1/3 (z0) · CSGM" in f for f in formats) and any("slice 2/3 (z1) · CSGM" in f for f in formats)
    assert any("left" in f for f in formats)
    assert any("cancelled: 1 of 3 slices finished, kept in: vol z0:3 SRx4 CSGM mean (partial)" in n for n in notes)
    assert widget.progress_bar.format() == "1/3 slices · stopped" and widget.run_button.isEnabled()
    viewer.dims.set_current_step(0, 2)  # still usable: browse, and a new run can be described
    assert widget.request().slices == [0, 1, 2]


def test_a_mask_of_another_shape_or_a_range_outside_the_volume_is_an_error_before_the_run(docked, tiny_prior, notes):
    viewer, widget = docked
    _volume(viewer)
    _form(widget, "all", task="inpaint")
    viewer.add_labels(np.ones((2, 8, 8), np.uint8), name="short mask")
    widget.mask_combo.setCurrentText("short mask")
    widget.run_button.click()
    assert widget.runs == {}
    assert any("mask 'short mask' has shape (2, 8, 8), but the volume 'vol' has shape (3, 8, 8)" in n for n in notes)

    widget.task_combo.setCurrentIndex(widget.task_combo.findData("superres"))
    widget.slices_combo.setCurrentIndex(widget.slices_combo.findData("range"))
    widget.range_edit.setText("2:9")
    assert "outside the volume's 3 slices" in widget.info.text()
    widget.run_button.click()
    assert widget.runs == {} and any("Slices '2:9' of 'vol'" in n and "outside" in n for n in notes)
    widget.range_edit.setText("")
    widget.run_button.click()
    assert widget.runs == {} and any("enter a range A:B" in n for n in notes)
    assert [layer.name for layer in viewer.layers] == ["vol", "short mask"]
    assert not any("Traceback" in n for n in notes)


def test_range_is_prefilled_from_the_displayed_slice(docked):
    viewer, widget = docked
    _volume(viewer, shape=(6, 8, 8))
    viewer.dims.set_current_step(0, 3)
    assert not widget.range_edit.isEnabled()
    widget.slices_combo.setCurrentIndex(widget.slices_combo.findData("range"))
    assert widget.range_edit.isEnabled() and widget.range_edit.text() == "3:6"


def test_volume_masks_from_labels_and_shapes():
    volume = Image(np.zeros((4, 8, 8)))
    labels = Labels(np.zeros((4, 8, 8), np.uint8), name="m")
    labels.data[2, 1:3, 1:3] = 1
    assert V.volume_mask(labels, volume, [2, 3]).shape == (4, 8, 8)
    with pytest.raises(ValueError, match="'m' is empty in slices z0:2"):
        V.volume_mask(labels, volume, [0, 1])
    flat = Labels(np.ones((8, 8), np.uint8), name="flat")
    assert V.volume_mask(flat, volume, [0]).shape == (8, 8)  # one mask for every slice
    shapes = Shapes([np.array([[1, 0, 0], [1, 0, 4], [1, 4, 4], [1, 4, 0]])], shape_type="polygon", name="s")
    mask = V.volume_mask(shapes, volume, [0, 1, 2])
    assert mask[1].sum() > 0 and mask[0].sum() == mask[2].sum() == 0  # drawn on slice 1 only
    assert V.chosen_slices(volume, "range", "-2:") == [2, 3] and V.chosen_slices(volume, "displayed") is None
    assert V.chosen_slices(Image(np.zeros((8, 8))), "all") is None


def test_the_volume_interval_summary_names_a_mixed_calibration():
    calibrated = {"level": 0.9, "calibrated": True, "calibration": "/p/brain.calibration.json", "match": "exact",
                  "reason": None}
    nearest = {**calibrated, "match": "nearest steps"}
    uncalibrated = {"level": 0.9, "calibrated": False, "calibration": None, "match": None,
                    "reason": "no matching record", "multiplier": 1.81}
    assert V.interval_summary([calibrated, calibrated]) == L.interval_summary(calibrated)
    assert V.interval_state([calibrated, uncalibrated, calibrated]) == "calibrated 2/3"
    assert V.interval_summary([calibrated, nearest, calibrated, uncalibrated]) == (
        "90 % interval calibrated with brain.calibration.json in 3 of 4 slices (exact match in 2, nearest steps in "
        "1), uncalibrated in 1")
    assert V.interval_summary([]) is None
    request = L.Request("vol", None, np.zeros((3, 8, 8)), None, {"task": "superres", "factor": 4, "method": "vi"},
                        slices=[0, 1, 2], spread=True)
    assert L.layer_name(request, "uncertainty", calibrated, False, "calibrated 2/3") == \
        "vol z0:3 SRx4 VI uncertainty (calibrated 2/3 90 %)"
    assert V.kinds(request) == ["mean", "uncertainty"]


def test_a_reused_layer_gets_its_data_back_when_no_slice_finished():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((3, 8, 8), np.float32), name="vol")
    request = L.Request("vol", None, image.data, None, {"task": "superres", "factor": 2, "method": "map"},
                        slices=[0, 1])
    first = V.VolumeLayers(viewer, image, request)
    first.layers["mean"].data[:] = 7.0
    again = V.VolumeLayers(viewer, image, request)
    assert again.layers["mean"] is first.layers["mean"] and np.isnan(again.layers["mean"].data).all()
    again.drop()
    assert (viewer.layers["vol z0:2 SRx2 MAP mean"].data == 7.0).all() and len(viewer.layers) == 2
