"""Mutation fuzzing shared by the fuzz tests (tests/io, tests/priors) and tools/fuzz_readers.py.

A *seed* is a small valid file (real pydicom test data, or written here with nibabel / Pillow /
the pickle writer); a *case* is a seed plus a list of mutations: bit flips, truncation, zeroed
runs, random bytes, huge integers written over header fields (DICOM Rows/Columns/NumberOfFrames,
NIfTI dim[]/vox_offset/scl_slope, PNG IHDR width/height) and corrupted transfer-syntax UIDs. Each
case is loaded under `guarded`: a wall-clock alarm, tracemalloc and an audit hook that records
any attempt to run code (exec, compile, os.system, subprocess, pickle's own find_class...).
"""

from __future__ import annotations

import gzip
import re
import signal
import struct
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

MB = 1 << 20

# --------------------------------------------------------------------------------- the guards

# Audit events that mean "something tried to run code or a program" while a file was being read.
CODE_EVENTS = frozenset({"exec", "compile", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                         "os.forkpty", "subprocess.Popen", "pickle.find_class", "ctypes.dlopen", "os.startfile",
                         "builtins.input", "webbrowser.open"})
_recording: list[list[str]] = []


def _importing() -> bool:
    """True while a module is being imported (its own exec/compile are library code, not the file's)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _audit(event: str, args) -> None:  # installed once; records only while a guard is active
    if _recording and event in CODE_EVENTS and not (event in ("exec", "compile") and _importing()):
        _recording[-1].append(f"{event} {str(args)[:120]}")


_installed = False


def _install_hook() -> None:
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True


class Hang(Exception):
    """A case ran longer than its time limit."""


@dataclass
class Outcome:
    value: object = None
    error: BaseException | None = None
    seconds: float = 0.0
    peak: int = 0  # bytes, tracemalloc (Python allocations: numpy, bytes; not torch's allocator)
    rss_growth: int = 0  # bytes the process's peak resident size grew by (catches torch and C allocations)
    code_events: list[str] = field(default_factory=list)


@contextmanager
def _alarm(seconds: float):
    def on_alarm(*_):
        raise Hang(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def guarded(load: Callable[[], object], *, timeout: float = 10.0, trace: bool = True) -> Outcome:
    """Run `load()` with a time limit, tracemalloc (when `trace`) and the code-execution audit."""
    import resource
    import time

    _install_hook()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = Outcome()
    events: list[str] = []
    _recording.append(events)
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        with _alarm(timeout):
            out.value = load()
    except Hang:
        raise
    except Exception as err:  # noqa: BLE001 - classified by the caller
        out.error = err
    finally:
        out.seconds = time.perf_counter() - started
        if trace:
            out.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        _recording.pop()
        out.code_events = events
        out.rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    return out


# ------------------------------------------------------------------------------ header fields

@dataclass(frozen=True)
class Field:
    """A header field of a seed: `size` bytes at `offset`; kind 'u16', 'u32be', 'i16', 'i64', 'f32', 'f64',
    'is'/'ds' (DICOM decimal strings), 'ui' (a DICOM UID)."""

    name: str
    offset: int
    size: int
    kind: str
    little: bool = True


_DICOM_TAGS = {  # keyword: (group, element, kind)
    "TransferSyntaxUID": (0x0002, 0x0010, "ui"),
    "SamplesPerPixel": (0x0028, 0x0002, "u16"),
    "NumberOfFrames": (0x0028, 0x0008, "is"),
    "Rows": (0x0028, 0x0010, "u16"),
    "Columns": (0x0028, 0x0011, "u16"),
    "BitsAllocated": (0x0028, 0x0100, "u16"),
    "BitsStored": (0x0028, 0x0101, "u16"),
    "HighBit": (0x0028, 0x0102, "u16"),
    "PixelRepresentation": (0x0028, 0x0103, "u16"),
    "RescaleIntercept": (0x0028, 0x1052, "ds"),
    "RescaleSlope": (0x0028, 0x1053, "ds"),
    "WindowWidth": (0x0028, 0x1051, "ds"),
    "PixelSpacing": (0x0028, 0x0030, "ds"),
    "ImagePositionPatient": (0x0020, 0x0032, "ds"),
    "ImageOrientationPatient": (0x0020, 0x0037, "ds"),
}


def dicom_fields(data: bytes) -> list[Field]:
    """Where the value of each `_DICOM_TAGS` element sits in a DICOM file (explicit/implicit VR, either endian)."""
    found = []
    for name, (group, elem, kind) in _DICOM_TAGS.items():
        for little in (True, False):
            fmt = "<HH" if little else ">HH"
            tag = struct.pack(fmt, group, elem)
            for m in re.finditer(re.escape(tag), data[128:]):
                at = 128 + m.start() + 4
                vr = data[at:at + 2]
                if re.fullmatch(rb"[A-Z]{2}", vr):  # explicit VR, 2-byte length
                    length = struct.unpack("<H" if little else ">H", data[at + 2:at + 4])[0]
                    start = at + 4
                else:  # implicit VR, 4-byte length
                    length = struct.unpack("<I" if little else ">I", data[at:at + 4])[0]
                    start = at + 4
                if 0 < length <= 64 and start + length <= len(data):
                    found.append(Field(name, start, length, kind, little))
                    break
            else:
                continue
            break
    return found


def nifti1_fields() -> list[Field]:
    """NIfTI-1 header fields (little endian)."""
    fields = [Field(f"dim[{i}]", 40 + 2 * i, 2, "i16") for i in range(8)]
    fields += [Field("datatype", 70, 2, "i16"), Field("bitpix", 72, 2, "i16"), Field("vox_offset", 108, 4, "f32"),
               Field("scl_slope", 112, 4, "f32"), Field("scl_inter", 116, 4, "f32"), Field("cal_max", 124, 4, "f32"),
               Field("cal_min", 128, 4, "f32"), Field("xyzt_units", 123, 1, "u8"), Field("qform_code", 252, 2, "i16"),
               Field("sform_code", 254, 2, "i16"), Field("sizeof_hdr", 0, 4, "i32")]
    fields += [Field(f"pixdim[{i}]", 76 + 4 * i, 4, "f32") for i in range(8)]
    fields += [Field(f"srow[{i}]", 280 + 4 * i, 4, "f32") for i in range(12)]
    fields += [Field(f"quatern[{i}]", 256 + 4 * i, 4, "f32") for i in range(6)]
    return fields


def nifti2_fields() -> list[Field]:
    fields = [Field(f"dim[{i}]", 16 + 8 * i, 8, "i64") for i in range(8)]
    fields += [Field("datatype", 12, 2, "i16"), Field("bitpix", 14, 2, "i16"), Field("vox_offset", 168, 8, "i64"),
               Field("scl_slope", 176, 8, "f64"), Field("scl_inter", 184, 8, "f64")]
    fields += [Field(f"pixdim[{i}]", 104 + 8 * i, 8, "f64") for i in range(8)]
    return fields


PNG_FIELDS = [Field("width", 16, 4, "u32be"), Field("height", 20, 4, "u32be"), Field("bit_depth", 24, 1, "u8"),
              Field("colour_type", 25, 1, "u8"), Field("IHDR length", 8, 4, "u32be")]

# Values that break assumptions: zero, one, negative, the type's maximum, 100 000, NaN/inf.
_INT_VALUES = [0, 1, -1, 2, 3, 7, 100_000, 65_535, 32_767, -32_768, 2**31 - 1, -(2**31), 2**63 - 1, 2**32 - 1]
_FLOAT_VALUES = [0.0, -0.0, 1e38, -1e38, 3.4e38, float("inf"), float("-inf"), float("nan"), 1e-45, 1e30, -1.0]
_DS_VALUES = ["0", "1e308", "-1e308", "nan", "inf", "-inf", "1e99", "99999999", "-0", "1e-320", "", "\\", "x",
              "9" * 16, "100000", "1\\0\\0\\1\\0\\0", "0\\0\\0\\0\\0\\0", "1\\1", "0\\0"]
_UIDS = ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.99",
         "1.2.840.10008.1.2.1.99", "1.2.840.10008.5.1.4.1.1.4", "1.2.3", "0.0", "x.y", "1.2.840.10008.1.2.2",
         "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.201"]


def encode(fld: Field, value) -> bytes:
    """`value` in the field's binary form, exactly `fld.size` bytes (strings padded / cut)."""
    e = "<" if fld.little else ">"
    if fld.kind in ("is", "ds", "ui"):
        raw = str(value).encode("latin-1")[: fld.size]
        return raw + (b"\0" if fld.kind == "ui" else b" ") * (fld.size - len(raw))
    if fld.kind in ("f32", "f64"):
        return struct.pack(e + ("f" if fld.kind == "f32" else "d"), float(value))
    bits = {"u8": (1, False), "u16": (2, False), "i16": (2, True), "i32": (4, True), "u32be": (4, False),
            "i64": (8, True)}[fld.kind]
    width, signed = bits
    lo, hi = (-(1 << (8 * width - 1)), (1 << (8 * width - 1)) - 1) if signed else (0, (1 << (8 * width)) - 1)
    v = min(max(int(value), lo), hi)
    return v.to_bytes(width, "big" if fld.kind == "u32be" or not fld.little else "little", signed=signed)


