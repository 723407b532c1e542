"""Real test images for the IO tests, and a DICOM series built from the brain sample."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from tests.conftest import REPO

SAMPLES = REPO / "sample_data"
BRAIN_SAMPLE = SAMPLES / "brain_t1_colin27_slab.nii.gz"
XRAY_SAMPLE = SAMPLES / "chest_xray_rg1.dcm"

# The series stores value * 4 with this rescale, so the reader must apply it to get value - 1024.
SERIES_SLOPE, SERIES_INTERCEPT = 0.25, -1024.0


def pydicom_file(name: str) -> Path:
    """A file of pydicom's test data (pydicom-data), failing clearly when it is missing."""
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"pydicom test file {name} missing: install the 'pydicom-data' package (testing extra)")
    return Path(path)


@pytest.fixture(scope="session")
def rg1_path() -> Path:
    return pydicom_file("RG1_UNCR.dcm")


@pytest.fixture(scope="session")
def brain_nifti() -> nib.Nifti1Image:
    return nib.load(BRAIN_SAMPLE)


def write_mr_series(folder: Path, volume_xyz: np.ndarray, affine_ras: np.ndarray, seed: int = 0) -> list[Path]:
    """Write a NIfTI-ordered volume as one MR DICOM file per k-slice, with shuffled file names.

    Geometry comes straight from the NIfTI affine (RAS -> LPS); InstanceNumber is shuffled too, so
    only ImagePositionPatient can order the slices. Returns the files in slice (k) order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    col_step, row_step = lps[:3, 0], lps[:3, 1]  # NIfTI i runs along a DICOM row (x), j down the rows (y)
    iop = [*(col_step / np.linalg.norm(col_step)), *(row_step / np.linalg.norm(row_step))]
    rng = random.Random(seed)
    n = volume_xyz.shape[2]
    numbers = list(range(1, n + 1))
    rng.shuffle(numbers)
    names = [f"IM{rng.randrange(10**8):08d}" for _ in range(n)]
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "Test^Series", "SERIES-TEST-ID"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality = "MR"
        ds.SeriesDescription = "T1 axial test series"
        ds.SeriesNumber, ds.InstanceNumber = 3, numbers[k]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in (lps @ [0, 0, k, 1])[:3]]
        ds.PixelSpacing = [f"{np.linalg.norm(row_step):.4f}", f"{np.linalg.norm(col_step):.4f}"]
        ds.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.4f}"
        stored = volume_xyz[:, :, k].T.astype(np.uint16) * 4
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = str(SERIES_SLOPE), str(SERIES_INTERCEPT)
        ds.PixelData = stored.tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def series_folder(tmp_path_factory, brain_nifti) -> Path:
    """12 slices of the brain sample as an MR DICOM series (read-only: copy it to modify it)."""
    folder = tmp_path_factory.mktemp("series") / "t1_axial"
    write_mr_series(folder, series_volume(brain_nifti), series_affine(brain_nifti))
    return folder


def series_volume(brain_nifti) -> np.ndarray:
    """The voxels the `series_folder` holds: slices 10..21 of the sample, in NIfTI (x, y, z) order."""
    return np.asarray(brain_nifti.dataobj)[:, :, 10:22]


def series_affine(brain_nifti) -> np.ndarray:
    """NIfTI affine of `series_volume`."""
    return brain_nifti.slicer[:, :, 10:22].affine


def make_mr_series(folder: Path, n: int = 3) -> Path:
    """n MR_small slices 0.8 mm apart (shifted ImagePositionPatient), values differing per slice, in `folder`."""
    folder.mkdir(parents=True)
    series = generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n - k
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 0.8 * k]
        ds.SliceLocation = 0.8 * k
        ds.PixelData = (ds.pixel_array.astype(np.int16) + 100 * k).tobytes()
        ds.save_as(folder / f"slice{k}.dcm")
    return folder
