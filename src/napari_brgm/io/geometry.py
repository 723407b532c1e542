"""Affine conventions shared by every reader and writer.

All affines here map the homogeneous index (z, y, x, 1) of an array in napari order to RAS+ world
millimetres (the NIfTI/nibabel convention). A 2-D (y, x) image is the slice z = 0 of that map, so a
single 4x4 matrix serves images and volumes alike. napari itself only gets a `scale` and a
`translate` per axis: the voxel size and the world origin projected on each voxel axis. Images that
share an orientation (a series and its super-resolved result, for example) therefore overlay
exactly in the viewer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# DICOM patient coordinates are LPS+; flipping the first two world axes gives RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Swaps the index order (z, y, x) <-> (i, j, k) = (x, y, z); it is its own inverse.
_ZYX_TO_IJK = np.array(
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]],
    dtype=float,
)


def nifti_to_zyx(affine: np.ndarray) -> np.ndarray:
    """Turn a NIfTI affine (index i, j, k) into one for the same voxels indexed (z, y, x) = (k, j, i)."""
    return np.asarray(affine, dtype=float) @ _ZYX_TO_IJK


def zyx_to_nifti(affine: np.ndarray) -> np.ndarray:
    """Inverse of `nifti_to_zyx`: the NIfTI affine for an array stored as data.transpose()."""
    return np.asarray(affine, dtype=float) @ _ZYX_TO_IJK


def default_affine(spacing: Sequence[float]) -> np.ndarray:
    """The affine of an image with no patient geometry (X-ray, PNG).

    It behaves like a DICOM slice with ImageOrientationPatient 1\\0\\0\\0\\1\\0 at the origin, as
    ITK does, so a written NIfTI shows the same way up as the source in other viewers.
    """
    spacing = [1.0] * (3 - len(spacing)) + [float(s) for s in spacing]
    lps = np.zeros((4, 4))
    lps[3, 3] = 1.0
    lps[0, 2] = spacing[2]  # x index -> patient left
    lps[1, 1] = spacing[1]  # y index -> posterior
    lps[2, 0] = spacing[0]  # z index -> superior
    return LPS_TO_RAS @ lps


def spacing_from_affine(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    """Voxel size along each data axis (the lengths of the affine's columns), last `ndim` axes."""
    norms = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    return tuple(float(n) for n in norms[3 - ndim :])


def _unit_axes(affine: np.ndarray) -> np.ndarray:
    """The world direction of each index axis (z, y, x) as the columns of a 3x3 matrix."""
    cols = np.asarray(affine, dtype=float)[:3, :3]
    return cols / np.linalg.norm(cols, axis=0)


def layer_scale_translate(affine: np.ndarray, ndim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """napari `scale` and `translate` for an image with this affine and `ndim` axes.

    scale = voxel size per axis; translate = world origin (centre of voxel 0) projected on each
    voxel axis direction.
    """
    affine = np.asarray(affine, dtype=float)
    translate = _unit_axes(affine).T @ affine[:3, 3]
    return spacing_from_affine(affine, ndim), tuple(float(t) for t in translate[3 - ndim :])


def affine_from_layer(
    scale: Sequence[float], translate: Sequence[float], reference: np.ndarray | None = None
) -> np.ndarray:
    """The affine matching a napari layer's `scale` and `translate` (inverse of `layer_scale_translate`).

    The axis directions come from `reference` (the source affine) or, without one, from
    `default_affine`. For a 2-D layer the position along the slice normal is kept from `reference`.
    """
    ndim = len(scale)
    if ndim not in (2, 3) or len(translate) != ndim:
        raise ValueError(f"need 2 or 3 axes of scale and translate, got {len(scale)} and {len(translate)}")
    ref = np.asarray(reference, dtype=float) if reference is not None else default_affine([1.0] * ndim)
    units = _unit_axes(ref)
    full_scale = [*spacing_from_affine(ref, 3)[: 3 - ndim], *map(float, scale)]
    full_translate = [*(units.T @ ref[:3, 3])[: 3 - ndim], *map(float, translate)]
    affine = np.eye(4)
    affine[:3, :3] = units * np.asarray(full_scale)
    affine[:3, 3] = np.linalg.solve(units.T, np.asarray(full_translate))
    return affine


def resampled_affine(affine: np.ndarray, factor: float, axes: Sequence[int] = (1, 2)) -> np.ndarray:
    """Affine of a grid `factor` times finer along `axes` (0 = z, 1 = y, 2 = x) over the same field of view.

    Each new voxel is 1/factor of an old one, and the first new voxel sits in the corner of the
    first old voxel: column_k / factor, and the origin moves by -(factor - 1) / (2 factor) * column_k.
    """
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    old = np.asarray(affine, dtype=float)
    new = old.copy()
    for k in axes:
        new[:3, k] = old[:3, k] / factor
        new[:3, 3] -= (factor - 1) / (2 * factor) * old[:3, k]
    return new


def slice_affine(affine: np.ndarray, k: int) -> np.ndarray:
    """Affine of the one-slice volume (1, y, x) that is slice `k` (along z) of a volume with `affine`."""
    new = np.asarray(affine, dtype=float).copy()
    new[:3, 3] += k * new[:3, 0]
    return new


def slab_affine(affine: np.ndarray, axis: int, slices: Sequence[int], factor: float = 1) -> np.ndarray:
    """Affine of the planes `slices` (evenly spaced) along `axis` of a (z, y, x) volume, `factor`× finer in-plane.

    The slab's first plane is slice `slices[0]`; consecutive planes are `slices[1] - slices[0]`
    source slices apart. Super-resolution refines the two other axes as `resampled_affine` does.
    """
    slices = [int(k) for k in slices]
    steps = set(np.diff(slices).tolist())
    if len(steps) > 1 or (steps and steps.pop() <= 0):
        raise ValueError(f"slices {slices} are not evenly spaced and increasing: they form no volume grid")
    step = slices[1] - slices[0] if len(slices) > 1 else 1
    new = np.asarray(affine, dtype=float).copy()
    new[:3, 3] += slices[0] * new[:3, axis]
    new[:3, axis] *= step
    in_plane = [k for k in range(3) if k != axis]
    return resampled_affine(new, factor, axes=in_plane) if factor != 1 else new


def resampled_scale_translate(
    scale: Sequence[float], translate: Sequence[float], factor: float, axes: Sequence[int] = (-2, -1)
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """napari `scale`/`translate` for a layer `factor` times finer along `axes` (default y and x).

    Same rule as `resampled_affine`: scale / factor, translate - (factor - 1) / (2 factor) * scale.
    """
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    scale, translate = [float(s) for s in scale], [float(t) for t in translate]
    for k in axes:
        translate[k] -= (factor - 1) / (2 * factor) * scale[k]
        scale[k] /= factor
    return tuple(scale), tuple(translate)


# For planes along axis a of a (z, y, x) volume: the volume axes that become (plane, row, column).
# The rows and columns keep the volume's order, as numpy's take(..., axis=a) and moveaxis(a, 0) give them.
PLANE_AXES = {0: (0, 1, 2), 1: (1, 0, 2), 2: (2, 0, 1)}


def plane_affine(affine: np.ndarray, axis: int = 0, index: int = 0, factor: float = 1) -> np.ndarray:
    """Affine of plane `index` along `axis` of a volume, as a one-slice volume (1, rows, cols).

    Rows and columns are the volume's other axes in their order (`PLANE_AXES`); the first column
    stays the step along `axis`; the plane is `factor` times finer in-plane over the same field of
    view (`resampled_affine`).
    """
    return output_affine(affine, axis, [index], factor)


def output_affine(
    affine: np.ndarray, axis: int = 0, slices: Sequence[int] | None = None, factor: float = 1
) -> np.ndarray:
    """Affine of the stack (n, rows, cols) of planes `slices` along `axis`, `factor` times finer in-plane.

    `slab_affine` with the slice axis first: index (k, r, c) maps to plane `slices[k]`, so the
    slices must be evenly spaced (default: all planes from 0, step 1).
    """
    if axis not in PLANE_AXES:
        raise ValueError(f"axis must be 0 (z), 1 (y) or 2 (x), got {axis}")
    slab = slab_affine(affine, axis, [0] if not slices else slices, factor)
    return slab[:, [*PLANE_AXES[axis], 3]]