def field_values(fld: Field) -> st.SearchStrategy:
    if fld.kind in ("f32", "f64"):
        return st.sampled_from(_FLOAT_VALUES) | st.floats(allow_nan=True, allow_infinity=True, width=32)
    if fld.kind in ("is", "ds"):
        return st.sampled_from(_DS_VALUES)
    if fld.kind == "ui":
        return st.sampled_from(_UIDS) | st.text("0123456789.", min_size=1, max_size=fld.size)
    return st.sampled_from(_INT_VALUES) | st.integers(-(2**15), 2**32)


# ---------------------------------------------------------------------------------- mutations

@dataclass(frozen=True)
class Seed:
    name: str  # file name, with the extension the reader expects
    data: bytes
    fields: tuple[Field, ...] = ()
    gzipped: bool = False  # mutate the decompressed bytes too (then recompress), so header fields are reached
    png: bool = False  # recompute chunk CRCs after a field mutation, so IHDR values reach the decoder

    def __repr__(self) -> str:
        return f"Seed({self.name!r}, {len(self.data)} bytes)"


def _fix_png_crcs(data: bytearray) -> bytearray:
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(data):
            break
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:end])) & 0xFFFFFFFF)
        pos = end + 4
    return data


@st.composite
def mutations(draw, seed: Seed, max_mutations: int = 4) -> list[tuple]:
    """A list of (kind, args...) mutations for `seed` (kept as data so that a failing case can be printed)."""
    size = len(gzip.decompress(seed.data)) if seed.gzipped else len(seed.data)
    kinds = ["flip", "truncate", "zero", "byte", "huge"] + (["field"] * 3 if seed.fields else [])
    out = []
    for _ in range(draw(st.integers(1, max_mutations))):
        kind = draw(st.sampled_from(kinds))
        if kind == "flip":
            out.append(("flip", draw(st.integers(0, size * 8 - 1))))
        elif kind == "truncate":
            out.append(("truncate", draw(st.integers(0, size - 1))))
        elif kind == "zero":
            out.append(("zero", draw(st.integers(0, size - 1)), draw(st.sampled_from([1, 2, 4, 16, 64, 512]))))
        elif kind == "byte":
            out.append(("byte", draw(st.integers(0, size - 1)), draw(st.integers(0, 255))))
        elif kind == "huge":  # a huge little/big-endian integer over 4 or 8 bytes, mostly in the header
            at = draw(st.integers(0, min(size, 1024) - 1) | st.integers(0, size - 1))
            out.append(("huge", at, draw(st.sampled_from([b"\xff\xff\xff\x7f", b"\x7f\xff\xff\xff", b"\xa0\x86\x01\x00",
                                                           b"\xff" * 8, b"\x00\x00\x80\x7f", b"\x00\x00\xc0\x7f"]))))
        else:
            fld = draw(st.sampled_from(seed.fields))
            out.append(("field", fld.name, encode(fld, draw(field_values(fld)))))
    if seed.gzipped:
        out.append(("raw-gzip", draw(st.booleans())))  # apply to the decompressed bytes (True) or the .gz (False)
    return out


