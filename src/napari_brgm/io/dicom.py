"""Reading DICOM images with pydicom: pixels in display units, geometry and a patient-free header summary.

One file gives a radiograph, a single CT/MR slice or a multi-frame stack; `dicom_series` stacks
the single-frame files of a folder with the same helpers.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.pixels.utils import get_nr_frames

from napari_brgm.io import intensity
from napari_brgm.io.errors import ReadError
from napari_brgm.io.geometry import LPS_TO_RAS, spacing_from_affine
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.limits import RLE_MAX_RATIO, CappedFile, check_bytes, declared_voxels
from napari_brgm.io.sniff import DICOM_SUFFIXES

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")

# Descriptive header fields copied into the layer metadata: nothing that identifies the patient,
# the institution or the exam (no names, IDs, dates, UIDs).
_DESCRIPTIVE = {
    "series_description": "SeriesDescription",
    "body_part_examined": "BodyPartExamined",
    "view_position": "ViewPosition",
    "image_type": "ImageType",
    "bits_stored": "BitsStored",
    "pixel_representation": "PixelRepresentation",
    "slice_thickness": "SliceThickness",
    "spacing_between_slices": "SpacingBetweenSlices",
}

# ImageOrientationPatient rows must be this close to orthogonal (|cos|), else the orientation is unknown.
_ORTHOGONAL_TOLERANCE = 0.01

# Slice gaps may differ by this fraction of the median gap before a stack is refused.
_GAP_TOLERANCE = 0.01


def read_dataset(path: str | Path) -> Dataset:
    """pydicom.dcmread with every failure turned into a ReadError naming the file."""
    try:
        with open(path, "rb") as f:
            return pydicom.dcmread(CappedFile(f, Path(path).stat().st_size))
    except InvalidDicomError:
        raise ReadError(path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
    except Exception as err:  # pydicom raises many types on corrupt headers
        raise ReadError(path, f"corrupt DICOM header ({type(err).__name__}: {err})") from err


# What pydicom raises when a damaged header value is converted on first access (values are parsed lazily).
_HEADER_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, ZeroDivisionError,
                  struct.error, EOFError, UnicodeError, NotImplementedError)  # "Unknown Value Representation"


@contextmanager
def header_guard(path: str | Path) -> Iterator[None]:
    """Turn what a damaged header makes pydicom or numpy raise while it is interpreted into a ReadError.

    pydicom converts element values lazily, so a corrupt value surfaces wherever it is first used;
    the specific checks (transfer syntax, image size, pixel bytes, rescale) give the clearer messages.
    """
    try:
        yield
    except ReadError:
        raise
    except MemoryError:
        raise ReadError(path, "the header declares more pixel data than memory allows (damaged header?)") from None
    except _HEADER_ERRORS as err:
        raise ReadError(path, f"corrupt DICOM header ({type(err).__name__}: {err})") from err


def _has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in _PIXEL_KEYWORDS)


def check_image(ds: Dataset, path: str | Path) -> None:
    """Refuse datasets without decodable grayscale pixels, with the reason why."""
    sop = ds.get("SOPClassUID")
    sop_name = getattr(sop, "name", None) or str(sop or "unknown")
    if not _has_pixels(ds):
        if "Image Storage" in sop_name or "Rows" in ds:
            raise ReadError(path, f"the file ends before its pixel data (truncated {sop_name} file)")
        raise ReadError(path, f"the DICOM object holds no image ({sop_name})")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if int(ds.get("SamplesPerPixel", 1)) != 1 or photometric not in _GRAYSCALE:
        raise ReadError(path, f"colour images ({photometric}) are not supported; napari-brgm works on grayscale images")
    syntax = transfer_syntax(ds, path)
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise ReadError(path, f"pixel data use the transfer syntax {syntax}, which pydicom cannot decode") from None
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies)
            raise ReadError(
                path,
                f"pixel data are compressed as '{syntax.name}' and no decoder is installed (install one of: {missing})",
            )


def _transfer_syntax(ds: Dataset):
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def transfer_syntax(ds: Dataset, path: str | Path):
    """The file's transfer syntax UID (None when the meta header has none); ReadError unless it is one."""
    syntax = _transfer_syntax(ds)
    if syntax is not None and not syntax.is_transfer_syntax:
        shown = str(syntax)[:64]
        raise ReadError(path, f"the file meta header gives {shown!r} as the transfer syntax, which is not a DICOM "
                        "transfer syntax UID (damaged header?)")
    return syntax


