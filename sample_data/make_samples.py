"""Regenerate the sample images shipped in this folder (run once; the outputs are committed).

    python sample_data/make_samples.py

Needs the `pydicom-data` package (testing extra) and the Debian package `mricron-data`.
See README.md for provenance and licences.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from skimage.transform import downscale_local_mean

HERE = Path(__file__).resolve().parent
RG1 = "RG1_UNCR.dcm"
COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
XRAY_OUT = HERE / "chest_xray_rg1.dcm"
BRAIN_OUT = HERE / "brain_t1_colin27_slab.nii.gz"

XRAY_FACTOR = 2  # 1955 x 1841 -> 977 x 920, at most 1024 px
# Axial slab through the lateral ventricles: voxel planes k = 66..101, i.e. MNI z = -5..+30 mm.
SLAB = slice(66, 102)

# Identifying or site fields of the NEMA test file, emptied or removed in the sample.
_EMPTIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName")
_REMOVED = (
    "OtherPatientIDs",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "StudyID",
    "DataSetTrailingPadding",
)


def make_chest_xray() -> Path:
    """RG1 (CR, MONOCHROME1, 15-bit) 2x2 block-averaged (anti-aliased) and saved as DICOM."""
    ds = pydicom.dcmread(get_testdata_file(RG1))
    pixels = ds.pixel_array
    rows, cols = (n - n % XRAY_FACTOR for n in pixels.shape)
    small = downscale_local_mean(pixels[:rows, :cols].astype(np.float64), (XRAY_FACTOR, XRAY_FACTOR))
    small = np.clip(np.rint(small), 0, 2 ** int(ds.BitsStored) - 1).astype(np.uint16)

    for keyword in _EMPTIED:
        setattr(ds, keyword, "")
    for keyword in _REMOVED:
        if keyword in ds:
            delattr(ds, keyword)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "napari-brgm make_samples.py: patient and site fields emptied"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = f"{XRAY_FACTOR}x{XRAY_FACTOR} block mean of NEMA WG04 {RG1} (pydicom-data)"
    ds.ImageComments = "napari-brgm sample (downsampled NEMA WG04 RG1)"
    ds.SeriesDescription = "Chest PA (RG1 sample)"
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # The source records PixelSpacing 0\0 (unknown); scaled consistently it stays unknown.
    ds.PixelSpacing = [float(v) * XRAY_FACTOR for v in ds.PixelSpacing]
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    ds.save_as(XRAY_OUT, enforce_file_format=True)
    return XRAY_OUT


def make_brain_t1() -> Path:
    """An axial slab of Colin27 stored in LPS voxel order, so napari shows anterior up, patient right on the left."""
    img = nib.load(COLIN27)
    slab = img.slicer[:, :, SLAB]
    to_lps = nib.orientations.ornt_transform(nib.io_orientation(slab.affine), nib.orientations.axcodes2ornt("LPS"))
    lps = slab.as_reoriented(to_lps)
    out = nib.Nifti1Image(np.asarray(lps.dataobj, dtype=np.uint8), lps.affine)
    out.set_sform(lps.affine, code="mni")
    out.set_qform(lps.affine, code="mni")
    out.header.set_xyzt_units(xyz="mm")
    out.header["descrip"] = b"Colin27 T1 (MRIcron ch2) axial slab"
    nib.save(out, BRAIN_OUT)
    return BRAIN_OUT


if __name__ == "__main__":
    for made in (make_chest_xray(), make_brain_t1()):
        print(f"wrote {made} ({made.stat().st_size / 1e6:.2f} MB)")
