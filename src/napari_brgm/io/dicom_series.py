"""Reading a folder that holds one DICOM series as a (z, y, x) volume, slices sorted by position."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_brgm.io import dicom
from napari_brgm.io.errors import ReadError
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.limits import declared_voxels
from napari_brgm.io.sniff import is_dicom_file

_ORIENTATION_TOLERANCE = 1e-3


def folder_files(folder: Path) -> list[Path]:
    """The visible regular files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _series_label(ds) -> str:
    number = ds.get("SeriesNumber", "?")
    description = str(ds.get("SeriesDescription", "")).strip()
    return f"#{number} {description}".strip()


def _image_datasets(folder: Path) -> list[tuple[Path, object]]:
    """The image objects of the folder (DICOMDIR, reports and other non-images are skipped)."""
    files = folder_files(folder)
    if not files:
        subfolders = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if subfolders:
            shown = ", ".join(sorted(subfolders)[:5]) + (", ..." if len(subfolders) > 5 else "")
            raise ReadError(folder, f"the folder holds only sub-folders ({shown}); open the folder of one series")
        raise ReadError(folder, "the folder is empty")
    candidates = [f for f in files if is_dicom_file(f)]
    if not candidates:
        reason = f"the folder holds no DICOM files ({len(files)} files, none with the DICOM 'DICM' marker)"
        raise ReadError(folder, reason)
    found = []
    for f in candidates:
        ds = dicom.read_dataset(f)
        if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "Rows")):
            found.append((f, ds))
    if not found:
        raise ReadError(folder, "the DICOM files in the folder hold no images")
    return found


def read_dicom_series(folder: str | Path) -> MedicalImage:
    """Read the one DICOM series in `folder` (not recursive).

    Slices are ordered by their position along the slice normal (not by file name or
    InstanceNumber). A folder holding several series, multi-frame files, slices of different
    sizes or orientations, repeated positions or uneven gaps is refused with the reason.
    """
    folder = Path(folder)
    with dicom.header_guard(folder):
        return _read_series(folder, _image_datasets(folder))


def _read_series(folder: Path, found: list) -> MedicalImage:
    series = Counter(str(ds.get("SeriesInstanceUID", "")) for _, ds in found)
    if len(series) > 1:
        labels = sorted({_series_label(ds) for _, ds in found})
        reason = f"the folder holds {len(series)} series ({', '.join(labels)}); put each series in its own folder"
        raise ReadError(folder, reason)
    if len(found) == 1:
        image = dicom.read_dicom_file(found[0][0])
        image.metadata.update(source=str(folder), format="dicom-series")
        return replace(image, source=str(folder), name=folder.name)
    for path, ds in found:
        dicom.check_image(ds, path)
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ReadError(folder, f"{path.name} is a multi-frame file; open it on its own rather than the folder")
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in found}
    if len(shapes) > 1:
        raise ReadError(folder, f"the slices have different sizes {sorted(shapes)}")
    declared_voxels(folder, (len(found), *shapes.pop()), "series")
    iop = dicom.orientation(found[0][1])
    for path, ds in found:
        other = dicom.orientation(ds)
        if (iop is None) != (other is None) or (iop is not None and np.abs(other - iop).max() > _ORIENTATION_TOLERANCE):
            raise ReadError(folder, f"{path.name} has a different slice orientation (a localizer in the series?)")
    positions = [dicom.position(ds) for _, ds in found]
    if any(p is None for p in positions):
        found.sort(key=lambda item: int(item[1].get("InstanceNumber", 0) or 0))
        positions = None
    spacing, source = dicom.pixel_spacing(found[0][1])
    order, affine = dicom.stack_affine(folder, iop, positions, spacing or (1.0, 1.0), dicom.slice_step(found[0][1]))
    ordered = [found[k] for k in order] if order is not None else found
    data = np.stack([dicom.frames(ds, path)[0] for path, ds in ordered])
    reference = ordered[len(ordered) // 2][1]
    return dicom.build_image(
        reference, data, affine, source, folder, folder.name, "dicom-series", files=[path for path, _ in ordered]
    )
