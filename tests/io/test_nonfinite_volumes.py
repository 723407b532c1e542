"""Volumes that store NaN/inf voxels open (so the user sees them); scaling that makes inf is refused."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_brgm.io import ReadError, load_image
from napari_brgm.io.napari_reader import read_path


@pytest.fixture
def holed_nifti(tmp_path):
    vol = np.linspace(0, 100, 6 * 7 * 8, dtype=np.float32).reshape(8, 7, 6)  # NIfTI (x, y, z)
    vol[2, 3, 1] = np.nan
    vol[5, 0, 4] = np.inf
    path = tmp_path / "holed.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def test_stored_nan_and_inf_voxels_are_kept(holed_nifti):
    image = load_image(holed_nifti)
    assert image.data.shape == (6, 7, 8)
    assert np.isnan(image.data[1, 3, 2]) and np.isposinf(image.data[4, 0, 5])
    assert np.isfinite(image.data).sum() == image.data.size - 2


def test_the_napari_reader_opens_them_and_warns(holed_nifti, monkeypatch):
    warned = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warned.append)
    [(data, kwargs, kind)] = read_path(str(holed_nifti))
    assert kind == "image" and np.isnan(data).sum() == 1
    assert all(np.isfinite(kwargs["contrast_limits"]))
    assert len(warned) == 1 and "2 of 336 voxels are NaN or infinite" in warned[0]
    assert "--nonfinite missing" in warned[0]


def test_in_a_viewer(make_napari_viewer, holed_nifti):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(holed_nifti), plugin="napari-brgm")
    assert layer.data.shape == (6, 7, 8) and np.isnan(layer.data).sum() == 1
    assert all(np.isfinite(layer.contrast_limits))
    notes = [n for n in notification_manager.records if n.severity == NotificationSeverity.WARNING]
    assert any("NaN or infinite" in n.message for n in notes)


def test_integer_data_scaled_to_inf_are_refused(tmp_path):
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header["scl_slope"], img.header["scl_inter"] = 1e38, 0  # 4..23 x 1e38 overflow float32
    path = tmp_path / "slope.nii"
    nib.save(img, path)
    with pytest.raises(ReadError, match=r"scl_slope=1e\+38.* turns 20 stored values into infinite or NaN"):
        load_image(path)