def check_size(ds: Dataset, path: str | Path) -> int:
    """Check the declared frames x rows x columns against `MAX_VOXELS` and the pixel bytes present; return
    the number of frames. Done before pydicom decodes (and allocates) anything."""
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if rows is None or columns is None:
        raise ReadError(path, "the header has no Rows/Columns: the image size is unknown")
    n_frames = get_nr_frames(ds, warn=False)
    declared_voxels(path, (n_frames, rows, columns), "image")
    keyword = next(k for k in _PIXEL_KEYWORDS if k in ds)
    present = len(ds[keyword].value or b"")
    bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword) or int(ds.get("BitsAllocated") or 0)
    if bits not in (1, 8, 16, 32, 64):
        raise ReadError(path, f"unsupported BitsAllocated {bits} (1, 8, 16, 32 or 64)")
    needed = (n_frames * int(rows) * int(columns) * bits + 7) // 8
    syntax = transfer_syntax(ds, path)
    if syntax is None or not syntax.is_compressed:
        check_bytes(path, needed, present)
    elif syntax == pydicom.uid.RLELossless and needed > RLE_MAX_RATIO * present + 64 * n_frames:
        raise ReadError(path, f"{present:,} bytes of RLE data cannot hold the declared {needed:,} bytes of pixels "
                        "(damaged header?)")
    return n_frames


def _item(ds: Dataset | None, keyword: str, index: int = 0) -> Dataset | None:
    seq = ds.get(keyword) if ds is not None else None
    return seq[index] if seq is not None and len(seq) > index else None


def find(ds: Dataset, keyword: str, group: str | None = None, frame: int = 0):
    """A header value from the top level, else from the (shared, then per-frame) functional group."""
    if keyword in ds and ds[keyword].value not in (None, ""):
        return ds[keyword].value
    if group is not None:
        for fg in (_item(ds, "SharedFunctionalGroupsSequence"), _item(ds, "PerFrameFunctionalGroupsSequence", frame)):
            item = _item(fg, group)
            if item is not None and keyword in item and item[keyword].value not in (None, ""):
                return item[keyword].value
    return None


def _transform_item(ds: Dataset, frame: int) -> Dataset:
    """The dataset holding the modality LUT (rescale) for `frame`."""
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds:
        return ds
    for fg in (_item(ds, "PerFrameFunctionalGroupsSequence", frame), _item(ds, "SharedFunctionalGroupsSequence")):
        item = _item(fg, "PixelValueTransformationSequence")
        if item is not None and "RescaleSlope" in item:
            return item
    return ds


def _positive(values) -> list[float] | None:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if out and all(np.isfinite(v) and v > 0 for v in out) else None


def pixel_spacing(ds: Dataset) -> tuple[list[float] | None, str]:
    """(row spacing, column spacing) in mm and the tag it came from; (None, 'none') when unknown."""
    spacing = _positive(find(ds, "PixelSpacing", "PixelMeasuresSequence") or [])
    if spacing and len(spacing) == 2:
        return spacing, "PixelSpacing"
    spacing = _positive(ds.get("ImagerPixelSpacing") or [])
    if spacing and len(spacing) == 2:
        return spacing, "ImagerPixelSpacing"
    return None, "none"


