"""Training slices from DICOM files/series, NIfTI volumes and PNG folders.

Each volume is reoriented so that its slices look like the ones napari shows for our samples
(axial: anterior up, patient right on the left), cropped to the head's bounding box (a margin
of `MARGIN` of its size), padded to a physical square and area-resampled to R×R. Slices with
little foreground are skipped. Each slice is mapped to [-1, 1] with the engine's own rule
(`IntensityMap.from_percentiles`), so a prior sees at training time what the engine feeds it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from napari_brgm.engine.geometry import area_matrix
from napari_brgm.engine.intensity import IntensityMap
from napari_brgm.io import ReadError, load_image

PLANES = {  # target axis codes of the (z, y, x) data: slice axis, rows (top→bottom), columns (left→right)
    "axial": ("S", "P", "L"),
    "coronal": ("P", "I", "L"),
    "sagittal": ("L", "I", "P"),
}
MARGIN = 0.04  # bounding-box margin, as a fraction of the box size on each side
MIN_FOREGROUND = 0.10  # keep slices whose foreground covers at least this fraction of the crop
FOREGROUND_LEVEL = 0.10  # foreground: above lo + this × (hi − lo) of the volume's 0.5/99.5 percentiles
PNG_SUFFIXES = (".png",)


@dataclass
class SliceSet:
    """Normalised slices [N, 1, R, R] in [-1, 1] (roughly) and where each came from."""

    images: torch.Tensor
    sources: list[str]

    def fingerprint(self) -> str:
        """Hash of the pixels: a resumed run checks it trains on the same data."""
        return hashlib.sha256(self.images.numpy().tobytes()).hexdigest()[:16]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def expand_inputs(paths) -> list[Path]:
    """Files and folders → the things to read: a folder of PNGs gives its PNGs, any other folder is a DICOM series."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if p.is_dir():
            pngs = sorted(q for q in p.iterdir() if q.suffix.lower() in PNG_SUFFIXES)
            out.extend(pngs if pngs else [p])
        else:
            out.append(p)
    return out


def reorient(data: np.ndarray, affine: np.ndarray, spacing, plane: str):
    """(z, y, x) data and its index→RAS affine → data whose axes follow PLANES[plane]; spacing permuted."""
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}, got {plane!r}")
    current = nib.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(PLANES[plane])
    transform = nib.orientations.ornt_transform(current, target)
    out = nib.orientations.apply_orientation(data, transform)
    order = [int(a) for a in transform[:, 0]]  # source axis i goes to target axis order[i]
    new_spacing = [0.0] * 3
    for i, axis in enumerate(order):
        new_spacing[axis] = float(spacing[i])
    return np.ascontiguousarray(out), tuple(new_spacing)


def _bbox(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    (r0, r1), (c0, c1) = (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)
    mr, mc = int(np.ceil(MARGIN * (r1 - r0))), int(np.ceil(MARGIN * (c1 - c0)))
    return slice(max(0, r0 - mr), r1 + mr), slice(max(0, c0 - mc), c1 + mc)


def square_slices(volume: np.ndarray, spacing_yx, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Volume [n, H, W] → (slices [m, R, R] in input units, kept indices): crop, physical square, area resample."""
    lo, hi = np.percentile(volume, [0.5, 99.5])
    fg = volume > lo + FOREGROUND_LEVEL * (hi - lo)
    if not fg.any():
        return np.zeros((0, resolution, resolution), np.float32), np.zeros(0, int)
    rs, cs = _bbox(fg.any(0))
    crop, fg = volume[:, rs, cs], fg[:, rs, cs]
    keep = np.flatnonzero(fg.mean(axis=(1, 2)) >= MIN_FOREGROUND)
    crop = crop[keep]
    sy, sx = (float(s) if s and s > 0 else 1.0 for s in spacing_yx)
    h, w = crop.shape[1:]
    side = max(h * sy, w * sx)  # mm
    ph, pw = int(round(side / sy)), int(round(side / sx))
    top, left = (ph - h) // 2, (pw - w) // 2
    padded = np.full((len(keep), ph, pw), lo, np.float32)
    padded[:, top:top + h, left:left + w] = crop
    a_h, a_w = area_matrix(ph, resolution), area_matrix(pw, resolution)
    out = np.einsum("ij,njk,lk->nil", a_h, padded, a_w, optimize=True).astype(np.float32)
    return out, keep


def load_slices(paths, resolution: int, plane: str = "axial") -> SliceSet:
    """All usable slices of the given files/folders, normalised per slice like the engine does."""
    images, sources = [], []
    for path in expand_inputs(paths):
        img = load_image(path)
        data = np.asarray(img.data, np.float32)
        if data.ndim == 2:
            volume, spacing = data[None], (1.0, *img.spacing[-2:])
        else:
            volume, spacing = reorient(data, img.affine, img.spacing, plane)
        squares, keep = square_slices(volume, spacing[1:], resolution)
        for sq, k in zip(squares, keep):
            try:
                imap = IntensityMap.from_percentiles(sq)
            except ValueError:
                continue
            images.append(imap.to_model(sq).astype(np.float32))
            sources.append(f"{path.name}[{plane} {int(k)}]" if data.ndim == 3 else path.name)
    if not images:
        raise ReadError(Path(str(paths[0]) if paths else "."), "no usable slices (all empty or constant)")
    return SliceSet(torch.from_numpy(np.stack(images)[:, None]), sources)
