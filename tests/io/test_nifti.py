"""NIfTI reading and `save_nifti`: napari axis order, affine, and geometry round trips."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest

from napari_brgm.io import load_image, resampled_affine, save_nifti
from tests.io.conftest import BRAIN_SAMPLE, pydicom_file


def test_brain_sample_in_napari_order(brain_nifti):
    image = load_image(BRAIN_SAMPLE)
    voxels = np.asarray(brain_nifti.dataobj)

    assert image.data.shape == voxels.shape[::-1] == (36, 217, 181)
    np.testing.assert_array_equal(image.data, voxels.transpose(2, 1, 0))
    assert image.spacing == pytest.approx(brain_nifti.header.get_zooms()[::-1])
    # index (z, y, x) maps where the NIfTI index (x, y, z) maps.
    for zyx in [(0, 0, 0), (7, 100, 33), (35, 216, 180)]:
        np.testing.assert_allclose(image.affine @ [*zyx, 1], brain_nifti.affine @ [*zyx[::-1], 1])
    assert image.modality is None
    assert image.metadata["nifti"]["sform_code"] == 4


def test_nifti_round_trip_keeps_geometry_and_values(tmp_path):
    image = load_image(BRAIN_SAMPLE)
    written = save_nifti(tmp_path / "copy.nii.gz", image.data, image.metadata)
    again = load_image(written)

    np.testing.assert_array_equal(again.data, image.data)
    np.testing.assert_allclose(again.affine, image.affine)
    assert again.spacing == image.spacing
    np.testing.assert_allclose(nib.load(written).affine, nib.load(BRAIN_SAMPLE).affine)
    assert nib.load(written).header["sform_code"] == 4


def test_dicom_slice_written_as_nifti_lands_at_the_dicom_position(tmp_path):
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = load_image(path)
    written = save_nifti(tmp_path / "ct.nii", image.data, image)
    nii = nib.load(written)

    assert nii.shape == (128, 128, 1)
    np.testing.assert_allclose(np.asarray(nii.dataobj)[:, :, 0].T, image.data)
    # NIfTI voxel (i=column, j=row) = DICOM pixel (row, column) at IPP + ... in LPS, i.e. RAS with x, y negated.
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    lps = np.array(ds.ImagePositionPatient, dtype=float) + 40 * dx * iop[:3] + 90 * dy * iop[3:]
    np.testing.assert_allclose((nii.affine @ [40, 90, 0, 1])[:3], [-lps[0], -lps[1], lps[2]], atol=1e-5)
    again = load_image(written)
    assert again.data.shape == (128, 128)
    np.testing.assert_allclose(again.affine, image.affine, atol=1e-5)


def test_resampled_result_is_written_on_the_finer_grid(tmp_path):
    image = load_image(BRAIN_SAMPLE)
    factor = 2
    finer = np.repeat(np.repeat(image.data, factor, axis=1), factor, axis=2)
    with pytest.raises(ValueError, match="do not match the source shape"):
        save_nifti(tmp_path / "wrong.nii.gz", finer, image.metadata)

    written = save_nifti(tmp_path / "sr.nii.gz", finer, image.resampled(finer, factor))
    nii = nib.load(written)
    assert nii.header.get_zooms() == pytest.approx((0.5, 0.5, 1.0))
    np.testing.assert_allclose(nii.affine, resampled_affine(image.affine, factor)[:, [2, 1, 0, 3]])
    # The field of view is unchanged: the outer corner of the first voxel is the same point.
    corner = image.affine @ [0, -0.5, -0.5, 1]
    np.testing.assert_allclose(nii.affine @ [-0.5, -0.5, 0, 1], corner)


def test_save_nifti_refuses_bad_names_and_shapes(tmp_path):
    image = load_image(BRAIN_SAMPLE)
    with pytest.raises(ValueError, match=r"\.nii or \.nii\.gz"):
        save_nifti(tmp_path / "out.png", image.data, image)
    with pytest.raises(ValueError, match="2-D, 3-D or stacked"):
        save_nifti(tmp_path / "out.nii", image.data[None, None], np.eye(4))
    with pytest.raises(ValueError, match="do not match the source shape"):
        save_nifti(tmp_path / "out.nii", image.data[None, :, :5], image)


def test_a_stack_of_volumes_is_written_as_4d_nifti_in_the_same_geometry(tmp_path):
    image = load_image(BRAIN_SAMPLE)
    stack = np.stack([image.data, 2 * image.data])
    written = nib.load(save_nifti(tmp_path / "samples.nii.gz", stack, image))
    assert written.shape == image.data.shape[::-1] + (2,)
    np.testing.assert_allclose(written.affine, nib.load(save_nifti(tmp_path / "one.nii.gz", image.data, image)).affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj)[..., 1], 2 * image.data.T)


def test_window_round_trips_through_cal_min_max(tmp_path):
    image = load_image(BRAIN_SAMPLE)
    metadata = {**image.metadata, "window": [80.0, 120.0]}
    written = save_nifti(tmp_path / "windowed.nii.gz", image.data, metadata)
    header = nib.load(written).header
    assert (float(header["cal_min"]), float(header["cal_max"])) == (20.0, 140.0)
    assert load_image(written).window == (80.0, 120.0)
