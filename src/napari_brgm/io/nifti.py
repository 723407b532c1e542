"""NIfTI volumes with nibabel: reading into napari order and writing results in the source geometry."""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_brgm.io.errors import ReadError
from napari_brgm.io.geometry import nifti_to_zyx, spacing_from_affine, zyx_to_nifti
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.limits import check_bytes, declared_voxels
from napari_brgm.io.sniff import NIFTI_SUFFIXES

_SCANNER = 1  # NIfTI xform code "scanner anatomical": used when the source had no code
_CHUNK = 1 << 20  # gzip is decompressed in pieces this size, up to the bytes the header declares


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _window(header) -> tuple[float, float] | None:
    """The display range stored in cal_min/cal_max, as (centre, width)."""
    low, high = float(header["cal_min"]), float(header["cal_max"])
    if np.isfinite(low) and np.isfinite(high) and high > low:
        return ((low + high) / 2, high - low)
    return None


def read_nifti(path: str | Path) -> MedicalImage:
    """Read a 2-D or 3-D NIfTI-1/-2 image (trailing axes of length 1 are dropped).

    The voxel order of the file is kept, only the axes are reversed: data[z, y, x] = file[x, y, z],
    so z stays the file's slice axis. Scaling (scl_slope/scl_inter) is applied. The declared size is
    checked against `io.limits` and the bytes present before the voxels are read; a scaling that
    turns stored values into inf/NaN is refused, while NaN/inf stored in a float file are kept.
    """
    path = Path(path)
    with _quiet_nibabel():  # nibabel logs header fixes ("sizeof_hdr should be 348", "setting 0 dims to 1")
        img, shape = _open(path)
        try:
            volume = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
        except Exception as err:
            reason = f"could not read the voxel data; the file may be truncated ({type(err).__name__}: {err})"
            raise ReadError(path, reason) from err
    _check_scaled(img, volume, path)
    data = np.ascontiguousarray(volume.T)
    if not np.all(np.isfinite(img.affine)):
        raise ReadError(path, "the header's voxel-to-world affine (sform/qform/pixdim) is not finite (damaged header?)")
    affine = nifti_to_zyx(img.affine)
    spacing = spacing_from_affine(affine, data.ndim)
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise ReadError(path, f"the header's affine gives the voxel size {tuple(spacing)} mm (damaged header?)")
    header = img.header
    window = _window(header)
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    description = header["descrip"].item().decode("latin-1").strip("\x00 ")
    metadata = {
        "source": str(path),
        "format": "nifti",
        "axes": "zyx"[-data.ndim :],
        "shape": list(data.shape),
        "spacing": list(spacing),
        "spacing_known": True,
        "spacing_source": "NIfTI affine",
        "affine": affine.tolist(),
        "modality": None,
        "window": list(window) if window else None,
        "photometric_interpretation": None,
        "inverted": False,
        "inversion_offset": None,
        "rescale": None,
        "nifti": {
            "sform_code": sform_code,
            "qform_code": qform_code,
            "xyz_units": _xyz_units(header),
            "description": description,
        },
    }
    return MedicalImage(data, spacing, affine, None, window, metadata, str(path), _stem(path))


@contextmanager
def _quiet_nibabel():
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _xyz_units(header) -> str:
    try:
        return header.get_xyzt_units()[0]
    except KeyError:  # a unit code nibabel does not know (damaged xyzt_units)
        return "unknown"


