"""Fuzzed readers: mutated copies of small real DICOM, NIfTI and PNG files (tests/fuzzing.py).

Property, for every case: `load_image` either returns a float32 image of the shape the header
declares, finite (NaN/inf only where a float file stores them), or raises `ReadError` whose
message names the file; each case finishes within its time limit, allocates less than
`fuzzing.memory_limit` (tracemalloc) and nothing tries to run code (audit hook). Hypothesis runs
derandomized with a fixed example budget so that CI time stays bounded; `tools/fuzz_readers.py`
runs the same property with a larger budget. Defects found so far are kept as regression cases
at the end of this file.
"""

from __future__ import annotations

import shutil
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_brgm.io import ReadError, load_image
from napari_brgm.io.limits import MAX_VOXELS
from tests import fuzzing as F
from tests.io.conftest import make_mr_series

EXAMPLES = 150  # per format group; about 10 s each on one core
FUZZ = settings(derandomize=True, max_examples=EXAMPLES, deadline=3000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    found = F.reader_seeds(tmp_path_factory.mktemp("seeds"))
    for seed in found:  # every seed itself loads (and warms up the lazy imports before the audit runs)
        path = tmp_path_factory.mktemp("warm") / seed.name
        path.write_bytes(seed.data)
        F.check_image_result(path, load_image(path))
    return _Seeds({s.name: s for s in found})


class _Seeds(dict):
    def __repr__(self) -> str:  # hypothesis prints the fixture values of a failing case
        return f"<{len(self)} seeds>"


def check_case(path: Path) -> None:
    """The fuzz property for one file or folder."""
    size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir()))
    out = F.guarded(lambda: load_image(path), timeout=10)
    assert not out.code_events, f"{path}: code execution attempted: {out.code_events}"
    assert out.peak < F.memory_limit(size), f"{path}: peak allocation {out.peak / F.MB:.1f} MB for {size} bytes"
    assert out.rss_growth < F.memory_limit(size), f"{path}: peak resident size grew by {out.rss_growth / F.MB:.1f} MB"
    if out.error is None:
        if path.is_file():
            F.check_image_result(path, out.value)
        else:
            assert np.isfinite(out.value.data).all()
        return
    err = out.error
    assert isinstance(err, ReadError), f"{path}: {type(err).__name__}: {err}"
    assert str(path) in str(err) and err.reason, str(err)


def _run(tmp_path, seed, muts):
    path = F.write_case(tmp_path, seed, muts)
    try:
        check_case(path)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def _group(names):
    return st.sampled_from(names)


DICOM = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "CT_small.dcm",
         "emri_small.dcm", "cr_mono1.dcm"]
NIFTI = ["vol.nii", "vol.nii.gz", "slice_f32.nii", "vol2.nii"]
PNG = ["gray8.png", "gray16.png", "rgb_gray.png"]


@FUZZ
@given(data=st.data())
def test_fuzzed_dicom_files(seeds, tmp_path, data):
    seed = seeds[data.draw(_group(DICOM), label="seed")]
    _run(tmp_path, seed, data.draw(F.mutations(seed), label="mutations"))


