"""Restricted unpickling of untrusted network pickles.

A pickle can call any importable function while it loads; NVIDIA's network pickles even carry the
Python source of their classes and execute it. Here nothing from the file is ever executed:

- `RestrictedUnpickler.find_class` returns only our own stand-ins for the few globals that
  StyleGAN2 checkpoints use (`GLOBALS_*` below); every other global is refused;
- before unpickling, `prescan` walks the opcodes without building anything and checks every
  declared length, frame size and memo index against the bytes actually present, so a hostile
  header cannot make us allocate more than the file holds;
- torch storages are legacy `torch.save` blobs; `legacy_storage` parses them (its embedded
  pickles through the same restricted machinery) and only records where the raw bytes are;
- tensors stay lazy (`LazyTensor`) until the caller asks for them, after checking that the
  declared size, stride and offset fit inside their storage.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Callable, Mapping

import numpy as np


class Invalid(ValueError):
    """Why some bytes are not an acceptable checkpoint; the loader adds the file name."""


# ----------------------------------------------------------------------------------------- opcodes


class _BoundedReader:
    """A file view whose `read(n)` never asks the file for more than the bytes left before `end`."""

    def __init__(self, f, end: int) -> None:
        self._f, self._end = f, end

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._end - self._f.tell())
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._f.readline(max(0, self._end - self._f.tell()))

    def tell(self) -> int:
        return self._f.tell()


_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_REFUSED_OPS = {"EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEXT_BUFFER", "READONLY_BUFFER"}


def prescan(f, end: int, *, allow_persistent: bool = False) -> int:
    """Check the pickle starting at f.tell() opcode by opcode; return the offset after its STOP.

    Every length the stream declares must fit in the bytes left before `end`, memo indices must be
    sequential-ish, and opcodes that reach the extension registry or out-of-band buffers are refused.
    The file position is restored.
    """
    start = f.tell()
    reader = _BoundedReader(f, end)
    count = 0
    try:
        for op, arg, _pos in pickletools.genops(reader):
            count += 1
            if op.name in _REFUSED_OPS:
                raise Invalid(f"refused pickle opcode {op.name}")
            if op.name in ("PERSID", "BINPERSID") and not allow_persistent:
                raise Invalid("unexpected persistent id in the pickle")
            if op.name == "FRAME" and arg > end - reader.tell():
                raise Invalid(f"declared frame of {arg} bytes but only {end - reader.tell()} bytes remain (truncated?)")
            if op.name in _PUT_OPS and arg > count:
                raise Invalid(f"memo index {arg} out of range")
        stop = f.tell()
    except Invalid:
        raise
    except ValueError as e:
        msg = str(e)
        if any(s in msg for s in ("exhausted", "but only", "remain", "not enough data")):
            raise Invalid(f"truncated or corrupt pickle ({msg})") from None
        raise Invalid(f"not a valid pickle ({msg})") from None
    finally:
        f.seek(start)
    return stop


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves globals only from an allow-list and persistent ids only via a callback."""

    def __init__(self, file, globals_: Mapping[tuple[str, str], object],
                 persistent: Callable[[object], object] | None = None) -> None:
        super().__init__(file, encoding="ASCII")
        self._globals = globals_
        self._persistent = persistent

    def find_class(self, module: str, name: str):
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise Invalid(f"refused global {module}.{name} (not one of the classes a StyleGAN2 checkpoint uses; "
                          f"nothing in the file was executed)") from None

    def persistent_load(self, pid):
        if self._persistent is None:
            raise Invalid("unexpected persistent id in the pickle")
        return self._persistent(pid)


def restricted_load(f, end: int, globals_: Mapping[tuple[str, str], object],
                    persistent: Callable[[object], object] | None = None):
    """Prescan, then unpickle one pickle at f.tell() with the allow-list; leaves f after its STOP."""
    stop = prescan(f, end, allow_persistent=persistent is not None)
    obj = RestrictedUnpickler(f, globals_, persistent).load()
    if f.tell() != stop:  # the C unpickler may read ahead; the next pickle starts at `stop`
        f.seek(stop)
    return obj


# ------------------------------------------------------------------------------ safe stand-ins


