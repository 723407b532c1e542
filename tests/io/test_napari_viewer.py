"""The plugin inside a real napari viewer: reader, writer, sample data, and bad files."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_brgm.io import load_image
from tests.io.conftest import BRAIN_SAMPLE


def test_open_xray_through_the_plugin(make_napari_viewer, rg1_path):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(rg1_path), plugin="napari-brgm")
    assert layer.data.shape == (1955, 1841)
    assert tuple(layer.scale) == (1.0, 1.0)
    assert tuple(layer.contrast_limits) == (32767 - 15000 - 15000, 32767 - 15000 + 15000)
    assert layer.metadata["modality"] == "CR"
    assert layer.metadata["inverted"] is True
    # bone (the dense spine column in the middle) is brighter than lung in the displayed data
    rows, cols = layer.data.shape
    spine = layer.data[rows // 3 : rows // 2, cols // 2 - 20 : cols // 2 + 20].mean()
    lung = layer.data[rows // 3 : rows // 2, cols // 4 - 20 : cols // 4 + 20].mean()
    assert spine > lung


def test_open_series_folder_and_nifti(make_napari_viewer, series_folder):
    viewer = make_napari_viewer()
    [series] = viewer.open(str(series_folder), plugin="napari-brgm")
    [nifti] = viewer.open(str(BRAIN_SAMPLE), plugin="napari-brgm")
    assert series.data.shape == (12, 217, 181)
    assert tuple(series.scale) == pytest.approx((1.0, 1.0, 1.0))
    assert series.metadata["format"] == "dicom-series"
    # The series is slices 10..21 of the volume: same in-plane position, 10 mm further along z.
    np.testing.assert_allclose(series.translate, np.add(nifti.translate, (10.0, 0.0, 0.0)), atol=1e-4)
    assert nifti.metadata["affine"] == load_image(BRAIN_SAMPLE).metadata["affine"]


def test_extensionless_dicom_opens_without_choosing_a_plugin(make_napari_viewer, tmp_path):
    path = tmp_path / "IM0001"
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), path)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=None)  # as the GUI does: napari picks the reader
    assert layer.metadata["modality"] == "CT"
    assert tuple(layer.scale) == pytest.approx((0.661468, 0.661468))


def test_bad_file_does_not_crash_the_viewer(make_napari_viewer, tmp_path):
    bad = tmp_path / "IM0002"  # no extension: napari-brgm is the only reader napari can offer
    with open(pydicom.data.get_testdata_file("CT_small.dcm"), "rb") as f:
        bad.write_bytes(f.read()[:30_000])
    viewer = make_napari_viewer()
    before = len(notification_manager.records)
    assert viewer.open(str(bad), plugin=None) == []
    errors = [n for n in notification_manager.records[before:] if n.severity >= NotificationSeverity.ERROR]
    assert len(errors) == 1
    assert "IM0002" in errors[0].message and "truncated pixel data" in errors[0].message
    assert len(viewer.layers) == 0
    # File > Open and drag-and-drop go through QtViewer._qt_open: same single message, no exception.
    before = len(notification_manager.records)
    viewer.window._qt_viewer._qt_open([str(bad)], stack=False)
    assert [n.message for n in notification_manager.records[before:]] == [errors[0].message]
    viewer.open(str(BRAIN_SAMPLE), plugin="napari-brgm")  # still usable
    assert len(viewer.layers) == 1


def test_save_layer_as_nifti_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(BRAIN_SAMPLE), plugin="napari-brgm")
    [written] = viewer.layers.save(str(tmp_path / "saved.nii.gz"), selected=False, plugin="napari-brgm")
    source, again = load_image(BRAIN_SAMPLE), load_image(written)
    np.testing.assert_array_equal(again.data, source.data)
    np.testing.assert_allclose(again.affine, source.affine)
    assert again.spacing == source.spacing


def test_save_resampled_layer_uses_its_scale_and_translate(make_napari_viewer, tmp_path):
    from napari_brgm.io import resampled_affine, resampled_scale_translate

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(BRAIN_SAMPLE), plugin="napari-brgm")
    scale, translate = resampled_scale_translate(layer.scale, layer.translate, 2)
    finer = np.repeat(np.repeat(layer.data, 2, axis=1), 2, axis=2)
    result = viewer.add_image(finer, scale=scale, translate=translate, metadata=dict(layer.metadata), name="sr")
    viewer.layers.selection = {result}
    [written] = viewer.layers.save(str(tmp_path / "sr.nii.gz"), selected=True, plugin="napari-brgm")
    expected = resampled_affine(load_image(BRAIN_SAMPLE).affine, 2)
    np.testing.assert_allclose(load_image(written).affine, expected, atol=1e-9)


def test_sample_data_contributions(make_napari_viewer):
    viewer = make_napari_viewer()
    [xray] = viewer.open_sample("napari-brgm", "chest_xray")
    [brain] = viewer.open_sample("napari-brgm", "brain_t1")
    assert max(xray.data.shape) <= 1024 and xray.metadata["photometric_interpretation"] == "MONOCHROME1"
    assert brain.data.shape == (36, 217, 181) and tuple(brain.scale) == (1.0, 1.0, 1.0)