def apply(seed: Seed, muts: list[tuple]) -> bytes:
    """The seed's bytes with `muts` applied in order."""
    in_gzip = seed.gzipped and any(m[0] == "raw-gzip" and m[1] for m in muts)
    data = bytearray(gzip.decompress(seed.data) if in_gzip else seed.data)
    fields = {f.name: f for f in seed.fields}
    touched_fields = False
    for m in muts:
        kind = m[0]
        if kind == "raw-gzip":
            continue
        if not data:
            break
        if kind == "flip":
            i = m[1] % (len(data) * 8)
            data[i // 8] ^= 1 << (i % 8)
        elif kind == "truncate":
            del data[m[1] % len(data):]
        elif kind == "zero":
            i = m[1] % len(data)
            data[i:i + m[2]] = bytes(len(data[i:i + m[2]]))
        elif kind == "byte":
            data[m[1] % len(data)] = m[2]
        elif kind == "huge":
            i = m[1] % len(data)
            data[i:i + len(m[2])] = m[2][: len(data) - i]
        elif kind == "field" and (in_gzip or not seed.gzipped):
            fld = fields[m[1]]
            if fld.offset + fld.size <= len(data):
                data[fld.offset:fld.offset + fld.size] = m[2]
                touched_fields = True
    if seed.png and touched_fields:
        data = _fix_png_crcs(data)
    return gzip.compress(bytes(data), mtime=0) if in_gzip else bytes(data)


def write_case(folder: Path, seed: Seed, muts: list[tuple], index: int = 0) -> Path:
    path = Path(folder) / f"case{index}" / seed.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(apply(seed, muts))
    return path


# -------------------------------------------------------------------------------- reader seeds

def reader_seeds(work: Path) -> list[Seed]:
    """Small valid files of every format the readers take (written under `work`)."""
    import nibabel as nib
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    seeds = []
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                 "CT_small.dcm", "emri_small.dcm"):
        path = get_testdata_file(name)
        if path is None:
            raise RuntimeError(f"pydicom test file {name} missing (install pydicom-data, the testing extra)")
        data = Path(path).read_bytes()
        seeds.append(Seed(name, data, tuple(dicom_fields(data))))

    # A tiny MONOCHROME1 radiograph with a rescale (the inversion and rescale paths).
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fuzz-cr"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = 12, 10
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = "2.000000", "-100.0000"  # room for "1e308" in a fuzz case
    ds.WindowCenter, ds.WindowWidth = "1000", "2000"
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.PixelData = (np.arange(120, dtype=np.uint16).reshape(12, 10) * 30).tobytes()
    cr = work / "cr_mono1.dcm"
    ds.save_as(cr, enforce_file_format=True)
    seeds.append(Seed("cr_mono1.dcm", cr.read_bytes(), tuple(dicom_fields(cr.read_bytes()))))
    del pydicom

    rng = np.random.default_rng(0)
    vol = rng.integers(0, 1000, (7, 6, 5)).astype(np.int16)
    img = nib.Nifti1Image(vol, np.diag([0.9, 0.9, 2.5, 1.0]))
    img.header["scl_slope"], img.header["scl_inter"] = 0.5, -10
    img.header["cal_min"], img.header["cal_max"] = 0, 400
    nib.save(img, work / "vol.nii")
    seeds.append(Seed("vol.nii", (work / "vol.nii").read_bytes(), tuple(nifti1_fields())))
    nib.save(img, work / "vol.nii.gz")
    seeds.append(Seed("vol.nii.gz", (work / "vol.nii.gz").read_bytes(), tuple(nifti1_fields()), gzipped=True))
    flat = nib.Nifti1Image(rng.normal(size=(9, 8, 1)).astype(np.float32), np.eye(4))
    nib.save(flat, work / "slice_f32.nii")
    seeds.append(Seed("slice_f32.nii", (work / "slice_f32.nii").read_bytes(), tuple(nifti1_fields())))
    two = nib.Nifti2Image(rng.integers(0, 255, (5, 4, 3)).astype(np.uint8), np.eye(4))
    nib.save(two, work / "vol2.nii")
    seeds.append(Seed("vol2.nii", (work / "vol2.nii").read_bytes(), tuple(nifti2_fields())))

    for name, arr, mode in (("gray8.png", (np.arange(80).reshape(8, 10) * 3).astype(np.uint8), None),
                            ("gray16.png", (np.arange(80).reshape(8, 10) * 800).astype(np.uint16), None),
                            ("rgb_gray.png", np.repeat((np.arange(48).reshape(6, 8) * 5).astype(np.uint8)[..., None],
                                                       3, axis=2), "RGB")):
        Image.fromarray(arr, mode).save(work / name) if mode else Image.fromarray(arr).save(work / name)
        seeds.append(Seed(name, (work / name).read_bytes(), tuple(PNG_FIELDS), png=True))
    return seeds


