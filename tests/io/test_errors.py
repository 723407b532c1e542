"""Bad input gives one ReadError naming the path and the reason."""

from __future__ import annotations

import shutil
import warnings

import nibabel as nib
import numpy as np
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLosslessSV1

from napari_brgm.io import ReadError, load_image
from tests.io.conftest import BRAIN_SAMPLE, XRAY_SAMPLE, pydicom_file


def _error(path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning may leak next to the error
        with pytest.raises(ReadError) as err:
            load_image(path)
    assert isinstance(err.value, ValueError)
    assert str(path) in str(err.value)
    return err.value.reason


def test_truncated_pixel_data(tmp_path):
    path = tmp_path / "cut.dcm"
    data = XRAY_SAMPLE.read_bytes()
    path.write_bytes(data[: len(data) - 50_000])
    expected = 977 * 920 * 2  # rows x columns x 2 bytes, the last element of the file
    assert _error(path) == f"truncated pixel data ({expected - 50_000} of {expected} bytes)"


def test_file_cut_inside_the_header(tmp_path):
    path = tmp_path / "header_only.dcm"
    path.write_bytes(XRAY_SAMPLE.read_bytes()[:1500])
    assert "ends before its pixel data" in _error(path)


def test_pydicom_truncated_sample(tmp_path):
    path = tmp_path / "MR_truncated.dcm"
    shutil.copy(pydicom_file("MR_truncated.dcm"), path)
    assert _error(path) == "truncated pixel data (8130 of 8192 bytes)"


def test_dicom_without_image(tmp_path):
    path = tmp_path / "report.dcm"
    shutil.copy(pydicom_file("test-SR.dcm"), path)
    assert "holds no image (Comprehensive SR Storage)" in _error(path)


def test_compressed_without_decoder(tmp_path):
    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder (pylibjpeg/gdcm) is installed here")
    path = tmp_path / "jpeg_lossless.dcm"
    shutil.copy(pydicom_file("JPEG-LL.dcm"), path)
    reason = _error(path)
    assert "compressed as 'JPEG Lossless" in reason
    assert "no decoder is installed" in reason and "pylibjpeg" in reason


def test_not_dicom_with_dicom_extension(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient came in on Tuesday")
    assert "not a DICOM file" in _error(path)


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty_series"
    folder.mkdir()
    assert _error(folder) == "the folder is empty"


def test_study_folder_with_series_subfolders(tmp_path):
    study = tmp_path / "study"
    (study / "series_2").mkdir(parents=True)
    (study / "series_1").mkdir()
    assert _error(study) == "the folder holds only sub-folders (series_1, series_2); open the folder of one series"


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    assert "holds no DICOM files" in _error(folder)


def test_4d_nifti(tmp_path):
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), path)
    assert "4-D NIfTI images (shape (8, 8, 4, 3)) are not supported" in _error(path)


def test_truncated_nifti(tmp_path):
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(BRAIN_SAMPLE.read_bytes()[:20_000])
    assert "truncated" in _error(path)


def test_extension_contradicting_content(tmp_path):
    path = tmp_path / "brain.dcm"
    shutil.copy(BRAIN_SAMPLE, path)
    assert _error(path) == "the extension says DICOM but the file holds NIfTI data; rename it"
    path = tmp_path / "xray.nii"
    shutil.copy(XRAY_SAMPLE, path)
    assert "the extension says NIfTI but the file holds DICOM data" in _error(path)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    assert "unsupported file type" in _error(path)


def test_missing_path(tmp_path):
    assert _error(tmp_path / "nowhere.nii") == "no such file or folder"