@FUZZ
@given(data=st.data())
def test_fuzzed_nifti_files(seeds, tmp_path, data):
    seed = seeds[data.draw(_group(NIFTI), label="seed")]
    _run(tmp_path, seed, data.draw(F.mutations(seed), label="mutations"))


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_fuzzed_png_files(seeds, tmp_path, data):
    seed = seeds[data.draw(_group(PNG), label="seed")]
    _run(tmp_path, seed, data.draw(F.mutations(seed), label="mutations"))


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return make_mr_series(tmp_path_factory.mktemp("series") / "s", n=3)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_fuzzed_dicom_series(seeds, series, tmp_path, data):
    """One slice of a 3-slice series mutated: the series reader holds to the same property."""
    folder = tmp_path / "series"
    shutil.copytree(series, folder)
    try:
        victim = data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir())), label="file")
        raw = (folder / victim).read_bytes()
        seed = F.Seed(victim, raw, tuple(F.dicom_fields(raw)))
        (folder / victim).write_bytes(F.apply(seed, data.draw(F.mutations(seed), label="mutations")))
        check_case(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- huge declared sizes, measured


def _peak(fn):
    tracemalloc.start()
    try:
        with pytest.raises(ReadError) as info:
            fn()
        return tracemalloc.get_traced_memory()[1], str(info.value)
    finally:
        tracemalloc.stop()


def _set_field(seed, name, value) -> bytes:
    fld = next(f for f in seed.fields if f.name == name)
    return F.apply(seed, [("field", name, F.encode(fld, value))])


def test_dicom_declaring_100000_by_100000_pixels_is_refused_before_allocation(seeds, tmp_path):
    seed = seeds["MR_small.dcm"]
    data = bytearray(seed.data)
    for name in ("Rows", "Columns"):  # US holds at most 65535: 100 000 needs NumberOfFrames too
        fld = next(f for f in seed.fields if f.name == name)
        data[fld.offset:fld.offset + 2] = F.encode(fld, 65535)
    path = tmp_path / "huge.dcm"
    path.write_bytes(bytes(data))
    peak, msg = _peak(lambda: load_image(path))
    assert "65535 x 65535" in msg and f"{MAX_VOXELS:,}" in msg, msg
    assert peak < 4 * F.MB, peak


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz", "vol2.nii"])
def test_nifti_declaring_100000_squared_voxels_is_refused_before_allocation(seeds, tmp_path, name):
    seed = seeds[name]
    kind = "i16" if name != "vol2.nii" else "i64"
    dims = [3, 100_000 if kind == "i64" else 32_767, 100_000 if kind == "i64" else 32_767, 1]
    muts = [("field", f"dim[{i}]", F.encode(F.Field("d", 0, 2 if kind == "i16" else 8, kind), v))
            for i, v in enumerate(dims)]
    if seed.gzipped:
        muts.append(("raw-gzip", True))
    path = tmp_path / name
    path.write_bytes(F.apply(seed, muts))
    peak, msg = _peak(lambda: load_image(path))
    assert "more than the" in msg, msg
    assert peak < 4 * F.MB, peak


def test_nifti_declaring_more_than_the_gzip_holds_is_refused_before_allocation(seeds, tmp_path):
    """4096 x 4096 x 8 int16 (256 MB, under the limit) declared in a 200-byte .nii.gz."""
    seed = seeds["vol.nii.gz"]
    dims = {"dim[1]": 4096, "dim[2]": 4096, "dim[3]": 8}
    muts = [("field", k, F.encode(F.Field(k, 0, 2, "i16"), v)) for k, v in dims.items()] + [("raw-gzip", True)]
    path = tmp_path / "lying.nii.gz"
    path.write_bytes(F.apply(seed, muts))
    peak, msg = _peak(lambda: load_image(path))
    assert "truncated NIfTI data (after decompression)" in msg, msg
    assert peak < 4 * F.MB, peak


def test_png_declaring_100000_by_100000_pixels_is_refused_before_allocation(seeds, tmp_path):
    seed = seeds["gray8.png"]
    data = bytearray(seed.data)
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(data))
    peak, msg = _peak(lambda: load_image(path))
    assert "100000 x 100000" in msg, msg
    assert peak < 4 * F.MB, peak


# ------------------------------------------------------------- regression cases found by fuzzing


def _ui(value):
    return F.encode(F.Field("ui", 0, 20, "ui"), value)


def _f32(value):
    return F.encode(F.Field("f", 0, 4, "f32"), value)


