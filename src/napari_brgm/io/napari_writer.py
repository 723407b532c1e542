"""npe2 writer contributions: an image layer as NIfTI in the geometry it was read with, or as a DICOM series."""

from __future__ import annotations

import hashlib
import json
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


# Result layer kinds (metadata["brgm"]["kind"], widgets/layers.py) -> DICOM output kinds.
_DICOM_KINDS = {"mean": "mean", "consistent": "consistent", "uncertainty": "std", "std": "std", "lower": "lower",
                "upper": "upper"}


def write_dicom_series(path: str, data, meta: dict) -> list[str]:
    """Save an image layer that came from a DICOM series or file as a derived series under the folder `path`.

    Result layers (``metadata["brgm"]``) are written as their kind (mean, consistent, uncertainty
    as std, lower, upper) on the source's grid `factor`x finer; other layers read from DICOM as
    "mean". A slab (``metadata["slab_of"]``: planes `slices` along `axis`, in the volume's axis
    order, as `MedicalImage.slab` records it) is written plane by plane. The source is re-read from
    ``metadata["source"]``; its files must still be the ones recorded. Files go to
    `path`/<kind>/IM_0001.dcm ... (replacing an earlier save there).
    """
    from napari_brgm.io.dicom_out import describe_run, write_dicom
    from napari_brgm.io.loader import load_image

    name = meta.get("name") or "layer"
    metadata = dict(meta.get("metadata") or {})
    files = (metadata.get("dicom") or {}).get("files")
    if metadata.get("format") not in ("dicom", "dicom-series") or not files or not metadata.get("source"):
        raise ValueError(f"layer {name!r} did not come from a DICOM series or file read by napari-brgm "
                         "(no source files in its metadata); save it as NIfTI")
    if meta.get("rgb") or meta.get("multiscale"):
        raise ValueError(f"layer {name!r} is {'RGB' if meta.get('rgb') else 'multiscale'}; "
                         "only single-channel image layers can be saved as DICOM")
    brgm = dict(metadata.get("brgm") or {})
    kind = _DICOM_KINDS.get(brgm.get("kind", "mean"))
    if kind is None:
        raise ValueError(f"layer {name!r} holds {brgm.get('kind')!r} images; DICOM output takes the mean, "
                         "consistent, uncertainty, lower and upper layers")
    if "resampled_from" in metadata:
        raise ValueError(f"layer {name!r} is on a resampled grid of its DICOM source; save it as NIfTI")
    source = load_image(metadata["source"])
    if source.metadata["dicom"].get("files") != list(files):
        raise ValueError(f"the DICOM source {metadata['source']} no longer holds the files that layer {name!r} "
                         "was read from")
    array = np.asarray(data, dtype=np.float32)
    slab = metadata.get("slab_of") or {}
    slices = brgm.get("slices", slab.get("slices"))
    axis = int(brgm.get("axis", slab.get("axis")) or 0)
    factor = int(brgm.get("factor") or slab.get("factor") or 1)
    if slab and array.ndim == 3:
        array = np.moveaxis(array, axis, 0)  # planes first, rows and columns in the volume's order
    if slices is None:
        offset = (metadata.get("slice_of") or {}).get("index", 0)
        k = brgm.get("slice")
        slices = [offset + int(k)] if k is not None else ([offset] if "slice_of" in metadata else None)
    record = {key: brgm.get(key) for key in ("key", "kind", "settings", "seed", "slice", "slices", "axis", "partial",
                                             "final_losses")}
    identity = json.dumps(record, sort_keys=True, default=str).encode() if brgm else array.tobytes()
    run_id = hashlib.sha256(identity).hexdigest()  # the same result saved again gets the same UIDs
    written = write_dicom(
        path, source, {kind: array}, factor=factor, axis=axis, slices=slices, description=describe_run(brgm), run_id=run_id, uncertainty="auto", overwrite=True,
    )
    return [str(p) for paths in written.values() for p in paths]
