"""Cheap format detection from a file's first bytes and its extension."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PNG_SUFFIXES = (".png",)
FASTMRI_SUFFIXES = (".h5", ".hdf5")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # at offset 0 (files without a user block, as h5py writes them)


def format_from_name(path: str | Path) -> str | None:
    """'dicom', 'nifti', 'png' or 'fastmri' (.h5) from the file name's extension, else None."""
    name = Path(path).name.lower()
    for kind, suffixes in (("nifti", NIFTI_SUFFIXES), ("dicom", DICOM_SUFFIXES), ("png", PNG_SUFFIXES),
                           ("fastmri", FASTMRI_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def is_dicom_file(path: str | Path) -> bool:
    """True when the file has the DICOM Part 10 marker: 128-byte preamble then 'DICM'."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_hdf5_file(path: str | Path) -> bool:
    """True when the file starts with the HDF5 signature (fastMRI raw data are HDF5)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == _HDF5_SIGNATURE
    except OSError:
        return False


def _is_nifti_header(head: bytes) -> bool:
    if len(head) < 348:
        return False
    for endian in "<>":
        size = struct.unpack(f"{endian}i", head[:4])[0]
        if size == 348 and head[344:347] in (b"n+1", b"ni1"):
            return True
        if size == 540 and head[4:7] in (b"n+2", b"ni2"):
            return True
    return False


def format_from_content(path: str | Path) -> str | None:
    """'dicom', 'nifti' (plain or gzipped, NIfTI-1 or -2), 'png' or 'fastmri' (HDF5) from the first bytes, else None.

    Every HDF5 file counts as 'fastmri': the reader checks for the 'kspace' dataset and says so.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(348)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                head = f.read(348)
    except (OSError, EOFError, zlib.error):
        return None
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(_HDF5_SIGNATURE):
        return "fastmri"
    if _is_nifti_header(head):
        return "nifti"
    return "dicom" if is_dicom_file(path) else None