# ---------------------------------------------------------------------------- reader property

def declared(path: Path):
    """What the file's own header says (independently of napari-brgm): ('dicom'|'nifti'|'png', shape, float data)."""
    import warnings

    warnings.simplefilter("ignore")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import logging

        import nibabel as nib

        nib.imageglobals.logger.setLevel(logging.CRITICAL + 1)  # header fixes are not findings
        img = nib.load(path)
        shape = tuple(img.shape)
        while len(shape) > 2 and shape[-1] == 1:
            shape = shape[:-1]
        return "nifti", tuple(reversed(shape)), img
    if name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as im:
            return "png", (im.height, im.width), None
    import pydicom
    from pydicom.pixels.utils import get_nr_frames

    ds = pydicom.dcmread(path)
    n = get_nr_frames(ds, warn=False)
    shape = (int(ds.Rows), int(ds.Columns)) if n == 1 else (n, int(ds.Rows), int(ds.Columns))
    return "dicom", shape, None


def check_image_result(path: Path, image) -> None:
    """A loaded image must be float32, of the shape its header declares, finite except where a float file
    stores NaN/inf itself, with a finite affine and positive spacing."""
    import numpy as np

    kind, shape, img = declared(path)
    data = image.data
    assert data.dtype == np.float32, data.dtype
    assert tuple(data.shape) == tuple(shape), f"{path}: loaded {data.shape}, the header declares {shape}"
    bad = ~np.isfinite(data)
    if bad.any():
        assert kind == "nifti" and img.get_data_dtype().kind == "f", f"{path}: {int(bad.sum())} non-finite values"
        stored = np.asarray(img.dataobj.get_unscaled()).reshape(tuple(reversed(shape))).T
        assert np.array_equal(bad, ~np.isfinite(stored)), f"{path}: non-finite values the file does not store"
    assert np.all(np.isfinite(image.affine)), f"{path}: affine {image.affine}"
    assert all(np.isfinite(s) and s > 0 for s in image.spacing), f"{path}: spacing {image.spacing}"