class SafeDict(dict):
    """Stand-in for OrderedDict and dnnlib EasyDict: a plain dict that BUILD can only add items to."""

    __slots__ = ()

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise Invalid("unexpected state for a dict")
        self.update(state)


def _safe_set(items=()):
    return set(items)


class PersistentObject:
    """A StyleGAN2-ADA persistent-class instance: its class name and `__dict__`, never its source code."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name, self.state = class_name, state

    def __setstate__(self, state) -> None:
        raise Invalid("unexpected BUILD on a persistent object")

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"


def _reconstruct_persistent_obj(meta=None, *extra):
    """Replacement for torch_utils.persistence._reconstruct_persistent_obj: keeps class_name and state only."""
    if extra or not isinstance(meta, dict):
        raise Invalid("malformed persistent object")
    if meta.get("type") != "class":
        raise Invalid(f"unsupported persistent object type {meta.get('type')!r}")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise Invalid("persistent object without class_name/state")
    return PersistentObject(name, state)


class TFNetwork:
    """Stand-in for dnnlib.tflib.network.Network: keeps the pickled state dict, never `build_module_src`."""

    __slots__ = ("state",)

    def __init__(self, *args) -> None:
        if args:
            raise Invalid("unexpected arguments for a TF Network")
        self.state = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict) or getattr(self, "state", None) is not None:
            raise Invalid("malformed TF Network state")
        self.state = state

    def __repr__(self) -> str:
        name = self.state.get("name") if isinstance(self.state, dict) else None
        return f"TFNetwork({name})"


_SAFE_CLASSES = (TFNetwork,)


def _copyreg_reconstructor(cls, base, state):
    """copyreg._reconstructor (protocol 0/1 objects), for our stand-in classes only."""
    if cls not in _SAFE_CLASSES or base is not object or state is not None:
        raise Invalid("refused copyreg._reconstructor call")
    return cls()


# ------------------------------------------------------------------------------------- numpy

_NUMPY_DTYPES = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}


class DtypeSpec:
    """Stand-in for numpy.dtype(name, align, copy) + BUILD(state): numeric dtypes only."""

    __slots__ = ("name", "order")

    def __init__(self, name=None, align=False, copy=False) -> None:
        if not isinstance(name, str) or name not in _NUMPY_DTYPES:
            raise Invalid(f"refused numpy dtype {name!r}")
        self.name, self.order = name, "="

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise Invalid("malformed numpy dtype state")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        name, order = getattr(self, "name", None), getattr(self, "order", "=")
        if name not in _NUMPY_DTYPES:
            raise Invalid("malformed numpy dtype")
        dt = np.dtype(name)
        return dt.newbyteorder(order) if order in "<>" else dt


def _as_dtype(d) -> np.dtype:
    if not isinstance(d, DtypeSpec):
        raise Invalid("numpy object without a numeric dtype")
    return d.resolve()


def _shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 8 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise Invalid(f"malformed array shape {shape!r}")
    return shape


def _array_from_bytes(data, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    if isinstance(data, pickle.PickleBuffer):
        data = data.raw()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise Invalid("numpy array data is not raw bytes (object arrays are refused)")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise Invalid(f"numpy array of shape {shape} needs {expected} bytes but {len(data)} are present")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _np_scalar(dtype=None, data=None):
    dt = _as_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise Invalid("malformed numpy scalar")
    return np.frombuffer(data, dtype=dt)[0].item()


class _NDArrayToken:
    """What `numpy.ndarray` resolves to; only `_reconstruct` accepts it."""

    __slots__ = ()

    def __setstate__(self, state) -> None:
        raise Invalid("unexpected BUILD on numpy.ndarray")


_NDARRAY = _NDArrayToken()


class ArraySpec:
    """Stand-in for numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') + BUILD(state)."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array = None

    def __setstate__(self, state) -> None:
        if getattr(self, "array", None) is not None or not isinstance(state, tuple) or len(state) != 5:
            raise Invalid("malformed numpy array state")
        _version, shape, dtype, fortran, data = state
        self.array = _array_from_bytes(data, _as_dtype(dtype), _shape(shape), bool(fortran))


