"""fastMRI single-coil .h5 files: the layout of fastMRI's knee data, the image stack, and the errors."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="the 'kspace' extra (h5py) is part of the testing extra")

from napari_brgm.io import ReadError, load_image  # noqa: E402
from napari_brgm.io.fastmri import (  # noqa: E402
    acs_phase,
    center_crop,
    kspace_to_image,
    read_fastmri,
    read_fastmri_kspace,
)
from napari_brgm.io.napari_reader import NO_LAYERS, get_reader, read_path  # noqa: E402

H, W, CROP = 64, 48, (32, 32)
HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <encoding>
    <encodedSpace>
      <matrixSize><x>64</x><y>48</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>28.0</x><y>21.0</y><z>3.0</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>32</x><y>32</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>14.0</x><y>14.0</y><z>3.0</z></fieldOfView_mm>
    </reconSpace>
  </encoding>
</ismrmrdHeader>"""


def _fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _objects():
    """Two real, non-negative slices (a Shepp-Logan phantom and a shifted, dimmer copy) on the H x W grid."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    phantom = resize(shepp_logan_phantom(), CROP, anti_aliasing=True)
    x = np.zeros((2, H, W))
    top, left = (H - CROP[0]) // 2, (W - CROP[1]) // 2
    x[0, top : top + CROP[0], left : left + CROP[1]] = phantom
    x[1, top + 2 : top + 2 + CROP[0], left - 1 : left - 1 + CROP[1]] = 0.6 * phantom
    return x


def _smooth_phase(amplitude=1.0):
    yy, xx = np.mgrid[0:H, 0:W]
    u, v = (yy - H / 2) / H, (xx - W / 2) / W
    return amplitude * (1.2 * u + 0.8 * v + 1.5 * u * v - 2.0 * v**2) + 0.7


def write_fastmri(path, kspace, header=HEADER, **extra):
    """A file in fastMRI's single-coil layout: kspace, reconstruction_esc / _rss and the four attributes."""
    target = np.abs(center_crop(_ifft2c(kspace), CROP)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace.astype(np.complex64))
        f.create_dataset("reconstruction_esc", data=target)
        f.create_dataset("reconstruction_rss", data=target)
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = float(target.max())
        f.attrs["norm"] = float(np.linalg.norm(target))
        f.attrs["patient_id"] = "0" * 64
        if header is not None:
            f.attrs["ismrmrd_header"] = header
        for name, value in extra.items():
            f.create_dataset(name, data=value)
    return path


@pytest.fixture
def phased(tmp_path):
    """(file, real objects, phase): k-space of x·e^{iφ} with a smooth known phase φ."""
    x = _objects()
    kspace = _fft2c(x * np.exp(1j * _smooth_phase()))
    return write_fastmri(tmp_path / "file1000000.h5", kspace), x, _smooth_phase()


def test_our_fft_is_the_operators_fft():
    from napari_brgm.io.fastmri import _ifft2c as ours
    from napari_brgm.operators.fourier import ifft2c_np

    k = np.random.default_rng(0).standard_normal((2, 7, 6)) + 1j
    np.testing.assert_allclose(ours(k), ifft2c_np(k), atol=1e-12)


def test_magnitude_equals_reconstruction_esc(phased):
    path, _, _ = phased
    image = read_fastmri(path, crop=CROP, phase="magnitude")
    with h5py.File(path, "r") as f:
        esc = f["reconstruction_esc"][()]
    assert image.data.shape == (2, *CROP) and image.data.dtype == np.float32
    np.testing.assert_allclose(image.data, esc, rtol=1e-5, atol=1e-6 * esc.max())
    assert image.metadata["fastmri"]["phase_corrected"] is False


def test_acs_phase_correction_recovers_the_real_image(phased):
    path, x, phi = phased
    truth = center_crop(x, CROP)
    image = read_fastmri(path, crop=CROP)  # phase="acs" by default
    error = np.linalg.norm(image.data - truth) / np.linalg.norm(truth)
    uncorrected = np.real(center_crop(_ifft2c(_fft2c(x * np.exp(1j * phi))), CROP))
    assert error < 0.06  # 4 of 48 phase-encode lines (8 %) on this tiny grid
    assert error < 0.25 * np.linalg.norm(uncorrected - truth) / np.linalg.norm(truth)  # Re(z): 0.23
    finer = kspace_to_image(read_fastmri_kspace(path, 0), CROP, "acs", acs_fraction=0.15)
    assert np.linalg.norm(finer - truth[0]) / np.linalg.norm(truth[0]) < 0.015
    # inside the object the estimated phase is the true one up to a few hundredths of a radian (median)
    inside = center_crop(x[0], CROP) > 0.1
    estimate = center_crop(acs_phase(_fft2c(x[0] * np.exp(1j * phi)), 0.15), CROP)
    assert np.median(np.abs(np.angle(np.exp(1j * (estimate - center_crop(phi, CROP)))))[inside]) < 0.06


