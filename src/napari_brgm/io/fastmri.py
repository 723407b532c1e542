"""fastMRI single-coil raw data (`.h5`): the k-space, and a real-valued image stack built from it.

Layout (../shared/docs/mri-kspace.md §2, fastMRI's data README): an HDF5 file with the dataset
``kspace`` (slices, H, W) complex — H = 640 readout samples (2× oversampled), W ≈ 368 phase-encode
lines, "emulated single-coil" (ESC) data combined from a multi-coil scan — the target
``reconstruction_esc`` (slices, 320, 320) = |ifft2c(kspace)| centre-cropped to 320×320, and the
attributes ``max`` (volume maximum of the target), ``norm``, ``acquisition`` (CORPD_FBK /
CORPDFS_FBK) and ``ismrmrd_header`` (XML).

The FFT is fastMRI's centred orthonormal one (`napari_brgm.operators.fourier.ifft2c_np`,
re-implemented here in numpy so that `napari_brgm.io` stays free of torch). h5py is an optional
dependency: ``pip install 'napari-brgm[kspace]'``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from napari_brgm.io.errors import ReadError
from napari_brgm.io.geometry import default_affine
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.sniff import FASTMRI_SUFFIXES, is_hdf5_file

FASTMRI_CROP = (320, 320)  # fastMRI's target and evaluation size
ACS_FRACTION = 0.08  # fastMRI's centre fraction at R = 4: the fully sampled lines any mask keeps
PHASES = ("acs", "magnitude")
_INSTALL = "reading fastMRI .h5 files needs h5py: pip install 'napari-brgm[kspace]' (or pip install h5py)"


def _h5py(path):
    try:
        import h5py
    except ImportError as err:
        raise ReadError(path, _INSTALL) from err
    return h5py


def _ifft2c(k: np.ndarray) -> np.ndarray:
    """fastMRI's centred orthonormal inverse FFT over the last two axes (= operators.fourier.ifft2c_np)."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def center_crop(data: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """The central crop[0] × crop[1] of the last two axes (fastMRI's `center_crop`: offset (n − c)//2).

    A crop larger than the data along an axis keeps that axis whole.
    """
    h, w = data.shape[-2:]
    ch, cw = min(int(crop[0]), h), min(int(crop[1]), w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return data[..., top : top + ch, left : left + cw]


def _lowpass_window(n: int, fraction: float) -> np.ndarray:
    """A Hann taper over the central round(fraction·n) (at least 3) k-space lines of an axis, 0 elsewhere."""
    width = min(n, max(3, round(n * fraction)))
    pad = (n - width + 1) // 2  # the centre columns of fastMRI's masks: [pad, pad + width)
    window = np.zeros(n)
    window[pad : pad + width] = np.hanning(width + 2)[1:-1]
    return window


def acs_phase(kspace: np.ndarray, acs_fraction: float = ACS_FRACTION) -> np.ndarray:
    """φ̂ = angle(ifft2c(w ⊙ kspace)): a smooth phase estimate from the centre of k-space.

    `w` is a separable Hann taper over the central round(acs_fraction·n) lines of both axes (the
    phase-encode lines every fastMRI mask samples, and as many readout samples in proportion), so
    φ̂ has about 1/acs_fraction pixels of resolution. Works on (…, H, W); returns float64 radians.
    """
    kspace = np.asarray(kspace)
    if not 0 < acs_fraction <= 1:
        raise ValueError(f"acs_fraction must be in (0, 1], got {acs_fraction}")
    h, w = kspace.shape[-2:]
    window = np.outer(_lowpass_window(h, acs_fraction), _lowpass_window(w, acs_fraction))
    return np.angle(_ifft2c(kspace * window))


def kspace_to_image(kspace, crop=FASTMRI_CROP, phase: str = "acs", acs_fraction: float = ACS_FRACTION) -> np.ndarray:
    """A real float32 image (…, crop) from single-coil k-space (…, H, W).

    z = centre-crop(ifft2c(kspace)); then
      - ``phase="acs"``: x = Re(e^{−iφ̂}·z) with φ̂ = `acs_phase` (cropped the same way);
      - ``phase="magnitude"``: x = |z| (= fastMRI's ``reconstruction_esc`` for its own files).

    Phase assumption of "acs": the object's phase is smooth (coil, B0 and receiver phase vary slowly
    over the field of view), so the low-resolution image from the central lines carries it and
    e^{−iφ̂}·z is real up to noise and fine-scale phase; Re(·) keeps the noise Gaussian (|z| makes it
    Rician) and the values may be slightly negative in the background and at sharp phase changes.
    Such a real image x is a ground truth for k-space experiments with real-valued priors
    (simulate y = M ⊙ F_c x on the cropped grid); the measured k-space itself still has phase and a
    2× oversampled readout (mri-kspace.md §2).
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    kspace = np.asarray(kspace)
    z = center_crop(_ifft2c(kspace), crop)
    if phase == "magnitude":
        return np.abs(z).astype(np.float32)
    phi = center_crop(acs_phase(kspace, acs_fraction), crop)
    return np.real(z * np.exp(-1j * phi)).astype(np.float32)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def _number(value) -> float | None:
    try:
        number = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return number if np.isfinite(number) else None