def memory_limit(nbytes: int) -> int:
    """The stated allocation bound for reading a file of `nbytes`: 16 MB plus 64 bytes per file byte."""
    return 16 * MB + 64 * nbytes


# -------------------------------------------------------------------------------- loader seeds

HOSTILE_GLOBALS = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
                   ("builtins", "getattr"), ("builtins", "__import__"), ("subprocess", "Popen"),
                   ("torch", "load"), ("numpy", "load"), ("pickle", "loads"), ("importlib", "import_module"),
                   ("torch._utils", "_rebuild_tensor"), ("shutil", "rmtree")]
_PICKLE_INT_ARGS = {"BININT": (4, "i32"), "BININT1": (1, "u8"), "BININT2": (2, "u16"), "FRAME": (8, "i64"),
                    "SHORT_BINBYTES": (1, "u8"), "BINBYTES": (4, "i32"), "BINUNICODE": (4, "i32"),
                    "BINBYTES8": (8, "i64"), "BINUNICODE8": (8, "i64"), "SHORT_BINUNICODE": (1, "u8"),
                    "LONG1": (1, "u8"), "BINPUT": (1, "u8"), "BINGET": (1, "u8"), "LONG_BINPUT": (4, "i32"),
                    "LONG_BINGET": (4, "i32")}


