"""The npe2 reader hook: which paths it claims, and what it returns for good and bad ones."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_brgm.io.napari_reader import NO_LAYERS, get_reader, read_path
from tests.io.conftest import BRAIN_SAMPLE, XRAY_SAMPLE


@pytest.fixture
def extensionless_dicom(tmp_path):
    path = tmp_path / "IM000123"
    shutil.copy(XRAY_SAMPLE, path)
    return path


def test_claims_dicom_nifti_and_folders(tmp_path, extensionless_dicom, series_folder):
    (tmp_path / "empty").mkdir()
    for path in (XRAY_SAMPLE, BRAIN_SAMPLE, extensionless_dicom, series_folder, tmp_path / "empty"):
        assert get_reader(str(path)) is read_path, path


def test_declines_what_it_does_not_handle(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    no_ext = tmp_path / "README"
    no_ext.write_text("not an image at all " * 20)
    tiny = tmp_path / "x"
    tiny.write_bytes(b"DICM")
    folder = tmp_path / "tiffs"
    folder.mkdir()
    (folder / "a.tif").write_bytes(bytes(200))
    for path in (png, no_ext, tiny, folder, tmp_path / "missing.tif"):
        assert get_reader(str(path)) is None, path
    assert get_reader([str(XRAY_SAMPLE), str(XRAY_SAMPLE)]) is None  # napari's stack mode


def test_reader_returns_one_image_layer():
    [(data, kwargs, layer_type)] = read_path(str(BRAIN_SAMPLE))
    assert layer_type == "image"
    assert data.shape == (36, 217, 181)
    assert kwargs["scale"] == pytest.approx((1.0, 1.0, 1.0))
    assert kwargs["translate"] == pytest.approx((-5.0, -91.0, -90.0))
    assert kwargs["colormap"] == "gray"
    assert kwargs["units"] == ("mm", "mm", "mm")
    lo, hi = kwargs["contrast_limits"]
    assert lo == np.percentile(data, 0.5) and hi == np.percentile(data, 99.5)


def test_bad_file_gives_one_error_notification_and_no_layer(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(XRAY_SAMPLE.read_bytes()[:5000])
    before = len(notification_manager.records)
    assert read_path(str(bad)) == NO_LAYERS
    new = notification_manager.records[before:]
    assert len(new) == 1
    assert new[0].severity == NotificationSeverity.ERROR
    assert str(bad) in new[0].message and "pixel data" in new[0].message