def _header_spacing(header: str | None) -> tuple[float, float, float] | None:
    """(slice thickness, readout, phase-encode) pixel size in mm from the ISMRMRD encodedSpace, or None.

    In-plane: fieldOfView_mm / matrixSize of the encoded space (the grid ifft2c returns, before any
    crop); slice axis: its fieldOfView_mm z, the slice thickness (a slice gap is not recorded there).
    """
    if not header:
        return None
    try:
        root = ET.fromstring(header)
    except ET.ParseError:
        return None

    def find(node, name):
        for child in node.iter():
            if child.tag.rsplit("}", 1)[-1] == name:
                return child
        return None

    space = find(root, "encodedSpace")
    if space is None:
        return None
    matrix, fov = find(space, "matrixSize"), find(space, "fieldOfView_mm")
    if matrix is None or fov is None:
        return None
    try:
        values = {f"{what}{axis}": float(find(node, axis).text)
                  for what, node in (("m", matrix), ("f", fov)) for axis in "xyz"}
    except (AttributeError, TypeError, ValueError):
        return None
    if not all(np.isfinite(v) and v > 0 for v in values.values()):
        return None
    return values["fz"], values["fx"] / values["mx"], values["fy"] / values["my"]


def _open(path: Path):
    h5py = _h5py(path)
    try:
        return h5py.File(path, "r")
    except Exception as err:  # OSError for damaged or truncated files; h5py raises a few other types
        raise ReadError(path, f"not a readable HDF5 file; it may be truncated ({err})") from err


def _kspace_dataset(path: Path, f):
    h5py = _h5py(path)
    if "kspace" not in f:
        names = ", ".join(sorted(f.keys())[:8]) or "none"
        raise ReadError(path, f"an HDF5 file without a 'kspace' dataset is not fastMRI raw data (top-level names: {names})")
    ds = f["kspace"]
    if not isinstance(ds, h5py.Dataset):
        raise ReadError(path, "'kspace' is an HDF5 group, not a dataset")
    if ds.dtype.kind != "c":
        raise ReadError(path, f"the 'kspace' dataset is not complex (dtype {ds.dtype}); fastMRI stores complex k-space")
    if ds.ndim == 4:
        raise ReadError(path, f"multi-coil k-space {ds.shape} (slices, coils, H, W) is not supported; "
                              "napari-brgm reads single-coil files (slices, H, W)")
    if ds.ndim != 3:
        raise ReadError(path, f"the 'kspace' dataset has shape {ds.shape}; single-coil fastMRI files hold (slices, H, W)")
    if min(ds.shape) < 1:
        raise ReadError(path, f"the 'kspace' dataset is empty (shape {ds.shape})")
    return ds


def _read(path: Path, ds, index=()) -> np.ndarray:
    try:
        data = np.asarray(ds[index])
    except Exception as err:
        reason = f"could not read the 'kspace' data; the file may be truncated ({type(err).__name__}: {err})"
        raise ReadError(path, reason) from err
    if not np.isfinite(data).all():
        raise ReadError(path, "the 'kspace' data hold NaN or infinite values")
    return data.astype(np.complex64, copy=False)