def pickle_fields(data: bytes, limit: int = 4000) -> tuple[list[Field], list[tuple[int, int]]]:
    """(integer arguments of the first `limit` opcodes as fields, (offset, length) of the strings that
    name a module or a class) of a pickle."""
    import io
    import pickletools

    fields, names = [], []
    try:
        for i, (op, arg, pos) in enumerate(pickletools.genops(io.BytesIO(data))):
            if i >= limit:
                break
            if op.name in _PICKLE_INT_ARGS:
                size, kind = _PICKLE_INT_ARGS[op.name]
                fields.append(Field(f"{op.name}@{pos}", pos + 1, size, kind))
            if op.name == "GLOBAL":  # 'c' module '\n' name '\n'
                names.append((pos, 3 + len(arg.encode())))
            if op.name == "SHORT_BINUNICODE" and isinstance(arg, str) and re.fullmatch(r"[A-Za-z_][\w.]*", arg) \
                    and (arg[:1].isupper() or "." in arg or arg.startswith("_") or arg in ("collections", "torch",
                                                                                           "numpy", "builtins")):
                names.append((pos, 2 + len(arg.encode())))
    except Exception:  # noqa: BLE001 - a pickle that pickletools cannot walk has no fields
        pass
    return fields, names


@dataclass(frozen=True)
class LoaderSeed(Seed):
    names: tuple[tuple[int, int], ...] = ()  # (offset, length) of global-name strings (pickles)
    safetensors: bool = False

    def __repr__(self) -> str:
        return f"LoaderSeed({self.name!r}, {len(self.data)} bytes)"


def loader_seeds(work: Path) -> list[LoaderSeed]:
    """Small valid checkpoints: StyleGAN2-ADA (protocol 4) and TF (protocol 3) network pickles of an 8 px
    generator, and our .safetensors of it, of a tiny flow and of a tiny diffusion prior."""
    import torch

    from napari_brgm.priors.diffusion import DiffusionConfig, DiffusionPrior, save_diffusion
    from napari_brgm.priors.glow import Glow, GlowConfig, save_flow
    from napari_brgm.priors.loading import save_generator
    from tests.priors import pickles as P
    from tests.priors.conftest import random_generator, small_config, state_arrays

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = small_config(img_resolution=8, z_dim=8, w_dim=8, channel_base=64, channel_max=8, mapping_layers=1)
    g = random_generator(cfg, seed=1)
    sd = state_arrays(g)
    seeds = []
    for name, data in (("ada8.pkl", P.ada_pickle(sd, cfg)), ("tf8.pkl", P.tf_pickle(sd, cfg))):
        fields, names = pickle_fields(data)
        seeds.append(LoaderSeed(name, data, tuple(fields), names=tuple(names)))
    save_generator(g, work / "g8.safetensors")
    torch.manual_seed(0)
    flow = Glow(GlowConfig(resolution=8, levels=1, steps_per_level=1, hidden=4))
    with torch.no_grad():
        flow(torch.randn(2, 1, 8, 8))  # initialises actnorm
    save_flow(flow, work / "flow8.safetensors")
    save_diffusion(DiffusionPrior(DiffusionConfig(resolution=8, widths=(8, 8), attention=(False, False),
                                                  norm_groups=8, head_channels=8, timesteps=10)),
                   work / "ddpm8.safetensors")
    for name in ("g8.safetensors", "flow8.safetensors", "ddpm8.safetensors"):
        seeds.append(LoaderSeed(name, (work / name).read_bytes(), safetensors=True))
    return seeds


_ST_VALUES = [0, 1, -1, 3, 100_000, 2**31 - 1, 2**40, 2**63 - 1, -(2**63), 1.5, None, "x", [], [100_000, 100_000],
              [2**32, 2**32, 2**32], {"a": 1}, True]