def test_metadata_geometry_and_raw_kspace(phased):
    path, x, phi = phased
    image = read_fastmri(path, crop=CROP)
    meta = image.metadata
    assert meta["format"] == "fastmri" and meta["source"] == str(path) and image.modality == "MR"
    assert image.name == "file1000000" and image.axes == "zyx"
    info = meta["fastmri"]
    assert info["acquisition"] == "CORPD_FBK" and info["kspace_shape"] == [2, H, W]
    assert info["phase"] == "acs" and info["phase_corrected"] is True and info["crop"] == list(CROP)
    assert info["max"] == pytest.approx(float(np.abs(center_crop(x, CROP)).max()), rel=1e-5)
    assert info["targets"] == ["reconstruction_esc", "reconstruction_rss"]
    # encodedSpace: 28 mm / 64 readout samples, 21 mm / 48 phase-encode lines, 3 mm slices
    assert image.spacing == pytest.approx((3.0, 0.4375, 0.4375)) and meta["spacing_known"] is True
    import json

    json.dumps(meta)  # the layer metadata must serialise
    k1 = read_fastmri_kspace(path, -1)
    assert k1.shape == (H, W) and k1.dtype == np.complex64
    np.testing.assert_allclose(k1, _fft2c(x[1] * np.exp(1j * phi)), atol=1e-5)
    with pytest.raises(IndexError, match="outside 0..1"):
        read_fastmri_kspace(path, 2)


def test_without_header_spacing_is_one_pixel(tmp_path):
    path = write_fastmri(tmp_path / "noheader.h5", _fft2c(_objects()), header=None)
    image = read_fastmri(path, crop=(100, 100), phase="magnitude")  # larger than the grid: keeps it whole
    assert image.data.shape == (2, H, W)
    assert image.spacing == (1.0, 1.0, 1.0) and image.metadata["spacing_known"] is False


def test_load_image_and_napari_open_it_as_one_image_layer(phased, tmp_path):
    path, _, _ = phased
    assert load_image(path).metadata["format"] == "fastmri"
    assert load_image(path).data.shape == (2, H, W)  # the default 320 x 320 crop keeps this small grid whole
    no_ext = tmp_path / "raw_scan"
    no_ext.write_bytes(path.read_bytes())
    assert load_image(no_ext).metadata["format"] == "fastmri"  # by content
    assert get_reader(str(path)) is read_path and get_reader(str(no_ext)) is read_path
    [(data, kwargs, layer_type)] = read_path(str(path))
    assert layer_type == "image" and data.shape == (2, H, W)
    assert kwargs["units"] == ("mm", "mm", "mm")
    assert kwargs["metadata"]["fastmri"]["phase"] == "acs"


def _error(path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ReadError) as err:
            load_image(path)
    assert str(path) in str(err.value)
    return err.value.reason


def test_malformed_files_raise_read_errors(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 4, 4)))
    assert "without a 'kspace' dataset" in _error(other) and "images" in _error(other)
    assert get_reader(str(other)) is None  # another plugin's HDF5 file: not claimed

    cases = {
        "flat.h5": np.zeros((H, W), np.complex64),
        "multicoil.h5": np.zeros((2, 3, H, W), np.complex64),
        "real.h5": np.zeros((2, H, W), np.float32),
        "empty.h5": np.zeros((0, H, W), np.complex64),
        "nan.h5": np.full((1, H, W), np.nan, np.complex64),
    }
    for name, kspace in cases.items():
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("kspace", data=kspace)
    assert "shape (64, 48)" in _error(tmp_path / "flat.h5")
    assert "multi-coil" in _error(tmp_path / "multicoil.h5")
    assert "not complex (dtype float32)" in _error(tmp_path / "real.h5")
    assert "empty" in _error(tmp_path / "empty.h5")
    assert "NaN" in _error(tmp_path / "nan.h5")

    group = tmp_path / "group.h5"
    with h5py.File(group, "w") as f:
        f.create_group("kspace")
    assert "group" in _error(group)

    good = write_fastmri(tmp_path / "good.h5", _fft2c(_objects()))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated" in _error(cut)
    assert get_reader(str(cut)) is read_path  # claimed, so that napari shows why it fails
    assert read_path(str(cut)) == NO_LAYERS

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 20)
    assert "not a readable HDF5 file" in _error(garbage)
    assert get_reader(str(garbage)) is None


def test_missing_h5py_names_the_extra(phased, monkeypatch):
    path, _, _ = phased
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ReadError, match=r"napari-brgm\[kspace\]"):
        read_fastmri(path)
    assert get_reader(str(path)) is read_path  # claimed: the user learns what to install


def test_bad_arguments():
    k = _fft2c(_objects())
    with pytest.raises(ValueError, match="phase must be one of"):
        kspace_to_image(k, CROP, phase="zero")
    with pytest.raises(ValueError, match="acs_fraction"):
        acs_phase(k, 0.0)