def read_fastmri_kspace(path: str | Path, index: int) -> np.ndarray:
    """The raw k-space of slice `index` of a fastMRI single-coil file: complex64 (H, W), DC at (H//2, W//2)."""
    path = Path(path)
    with _open(path) as f:
        ds = _kspace_dataset(path, f)
        depth = ds.shape[0]
        if int(index) != index or not -depth <= index < depth:
            raise IndexError(f"{path}: slice {index} is outside 0..{depth - 1}")
        return _read(path, ds, int(index) % depth)


def read_fastmri(path: str | Path, crop=FASTMRI_CROP, phase: str = "acs",
                 acs_fraction: float = ACS_FRACTION) -> MedicalImage:
    """Read a fastMRI single-coil `.h5` file as a real-valued (slices, y, x) float32 stack.

    Per slice, `kspace_to_image`: z = centre-crop(ifft2c(kspace)) to `crop` (default 320×320, the
    fastMRI target size; y = readout, x = phase-encode), then ``phase="acs"`` (default):
    Re(e^{−iφ̂}·z) with φ̂ the phase of the low-resolution image from the central `acs_fraction` of
    k-space — this assumes the image phase is smooth, see `kspace_to_image` — or
    ``phase="magnitude"``: |z|, which equals the file's ``reconstruction_esc``. Intensities are
    those of the file (no rescaling; ``metadata["fastmri"]["max"]`` is the target's volume maximum).

    Spacing comes from the ISMRMRD header's encoded space (field of view / matrix; slice axis: slice
    thickness), else 1 mm per pixel with ``spacing_known`` False. There is no patient geometry: the
    affine is the default one of images without it (as for PNG). Malformed files raise ReadError.
    """
    path = Path(path)
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    crop = tuple(int(c) for c in crop)
    if len(crop) != 2 or min(crop) < 1:
        raise ValueError(f"crop must be two positive sizes, got {crop}")
    with _open(path) as f:
        ds = _kspace_dataset(path, f)
        kspace = _read(path, ds)
        attrs = dict(f.attrs)
        targets = sorted(name for name in f.keys() if name.startswith("reconstruction"))
    data = np.ascontiguousarray(kspace_to_image(kspace, crop, phase, acs_fraction))
    header = _text(attrs["ismrmrd_header"]) if "ismrmrd_header" in attrs else None
    header_spacing = _header_spacing(header)
    spacing = header_spacing or (1.0, 1.0, 1.0)
    affine = default_affine(spacing)
    metadata = {
        "source": str(path),
        "format": "fastmri",
        "axes": "zyx",
        "shape": list(data.shape),
        "spacing": list(spacing),
        "spacing_known": header_spacing is not None,
        "spacing_source": ("ISMRMRD header encodedSpace (fieldOfView_mm / matrixSize; z: slice thickness)"
                           if header_spacing else "none"),
        "affine": affine.tolist(),
        "modality": "MR",
        "window": None,
        "photometric_interpretation": None,
        "inverted": False,
        "inversion_offset": None,
        "rescale": None,
        "fastmri": {
            "acquisition": _text(attrs["acquisition"]) if "acquisition" in attrs else None,
            "max": _number(attrs["max"]) if "max" in attrs else None,
            "norm": _number(attrs["norm"]) if "norm" in attrs else None,
            "kspace_shape": list(kspace.shape),
            "crop": list(data.shape[1:]),
            "phase": phase,
            "phase_corrected": phase == "acs",
            "acs_fraction": acs_fraction if phase == "acs" else None,
            "real_valued": True,
            "targets": targets,
            "ismrmrd_header": header is not None,
        },
    }
    stem = path.name[: -len(path.suffix)] if path.suffix.lower() in FASTMRI_SUFFIXES else path.name
    return MedicalImage(data, spacing, affine, "MR", None, metadata, str(path), stem)


def claims_fastmri(path: str | Path) -> bool:
    """For napari: an HDF5 file with a top-level 'kspace', or any HDF5 file when that cannot be checked.

    HDF5 files that open and hold no 'kspace' are left to other readers. Without h5py, or when the
    file cannot be opened (damaged), the file is claimed so that the user sees why it cannot be read.
    """
    if not is_hdf5_file(path):
        return False
    try:
        import h5py
    except ImportError:
        return True
    try:
        with h5py.File(path, "r") as f:
            return "kspace" in f
    except Exception:
        return True