def slice_step(ds: Dataset) -> float:
    """Distance between slices when positions are missing: SpacingBetweenSlices, SliceThickness or 1."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _positive([find(ds, keyword, "PixelMeasuresSequence")])
        if value:
            return value[0]
    return 1.0


def orientation(ds: Dataset) -> np.ndarray | None:
    """ImageOrientationPatient as a (2, 3) array: direction of increasing column, then row index."""
    iop = find(ds, "ImageOrientationPatient", "PlaneOrientationSequence")
    try:
        iop = np.asarray([float(v) for v in iop], dtype=float).reshape(2, 3)
    except (TypeError, ValueError):
        return None
    if not np.all(np.isfinite(iop)) or np.any(np.linalg.norm(iop, axis=1) < 1e-6):
        return None
    iop = iop / np.linalg.norm(iop, axis=1, keepdims=True)
    if abs(float(iop[0] @ iop[1])) > _ORTHOGONAL_TOLERANCE:  # parallel rows give no slice normal (found by fuzzing)
        return None
    return iop


def position(ds: Dataset) -> np.ndarray | None:
    """ImagePositionPatient (LPS mm) of the image (of its first frame for multi-frame objects), or None."""
    found = _ipp(ds)
    if found is None:
        found = _ipp(_item(_item(ds, "PerFrameFunctionalGroupsSequence"), "PlanePositionSequence"))
    return found


def _ipp(item: Dataset | None) -> np.ndarray | None:
    ipp = item.get("ImagePositionPatient") if item is not None else None
    try:
        ipp = np.asarray([float(v) for v in ipp], dtype=float)
    except (TypeError, ValueError):
        return None
    return ipp if ipp.shape == (3,) and np.all(np.isfinite(ipp)) else None


def window(ds: Dataset) -> tuple[float, float] | None:
    """The first (centre, width) VOI window of the header, in modality (rescaled) units."""
    centre = find(ds, "WindowCenter", "FrameVOILUTSequence")
    width = find(ds, "WindowWidth", "FrameVOILUTSequence")
    try:
        centre = float(centre[0] if isinstance(centre, Sequence) and not isinstance(centre, str) else centre)
        width = float(width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (centre, width) if np.isfinite(centre) and np.isfinite(width) and width > 0 else None


def inversion_offset(ds: Dataset) -> float:
    """Lowest plus highest value the pixel format holds, after the modality LUT (see intensity.invert)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    bounds = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1], dtype=np.int64)
    mapped = np.asarray(apply_modality_lut(bounds, _transform_item(ds, 0)), dtype=float)
    return float(mapped.min() + mapped.max())


def rescale(ds: Dataset) -> list[float] | None:
    """[slope, intercept] of the (first frame's) rescale, or None when there is none."""
    item = _transform_item(ds, 0)
    if "RescaleSlope" in item and "RescaleIntercept" in item:
        return [float(item.RescaleSlope), float(item.RescaleIntercept)]
    return None