def _np_reconstruct(subtype=None, shape=None, dtype_code=None):
    if subtype is not _NDARRAY:
        raise Invalid("refused numpy _reconstruct of a non-ndarray type")
    return ArraySpec()


def _np_frombuffer(buf=None, dtype=None, shape=None, order="C"):
    return _array_from_bytes(buf, _as_dtype(dtype), _shape(shape), order == "F")


def unwrap_array(obj) -> np.ndarray:
    """A numpy array from the pickle (ArraySpec after BUILD, or a `_frombuffer` result)."""
    if isinstance(obj, ArraySpec) and getattr(obj, "array", None) is not None:
        return obj.array
    if isinstance(obj, np.ndarray):
        return obj
    raise Invalid(f"expected a numpy array, found {type(obj).__name__}")


# ------------------------------------------------------------------------------------- torch

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("b1"),
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class _StorageType:
    """What `torch.<X>Storage` resolves to inside a storage blob: just the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, _STORAGE_DTYPES[name]

    def __setstate__(self, state) -> None:
        raise Invalid("unexpected BUILD on a storage type")


class Storage:
    """Raw little-endian elements of one storage: `numel` items of `dtype` at `offset` in `blob`."""

    __slots__ = ("blob", "offset", "dtype", "numel")

    def __init__(self, blob, offset: int, dtype: np.dtype, numel: int) -> None:
        self.blob, self.offset, self.dtype, self.numel = blob, offset, dtype, numel

    def __setstate__(self, state) -> None:
        raise Invalid("unexpected BUILD on a storage")

    def flat(self) -> np.ndarray:
        return np.frombuffer(self.blob, dtype=self.dtype, count=self.numel, offset=self.offset)


_BLOB_GLOBALS = {("torch", name): _StorageType(name) for name in _STORAGE_DTYPES}


def _storage_pid(pid) -> tuple[str, np.dtype, int]:
    """('storage', <torch.XStorage>, key, location, numel[, view_metadata]) → (key, dtype, numel)."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
        raise Invalid("malformed storage reference")
    stype, key, _location, numel = pid[1:5]
    if not isinstance(stype, _StorageType) or not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise Invalid("malformed storage reference")
    if len(pid) == 6 and pid[5] is not None:
        raise Invalid("storage views are not supported")
    return key, stype.dtype, numel


def legacy_storage(blob) -> Storage:
    """Replacement for torch.storage._load_from_bytes: parse a legacy (or zip) `torch.save(storage)` blob."""
    if not isinstance(blob, bytes):
        raise Invalid("storage blob is not bytes")
    if blob.startswith(b"PK\x03\x04"):
        return _zip_storage(blob)
    f = io.BytesIO(blob)
    end = len(blob)
    if restricted_load(f, end, {}) != LEGACY_MAGIC:
        raise Invalid("storage blob without the torch.save magic number")
    if restricted_load(f, end, {}) != LEGACY_PROTOCOL:
        raise Invalid("storage blob with an unknown torch.save protocol")
    sys_info = restricted_load(f, end, {})
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise Invalid("storage blob is not little-endian")
    refs: dict[str, tuple[np.dtype, int]] = {}

    def persistent(pid):
        key, dtype, numel = _storage_pid(pid)
        refs[key] = (dtype, numel)
        return key

    root = restricted_load(f, end, _BLOB_GLOBALS, persistent)
    keys = restricted_load(f, end, {})
    if not isinstance(root, str) or root not in refs or not isinstance(keys, list) or keys != [root]:
        raise Invalid("storage blob does not hold exactly one storage")
    dtype, numel = refs[root]
    pos = f.tell()
    if end - pos < 8:
        raise Invalid("storage blob truncated before its element count")
    (count,) = struct.unpack("<q", blob[pos:pos + 8])
    if count != numel:
        raise Invalid(f"storage declares {numel} elements but its data header says {count}")
    nbytes = numel * dtype.itemsize
    if nbytes != end - pos - 8:
        raise Invalid(f"storage of {numel} elements needs {nbytes} bytes but {end - pos - 8} are present")
    return Storage(blob, pos + 8, dtype, numel)


