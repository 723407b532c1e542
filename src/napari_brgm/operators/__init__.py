"""Forward models y = A·x for the reconstruction tasks, each with adjoint, pseudo-inverse and back-projection.

Masks everywhere in this package: NONZERO / True = MISSING (the user paints what is missing) — except
k-space sampling masks, which mark what was SAMPLED (the MRI convention; `operators.kspace_masks`).
"""

from napari_brgm.operators.base import LinearOperator
from napari_brgm.operators.blur import PSF_KINDS, Blur, box_psf, gaussian_psf, make_psf
from napari_brgm.operators.denoising import Denoising
from napari_brgm.operators.inpainting import Inpainting
from napari_brgm.operators.kspace import KSpace
from napari_brgm.operators.kspace_masks import MASK_TYPES, MaskError, MaskInfo, sampling_mask, user_mask
from napari_brgm.operators.masked import MaskedOperator
from napari_brgm.operators.registry import OPERATORS, TASKS, make_operator
from napari_brgm.operators.superres import MAX_FACTOR, MIN_FACTOR, SuperResolution, bicubic_matrix

__all__ = [
    "LinearOperator",
    "SuperResolution",
    "Inpainting",
    "Denoising",
    "KSpace",
    "Blur",
    "PSF_KINDS",
    "box_psf",
    "gaussian_psf",
    "make_psf",
    "MASK_TYPES",
    "MaskError",
    "MaskInfo",
    "sampling_mask",
    "user_mask",
    "MaskedOperator",
    "OPERATORS",
    "TASKS",
    "make_operator",
    "bicubic_matrix",
    "MIN_FACTOR",
    "MAX_FACTOR",
]
