"""Grayscale PNG in the library loader (8 and 16 bit), built from the real X-ray sample."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image

from napari_brgm.io import ReadError, load_image
from tests.io.conftest import XRAY_SAMPLE


@pytest.fixture(scope="module")
def xray_pixels() -> np.ndarray:
    return pydicom.dcmread(XRAY_SAMPLE).pixel_array[::4, ::4]


def test_16_bit_png(tmp_path, xray_pixels):
    path = tmp_path / "xray16.png"
    Image.fromarray(xray_pixels.astype(np.uint16)).save(path)
    image = load_image(path)
    assert image.data.shape == xray_pixels.shape
    np.testing.assert_array_equal(image.data, xray_pixels)
    assert image.data.max() > 255  # really 16-bit
    assert image.spacing == (1.0, 1.0) and image.metadata["spacing_known"] is False
    assert image.name == "xray16"


def test_8_bit_png_and_gray_rgb(tmp_path, xray_pixels):
    eight = (xray_pixels >> 7).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "gray.png")
    Image.fromarray(np.stack([eight] * 3, axis=-1)).save(tmp_path / "gray_rgb.png")
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png").data, eight)
    np.testing.assert_array_equal(load_image(tmp_path / "gray_rgb.png").data, eight)


def test_colour_png_is_refused(tmp_path, xray_pixels):
    eight = (xray_pixels >> 7).astype(np.uint8)
    Image.fromarray(np.stack([eight, eight // 2, eight], axis=-1)).save(tmp_path / "colour.png")
    with pytest.raises(ReadError, match="colour PNG") as err:
        load_image(tmp_path / "colour.png")
    assert "colour.png" in str(err.value)
