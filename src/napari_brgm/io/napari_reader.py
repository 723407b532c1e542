"""npe2 reader contribution: DICOM files and series folders, NIfTI volumes, fastMRI single-coil .h5 files.

napari 0.9 wraps an exception raised by a reader function in ReaderPluginError and, when the user
opened the file from the GUI, raises a second generic ReaderPluginError or opens the reader-choice
dialog around it. To give the user one clear message instead, the reader function shows the
ReadError text as a napari error notification and returns napari's "read, but no layers" value
[(None,)], so napari adds nothing, raises nothing and keeps running.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_brgm.io.errors import ReadError
from napari_brgm.io.fastmri import claims_fastmri
from napari_brgm.io.layer import layer_data
from napari_brgm.io.loader import load_image
from napari_brgm.io.sniff import DICOM_SUFFIXES, NIFTI_SUFFIXES, is_dicom_file

NO_LAYERS = [(None,)]
_FOLDER_PROBE = 64  # files looked at before a folder is declined as "not DICOM"


def _claims_folder(folder: Path) -> bool:
    """A folder with a DICOM file among its first files, or one without files (to explain why)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return not files or any(is_dicom_file(p) for p in sorted(files)[:_FOLDER_PROBE])


def get_reader(path):
    """Return `read_path` for paths this plugin handles, else None (quickly, from names and 132 bytes).

    Handled: folders (DICOM series), *.dcm/*.dicom/*.ima, *.nii/*.nii.gz, files of any name
    with the DICOM marker, and HDF5 files holding a 'kspace' dataset (fastMRI). Lists of paths (napari's stack mode), PNG and everything else are declined.
    """
    if not isinstance(path, (str, Path)):
        return None
    p = Path(path)
    if p.is_dir():
        return read_path if _claims_folder(p) else None
    name = p.name.lower()
    if name.endswith(NIFTI_SUFFIXES) or name.endswith(DICOM_SUFFIXES) or is_dicom_file(p):
        return read_path
    if claims_fastmri(p):
        return read_path
    return None


def read_path(path) -> list:
    """Read one path into a single image layer; on a ReadError notify the user and add nothing."""
    try:
        image = load_image(path)
    except ReadError as err:
        from napari.utils.notifications import show_error

        show_error(str(err))
        return NO_LAYERS
    bad = int(np.count_nonzero(~np.isfinite(image.data)))
    if bad:  # opened so the user can see them; a reconstruction refuses them (engine/nonfinite.py)
        from napari.utils.notifications import show_warning

        show_warning(f"{image.source}: {bad:,} of {image.data.size:,} voxels are NaN or infinite. Reconstruction "
                     "refuses them; for inpainting, --nonfinite missing (nonfinite='missing') treats them as missing.")
    return [layer_data(image)]