# (seed, mutations, what the ReadError must say; None: the file opens). Each was found by the fuzz
# tests or tools/fuzz_readers.py (or reported in the hardening issue) and is fixed.
REGRESSIONS = {
    # pydicom read a damaged element length with file.read(n), which allocates n first: 740 MB
    "dicom-damaged-length-allocates": ("MR_small.dcm", [("zero", 237, 16)], "holds no image"),
    # an unknown transfer syntax UID escaped as a bare ValueError("UID is not a transfer syntax.")
    "dicom-transfer-syntax-not-a-uid": ("MR_small.dcm", [("field", "TransferSyntaxUID", _ui("1.2.3"))],
                                        "not a DICOM transfer syntax UID"),
    "dicom-transfer-syntax-garbage": ("MR_small.dcm", [("field", "TransferSyntaxUID", _ui("x.y"))],
                                      "not a DICOM transfer syntax UID"),
    # RLE on native pixel data: the decoder's own error
    "dicom-native-data-said-rle": ("MR_small.dcm", [("field", "TransferSyntaxUID", _ui("1.2.840.10008.1.2.5"))],
                                   "pixel data"),
    # SamplesPerPixel with an empty value: int(None) escaped as TypeError
    "dicom-empty-samples-per-pixel": ("cr_mono1.dcm", [("field-length-zero", "SamplesPerPixel")], ""),
    # a rescale slope of 1e308 made the pixels inf
    "dicom-rescale-to-inf": ("cr_mono1.dcm", [("field", "RescaleSlope", b"1e308   ")], "infinite or NaN"),
    "dicom-rows-65535": ("MR_small.dcm", [("field", "Rows", b"\xff\xff")], "truncated pixel data"),
    # NIfTI scl_slope 1e38 loaded a volume full of inf
    "nifti-slope-to-inf": ("vol.nii", [("field", "scl_slope", _f32(1e38))], "scaling scl_slope=1e+38"),
    "nifti-gz-slope-to-inf": ("vol.nii.gz", [("field", "scl_slope", _f32(3.4e38)), ("raw-gzip", True)],
                              "infinite or NaN"),
    # an unknown xyzt_units code raised KeyError in nibabel's get_xyzt_units
    "nifti-unknown-units": ("vol.nii", [("byte", 123, 7)], None),
    "nifti-nan-affine": ("vol.nii", [("field", "srow[0]", _f32(float("nan")))], "affine"),
    "nifti-dims-beyond-file": ("vol.nii", [("field", "dim[3]", b"\x00\x10")], "truncated NIfTI data"),
    # Pillow read a damaged chunk length with file.read(n): 128 MB for a 119-byte file
    "png-damaged-chunk-length": ("gray16.png", [("zero", 80, 1), ("flip", 267)], "not a readable PNG"),
    # a damaged signature sent the bytes to all of Pillow's decoders (EPS would start Ghostscript)
    "png-damaged-signature": ("gray8.png", [("byte", 1, 0)], "not a readable PNG"),
    # tools/fuzz_readers.py --seed 2: Pillow allocated the declared image before finding the data missing
    # (364 MB for a 76-byte file; a 20 s decode for another)
    "png-tall-ihdr": ("gray8.png", [("field", "height", b"\x00t\x82\x80")], "cannot hold the 10 x 7635584"),
    "png-taller-than-its-data": ("gray8.png", [("field", "height", b"\x00\x00\x00\x64")],
                                 "truncated PNG image data (88 of 1100 bytes"),
    # parallel ImageOrientationPatient rows gave a multi-frame image a slice spacing of 0 (no normal)
    "dicom-parallel-orientation": ("emri_small.dcm", [("set-iop", "1\\0\\0\\1\\0\\0")], None),
    # an unknown value representation escaped as NotImplementedError (pydicom parses values lazily)
    "dicom-unknown-vr": ("MR_small.dcm", [("vr", "SamplesPerPixel", b"Ut")], "Unknown Value Representation"),
}


def _apply_regression(seed, muts) -> bytes:
    plain = []
    data = bytearray(seed.data)
    for m in muts:
        if m[0] == "field-length-zero":  # explicit VR little endian: the 2-byte length before the value
            fld = next(f for f in seed.fields if f.name == m[1])
            data[fld.offset - 2:fld.offset] = b"\x00\x00"
        elif m[0] == "set-iop":  # emri_small has no ImageOrientationPatient: add one with pydicom
            import io

            import pydicom

            ds = pydicom.dcmread(io.BytesIO(bytes(data)))
            ds.ImageOrientationPatient = m[1].split("\\")
            buf = io.BytesIO()
            ds.save_as(buf)
            data = bytearray(buf.getvalue())
        elif m[0] == "vr":  # explicit VR: the two letters before the length
            fld = next(f for f in seed.fields if f.name == m[1])
            data[fld.offset - 4:fld.offset - 2] = m[2]
        else:
            plain.append(m)
    return F.apply(F.Seed(seed.name, bytes(data), seed.fields, seed.gzipped, seed.png), plain)


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_fuzz_regressions(seeds, tmp_path, case):
    name, muts, reason = REGRESSIONS[case]
    path = tmp_path / name
    path.write_bytes(_apply_regression(seeds[name], muts))
    check_case(path)
    if reason is None:
        F.check_image_result(path, load_image(path))
    else:
        with pytest.raises(ReadError, match=None) as info:
            load_image(path)
        assert reason in info.value.reason, info.value.reason