def _zip_storage(blob: bytes) -> Storage:
    """A zip-format `torch.save(storage)` blob: data.pkl (restricted) + data/<key>, stored uncompressed."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
        infos = {i.filename: i for i in zf.infolist()}
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise Invalid(f"corrupt zip storage blob ({e})") from None
    pkl = [n for n in infos if n.endswith("/data.pkl")]
    if len(pkl) != 1:
        raise Invalid("zip storage blob without a single data.pkl")
    prefix = pkl[0][: -len("data.pkl")]

    def read(name: str) -> bytes:
        info = infos.get(name)
        if info is None:
            raise Invalid(f"zip storage blob lacks {name}")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
                or info.file_size > len(blob):
            raise Invalid(f"zip storage blob entry {name} is compressed or has an impossible size")
        return zf.read(info)

    refs: dict[str, tuple[np.dtype, int]] = {}

    def persistent(pid):
        key, dtype, numel = _storage_pid(pid)
        refs[key] = (dtype, numel)
        return key

    data_pkl = read(pkl[0])
    root = restricted_load(io.BytesIO(data_pkl), len(data_pkl), _BLOB_GLOBALS, persistent)
    if not isinstance(root, str) or root not in refs:
        raise Invalid("zip storage blob does not hold a storage")
    dtype, numel = refs[root]
    raw = read(f"{prefix}data/{root}")
    if len(raw) != numel * dtype.itemsize:
        raise Invalid(f"storage of {numel} elements needs {numel * dtype.itemsize} bytes but {len(raw)} are present")
    return Storage(raw, 0, dtype, numel)


class LazyTensor:
    """A tensor view (offset, size, stride) into a Storage, checked to lie inside it; copied on `numpy()`."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state) -> None:
        raise Invalid("unexpected BUILD on a tensor")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size

    def numpy(self) -> np.ndarray:
        """A C-contiguous copy (float32 for floating storages)."""
        flat = self.storage.flat()
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=[s * item for s in self.stride], writeable=False)
        dtype = np.float32 if flat.dtype.kind == "f" else flat.dtype.newbyteorder("=")
        return np.array(view, dtype=dtype, order="C")


def _int_tuple(t, what: str) -> tuple[int, ...]:
    if not isinstance(t, tuple) or len(t) > 8 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in t):
        raise Invalid(f"malformed tensor {what} {t!r}")
    return t


def _rebuild_tensor_v2(storage=None, storage_offset=None, size=None, stride=None, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Replacement for torch._utils._rebuild_tensor_v2: bounds-checked lazy view, nothing allocated."""
    if not isinstance(storage, Storage):
        raise Invalid("tensor without a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise Invalid("malformed tensor offset")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise Invalid("tensor size and stride differ in length")
    if math.prod(size) > 0:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise Invalid(f"tensor of size {list(size)} (offset {storage_offset}) reaches element {last} "
                          f"but its storage holds {storage.numel}")
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data=None, requires_grad=False, backward_hooks=None, state=None):
    """Replacement for torch._utils._rebuild_parameter(_with_state): the tensor itself."""
    if not isinstance(data, LazyTensor):
        raise Invalid("parameter without a tensor")
    return data


# ---------------------------------------------------------------------------------- allow-list

_NUMPY_GLOBALS = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY_GLOBALS[(_mod, "scalar")] = _np_scalar
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = _np_reconstruct
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _NUMPY_GLOBALS[(_mod, "_frombuffer")] = _np_frombuffer
_NUMPY_GLOBALS[("numpy", "dtype")] = DtypeSpec
_NUMPY_GLOBALS[("numpy", "ndarray")] = _NDARRAY

GLOBALS: dict[tuple[str, str], object] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): legacy_storage,
    ("collections", "OrderedDict"): SafeDict,
    ("builtins", "set"): _safe_set,
    ("dnnlib.util", "EasyDict"): SafeDict,
    ("dnnlib", "EasyDict"): SafeDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    **_NUMPY_GLOBALS,
}
"""Every global a checkpoint may name, mapped to our stand-in. Nothing else resolves."""


def load_pickle(f, end: int):
    """Unpickle a whole checkpoint file (opened binary, positioned at 0) with the allow-list."""
    obj = restricted_load(f, end, GLOBALS)
    if f.tell() != end:
        raise Invalid(f"{end - f.tell()} unexpected bytes after the end of the pickle")
    return obj
