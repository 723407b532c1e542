"""Reading and writing medical images for napari-brgm (DICOM, DICOM series, NIfTI, PNG).

Conventions (details in docs/io.md): arrays are float32 in napari order (z, y, x) or (y, x);
`affine` maps the index (z, y, x, 1) to RAS+ millimetres; MONOCHROME1 is inverted so that bright
means dense. This package imports neither torch nor Qt; DICOM output (`napari_brgm.io.dicom_out`, which
imports highdicom) is imported on its own.
"""

from napari_brgm.io.errors import ReadError
from napari_brgm.io.geometry import (
    affine_from_layer,
    layer_scale_translate,
    output_affine,
    plane_affine,
    resampled_affine,
    resampled_scale_translate,
)
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.layer import layer_data
from napari_brgm.io.loader import load_image
from napari_brgm.io.nifti import save_nifti

__all__ = [
    "MedicalImage",
    "ReadError",
    "affine_from_layer",
    "layer_data",
    "layer_scale_translate",
    "load_image",
    "output_affine",
    "plane_affine",
    "resampled_affine",
    "resampled_scale_translate",
    "save_nifti",
]
