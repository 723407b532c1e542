"""Layers in and out of a run (no window needed): slice, mask, placement, metadata, the re-run rule."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels, Shapes

from napari_brgm.engine import Result
from napari_brgm.io.geometry import default_affine, layer_scale_translate
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.layer import layer_data
from napari_brgm.io.napari_writer import layer_affine
from napari_brgm.widgets import layers as L


def _request(name="img", k=None, task="superres", factor=4, method="vi", shape=(8, 8)):
    image = np.zeros(shape, np.float32)
    options = {"task": task, "factor": factor, "method": method, "prior": "p", "steps": 3, "samples": 2, "seed": 5}
    return L.Request(layer_name=name, slice_index=k, image=image, mask=None, options=options)


def _result(shape=(32, 32), samples=3, vi=True, inpaint=False, partial=False, offset=0.0, interval=None):
    rng = np.random.default_rng(0)
    stack = (rng.random((samples, *shape)) + offset).astype(np.float32)
    mean, std = stack.mean(0), stack.std(0)
    settings = {"task": "superres", "prior": "p", "prior_path": "/x/p.pkl", "method": "vi" if vi else "map",
                "seed": 5}
    if interval is not None:
        settings["interval"] = interval
    return Result(mean=mean, samples=stack, std=std if vi else None, map=stack[0],
                  consistent=stack[0] if inpaint else None, losses={"map/total": [3.0, 2.0], "vi/total": [1.5]},
                  partial=partial, settings=settings, lower=None if interval is None else mean - 2 * std,
                  upper=None if interval is None else mean + 2 * std)


UNCALIBRATED = {"level": 0.9, "calibrated": False, "calibration": None, "match": None, "groups": ["all"],
                "multiplier": 2.6277, "reason": "no calibration file"}
CALIBRATED = {"level": 0.95, "calibrated": True, "calibration": "/priors/brain-t1-64.calibration.json",
              "match": "exact", "groups": ["all"], "lambdas": {"all": 2.1}, "eps": 0.01, "data_kind": "in-model",
              "n_images": {"all": 50}}


def test_sr_output_pixels_cover_their_input_pixel_in_world_coordinates():
    image = Image(np.zeros((8, 8)), scale=(2.0, 3.0), translate=(10.0, -4.0))
    where = L.placement(image, None, factor=4)
    out = Image(np.zeros((32, 32)), **where)
    np.testing.assert_allclose(out.scale, [0.5, 0.75])
    np.testing.assert_allclose(out.translate, np.array([10.0, -4.0]) - np.array([2.0, 3.0]) * 3 / 8)
    # the 4×4 output pixels of input pixel (2, 5) are centred on it
    centres = [out.data_to_world((4 * 2 + i, 4 * 5 + j)) for i in range(4) for j in range(4)]
    np.testing.assert_allclose(np.mean(centres, axis=0), image.data_to_world((2, 5)))


def test_placement_follows_a_rotated_input_and_a_samples_axis():
    image = Image(np.zeros((8, 8)), scale=(2.0, 3.0), translate=(1.0, 5.0), rotate=30, shear=[0.2])
    out = Image(np.zeros((2, 16, 16)), **L.placement(image, None, factor=2, stack=True))
    centres = [out.data_to_world((1, 2 * 3 + i, 2 * 4 + j))[1:] for i in range(2) for j in range(2)]
    np.testing.assert_allclose(np.mean(centres, axis=0), image.data_to_world((3, 4)), atol=1e-9)


def test_volume_slice_results_sit_at_their_slice():
    volume = Image(np.zeros((5, 8, 8)), scale=(3.0, 2.0, 2.0), translate=(10.0, 1.0, 1.0), units="mm",
                   axis_labels=("z", "y", "x"))
    out = Image(np.zeros((1, 8, 8)), **L.placement(volume, 2, factor=1))
    np.testing.assert_allclose(out.scale, volume.scale)
    np.testing.assert_allclose(out.translate, [16.0, 1.0, 1.0])
    assert out.units == volume.units and out.axis_labels == ("z", "y", "x")  # or napari warns of mixed units
    samples = Image(np.zeros((4, 1, 8, 8)), **L.placement(volume, 2, factor=1, stack=True))
    assert samples.axis_labels == ("sample", "z", "y", "x") and samples.units[1:] == volume.units


def test_displayed_slice_follows_the_viewer_and_refuses_a_3d_view():
    viewer = ViewerModel()
    volume = viewer.add_image(np.zeros((5, 8, 8)), scale=(3.0, 1.0, 1.0), translate=(10.0, 0, 0))
    viewer.dims.set_point(0, 16.0)
    assert L.displayed_slice(volume, viewer) == 2
    image, k = L.input_slice(volume, viewer)
    assert image.shape == (8, 8) and k == 2
    viewer.dims.ndisplay = 3
    with pytest.raises(ValueError, match="2-D"):
        L.displayed_slice(volume, viewer)


def test_input_must_be_a_single_channel_image():
    viewer = ViewerModel()
    with pytest.raises(ValueError, match="choose an input"):
        L.input_slice(None, viewer)
    rgb = viewer.add_image(np.zeros((8, 8, 3)), rgb=True, name="photo")
    with pytest.raises(ValueError, match="RGB"):
        L.input_slice(rgb, viewer)
    labels = viewer.add_labels(np.zeros((8, 8), int), name="seg")
    with pytest.raises(ValueError, match="not an image"):
        L.input_slice(labels, viewer)


def test_mask_from_labels_takes_the_slice_and_refuses_other_shapes():
    volume = Image(np.zeros((4, 8, 8)), name="vol")
    labels = Labels(np.zeros((4, 8, 8), np.uint8))
    labels.data[1, 2:4, 3:5] = 1
    assert L.mask_slice(labels, volume, 1).sum() == 4
    assert not L.mask_slice(labels, volume, 2).any()
    with pytest.raises(ValueError, match=r"shape \(6, 6\).*\(8, 8\)"):
        L.mask_slice(Labels(np.zeros((6, 6), np.uint8), name="small"), volume, 1)
    with pytest.raises(ValueError, match="New mask"):
        L.mask_slice(None, volume, 1)


def test_mask_from_shapes_is_rasterised_on_the_image_grid_through_world_coordinates():
    image = Image(np.zeros((8, 8)), scale=(2.0, 2.0), translate=(100.0, 100.0))
    # a world-space rectangle covering the centres of pixels y 2..3, x 4..6
    shapes = Shapes([np.array([[103.5, 107.5], [106.5, 112.5]])], shape_type="rectangle")
    mask = L.mask_slice(shapes, image, None)
    expected = np.zeros((8, 8), bool)
    expected[2:4, 4:7] = True
    np.testing.assert_array_equal(mask, expected)


def test_shapes_on_other_slices_of_a_volume_are_ignored():
    volume = Image(np.zeros((4, 8, 8)))
    def square(z, lo, hi):
        return np.array([[z, lo, lo], [z, lo, hi], [z, hi, hi], [z, hi, lo]], float)

    shapes = Shapes([square(1, 1, 3), square(2, 5, 7)], shape_type="rectangle")
    assert L.mask_slice(shapes, volume, 1)[1:4, 1:4].all()
    assert not L.mask_slice(shapes, volume, 1)[5:, 5:].any()


def test_new_mask_layer_shares_the_image_grid():
    volume = Image(np.zeros((4, 8, 8)), name="vol", scale=(3.0, 2.0, 2.0), translate=(1.0, 2.0, 3.0))
    mask = L.new_mask_layer(volume)
    assert mask.data.shape == (4, 8, 8) and not mask.data.any()
    np.testing.assert_allclose(mask.scale, volume.scale)
    np.testing.assert_allclose(mask.translate, volume.translate)
    assert mask.name == "vol mask" and mask.selected_label == 1


def test_names_say_input_slice_task_and_method():
    assert _request("brain", 7, "superres", 8, "vi").label == "brain z7 SRx8 VI"
    assert _request("xray", None, "inpaint", 4, "map").label == "xray inpaint MAP"


def test_results_layers_and_rerun_rule():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((8, 8), np.float32), name="img", contrast_limits=(0, 2))
    request = _request()
    first = L.show_results(viewer, image, request, _result())
    assert [x.name for x in first] == ["img SRx4 VI mean", "img SRx4 VI samples", "img SRx4 VI uncertainty"]
    assert first[1].data.shape == (3, 32, 32)
    assert first[2].colormap.name == "inferno"
    assert first[2].contrast_limits[0] == 0
    assert first[2].contrast_limits[1] == pytest.approx(np.percentile(first[2].data, L.UNCERTAINTY_PERCENTILE))
    assert tuple(first[0].contrast_limits) == (0, 2)

    again = L.show_results(viewer, image, request, _result(offset=1.0))  # same key: updated in place
    assert all(a is b for a, b in zip(first, again, strict=True)) and len(viewer.layers) == 4
    assert first[0].data.mean() > 1.0

    L.show_results(viewer, image, _request(method="map"), _result(vi=False))  # other method: new layers
    assert [x.name for x in viewer.layers][4:] == ["img SRx4 MAP mean"]

    first[0].name = "keep this"  # a renamed result is no longer updated
    L.show_results(viewer, image, request, _result(offset=5.0))
    assert first[0].data.mean() < 5.0 and viewer.layers["img SRx4 VI mean"].data.mean() > 5.0


def test_partial_results_are_flagged_and_then_replaced():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((8, 8), np.float32), name="img")
    (mean, *_) = L.show_results(viewer, image, _request(), _result(partial=True))
    assert mean.name == "img SRx4 VI mean (partial)" and mean.metadata["brgm"]["partial"] is True
    L.show_results(viewer, image, _request(), _result())
    assert mean.name == "img SRx4 VI mean" and mean.metadata["brgm"]["partial"] is False


def test_metadata_records_the_run():
    image = Image(np.zeros((8, 8), np.float32), name="img", metadata={"modality": "CR"})
    meta = L.result_metadata(image, _request(), _result(), "mean")
    assert meta["modality"] == "CR"
    brgm = meta["brgm"]
    assert (brgm["prior"], brgm["method"], brgm["seed"], brgm["input"]) == ("p", "vi", 5, "img")
    assert brgm["final_losses"] == {"map/total": 2.0, "vi/total": 1.5}
    assert brgm["settings"]["prior_path"] == "/x/p.pkl"


def test_result_geometry_agrees_with_the_nifti_writer():
    """A slice-k ×4 result of a reader-made volume: its metadata affine is what the writer would save."""
    affine = default_affine((2.5, 0.8, 0.8))
    affine[:3, 3] = (12.0, -30.0, 7.0)
    source = MedicalImage(data=np.zeros((6, 8, 8), np.float32), spacing=(2.5, 0.8, 0.8), affine=affine,
                          modality="MR", window=None, metadata={"affine": affine.tolist(), "shape": [6, 8, 8]})
    data, kwargs, _ = layer_data(source)
    volume = Image(data, **kwargs)
    request = _request("vol", k=3, factor=4)
    (mean, *_) = L.show_results(ViewerModel(), volume, request, _result())
    assert mean.data.shape == (1, 32, 32)
    saved = layer_affine(mean.data.shape, mean.as_layer_data_tuple()[1])  # what napari hands the writer
    np.testing.assert_allclose(saved, np.asarray(mean.metadata["affine"]), atol=1e-9)
    # voxel (0, 0, 0) of the result is the first quarter-voxel of voxel (3, 0, 0) of the source
    corner = affine @ np.array([3, -3 / 8, -3 / 8, 1.0])
    np.testing.assert_allclose(saved @ np.array([0, 0, 0, 1.0]), corner, atol=1e-9)
    scale, translate = layer_scale_translate(saved, 3)
    np.testing.assert_allclose(scale, mean.scale)
    np.testing.assert_allclose(translate, mean.translate, atol=1e-9)


def test_interval_layers_and_the_uncertainty_name_follow_the_calibration_state():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((8, 8), np.float32), name="img", colormap="gray", contrast_limits=(0, 2))
    request = _request()
    request.interval_layers = True
    first = L.show_results(viewer, image, request, _result(interval=UNCALIBRATED))
    assert [x.name for x in first] == ["img SRx4 VI mean", "img SRx4 VI samples",
                                       "img SRx4 VI uncertainty (uncalibrated 90 %)", "img SRx4 VI lower 90 %",
                                       "img SRx4 VI upper 90 %"]
    mean, _, uncertainty, lower, upper = first
    assert uncertainty.metadata["brgm"]["interval"] == UNCALIBRATED and lower.metadata["brgm"]["kind"] == "lower"
    assert (upper.data >= lower.data).all() and (upper.data > lower.data).any()
    assert tuple(lower.contrast_limits) == (0, 2) and upper.colormap.name == "gray"
    np.testing.assert_allclose(lower.scale, mean.scale)
    np.testing.assert_allclose(upper.translate, mean.translate)

    again = L.show_results(viewer, image, request, _result(interval=CALIBRATED, offset=1.0))  # another state
    assert all(a is b for a, b in zip(first, again, strict=True)) and len(viewer.layers) == 6
    assert uncertainty.name == "img SRx4 VI uncertainty (calibrated 95 %)" and lower.name == "img SRx4 VI lower 95 %"
    assert uncertainty.metadata["brgm"]["interval"]["calibrated"] is True and lower.data.mean() > 0.5

    (*_, kept) = L.show_results(viewer, image, request, _result(interval=UNCALIBRATED, partial=True))
    assert kept is upper and upper.name == "img SRx4 VI upper 90 % (partial)"
    uncertainty.name = "mine"  # renamed: kept, and the next run adds a new uncertainty layer
    L.show_results(viewer, image, request, _result(interval=UNCALIBRATED))
    assert uncertainty.name == "mine" and "img SRx4 VI uncertainty (uncalibrated 90 %)" in viewer.layers
    assert upper.name == "img SRx4 VI upper 90 %" and len(viewer.layers) == 7


def test_interval_layers_only_when_asked_and_computed():
    request = _request()
    assert "lower" not in L.result_arrays(request, _result(interval=UNCALIBRATED))
    request.interval_layers = True
    point = _result(vi=False)
    point.settings["interval"] = 0.9  # a point estimate records the requested level only
    assert list(L.result_arrays(request, point)) == ["mean"] and L.interval_record(point) is None
    assert L.result_metadata(Image(np.zeros((8, 8))), request, point, "mean")["brgm"]["interval"] is None
    assert L.result_name(request, "uncertainty", _result()) == "img SRx4 VI uncertainty"  # no interval recorded


def test_interval_summary_names_the_calibration_or_the_fallback():
    assert L.interval_summary(UNCALIBRATED) == "90 % interval uncalibrated (no calibration file): mean ± 2.63·std"
    assert (L.interval_summary(CALIBRATED)
            == "95 % interval calibrated with brain-t1-64.calibration.json (exact match)")
    nearest = {**CALIBRATED, "level": 0.8, "match": "steps 500 (run: 300)"}
    assert L.interval_summary(nearest) == ("80 % interval calibrated with brain-t1-64.calibration.json "
                                           "(steps 500 (run: 300))")
    assert L.interval_summary({**CALIBRATED, "strata": 4}) == (
        "95 % interval calibrated with brain-t1-64.calibration.json (exact match, per std quartile)")


def test_the_out_of_distribution_flag_is_in_the_metadata_and_worded_in_one_line():
    flagged = {"score": 12.34, "threshold": 4.0, "ok": False, "score_kind": "data misfit / sigma_y^2",
               "threshold_from": "default"}
    result = _result()
    result.settings["in_distribution"] = flagged
    meta = L.result_metadata(Image(np.zeros((8, 8), np.float32), name="img"), _request(), result, "uncertainty")
    assert meta["brgm"]["in_distribution"] == flagged
    assert L.result_metadata(Image(np.zeros((8, 8))), _request(), _result(), "mean")["brgm"]["in_distribution"] is None
    assert L.ood_warning("img SRx4 VI", flagged) == (
        "img SRx4 VI: the input looks unlike the prior's training images (misfit 12.3 σ_y² > 4.0): the "
        "reconstruction and its uncertainty may be confident nonsense; Deep Image Prior needs no trained prior")
    calibrated = {**flagged, "threshold": 2.5, "threshold_from": "calibration"}
    text = L.ood_warning("x", calibrated, partial=True)
    assert "(misfit 12.3 σ_y² > 2.5, the calibration set's 99th percentile); the run was cancelled" in text
    assert "\n" not in text
    assert L.ood_warning("x", {**flagged, "ok": True}) is None
    assert L.ood_warning("x", {"score": None, "threshold": None, "ok": None, "score_kind": "none"}) is None
    assert L.ood_warning("x", None) is None


def test_a_point_estimate_has_no_interval_record():
    result = _result(vi=False)
    result.settings["interval"] = {"level": 0.9, "calibrated": False, "calibration": None,
                                   "reason": "point estimate: no samples"}
    assert L.interval_record(result) is None
