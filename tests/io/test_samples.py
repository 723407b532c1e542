"""The shipped samples: small, consistent headers, and faithful to their sources."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from skimage.transform import downscale_local_mean

from napari_brgm.io.samples import BRAIN_T1, CHEST_XRAY, brain_t1, chest_xray, sample_path
from tests.io.conftest import BRAIN_SAMPLE, XRAY_SAMPLE

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")


def test_samples_are_shipped_and_small():
    assert sample_path(CHEST_XRAY) == XRAY_SAMPLE and sample_path(BRAIN_T1) == BRAIN_SAMPLE
    assert XRAY_SAMPLE.stat().st_size + BRAIN_SAMPLE.stat().st_size < 5e6


def test_xray_sample_is_rg1_block_averaged(rg1_path):
    sample, source = pydicom.dcmread(XRAY_SAMPLE), pydicom.dcmread(rg1_path)
    assert max(sample.Rows, sample.Columns) <= 1024
    assert sample.pixel_array.shape == (sample.Rows, sample.Columns) == (977, 920)
    expected = np.rint(downscale_local_mean(source.pixel_array[:1954, :1840].astype(float), (2, 2)))
    np.testing.assert_array_equal(sample.pixel_array, expected)
    kept = ("Modality", "PhotometricInterpretation", "BitsStored", "WindowCenter", "WindowWidth", "ViewPosition")
    for keyword in kept:
        assert sample[keyword].value == source[keyword].value
    assert [float(v) for v in sample.PixelSpacing] == [2 * float(v) for v in source.PixelSpacing]
    assert str(sample.PatientName) == "" and sample.PatientID == "" and sample.PatientIdentityRemoved == "YES"


def test_brain_sample_is_colin27_in_the_same_world_space():
    if not COLIN27.exists():
        pytest.skip("Debian package mricron-data (Colin27 source) is not installed")
    sample, source = nib.load(BRAIN_SAMPLE), nib.load(COLIN27)
    data, src = np.asarray(sample.dataobj), np.asarray(source.dataobj)
    assert sample.shape == (181, 217, 36) and sample.header.get_zooms() == (1.0, 1.0, 1.0)
    # every sample voxel holds the source voxel at the same world position
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in sample.shape], indexing="ij"), -1).reshape(-1, 3)
    src_ijk = nib.affines.apply_affine(np.linalg.inv(source.affine) @ sample.affine, ijk)
    src_ijk = np.rint(src_ijk).astype(int)
    np.testing.assert_array_equal(data.reshape(-1), src[tuple(src_ijk.T)])


def test_sample_functions_return_layer_data():
    [(xray, xray_kwargs, kind)] = chest_xray()
    [(brain, brain_kwargs, _)] = brain_t1()
    assert kind == "image" and xray.shape == (977, 920) and brain.shape == (36, 217, 181)
    assert xray_kwargs["metadata"]["inverted"] is True
    assert brain_kwargs["metadata"]["format"] == "nifti"