def frames(ds: Dataset, path: str | Path) -> np.ndarray:
    """Pixels as float32 (frames, rows, columns), modality LUT applied, MONOCHROME1 inverted."""
    check_image(ds, path)
    n_frames = check_size(ds, path)
    try:
        raw = ds.pixel_array
    except ValueError as err:
        if "less than expected" in str(err):
            sizes = re.search(r"\((\d+) vs (\d+) bytes\)", str(err))
            detail = f"{sizes[1]} of {sizes[2]} bytes" if sizes else str(err)
            raise ReadError(path, f"truncated pixel data ({detail})") from None
        raise ReadError(path, f"could not decode the pixel data ({err})") from err
    except Exception as err:
        raise ReadError(path, f"could not decode the pixel data ({type(err).__name__}: {err})") from err
    raw = raw.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    out = np.empty(raw.shape, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for k, frame in enumerate(raw):
            out[k] = apply_modality_lut(frame, _transform_item(ds, k))
        if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
            out = intensity.invert(out, np.float32(inversion_offset(ds)))
    _check_rescaled(ds, raw, out, path)
    return out


def _check_rescaled(ds: Dataset, raw: np.ndarray, out: np.ndarray, path: str | Path) -> None:
    """Refuse a rescale that turns finite stored values into inf/NaN; stored float NaN/inf are kept (they are data)."""
    bad = ~np.isfinite(out)
    if not bad.any():
        return
    if raw.dtype.kind == "f":
        bad &= np.isfinite(raw)
    if bad.any():
        raise ReadError(path, f"the rescale {rescale(ds)} (slope, intercept) turns {int(bad.sum()):,} stored values "
                        "into infinite or NaN pixels (damaged RescaleSlope/RescaleIntercept/BitsStored?)")


def describe(ds: Dataset) -> dict:
    """The patient-free descriptive header fields kept in the metadata."""
    info = {}
    sop = ds.get("SOPClassUID")
    if sop is not None:
        info["sop_class"] = sop.name
    syntax = _transfer_syntax(ds)
    if syntax is not None:
        info["transfer_syntax"] = syntax.name
    for key, keyword in _DESCRIPTIVE.items():
        value = find(ds, keyword, "PixelMeasuresSequence") if keyword == "SliceThickness" else ds.get(keyword)
        if value in (None, ""):
            continue
        if isinstance(value, Sequence) and not isinstance(value, str):
            info[key] = [str(v) for v in value]
        elif isinstance(value, (int, float)):
            info[key] = float(value) if isinstance(value, float) else int(value)
        else:
            info[key] = str(value)
    return info


def stack_affine(
    path: str | Path,
    iop: np.ndarray | None,
    positions: list[np.ndarray] | None,
    spacing: Sequence[float],
    step: float,
    origin: np.ndarray | None = None,
) -> tuple[list[int] | None, np.ndarray]:
    """Order slices along their normal and build the (z, y, x) -> RAS affine.

    Returns the slice order (None: keep the given order) and the affine. With a position for
    every slice, slices are sorted along the normal (row direction x column direction) and must be
    distinct and evenly spaced; the z column is (last - first) / (n - 1), which also covers gantry
    tilt. Without positions the z column is the normal times `step` and the origin is `origin`.
    Missing orientation means rows along patient P and columns along patient L, as in ITK.
    """
    iop = iop if iop is not None else np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    normal = np.cross(iop[0], iop[1])
    lps = np.eye(4)
    lps[:3, 2] = iop[0] * spacing[1]
    lps[:3, 1] = iop[1] * spacing[0]
    lps[:3, 0] = normal * step
    if not positions:
        if origin is not None:
            lps[:3, 3] = origin
        return None, LPS_TO_RAS @ lps
    along = np.array([float(p @ normal) for p in positions])
    order = [int(i) for i in np.argsort(along, kind="stable")]
    if len(order) > 1:
        gaps = np.diff(along[order])
        if np.any(gaps < 1e-3 * max(step, 1.0)):
            raise ReadError(path, "several slices share the same position (more than one echo, phase or time point?)")
        if np.ptp(gaps) > _GAP_TOLERANCE * np.median(gaps) + 1e-3:
            raise ReadError(
                path, f"slices are unevenly spaced (gaps from {gaps.min():.3g} to {gaps.max():.3g} mm; missing slices?)"
            )
        lps[:3, 0] = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
    lps[:3, 3] = positions[order[0]]
    return order, LPS_TO_RAS @ lps


def build_image(
    ds: Dataset,
    data: np.ndarray,
    affine: np.ndarray,
    spacing_source: str,
    path: str | Path,
    name: str,
    fmt: str,
    files: Sequence[str | Path] = (),
) -> MedicalImage:
    """Assemble the MedicalImage and its metadata from the reference dataset `ds`.

    `files` are the source files in z order (one per slice, or the one multi-frame file): the
    DICOM writer finds slice k's source dataset there (``metadata["dicom"]["files"]``).
    """
    if data.shape[0] == 1:
        data = data[0]
    spacing = spacing_from_affine(affine, data.ndim)
    photometric = str(ds.PhotometricInterpretation).strip()
    inverted = photometric == "MONOCHROME1"
    offset = inversion_offset(ds) if inverted else None
    win = window(ds)
    win = intensity.invert_window(win, offset) if inverted else win
    modality = str(ds.get("Modality", "")).strip() or None
    metadata = {
        "source": str(path),
        "format": fmt,
        "axes": "zyx"[-data.ndim :],
        "shape": list(data.shape),
        "spacing": list(spacing),
        "spacing_known": spacing_source != "none",
        "spacing_source": spacing_source,
        "affine": affine.tolist(),
        "modality": modality,
        "window": list(win) if win else None,
        "photometric_interpretation": photometric,
        "inverted": inverted,
        "inversion_offset": offset,
        "rescale": rescale(ds),
        "dicom": {**describe(ds), "files": [str(f) for f in files]},
    }
    return MedicalImage(
        data=np.ascontiguousarray(data, dtype=np.float32),
        spacing=spacing,
        affine=affine,
        modality=modality,
        window=win,
        metadata=metadata,
        source=str(path),
        name=name,
    )


def frame_positions(ds: Dataset, n_frames: int) -> list[np.ndarray] | None:
    """Per-frame ImagePositionPatient, or None unless every frame has its own."""
    if n_frames == 1:
        single = position(ds)
        return [single] if single is not None else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        return None
    found = [_ipp(_item(item, "PlanePositionSequence")) for item in per_frame]
    return found if all(p is not None for p in found) else None


def read_dicom_file(path: str | Path) -> MedicalImage:
    """Read one DICOM file: a single image (y, x) or a multi-frame stack (z, y, x)."""
    path = Path(path)
    ds = read_dataset(path)
    with header_guard(path):
        pixels = frames(ds, path)
        spacing, source = pixel_spacing(ds)
        positions = frame_positions(ds, len(pixels))
        order, affine = stack_affine(path, orientation(ds), positions, spacing or (1.0, 1.0), slice_step(ds),
                                     position(ds))
        if order is not None:
            pixels = pixels[order]
        name = path.stem if path.suffix.lower() in DICOM_SUFFIXES else path.name
        return build_image(ds, pixels, affine, source, path, name, "dicom", files=[path])
