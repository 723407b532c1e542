"""A folder holding one DICOM series, built from the brain sample's slices with shuffled names."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from napari_brgm.io import ReadError, load_image
from tests.io.conftest import SERIES_INTERCEPT, series_affine, series_volume, write_mr_series


def test_series_is_sorted_by_position_with_the_source_geometry(series_folder, brain_nifti):
    image = load_image(series_folder)
    volume = series_volume(brain_nifti)

    assert image.data.shape == (12, 217, 181)
    assert image.axes == "zyx"
    assert image.metadata["format"] == "dicom-series"
    assert image.name == series_folder.name
    # Voxels in napari order (z, y, x) = file (k, j, i), rescale applied: value * 4 * 0.25 - 1024.
    np.testing.assert_allclose(image.data, volume.T.astype(np.float32) + SERIES_INTERCEPT)
    assert image.spacing == pytest.approx((1.0, 1.0, 1.0))
    # The affine read back from the DICOM tags is the NIfTI affine it was written from.
    expected = series_affine(brain_nifti)[:, [2, 1, 0, 3]]
    np.testing.assert_allclose(image.affine, expected, atol=1e-4)
    assert image.modality == "MR"
    assert image.metadata["dicom"]["series_description"] == "T1 axial test series"
    assert "Test^Series" not in str(image.metadata) and "SERIES-TEST-ID" not in str(image.metadata)


def test_series_records_its_files_in_slice_order(series_folder):
    image = load_image(series_folder)
    files = image.metadata["dicom"]["files"]
    assert sorted(files) == sorted(str(p) for p in series_folder.iterdir())
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    assert z == sorted(z) and json.loads(json.dumps(image.metadata)) == image.metadata


def test_series_order_ignores_instance_numbers(series_folder):
    files = sorted(series_folder.iterdir())
    numbers = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
    assert numbers != sorted(numbers)  # the fixture really is shuffled
    image = load_image(series_folder)
    z = [image.affine @ [k, 0, 0, 1] for k in range(image.data.shape[0])]
    assert np.all(np.diff([p[2] for p in z]) > 0)  # slices run inferior -> superior


def test_folder_with_two_series_is_refused(tmp_path, brain_nifti):
    folder = tmp_path / "mixed"
    write_mr_series(folder / "a", series_volume(brain_nifti)[:, :, :3], series_affine(brain_nifti), seed=1)
    write_mr_series(folder / "b", series_volume(brain_nifti)[:, :, :3], series_affine(brain_nifti), seed=2)
    for f in [*(folder / "a").iterdir(), *(folder / "b").iterdir()]:
        f.rename(folder / f"{f.parent.name}_{f.name}")
    with pytest.raises(ReadError, match="holds 2 series") as err:
        load_image(folder)
    assert "mixed" in str(err.value)


def test_missing_slice_is_refused(tmp_path, series_folder, brain_nifti):
    folder = tmp_path / "gap"
    shutil.copytree(series_folder, folder)
    middle = sorted(
        folder.iterdir(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
    )[5]
    middle.unlink()
    with pytest.raises(ReadError, match="unevenly spaced") as err:
        load_image(folder)
    assert str(folder) in str(err.value)


def test_repeated_positions_are_refused(tmp_path, brain_nifti):
    folder = tmp_path / "echoes"
    write_mr_series(folder, series_volume(brain_nifti)[:, :, :3], series_affine(brain_nifti))
    extra = pydicom.dcmread(next(folder.iterdir()))
    extra.SOPInstanceUID = pydicom.uid.generate_uid()
    extra.save_as(folder / "second_echo")
    with pytest.raises(ReadError, match="share the same position"):
        load_image(folder)


def test_non_image_files_in_the_folder_are_ignored(tmp_path, series_folder):
    folder = tmp_path / "with_extras"
    shutil.copytree(series_folder, folder)
    (folder / "notes.txt").write_text("acquired on the research scanner")
    shutil.copy(pydicom.data.get_testdata_file("test-SR.dcm"), folder / "report.dcm")
    assert load_image(folder).data.shape == (12, 217, 181)
