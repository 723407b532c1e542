"""`MedicalImage`: pixels plus the geometry and header facts the rest of napari-brgm relies on."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np

from napari_brgm.io.geometry import resampled_affine, slab_affine, slice_affine, spacing_from_affine


@dataclass(eq=False)
class MedicalImage:
    """An image as read from disk, in napari's axis order.

    Attributes
    ----------
    data : float32 array in (z, y, x) or (y, x) order (y = DICOM rows, x = DICOM columns), with
        rescale slope/intercept applied and MONOCHROME1 inverted so bright means dense.
    spacing : voxel size in mm in the same axis order (1.0 per pixel when the file gives none;
        then ``metadata["spacing_known"]`` is False).
    affine : 4x4 map from the index (z, y, x, 1) to RAS+ world mm (the NIfTI convention);
        a 2-D image is the slice z = 0 of that map.
    modality : DICOM modality ("CR", "MR", ...) or None when the format does not record it.
    window : (centre, width) of the display window in data units, or None.
    metadata : JSON-serialisable facts for the napari layer and the writers (see docs/io.md).
    source : the path that was read.
    name : a short layer name (file or folder name without extension).
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    modality: str | None
    window: tuple[float, float] | None
    metadata: dict = field(default_factory=dict)
    source: str = ""
    name: str = ""

    @property
    def axes(self) -> str:
        """'zyx' for volumes, 'yx' for single images."""
        return "zyx"[-self.data.ndim :]

    def slice(self, k: int) -> MedicalImage:
        """Slice `k` of a volume as a one-slice volume (1, y, x) keeping its place in the world."""
        if self.data.ndim != 3:
            raise ValueError(f"{self.name or self.source}: slicing needs a volume, got shape {self.data.shape}")
        depth = self.data.shape[0]
        if not -depth <= k < depth:
            raise ValueError(f"{self.name or self.source}: slice {k} is outside 0..{depth - 1}")
        k %= depth
        metadata = copy.deepcopy(self.metadata)
        affine = slice_affine(self.affine, k)
        metadata.update(shape=[1, *self.data.shape[1:]], affine=affine.tolist(),
                        slice_of={"shape": list(self.data.shape), "index": k})
        return replace(self, data=self.data[k : k + 1].copy(), affine=affine, metadata=metadata,
                       name=f"{self.name} z{k}")

    def resampled(self, data: np.ndarray, factor: float, name: str | None = None) -> MedicalImage:
        """The same image geometry for `data` sampled `factor` times finer in y and x.

        Used for super-resolution results: the new grid covers the same field of view, so the
        affine, spacing and metadata are updated with `resampled_affine` and the result writes back
        and overlays in the right place.
        """
        data = np.asarray(data, dtype=np.float32)
        rows, cols = self.data.shape[-2:]
        expected = (*self.data.shape[:-2], round(rows * factor), round(cols * factor))
        if data.shape != expected:
            raise ValueError(f"data of shape {data.shape} are not {factor}x {self.data.shape} in y and x ({expected})")
        affine = resampled_affine(self.affine, factor, axes=(1, 2))
        spacing = spacing_from_affine(affine, data.ndim)
        metadata = copy.deepcopy(self.metadata)
        metadata.update(
            shape=list(data.shape),
            spacing=list(spacing),
            affine=affine.tolist(),
            resampled_from={"shape": list(self.data.shape), "factor": factor},
        )
        return replace(self, data=data, spacing=spacing, affine=affine, metadata=metadata, name=name or self.name)

    def slab(self, data: np.ndarray, axis: int, slices, factor: float = 1, name: str | None = None) -> MedicalImage:
        """The geometry of reconstructed planes `slices` along `axis` (a `VolumeResult`'s arrays) for `data`.

        `data` is in the volume's axis order with len(slices) planes along `axis` and the in-plane
        axes `factor`× finer (super-resolution); it overlays this image in world coordinates.
        """
        if self.data.ndim != 3:
            raise ValueError(f"{self.name or self.source}: a slab needs a volume, got shape {self.data.shape}")
        data = np.asarray(data, dtype=np.float32)
        expected = [round(n * factor) for n in self.data.shape]
        expected[axis] = len(slices)
        if data.shape != tuple(expected):
            raise ValueError(f"data of shape {data.shape} are not the slab {tuple(expected)} of {self.data.shape}")
        affine = slab_affine(self.affine, axis, slices, factor)
        spacing = spacing_from_affine(affine, 3)
        metadata = copy.deepcopy(self.metadata)
        metadata.update(shape=list(data.shape), spacing=list(spacing), affine=affine.tolist(),
                        slab_of={"shape": list(self.data.shape), "axis": int(axis), "slices": [int(k) for k in slices],
                                 "factor": factor})
        return replace(self, data=data, spacing=spacing, affine=affine, metadata=metadata, name=name or self.name)
