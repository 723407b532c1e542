"""Single DICOM files: a CR radiograph (MONOCHROME1), CT and MR slices, a multi-frame MR object."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from napari_brgm.io import load_image
from tests.io.conftest import pydicom_file


def _lps_to_ras(v):
    return np.array([-v[0], -v[1], v[2]], dtype=float)


def test_rg1_xray_is_inverted_with_its_window(rg1_path):
    ds = pydicom.dcmread(rg1_path)
    image = load_image(rg1_path)

    assert image.data.shape == (1955, 1841) == ds.pixel_array.shape
    assert image.data.dtype == np.float32
    assert image.axes == "yx"
    assert image.modality == "CR"
    # MONOCHROME1, 15 bits stored: displayed = (0 + 32767) - stored, so bone (few counts) is bright.
    np.testing.assert_array_equal(image.data, 32767.0 - ds.pixel_array)
    assert image.metadata["inverted"] is True
    assert image.metadata["inversion_offset"] == 32767.0
    assert image.metadata["photometric_interpretation"] == "MONOCHROME1"
    # The header window (15000, 30000) mirrors its centre, keeps its width.
    assert image.window == (32767.0 - 15000.0, 30000.0)
    # PixelSpacing is 0\0 in this file: unknown, 1 per pixel.
    assert image.spacing == (1.0, 1.0)
    assert image.metadata["spacing_known"] is False


def test_rg1_metadata_is_json_and_patient_free(rg1_path):
    image = load_image(rg1_path)
    text = json.dumps(image.metadata)
    identifying_values = ("CompressedSamples", "9RG1", "19400305", "26210", "Hamburg", "THORAVISION", "exam Number")
    for identifying in (*identifying_values, "ward"):
        assert identifying not in text
    assert image.metadata["dicom"]["view_position"] == "PA"
    assert image.metadata["dicom"]["body_part_examined"] == "CHEST"
    assert image.metadata["dicom"]["bits_stored"] == 15
    assert image.metadata["dicom"]["files"] == [str(rg1_path)]  # where a DICOM writer finds the source dataset


def test_ct_slice_rescale_spacing_and_geometry():
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = load_image(path)

    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(image.data, expected)
    assert image.metadata["rescale"] == [float(ds.RescaleSlope), float(ds.RescaleIntercept)]
    assert image.spacing == pytest.approx([float(v) for v in ds.PixelSpacing])
    # Pixel (row r, column c) lies at IPP + c * dx * row_cosine + r * dy * column_cosine (LPS).
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    r, c = 17, 101
    lps = np.array(ds.ImagePositionPatient, dtype=float) + c * dx * iop[:3] + r * dy * iop[3:]
    np.testing.assert_allclose((image.affine @ [0, r, c, 1])[:3], _lps_to_ras(lps), atol=1e-6)


def test_mr_slice_keeps_header_window():
    path = pydicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    image = load_image(path)
    np.testing.assert_array_equal(image.data, ds.pixel_array)
    assert image.window == (float(ds.WindowCenter), float(ds.WindowWidth))
    assert image.modality == "MR"


def test_multiframe_mr_is_a_volume():
    path = pydicom_file("emri_small.dcm")
    ds = pydicom.dcmread(path)
    image = load_image(path)

    assert image.data.shape == (10, 64, 64)
    assert image.axes == "zyx"
    np.testing.assert_array_equal(image.data, ds.pixel_array)
    # No positions per frame: frames are SpacingBetweenSlices apart; no PixelSpacing: 1 per pixel.
    assert image.spacing == pytest.approx((float(ds.SpacingBetweenSlices), 1.0, 1.0))
    assert image.window is None


def test_enhanced_multiframe_geometry_from_functional_groups(tmp_path):
    """Frames stored out of order with per-frame positions; spacing and rescale in the shared groups."""
    ds = pydicom.dcmread(pydicom_file("emri_small.dcm"))
    n = int(ds.NumberOfFrames)
    stored_order = [3, 0, 7, 1, 9, 2, 8, 4, 6, 5]  # frame f of the file lies at slice stored_order[f]
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = ["0.8", "0.6"], "2.5"
    plane = Dataset()
    plane.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]  # coronal: columns L, rows F
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "2", "-10", "US"
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [plane]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for f in range(n):
        pos = Dataset()
        pos.ImagePositionPatient = ["-20", f"{-40 + 2.5 * stored_order[f]}", "30"]  # slices step +2.5 mm along P
        item = Dataset()
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path)

    image = load_image(path)
    raw = ds.pixel_array
    for f in range(n):
        np.testing.assert_array_equal(image.data[stored_order[f]], raw[f] * 2.0 - 10.0)
    assert image.spacing == pytest.approx((2.5, 0.8, 0.6))  # PixelSpacing is (row, column) spacing
    np.testing.assert_allclose(image.affine @ [0, 0, 0, 1], [20, 40, 30, 1])  # LPS (-20, -40, 30) in RAS
    np.testing.assert_allclose(image.affine[:3, :3], [[0, 0, -0.6], [-2.5, 0, 0], [0, -0.8, 0]], atol=1e-12)