def _open(path: Path):
    """(image, shape without trailing 1s) with the header checked; a gzipped file is read into memory first,
    at most the header's declared bytes, so that nothing is allocated for data the file does not hold."""
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types for damaged headers
        raise ReadError(path, f"not a valid NIfTI file ({err})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ReadError(path, f"not a NIfTI image ({type(img).__name__})")
    shape = tuple(img.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        reason = f"{len(shape)}-D NIfTI images (shape {tuple(img.shape)}) are not supported; only 2-D and 3-D images"
        raise ReadError(path, reason)
    if len(shape) < 2 or min(shape) < 1:
        raise ReadError(path, f"the NIfTI image has no usable pixels (shape {tuple(img.shape)})")
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":
        raise ReadError(path, f"unsupported NIfTI data type {dtype} (only real grayscale values)")
    voxels = declared_voxels(path, img.shape, "NIfTI image")
    offset = float(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    if not np.isfinite(offset) or offset < 0:
        raise ReadError(path, f"the header's vox_offset {offset} is invalid")
    end = int(offset) + voxels * dtype.itemsize
    if _is_gzip(path):
        raw = _gunzip(path, end)
        check_bytes(path, end, len(raw), "NIfTI data (after decompression)")
        try:
            img = type(img).from_bytes(raw)
        except Exception as err:
            raise ReadError(path, f"not a valid NIfTI file ({err})") from err
    else:
        check_bytes(path, end, path.stat().st_size, "NIfTI data")
    return img, shape


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _gunzip(path: Path, limit: int) -> bytes:
    """The first `limit` decompressed bytes of a gzip file (fewer if it holds fewer), read in chunks."""
    parts, size = [], 0
    try:
        with gzip.open(path, "rb") as f:
            while size < limit:
                part = f.read(min(_CHUNK, limit - size))
                if not part:
                    break
                parts.append(part)
                size += len(part)
    except (OSError, EOFError, zlib.error) as err:
        if size < limit:
            raise ReadError(path, f"damaged or truncated gzip data after {size:,} bytes ({err})") from None
    return b"".join(parts)


def _check_scaled(img, volume: np.ndarray, path: Path) -> None:
    """Refuse inf/NaN that come from the scaling or the float32 conversion; those stored in the file are data."""
    bad = ~np.isfinite(volume)
    if not bad.any():
        return
    stored = img.get_data_dtype().kind == "f"
    if stored:
        raw = np.asanyarray(img.dataobj.get_unscaled()).reshape(volume.shape)
        bad &= np.isfinite(raw)
    if bad.any():
        slope, inter = img.dataobj.slope, img.dataobj.inter
        if (slope, inter) == (1.0, 0.0):
            reason = f"{int(bad.sum()):,} stored values are beyond the float32 range"
        else:
            reason = (f"the scaling scl_slope={slope:g}, scl_inter={inter:g} turns {int(bad.sum()):,} stored values "
                      "into infinite or NaN voxels (damaged header?)")
        raise ReadError(path, reason)


def _geometry(geometry) -> tuple[np.ndarray, Mapping]:
    """(affine, metadata) from a MedicalImage, a layer-metadata mapping or a bare 4x4 affine."""
    if isinstance(geometry, MedicalImage):
        return np.asarray(geometry.affine, dtype=float), geometry.metadata
    if isinstance(geometry, Mapping):
        if "affine" not in geometry:
            raise ValueError("the metadata has no 'affine'; pass a 4x4 affine or the metadata of a napari-brgm layer")
        return np.asarray(geometry["affine"], dtype=float), geometry
    return np.asarray(geometry, dtype=float), {}


def save_nifti(path: str | Path, data, geometry) -> Path:
    """Write `data` ((z, y, x) or (y, x), napari order) as a float32 NIfTI in the given geometry.

    A 4-D `data` (n, z, y, x) is a stack of n volumes in that geometry (e.g. posterior samples); it
    is written as a 4-D NIfTI whose 4th axis is n.

    `geometry` is a MedicalImage, its `metadata` (a napari-brgm layer's metadata) or a 4x4
    (z, y, x) -> RAS affine. A metadata mapping must describe `data` itself: for results on a finer
    grid pass `MedicalImage.resampled(...)` or `resampled_affine(...)`, otherwise the shape check
    refuses the write. The sform/qform codes and description of a NIfTI source are kept; the
    window goes to cal_min/cal_max. Returns the written path.
    """
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: a NIfTI file name must end with .nii or .nii.gz")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim not in (2, 3, 4):
        raise ValueError(f"can only write 2-D, 3-D or stacked (n, z, y, x) images, got shape {data.shape}")
    spatial = data.shape[1:] if data.ndim == 4 else data.shape
    affine, metadata = _geometry(geometry)
    if affine.shape != (4, 4):
        raise ValueError(f"the affine must be 4x4, got {affine.shape}")
    shape = metadata.get("shape")
    if shape is not None and tuple(shape) != spatial:
        raise ValueError(
            f"data of shape {spatial} do not match the source shape {tuple(shape)}; "
            "use MedicalImage.resampled or resampled_affine for resampled results"
        )
    volume = data.T if data.ndim in (3, 4) else data.T[:, :, None]
    nifti_affine = zyx_to_nifti(affine)
    img = nib.Nifti1Image(volume, nifti_affine)
    info = metadata.get("nifti") or {}
    sform_code, qform_code = int(info.get("sform_code", _SCANNER)), int(info.get("qform_code", _SCANNER))
    if sform_code == 0 and qform_code == 0:
        sform_code = qform_code = _SCANNER
    img.set_sform(nifti_affine, code=sform_code)
    img.set_qform(nifti_affine, code=qform_code)
    img.header.set_xyzt_units(xyz="mm")
    window = metadata.get("window")
    if window:
        img.header["cal_min"], img.header["cal_max"] = window[0] - window[1] / 2, window[0] + window[1] / 2
    description = info.get("description") or f"napari-brgm {metadata.get('modality') or ''}".strip()
    img.header["descrip"] = description.encode("latin-1", "replace")[:79]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path
