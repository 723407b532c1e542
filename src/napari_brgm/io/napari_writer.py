"""npe2 writer contribution: an image layer as NIfTI in the geometry it was read with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_brgm.io.geometry import affine_from_layer, layer_scale_translate
from napari_brgm.io.nifti import save_nifti
from napari_brgm.io.sniff import NIFTI_SUFFIXES


def layer_affine(data_shape: tuple[int, ...], meta: dict) -> np.ndarray:
    """The (z, y, x) -> RAS affine for a layer.

    The source affine from the metadata when the layer still has the source's shape, scale and
    translate (an exact round trip). Otherwise (a resampled result, a layer from another reader)
    the layer's scale and translate, with the axis directions of the source affine if there is one.
    """
    metadata = meta.get("metadata") or {}
    ndim = len(data_shape)
    scale = tuple(meta.get("scale") or (1.0,) * ndim)
    translate = tuple(meta.get("translate") or (0.0,) * ndim)
    source = np.asarray(metadata["affine"], dtype=float) if "affine" in metadata else None
    if source is not None and tuple(metadata.get("shape", ())) == tuple(data_shape):
        src_scale, src_translate = layer_scale_translate(source, ndim)
        if np.allclose(src_scale, scale) and np.allclose(src_translate, translate, atol=1e-6):
            return source
    return affine_from_layer(scale, translate, source)


def write_nifti(path: str, data, meta: dict) -> list[str]:
    """Save one image layer as .nii/.nii.gz (".nii.gz" is appended to other names)."""
    if meta.get("rgb"):
        raise ValueError("RGB layers cannot be saved as NIfTI by napari-brgm; convert to grayscale first")
    array = np.asarray(data[0] if meta.get("multiscale") else data)
    if array.ndim not in (2, 3):
        raise ValueError(f"napari-brgm writes 2-D or 3-D image layers as NIfTI, this layer is {array.ndim}-D")
    target = Path(path)
    if not target.name.lower().endswith(NIFTI_SUFFIXES):
        target = target.with_name(target.name + ".nii.gz")
    metadata = dict(meta.get("metadata") or {})
    metadata.update(affine=layer_affine(array.shape, meta).tolist(), shape=list(array.shape))
    return [str(save_nifti(target, array, metadata))]
