"""Reconstruction results as DICOM derived series (research use), with pydicom and highdicom.

Each output kind (posterior mean, data-consistent image, standard deviation, interval ends)
becomes its own series in `out_dir/<kind>/`. From a DICOM source whose slices are the output
planes, every image is a copy of its source slice's dataset (same SOP class, patient, study and
frame of reference) with new series/instance identity, derivation, references and pixels, and
the geometry moved to the finer grid of a super-resolution. Planes reformatted along another axis
keep the source's patient, study and frame of reference but take their geometry from the affine.
NIfTI sources give a fresh research study of classic MR images, PNG sources Secondary Capture
images (no geometry to keep). For MR/CT the standard deviation is also written as a float
Parametric Map (`out_dir/std_pm/`). Rules and validation: docs/io.md, "DICOM output".
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from napari_brgm.io import dicom as dicom_in
from napari_brgm.io.geometry import LPS_TO_RAS, PLANE_AXES, plane_affine
from napari_brgm.io.image import MedicalImage

KINDS = ("mean", "consistent", "std", "lower", "upper")
PM_KIND = "std_pm"  # the folder (and returned key) of the std as a Parametric Map
UNCERTAINTY_MODES = ("auto", "image", "pm", "both", "none")
SERIES_NUMBER_OFFSETS = {"mean": 1000, "consistent": 1500, "std": 2000, PM_KIND: 2100, "lower": 3000, "upper": 4000}
CAUTION = "CAUTION: Not for Diagnostic Use, for research use only."
MANUFACTURER = "napari-brgm"
TASK_LABELS = {"superres": "SR", "inpaint": "inpaint", "denoise": "denoise"}

_PM_MODALITIES = ("MR", "CT")
_PM_UNITS = {"MR": codes.UCUM.ArbitraryUnit, "CT": codes.UCUM.HounsfieldUnit}
_IMAGE_KINDS = ("mean", "consistent", "lower", "upper")  # values in the source's units
_MAX_INT_32 = 2**31 - 1
# Source attributes that would be stale or wrong in a derived image (spec table B2, "removed"),
# plus those this module rewrites.
_STALE = (
    "LargestImagePixelValue", "SmallestImagePixelValue", "LargestPixelValueInSeries", "SmallestPixelValueInSeries",
    "PixelPaddingValue", "PixelPaddingRangeLimit", "IconImageSequence", "ModalityLUTSequence", "VOILUTSequence",
    "WindowCenterWidthExplanation", "DataSetTrailingPadding", "InstanceCreatorUID", "SourceImageSequence",
    "DerivationCodeSequence", "ReferencedSeriesSequence", "DeviceSerialNumber", "StationName", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "PixelData", "ImageComments",
)
# Per-slice geometry of the source that a reformatted plane does not share.
_SLICE_GEOMETRY = (
    "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "PatientOrientation", "PixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "DataCollectionCenterPatient", "ReconstructionTargetCenterPatient",
    "ImagesInAcquisition", "PixelAspectRatio",
)
_LOSSLESS_SYNTAXES = (
    pydicom.uid.JPEGLossless, pydicom.uid.JPEGLosslessSV1, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless,
    pydicom.uid.JPEG2000MCLossless, pydicom.uid.HTJ2KLossless, pydicom.uid.HTJ2KLosslessRPCL, pydicom.uid.RLELossless,
)
_ENHANCED_HINT = "enhanced multi-frame DICOM sources are not supported yet; convert them to single-frame slices"


@dataclass
class _Plane:
    """One output image: its source plane index, grid and geometry, and the source datasets it derives from."""

    index: int
    rows: int
    cols: int
    template: Dataset | None = None
    spacing: list[float] | None = None  # PixelSpacing (between rows, between columns), mm
    imager_spacing: list[float] | None = None
    iop: list[float] | None = None
    ipp: list[float] | None = None
    thickness: float | None = None
    spacing_between: float | None = None
    references: list[Dataset] = field(default_factory=list)
    reformatted: bool = False  # geometry from the affine, not from the template's own slice


@dataclass
class _Encoding:
    """How floats become stored integers: value = stored * slope + intercept."""

    slope: float
    intercept: float
    signed: bool
    bits_stored: int = 16
    rescale: bool = False  # write RescaleSlope/Intercept (else the stored values are the values)
    rescale_type: str | None = None

    @property
    def limits(self) -> tuple[int, int]:
        bits = self.bits_stored
        return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if self.signed else (0, 2**bits - 1)

    def encode(self, values: np.ndarray) -> np.ndarray:
        low, high = self.limits
        stored = np.clip(np.rint((values - self.intercept) / self.slope), low, high)
        return stored.astype("<i2" if self.signed else "<u2")


@dataclass
class _Run:
    """What every written object of one call shares."""

    run_id: str
    key: str  # the source's SeriesInstanceUID, or a content hash for non-DICOM sources
    axis: int
    factor: int
    description: dict
    version: str
    method: str
    task_label: str
    when: datetime.datetime
    modality: str | None
    series_base: int
    source_label: str

    @property
    def date(self) -> str:
        return self.when.strftime("%Y%m%d")

    @property
    def time(self) -> str:
        return self.when.strftime("%H%M%S.%f")

    def uid(self, *parts) -> str:
        """Deterministic UID from the run, the source, the axis and `parts`: a rerun gives the same UIDs.

        pydicom's prefix is needed: with ``prefix=None`` generate_uid ignores `entropy_srcs` (random UUID).
        """
        return generate_uid(entropy_srcs=[self.run_id, self.key, str(self.axis), *map(str, parts)])


def write_dicom(
    out_dir: str | Path,
    source: MedicalImage,
    outputs: Mapping[str, np.ndarray],
    *,
    factor: int = 1,
    axis: int = 0,
    slices: Sequence[int] | None = None,
    description: Mapping,
    run_id: str,
    uncertainty: str = "auto",
    overwrite: bool = False,
) -> dict[str, list[Path]]:
    """Write reconstruction outputs of `source` as DICOM series, one sub-folder per kind.

    `outputs` maps a kind ("mean", "consistent", "std", "lower", "upper") to float values in the
    source's units (MedicalImage units: rescale applied, MONOCHROME1 inverted), shaped
    (len(slices), rows * factor, cols * factor) for the planes `slices` (default: all) along
    `axis` of the source volume (0 = its slice axis), or 2-D for one plane; the rows and columns
    are the volume's other axes in order (``np.moveaxis(slab, axis, 0)`` of a slab kept in the
    volume's axis order). `description` records
    the run (method, prior, task, factor, steps, samples, interval, calibrated, version);
    `run_id` makes the UIDs deterministic. `uncertainty` says how the std is written: "image" (a
    classic image), "pm" (a float Parametric Map), "both", "none", or "auto" (both for MR/CT,
    image otherwise). Each series folder is written atomically; an existing one raises
    FileExistsError unless `overwrite`. Returns the written files by kind ("std_pm" for the map).
    """
    out_dir = Path(out_dir)
    if not isinstance(run_id, str) or not run_id:
        raise ValueError("run_id must be a non-empty string (it makes the DICOM UIDs reproducible)")
    if uncertainty not in UNCERTAINTY_MODES:
        raise ValueError(f"uncertainty must be one of {', '.join(UNCERTAINTY_MODES)}, got {uncertainty!r}")
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    fmt = source.metadata.get("format")
    if fmt not in ("dicom", "dicom-series", "nifti", "png"):
        raise ValueError(f"cannot write DICOM for a source of format {fmt!r} (DICOM, NIfTI or PNG sources only)")
    shape = source.data.shape if source.data.ndim == 3 else (1, *source.data.shape)
    slices = _check_slices(shape, axis, slices, source.data.ndim)
    stacks = _check_outputs(outputs, shape, axis, slices, int(factor))
    datasets = _source_datasets(source, shape) if fmt in ("dicom", "dicom-series") else None
    modality = str(datasets[0].get("Modality", "")).strip() if datasets else ("MR" if fmt == "nifti" else "OT")
    std_modes = _std_modes(uncertainty, modality, fmt, "std" in stacks)
    targets = [kind for kind in stacks if kind != "std" or "image" in std_modes] + (
        [PM_KIND] if "pm" in std_modes else [])
    if not overwrite:
        for kind in targets:
            if (out_dir / kind).exists():
                raise FileExistsError(f"{out_dir / kind} already exists; choose another folder or pass overwrite=True")
    run = _run_context(source, datasets, modality, dict(description), run_id, axis, int(factor))
    if fmt == "png":
        series = {kind: _sc_series(kind, stacks[kind], source, run) for kind in targets}
    else:
        planes = _planes(source, datasets, shape, axis, slices, int(factor), run)
        series = {kind: _classic_series(kind, stacks[kind], planes, source, run) for kind in targets if kind != PM_KIND}
        if PM_KIND in targets:
            series[PM_KIND] = _pm_series(stacks["std"], planes, datasets is None, run)
    return {kind: _write_series(out_dir / kind, series[kind], overwrite) for kind in targets}


def describe_run(record: Mapping) -> dict:
    """The `description` for `write_dicom` from a result layer's ``metadata["brgm"]`` (or a similar record).

    Takes task, method, prior, factor, seed and partial from the record, steps and samples from its
    ``settings``, and the interval level and calibrated flag from its ``interval``.
    """
    settings = record.get("settings") or {}
    interval = record.get("interval") or settings.get("interval")
    level = interval.get("level") if isinstance(interval, Mapping) else interval
    calibrated = interval.get("calibrated") if isinstance(interval, Mapping) else None
    found = {
        "task": record.get("task") or settings.get("task"), "method": record.get("method") or settings.get("method"),
        "prior": record.get("prior") or settings.get("prior"), "factor": record.get("factor") or settings.get("factor"),
        "steps": settings.get("steps"), "samples": settings.get("samples"), "interval": level,
        "calibrated": calibrated, "seed": record.get("seed", settings.get("seed")),
        "partial": True if record.get("partial") else None,
    }
    return {key: value for key, value in found.items() if value is not None}


def _check_slices(shape: tuple[int, int, int], axis: int, slices, ndim: int) -> list[int]:
    if axis not in PLANE_AXES:
        raise ValueError(f"axis must be 0 (z), 1 (y) or 2 (x), got {axis!r}")
    if ndim == 2 and axis != 0:
        raise ValueError(f"a 2-D source has only its own plane (axis 0), got axis {axis}")
    depth = shape[axis]
    slices = list(range(depth)) if slices is None else [int(s) for s in slices]
    if not slices:
        raise ValueError("slices is empty: nothing to write")
    bad = [s for s in slices if not 0 <= s < depth]
    if bad:
        raise ValueError(f"slices {bad} are outside 0..{depth - 1} along axis {axis}")
    if len(set(slices)) != len(slices):
        raise ValueError(f"slices {slices} repeat a plane")
    return slices


def _check_outputs(outputs, shape, axis, slices, factor) -> dict[str, np.ndarray]:
    """The outputs as float (n, rows', cols') stacks (not copied) in a fixed kind order, shapes checked."""
    unknown = [k for k in outputs if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown output kind(s) {unknown}; DICOM output knows {', '.join(KINDS)}")
    if not outputs:
        raise ValueError("outputs is empty: nothing to write")
    rows, cols = (shape[a] for a in PLANE_AXES[axis][1:])
    expected = (len(slices), rows * factor, cols * factor)
    stacks = {}
    for kind in KINDS:
        if kind not in outputs:
            continue
        array = np.asarray(outputs[kind])
        if array.dtype.kind != "f":
            array = array.astype(np.float64)
        if array.ndim == 2 and len(slices) == 1:
            array = array[None]
        if array.shape != expected:
            raise ValueError(
                f"output {kind!r} has shape {np.shape(outputs[kind])}, expected {expected}: {len(slices)} plane(s) "
                f"along axis {axis} of the source {tuple(shape)}, {factor}x finer in-plane"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"output {kind!r} holds NaN or infinite values")
        if kind == "std" and array.min() < 0:
            raise ValueError(f"output 'std' has negative values (min {array.min():.3g}); a standard deviation is >= 0")
        stacks[kind] = array
    return stacks


def _std_modes(uncertainty: str, modality: str, fmt: str, has_std: bool) -> set[str]:
    """{"image", "pm"} subset: how the std is written."""
    if not has_std or uncertainty == "none":
        return set()
    pm_ok = modality in _PM_MODALITIES and fmt != "png"
    modes = {"auto": {"image", "pm"} if pm_ok else {"image"}, "image": {"image"}, "pm": {"pm"},
             "both": {"image", "pm"}}[uncertainty]
    if "pm" in modes and not pm_ok:
        raise ValueError(
            f"a Parametric Map of the std needs an MR or CT source with patient geometry (this one is {modality}, "
            f"{fmt}); use uncertainty='image'"
        )
    return modes


def _source_datasets(source: MedicalImage, shape) -> list[Dataset]:
    """The source's single-frame datasets (headers only) in z order, from metadata['dicom']['files']."""
    files = (source.metadata.get("dicom") or {}).get("files")
    if not files and source.metadata.get("format") == "dicom" and source.source:
        files = [source.source]
    if not files:
        raise ValueError(
            f"{source.name or source.source}: the metadata records no DICOM source files (metadata['dicom']['files']); "
            "read the source with napari_brgm.io.load_image"
        )
    datasets = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as err:
            raise ValueError(f"cannot read the DICOM source file {path}: {err}") from err
        sop = getattr(ds.get("SOPClassUID"), "name", "") or ""
        if int(ds.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds or "Enhanced" in sop:
            raise ValueError(f"{path}: {_ENHANCED_HINT} ({sop or 'multi-frame'})")
        datasets.append(ds)
    if len(datasets) != shape[0]:
        raise ValueError(f"the source has {shape[0]} slices but its metadata lists {len(datasets)} DICOM files")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if sizes != {tuple(shape[1:])}:
        raise ValueError(f"the DICOM source files hold images of {sorted(sizes)}, not the source's {tuple(shape[1:])}")
    return datasets


def _run_context(source, datasets, modality, description, run_id, axis, factor) -> _Run:
    import napari_brgm

    version = str(description.get("version") or getattr(napari_brgm, "__version__", "unknown"))
    task = str(description.get("task") or ("superres" if factor > 1 else "reconstruction"))
    label = TASK_LABELS.get(task, task)
    if task == "superres":
        label += f"x{factor}"
    if datasets:
        key = str(datasets[0].SeriesInstanceUID)
        base = int(datasets[0].get("SeriesNumber") or 0)
        source_label = str(datasets[0].get("SeriesDescription", "") or "").strip()
    else:
        digest = hashlib.sha256(np.ascontiguousarray(source.data, dtype=np.float32).tobytes())
        digest.update(np.asarray(source.affine, dtype=float).tobytes())
        key, base, source_label = digest.hexdigest(), 0, ""
    return _Run(
        run_id=run_id, key=key, axis=axis, factor=factor, description=description, version=version,
        method=str(description.get("method") or "unknown"), task_label=label,
        when=datetime.datetime.now(), modality=modality or None,
        series_base=max(0, min(base, _MAX_INT_32 - 5000)), source_label=source_label,
    )


def _planes(source, datasets, shape, axis, slices, factor, run) -> list[_Plane]:
    """Grid and geometry of each output plane: from its source slice (axis 0) or from the affine."""
    rows, cols = (shape[a] * factor for a in PLANE_AXES[axis][1:])
    if datasets is not None and axis == 0:
        return [_copied_plane(datasets[s], s, factor) for s in slices]
    template = _fresh_template(source, run) if datasets is None else datasets[len(datasets) // 2]
    step = float(np.linalg.norm(np.asarray(source.affine)[:3, axis]))
    between = step * abs(slices[1] - slices[0]) if len(slices) > 1 and len(set(np.diff(slices))) == 1 else None
    planes = []
    for s in slices:
        lps = LPS_TO_RAS @ plane_affine(source.affine, axis, s, factor)
        cols_dir, rows_dir = lps[:3, 2], lps[:3, 1]
        planes.append(_Plane(
            index=s, rows=rows, cols=cols, template=template,
            spacing=[float(np.linalg.norm(rows_dir)), float(np.linalg.norm(cols_dir))],
            iop=[*(cols_dir / np.linalg.norm(cols_dir)), *(rows_dir / np.linalg.norm(rows_dir))],
            ipp=[float(v) for v in lps[:3, 3]], thickness=step, spacing_between=between,
            references=list(datasets or []), reformatted=True,
        ))
    return planes


def _copied_plane(ds: Dataset, index: int, factor: int) -> _Plane:
    """A source slice's own geometry on the `factor`x finer grid (spec B3: spacing / f, IPP to the new first centre)."""
    spacing = _positive_floats(ds.get("PixelSpacing"))
    raw_spacing = [float(v) for v in ds.PixelSpacing] if "PixelSpacing" in ds else None
    iop, ipp = dicom_in.orientation(ds), dicom_in.position(ds)
    new_ipp = None
    if ipp is not None and iop is not None and spacing:
        shift = (1 - 1 / factor) / 2
        new_ipp = ipp - shift * spacing[1] * iop[0] - shift * spacing[0] * iop[1]
    imager = [float(v) for v in ds.ImagerPixelSpacing] if "ImagerPixelSpacing" in ds else None
    thickness = _positive_floats([ds.get("SliceThickness")])
    return _Plane(
        index=index, rows=int(ds.Rows) * factor, cols=int(ds.Columns) * factor, template=ds,
        spacing=[v / factor for v in raw_spacing] if raw_spacing else None,
        imager_spacing=[v / factor if v > 0 else v for v in imager] if imager else None,
        iop=[float(v) for v in ds.ImageOrientationPatient] if iop is not None else None,
        ipp=[float(v) for v in new_ipp] if new_ipp is not None else None,
        thickness=thickness[0] if thickness else None, references=[ds],
    )


def _fresh_template(source: MedicalImage, run: _Run) -> Dataset:
    """Patient, study and frame of reference of a new research study for a NIfTI source (spec B5).

    The study UIDs and patient ID come from the source's content, so every run on the same image
    lands in the same study; the study date is the source file's modification time (or empty).
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MRImageStorage
    _set_fresh_study(ds, source, run)
    ds.Modality = "MR"
    ds.PatientPosition = "HFS"
    ds.Laterality = ""
    ds.BurnedInAnnotation = "NO"
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "RM", "NONE", "2D"
    ds.ScanOptions = ""
    ds.RepetitionTime = None
    ds.EchoTime = None
    ds.EchoTrainLength = None
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    return ds


def _set_fresh_study(ds: Dataset, source: MedicalImage, run: _Run) -> None:
    ds.PatientName = "Anonymous^"
    ds.PatientID = f"BRGM-{run.key[:12]}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["napari-brgm study", run.key])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=["napari-brgm frame of reference", run.key])
    ds.PositionReferenceIndicator = ""
    try:
        studied = datetime.datetime.fromtimestamp(os.path.getmtime(source.source))
        ds.StudyDate, ds.StudyTime = studied.strftime("%Y%m%d"), studied.strftime("%H%M%S")
    except (OSError, ValueError):
        ds.StudyDate, ds.StudyTime = "", ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.StudyDescription = "napari-brgm research output"


def _classic_series(kind, stack, planes, source, run) -> Iterator[tuple[str, Dataset]]:
    """(file name, dataset) of each image of one kind's classic series, made one at a time."""
    template = planes[0].template
    offset = _inversion_offset(kind, template, source)
    low, high = float(stack.min()), float(stack.max())
    if offset is not None:
        low, high = offset - high, offset - low
    sample = _sample(stack) if offset is None else offset - _sample(stack)
    encoding = _encoding(kind, low, high, planes, source)
    window = _window(kind, sample, template, source)
    photometric = "MONOCHROME2" if kind == "std" else str(template.get("PhotometricInterpretation", "MONOCHROME2"))
    series_uid = run.uid(kind)
    for i, plane in enumerate(planes):
        ds = _derived_dataset(plane, kind, run, series_uid, number=i + 1)
        values = np.asarray(stack[i], dtype=np.float64)
        _set_pixels(ds, encoding.encode(values if offset is None else offset - values), encoding, photometric,
                    window, kind)
        yield _file_name(i, len(planes)), ds


def _inversion_offset(kind, template, source) -> float | None:
    """For MONOCHROME1 images, the offset that puts values back into the source's sense (the reader inverted
    them: v = offset - stored); None otherwise. The std is never inverted."""
    if kind == "std" or str(template.get("PhotometricInterpretation", "")).strip() != "MONOCHROME1":
        return None
    offset = source.metadata.get("inversion_offset")
    return dicom_in.inversion_offset(template) if offset is None else float(offset)


def _sample(stack: np.ndarray) -> np.ndarray:
    """At most a million evenly strided values of `stack` (for percentiles of large volumes)."""
    flat = np.asarray(stack).ravel()
    return np.asarray(flat[:: max(1, flat.size // 1_000_000)], dtype=np.float64)


def _encoding(kind, low, high, planes, source) -> _Encoding:
    """One rescale per series (spec B2) for values in [low, high]: the source's for images, a real slope for the std."""
    template = planes[0].template
    modality = str(template.get("Modality", "")).strip()
    if kind == "std":
        slope = _ds_float(high * 1.0001 / 65534) if high > 0 else 1.0
        return _Encoding(slope, 0.0, signed=False, rescale=True, rescale_type=None if modality == "CT" else "US")
    signed = int(template.get("PixelRepresentation", 1 if low < 0 else 0)) == 1
    rescales = sorted({(float(p.template.RescaleSlope), float(p.template.RescaleIntercept))
                       for p in planes if "RescaleSlope" in p.template and "RescaleIntercept" in p.template})
    if str(template.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        # The reader's inversion offset depends on BitsStored and the rescale: keep both, clip to the range.
        slope, intercept = rescales[0] if rescales else (1.0, 0.0)
        bits = int(template.get("BitsStored", 16))
        return _Encoding(slope, intercept, signed, bits, rescale=bool(rescales),
                         rescale_type=str(template.get("RescaleType", "US")) if rescales else None)
    if rescales:
        slope, intercept = min(m for m, _ in rescales), min(b for _, b in rescales)
    else:
        slope, intercept = 1.0, 0.0
    integral = source.metadata.get("format") != "nifti" or np.array_equal(source.data, np.rint(source.data))
    candidate = _Encoding(slope, intercept, signed, rescale=bool(rescales) or modality == "CT")
    limits = candidate.limits
    if integral and limits[0] - 0.5 <= (low - intercept) / slope and (high - intercept) / slope <= limits[1] + 0.5:
        if candidate.rescale and modality != "CT":
            candidate.rescale_type = str(template.get("RescaleType", "US"))
        return candidate
    slope = _ds_float(max(high - low, 1e-6) * 1.0001 / (limits[1] - limits[0] - 2))
    intercept = _ds_float(low - (limits[0] + 1) * slope)
    return _Encoding(slope, intercept, signed, rescale=True, rescale_type=None if modality == "CT" else "US")


def _window(kind, sample, template, source) -> tuple[float, float] | None:
    """(centre, width) to write, or None to keep the source's window attributes."""
    if kind == "std":
        top = float(np.percentile(sample, 99))
        return (top / 2, top) if top > 0 else (0.5, 1.0)
    if "WindowCenter" in template and "WindowWidth" in template:
        return None
    if source.window is not None and template.get("PhotometricInterpretation") != "MONOCHROME1":
        return tuple(source.window)
    low, high = np.percentile(sample, (0.5, 99.5))
    return (float(low + high) / 2, max(float(high - low), 1.0))


def _derived_dataset(plane: _Plane, kind: str, run: _Run, series_uid: str, number: int) -> Dataset:
    """The plane's template turned into a derived image of `kind`: identity, derivation, references, equipment."""
    ds = copy.deepcopy(plane.template)
    source_equipment = _equipment_item(ds)
    ds.remove_private_tags()
    for keyword in _STALE:
        if keyword in ds:
            delattr(ds, keyword)
    for tag in [elem.tag for elem in ds if 0x5000 <= elem.tag.group <= 0x60FF and elem.tag.group % 2 == 0]:
        del ds[tag]  # overlays (60xx) and curves (50xx)
    if plane.reformatted:
        for keyword in _SLICE_GEOMETRY:
            if keyword in ds:
                delattr(ds, keyword)
        ds.InstanceNumber = number
    elif "InstanceNumber" not in ds:
        ds.InstanceNumber = number
    _set_geometry(ds, plane)
    lossy = _source_was_lossy(plane.template)
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = run.uid(kind, plane.index)
    ds.SeriesNumber = run.series_base + SERIES_NUMBER_OFFSETS[kind]
    ds.SeriesDescription = series_description(run.source_label, run.task_label, run.method, kind, run.description)
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = run.date
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = run.time
    values = list(plane.template.get("ImageType") or [])
    if plane.reformatted and plane.references:
        flavour = "REFORMATTED"  # not the source's (CT: AXIAL) any more
    else:
        flavour = values[2] if len(values) > 2 and values[2] else "OTHER"
    ds.ImageType = ["DERIVED", "SECONDARY", flavour]
    old = str(plane.template.get("DerivationDescription", "") or "").strip()
    text = derivation_text(run.description, kind, run.factor, run.version)
    ds.DerivationDescription = _clip(f"{text}. Source derivation: {old}" if old else text, 1024)
    code = _derivation_code(run)
    if code is not None:
        ds.DerivationCodeSequence = [hd.sr.CodedConcept.from_code(code)]
    if plane.references:
        ds.SourceImageSequence = [_reference(ref, purpose=True) for ref in plane.references]
        series = Dataset()
        series.SeriesInstanceUID = plane.references[0].SeriesInstanceUID
        series.ReferencedInstanceSequence = [_reference(ref, purpose=False) for ref in plane.references]
        ds.ReferencedSeriesSequence = [series]
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = _clip(run.method, 64)
    ds.SoftwareVersions = _clip(run.version, 64)
    items = list(plane.template.get("ContributingEquipmentSequence") or [])
    ds.ContributingEquipmentSequence = items + ([source_equipment] if source_equipment else []) + [_our_equipment(run)]
    ds.ImageComments = _image_comment(kind)
    if lossy:
        ds.LossyImageCompression = "01"
    ds.file_meta = _file_meta(ds, run)
    return ds


def _set_geometry(ds: Dataset, plane: _Plane) -> None:
    ds.Rows, ds.Columns = plane.rows, plane.cols
    if plane.spacing is not None:
        ds.PixelSpacing = [_ds(v) for v in plane.spacing]
    if plane.imager_spacing is not None:
        ds.ImagerPixelSpacing = [_ds(v) for v in plane.imager_spacing]
    if plane.iop is not None:
        ds.ImageOrientationPatient = [_ds(v) for v in plane.iop]
    if plane.ipp is not None:
        ds.ImagePositionPatient = [_ds(v) for v in plane.ipp]
    if plane.thickness is not None and "SliceThickness" not in ds:
        ds.SliceThickness = _ds(plane.thickness)
    if plane.spacing_between is not None:
        ds.SpacingBetweenSlices = _ds(plane.spacing_between)


def _set_pixels(ds, stored, encoding: _Encoding, photometric, window, kind) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, encoding.bits_stored, encoding.bits_stored - 1
    ds.PixelRepresentation = 1 if encoding.signed else 0
    if encoding.rescale:
        ds.RescaleIntercept, ds.RescaleSlope = _ds(encoding.intercept), _ds(encoding.slope)
        if encoding.rescale_type:
            ds.RescaleType = encoding.rescale_type
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = _ds(window[0]), _ds(window[1])
        if "VOILUTFunction" in ds or window[1] < 1:
            ds.VOILUTFunction = "LINEAR" if window[1] >= 1 else "LINEAR_EXACT"
    if kind == "std" and "PresentationLUTShape" in ds:
        ds.PresentationLUTShape = "IDENTITY"
    ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(stored).tobytes())


def _reference(ref: Dataset, purpose: bool) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.SOPClassUID
    item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    if purpose:
        item.PurposeOfReferenceCodeSequence = [
            hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)]
    return item


def _equipment_item(ds: Dataset) -> Dataset | None:
    """The source's acquisition equipment as a ContributingEquipmentSequence item (before its fields are replaced)."""
    manufacturer = str(ds.get("Manufacturer", "") or "").strip()
    if not manufacturer or manufacturer == MANUFACTURER:
        return None

    def text(keyword):
        value = str(ds.get(keyword, "") or "").strip()
        return _clip(value, 64) if value else None

    versions = ds.get("SoftwareVersions")
    versions = [str(v) for v in versions] if isinstance(versions, Sequence) and not isinstance(versions, str) else (
        text("SoftwareVersions"))
    return hd.ContributingEquipment(
        manufacturer=_clip(manufacturer, 64), purpose_of_reference=codes.DCM.AcquisitionEquipment,
        manufacturer_model_name=text("ManufacturerModelName"), software_versions=versions or None,
        device_serial_number=text("DeviceSerialNumber"), institution_name=text("InstitutionName"),
        station_name=text("StationName"),
    )


def _our_equipment(run: _Run) -> Dataset:
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER, purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=_clip(run.method, 64), software_versions=_clip(run.version, 64),
        contribution_datetime=run.when, contribution_description=_clip(f"{run.task_label} reconstruction", 1024),
    )


def _source_was_lossy(ds: Dataset) -> bool:
    """The source says it was lossy compressed, or its transfer syntax is a compressed one that may be lossy."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    lossy_syntax = syntax is not None and syntax.is_compressed and syntax not in _LOSSLESS_SYNTAXES
    return str(ds.get("LossyImageCompression", "")) == "01" or lossy_syntax


def _file_meta(ds: Dataset, run: _Run) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _clip(f"BRGM_{run.version}", 16)
    return meta


def _pm_series(std, planes, fresh: bool, run: _Run) -> Iterator[tuple[str, Dataset]]:
    """The std as a float32 Parametric Map on the same planes as the classic std series (spec B4).

    Its source images are the DICOM source's slices, or for a fresh study the classic std images
    (headers made here; the same UIDs as the std series, written or not).
    """
    if fresh:
        references = [_derived_dataset(p, "std", run, run.uid("std"), number=i + 1) for i, p in enumerate(planes)]
    else:
        references = _unique(ref for p in planes for ref in p.references)
    top = float(std.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="STD", lut_explanation="posterior standard deviation", unit=_PM_UNITS[run.modality],
        value_range=(0.0, top if top > 0 else 1.0), slope=1.0, intercept=0.0,
        quantity_definition=codes.SCT.StandardDeviation,
    )
    centre, width = _window("std", _sample(std), None, None)
    first = planes[0]
    thickness = first.thickness or first.spacing_between or 1.0
    pm = hd.pm.ParametricMap(
        source_images=references[:1], further_source_images=references[1:] or None,
        pixel_array=std.astype(np.float32),
        series_instance_uid=run.uid(PM_KIND), series_number=run.series_base + SERIES_NUMBER_OFFSETS[PM_KIND],
        sop_instance_uid=run.uid(PM_KIND, "map"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=_clip(run.method, 64),
        software_versions=_clip(run.version, 64), device_serial_number=_clip(run.run_id, 64),
        contains_recognizable_visual_features=True, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(
            window_center=centre, window_width=width, voi_lut_function="LINEAR" if width >= 1 else "LINEAR_EXACT")],
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=first.spacing, slice_thickness=thickness,
                                                spacing_between_slices=first.spacing_between),
        plane_orientation=hd.PlaneOrientationSequence(coordinate_system="PATIENT", image_orientation=first.iop),
        plane_positions=[hd.PlanePositionSequence(coordinate_system="PATIENT", image_position=p.ipp) for p in planes],
        content_label="STD", content_description="posterior standard deviation (research use only)",
        contributing_equipment=[_our_equipment(run)],
        derivation=_derivation_code(run),
        series_description=series_description(run.source_label, run.task_label, run.method, PM_KIND,
                                              run.description),
        series_date=run.when.date(), series_time=run.when.time(),
        content_date=run.when.date(), content_time=run.when.time(),
    )
    pm.Laterality = str(references[0].get("Laterality", "") or "")
    yield "IM_0001.dcm", pm


def _sc_series(kind, stack, source: MedicalImage, run: _Run) -> Iterator[tuple[str, Dataset]]:
    """A PNG source's result as a Secondary Capture image of a fresh study (no geometry to keep)."""
    if kind == "std":
        top = float(stack.max())
        encoding = _Encoding(_ds_float(top * 1.0001 / 65534) if top > 0 else 1.0, 0.0, False, rescale=True,
                             rescale_type="US")
    else:
        encoding = _Encoding(1.0, 0.0, signed=False)
    study = Dataset()
    _set_fresh_study(study, source, run)
    for i, values in enumerate(stack):
        sc = hd.sc.SCImage(
            pixel_array=encoding.encode(values), photometric_interpretation="MONOCHROME2", bits_allocated=16,
            coordinate_system="PATIENT", study_instance_uid=study.StudyInstanceUID,
            series_instance_uid=run.uid(kind), series_number=SERIES_NUMBER_OFFSETS[kind],
            sop_instance_uid=run.uid(kind, i), instance_number=i + 1, manufacturer=MANUFACTURER,
            manufacturer_model_name=_clip(run.method, 64), software_versions=_clip(run.version, 64),
            patient_id=study.PatientID, patient_name=study.PatientName, patient_birth_date="", patient_sex="",
            accession_number="", study_id="", study_date=study.StudyDate, study_time=study.StudyTime,
            referring_physician_name="", patient_orientation=("L", "F"),
            series_description=series_description("", run.task_label, run.method, kind, run.description),
            content_date=run.when.date(), content_time=run.when.time(),
            series_date=run.when.date(), series_time=run.when.time(),
            contributing_equipment=[_our_equipment(run)],
        )
        sc.Laterality = ""
        sc.SpecificCharacterSet = "ISO_IR 192"
        sc.DerivationDescription = _clip(derivation_text(run.description, kind, run.factor, run.version), 1024)
        sc.ImageComments = _image_comment(kind)
        if encoding.rescale:
            sc.RescaleIntercept, sc.RescaleSlope, sc.RescaleType = "0", _ds(encoding.slope), "US"
        values = np.asarray(values, dtype=np.float64)
        centre, width = _window(kind, _sample(values if kind == "std" else np.rint(values)), Dataset(), source)
        sc.WindowCenter, sc.WindowWidth = _ds(centre), _ds(width)
        if width < 1:
            sc.VOILUTFunction = "LINEAR_EXACT"
        yield _file_name(i, len(stack)), sc


def _write_series(target: Path, files: Iterable[tuple[str, Dataset]], overwrite: bool) -> list[Path]:
    """Write a series into a hidden temporary folder beside `target`, then rename it onto `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    names = []
    try:
        for name, ds in files:
            ds.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} already exists; choose another folder or pass overwrite=True")
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [target / name for name in names]


def series_description(source_label: str, task_label: str, method: str, kind: str, description: Mapping) -> str:
    """'<source description> BRGM SRx4 VI mean [research]', the source part cut so the whole fits LO (64)."""
    name = {PM_KIND: "std map"}.get(kind, kind)
    level = _interval_level(description)
    if kind in ("lower", "upper") and level is not None:
        name += f" {round(100 * level, 1):g}%"
    ours = _clip(f"BRGM {task_label[:16]} {method.upper()[:16]} {name} [research]", 64)
    room = 64 - len(ours) - 1
    prefix = _clean(source_label)[:room].rstrip() if room > 0 else ""
    return f"{prefix} {ours}" if prefix else ours


def derivation_text(description: Mapping, kind: str, factor: int, version: str) -> str:
    """How the image was made, in one line for DerivationDescription (ST)."""
    meaning = {
        "mean": "posterior mean or point estimate",
        "consistent": "data-consistent image (observed pixels from the source)",
        "std": "posterior standard deviation per pixel (uncertainty, not anatomy)",
        PM_KIND: "posterior standard deviation per pixel (uncertainty, not anatomy)",
        "lower": "lower end of the central interval per pixel",
        "upper": "upper end of the central interval per pixel",
    }[kind]
    known = ("task", "method", "prior", "steps", "samples", "interval", "calibrated")
    items = {"factor": factor, **{k: description[k] for k in known if description.get(k) is not None}}
    items.update({k: v for k, v in description.items() if k not in (*known, "factor", "version") and v is not None})
    details = "; ".join(f"{k}={v}" for k, v in items.items())
    return _clean(f"napari-brgm {version}: {meaning}; {details}")


def _interval_level(description: Mapping) -> float | None:
    interval = description.get("interval")
    if isinstance(interval, Mapping):
        interval = interval.get("level")
    try:
        return float(interval) if interval is not None else None
    except (TypeError, ValueError):
        return None


def _derivation_code(run: _Run):
    """Spatial resampling for super-resolution, smoothing for denoising, none (text only) otherwise."""
    task = run.description.get("task")
    if task == "superres" or run.factor > 1:
        return codes.DCM.SpatialResampling
    if task == "denoise":
        return codes.DCM.Smoothing
    return None


def _image_comment(kind: str) -> str:
    what = {
        "std": " This image is a posterior standard deviation per pixel (the uncertainty of the reconstruction, "
               "in the source's units), not anatomy.",
        "lower": " This image is the lower end of a per-pixel interval, not an acquired image.",
        "upper": " This image is the upper end of a per-pixel interval, not an acquired image.",
    }.get(kind, " This image was computed by a generative reconstruction and may show invented detail.")
    return CAUTION + what


def _file_name(i: int, n: int) -> str:
    return f"IM_{i + 1:0{max(4, len(str(n)))}d}.dcm"


def _unique(datasets) -> list[Dataset]:
    seen, out = set(), []
    for ds in datasets:
        if ds.SOPInstanceUID not in seen:
            seen.add(ds.SOPInstanceUID)
            out.append(ds)
    return out


def _clean(text) -> str:
    """Text without the characters DICOM string VRs forbid (backslash, control characters)."""
    return "".join(" " if ch == "\\" or (ord(ch) < 32 and ch not in "\t") else ch for ch in str(text))


def _clip(text, length: int) -> str:
    return _clean(text)[:length]


def _positive_floats(values) -> list[float] | None:
    """The values as floats if all are finite and positive, else None."""
    try:
        out = [float(v) for v in values or []]
    except (TypeError, ValueError):
        return None
    return out if out and all(np.isfinite(v) and v > 0 for v in out) else None


def _ds(value: float) -> str:
    """A decimal string (DS, at most 16 characters) for `value`."""
    return format_number_as_ds(float(value))


def _ds_float(value: float) -> float:
    """`value` as it reads back from a DS."""
    return float(_ds(value))
