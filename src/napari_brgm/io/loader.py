"""`load_image`: one entry point that picks the reader from the path and the file's first bytes."""

from __future__ import annotations

import warnings
from pathlib import Path

from napari_brgm.io.dicom import read_dicom_file
from napari_brgm.io.dicom_series import read_dicom_series
from napari_brgm.io.errors import ReadError
from napari_brgm.io.fastmri import read_fastmri
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.nifti import read_nifti
from napari_brgm.io.png import read_png
from napari_brgm.io.sniff import format_from_content, format_from_name

_READERS = {"dicom": read_dicom_file, "nifti": read_nifti, "png": read_png, "fastmri": read_fastmri}
_NAMES = {"dicom": "DICOM", "nifti": "NIfTI", "png": "PNG", "fastmri": "fastMRI HDF5"}
SUPPORTED = ("DICOM files, folders holding one DICOM series, NIfTI (.nii, .nii.gz), grayscale PNG "
             "and fastMRI single-coil k-space (.h5)")


def load_image(path: str | Path) -> MedicalImage:
    """Read a DICOM file, a DICOM series folder, a NIfTI volume, a grayscale PNG or a fastMRI .h5 file.

    The format comes from the content (DICOM marker, NIfTI header, PNG / HDF5 signature); a known
    extension that contradicts the content is refused rather than guessed around. Library
    warnings are silenced: every problem surfaces as one ReadError naming the path and the reason.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ReadError(path, "no such file or folder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.is_dir():
            return read_dicom_series(path)
        by_content = format_from_content(path)
        by_name = format_from_name(path)
        if by_name and by_content and by_name != by_content:
            raise ReadError(
                path,
                f"the extension says {_NAMES[by_name]} but the file holds {_NAMES[by_content]} data; rename it",
            )
        kind = by_content or by_name
        if kind is None:
            raise ReadError(path, f"unsupported file type (napari-brgm reads {SUPPORTED})")
        return _READERS[kind](path)