_ST_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "C64", "XX", ""]
_CONFIG_KEYS = ["img_resolution", "resolution", "channels", "img_channels", "z_dim", "w_dim", "channel_base",
                "channel_max", "mapping_layers", "hidden", "hidden_max", "levels", "steps_per_level", "widths",
                "attention", "timesteps", "num_fp16_res", "conv_clamp", "norm_groups", "head_channels"]


@st.composite
def loader_mutations(draw, seed: LoaderSeed, max_mutations: int = 3) -> list[tuple]:
    """Byte mutations, plus: for pickles, a module/class name replaced by a hostile global; for safetensors,
    edits of the JSON header (shapes, dtypes, offsets, the config) and of its length field."""
    muts = []
    if seed.names and draw(st.integers(0, 3)) == 0:
        pos, length = draw(st.sampled_from(seed.names))
        muts.append(("splice", pos, length, draw(st.sampled_from(HOSTILE_GLOBALS)), draw(st.booleans())))
    if seed.safetensors and draw(st.integers(0, 2)) > 0:
        import json

        n = struct.unpack("<Q", seed.data[:8])[0]
        header = json.loads(seed.data[8:8 + n])
        tensors = sorted(k for k in header if k != "__metadata__")
        what = draw(st.sampled_from(["shape", "dtype", "offsets", "config", "drop", "length"]))
        if what == "length":
            muts.append(("st-length", draw(st.sampled_from([0, 1, 7, n - 1, n + 1, 2**32, 2**63 - 1, 2**64 - 1]))))
        elif what == "config":
            muts.append(("st-config", draw(st.sampled_from(_CONFIG_KEYS)), draw(st.sampled_from(_ST_VALUES + [
                4096, 2**16, 2**20, [4096] * 8, [2**20], 10_000]))))
        else:
            key = draw(st.sampled_from(tensors))
            if what == "shape":
                value = draw(st.sampled_from(_ST_VALUES))
            elif what == "dtype":
                value = draw(st.sampled_from(_ST_DTYPES))
            elif what == "offsets":
                value = draw(st.sampled_from([[0, 0], [0, 2**62], [-1, 4], [2**63, 2**63 + 4], [4, 0], "x",
                                              [0, 4, 8]]))
            else:
                value = None
            muts.append(("st-tensor", key, what, value))
    return muts + draw(mutations(seed, max_mutations)) if draw(st.booleans()) or not muts else muts


def apply_loader(seed: LoaderSeed, muts: list[tuple]) -> bytes:
    import json

    data = seed.data
    plain = []
    for m in muts:
        if m[0] == "splice":  # a GLOBAL becomes a hostile one; a STACK_GLOBAL string its module or name
            _, pos, length, (module, name), first = m
            if data[pos:pos + 1] == b"c":
                new = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
            else:
                raw = (module if first else name).encode()
                new = b"\x8c" + bytes([len(raw)]) + raw
            data = data[:pos] + new + data[pos + length:]
        elif m[0] in ("st-length", "st-config", "st-tensor"):
            n = struct.unpack("<Q", data[:8])[0]
            try:
                header = json.loads(data[8:8 + n])
            except ValueError:
                continue
            body = data[8 + n:]
            if m[0] == "st-length":
                data = struct.pack("<Q", m[1] % 2**64) + data[8:]
                continue
            if m[0] == "st-config":
                meta = header.setdefault("__metadata__", {})
                try:
                    config = json.loads(meta.get("config", "{}"))
                except ValueError:
                    config = {}
                config[m[1]] = m[2]
                meta["config"] = json.dumps(config)
            else:
                _, key, what, value = m
                if what == "drop":
                    header.pop(key, None)
                else:
                    header[key][{"shape": "shape", "dtype": "dtype", "offsets": "data_offsets"}[what]] = value
            raw = json.dumps(header).encode()
            data = struct.pack("<Q", len(raw)) + raw + body
        else:
            plain.append(m)
    return apply(Seed(seed.name, data, seed.fields), plain) if plain else data


def check_prior_result(model) -> None:
    """A loaded prior: a torch module with only finite parameters and buffers."""
    import torch

    assert isinstance(model, torch.nn.Module), type(model)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point():
            assert bool(torch.isfinite(t).all()), f"{name} is not finite"
