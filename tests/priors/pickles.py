"""Write StyleGAN2-ADA and TF StyleGAN2 network pickles opcode by opcode (docs/stylegan2-format.md).

No NVIDIA code and no importable stand-in classes are needed: the byte structures are emitted
directly from a small object tree (`Global`, `Call`, `NewObj`, `Build`, `SetItems`, `PersId`), which
also lets the security tests write hostile variants.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class Global:
    module: str
    name: str


@dataclass
class Call:  # func(*args) via REDUCE
    func: object
    args: tuple = ()


@dataclass
class NewObj:  # cls.__new__(cls, *args) via NEWOBJ
    cls: object
    args: tuple = ()


@dataclass
class Build:  # obj.__setstate__(state) via BUILD
    obj: object
    state: object


@dataclass
class SetItems:  # obj[k] = v for the pairs, via SETITEMS
    obj: object
    items: list = field(default_factory=list)


@dataclass
class PersId:  # persistent id via BINPERSID
    pid: object


@dataclass
class Raw:  # literal opcode bytes
    data: bytes


def _long(v: int) -> bytes:
    n = (v.bit_length() + 8) // 8 if v else 0
    return v.to_bytes(n, "little", signed=True)


class _Writer:
    def __init__(self, protocol: int) -> None:
        self.p = protocol
        self.out = io.BytesIO()

    def w(self, b: bytes) -> None:
        self.out.write(b)

    def emit(self, o) -> None:  # noqa: C901 - one branch per pickle type
        if o is None:
            self.w(b"N")
        elif o is True:
            self.w(b"\x88")
        elif o is False:
            self.w(b"\x89")
        elif isinstance(o, int):
            if 0 <= o < 256:
                self.w(b"K" + bytes([o]))
            elif 0 <= o < 65536:
                self.w(b"M" + struct.pack("<H", o))
            elif -(2 ** 31) <= o < 2 ** 31:
                self.w(b"J" + struct.pack("<i", o))
            else:
                b = _long(o)
                self.w(b"\x8a" + bytes([len(b)]) + b)
        elif isinstance(o, float):
            self.w(b"G" + struct.pack(">d", o))
        elif isinstance(o, str):
            b = o.encode("utf-8")
            self.w(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(o, bytes):
            assert self.p >= 3, "bytes need protocol 3"
            self.w(b"B" + struct.pack("<I", len(o)) + o)
        elif isinstance(o, tuple):
            if not o:
                self.w(b")")
            else:
                self.w(b"(")
                for v in o:
                    self.emit(v)
                self.w(b"t")
        elif isinstance(o, list):
            self.w(b"]")
            if o:
                self.w(b"(")
                for v in o:
                    self.emit(v)
                self.w(b"e")
        elif isinstance(o, dict):
            self.w(b"}")
            if o:
                self.w(b"(")
                for k, v in o.items():
                    self.emit(k)
                    self.emit(v)
                self.w(b"u")
        elif isinstance(o, (set, frozenset)):
            self.emit(Call(Global("builtins", "set"), (sorted(o),)))
        elif isinstance(o, Global):
            self.w(b"c" + o.module.encode() + b"\n" + o.name.encode() + b"\n")
        elif isinstance(o, Call):
            self.emit(o.func)
            self.emit(tuple(o.args))
            self.w(b"R")
        elif isinstance(o, NewObj):
            self.emit(o.cls)
            self.emit(tuple(o.args))
            self.w(b"\x81")
        elif isinstance(o, Build):
            self.emit(o.obj)
            self.emit(o.state)
            self.w(b"b")
        elif isinstance(o, SetItems):
            self.emit(o.obj)
            if o.items:
                self.w(b"(")
                for k, v in o.items:
                    self.emit(k)
                    self.emit(v)
                self.w(b"u")
        elif isinstance(o, PersId):
            self.emit(o.pid)
            self.w(b"Q")
        elif isinstance(o, Raw):
            self.w(o.data)
        elif isinstance(o, np.ndarray):
            self.emit(numpy_array(o))
        else:
            raise TypeError(f"cannot emit {type(o).__name__}")


def dumps(obj, protocol: int = 4) -> bytes:
    wr = _Writer(protocol)
    wr.w(b"\x80" + bytes([protocol]))
    wr.emit(obj)
    wr.w(b".")
    return wr.out.getvalue()


# ---------------------------------------------------------------------------------------- numpy


def numpy_dtype(code: str = "f4", order: str = "<"):
    return Build(Call(Global("numpy", "dtype"), (code, False, True)), (3, order, None, None, None, -1, -1, 0))


def numpy_array(a: np.ndarray, module: str = "numpy.core.multiarray"):
    """An ndarray as numpy 1.x pickles it: _reconstruct(ndarray, (0,), b'b') + BUILD(state)."""
    a = np.asarray(a, order="C")
    code = {np.dtype("float32"): "f4", np.dtype("float64"): "f8", np.dtype("int64"): "i8"}[a.dtype]
    return Build(Call(Global(module, "_reconstruct"), (Global("numpy", "ndarray"), (0,), b"b")),
                 (1, tuple(a.shape), numpy_dtype(code), False, a.tobytes()))


# ---------------------------------------------------------------------------------------- torch


def ordered_dict(items=()):
    return SetItems(Call(Global("collections", "OrderedDict"), ()), list(items))


def easy_dict(d: dict):
    return SetItems(NewObj(Global("dnnlib.util", "EasyDict"), ()), [
        (k, easy_dict(v) if isinstance(v, dict) else v) for k, v in d.items()])


def legacy_blob(a: np.ndarray, *, numel: int | None = None, count: int | None = None, data: bytes | None = None,
                storage: str = "FloatStorage") -> bytes:
    """`torch.save(storage, _use_new_zipfile_serialization=False)`: 5 pickles, element count, raw bytes."""
    raw = np.asarray(a, dtype=np.float32, order="C").tobytes() if data is None else data
    n = a.size if numel is None else numel
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join([
        dumps(LEGACY_MAGIC, 2), dumps(1001, 2), dumps(sys_info, 2),
        dumps(PersId(("storage", Global("torch", storage), "94000000000", "cpu", n, None)), 2),
        dumps(["94000000000"], 2),
        struct.pack("<q", n if count is None else count), raw,
    ])


def zip_blob(a: np.ndarray) -> bytes:
    """The zip variant of a storage blob: archive/data.pkl + archive/data/0, stored uncompressed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", dumps(PersId(("storage", Global("torch", "FloatStorage"), "0", "cpu",
                                                       a.size)), 2))
        zf.writestr("archive/data/0", np.asarray(a, dtype=np.float32, order="C").tobytes())
    return buf.getvalue()


def torch_tensor(a: np.ndarray, *, parameter: bool = True, blob: bytes | None = None, size=None, stride=None,
                 offset: int = 0):
    """_rebuild_parameter(_rebuild_tensor_v2(_load_from_bytes(blob), offset, size, stride, ...), ...)."""
    a = np.asarray(a, dtype=np.float32)
    size = tuple(a.shape) if size is None else tuple(size)
    if stride is None:
        stride, acc = [], 1
        for s in reversed(size):
            stride.insert(0, acc)
            acc *= s
    storage = Call(Global("torch.storage", "_load_from_bytes"), (legacy_blob(a) if blob is None else blob,))
    t = Call(Global("torch._utils", "_rebuild_tensor_v2"), (storage, offset, size, tuple(stride), False,
                                                             ordered_dict()))
    return Call(Global("torch._utils", "_rebuild_parameter"), (t, False, ordered_dict())) if parameter else t


# ------------------------------------------------------------------------------- ADA network pickle

_BUFFERS = ("w_avg", "resample_filter", "noise_const")
_HOOKS = ("_backward_pre_hooks", "_backward_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
          "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
          "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _class_name(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return "Generator"
    if last == "mapping":
        return "MappingNetwork"
    if last == "synthesis":
        return "SynthesisNetwork"
    if last.startswith("b") and last[1:].isdigit():
        return "SynthesisBlock"
    if last in ("conv0", "conv1"):
        return "SynthesisLayer"
    if last == "torgb":
        return "ToRGBLayer"
    return "FullyConnectedLayer"


def persistent(class_name: str, state: dict, module_src: str = "# module source omitted\n"):
    return Call(Global("torch_utils.persistence", "_reconstruct_persistent_obj"), ({
        "type": "class", "version": 6, "module_src": module_src, "class_name": class_name, "state": state},))


def module_state(params: dict, buffers: dict, modules: dict, extra: dict | None = None) -> dict:
    state = {"training": False, "_parameters": ordered_dict(params.items()), "_buffers": ordered_dict(buffers.items()),
             "_non_persistent_buffers_set": set()}
    state.update({h: ordered_dict() for h in _HOOKS})
    state["_is_full_backward_hook"] = None
    state["_modules"] = ordered_dict(modules.items())
    state.update(extra or {})
    return state


def ada_module_tree(sd: dict[str, np.ndarray], init_kwargs: dict | None = None, module_src: str | None = None,
                    tensor=None):
    """The persistent-object tree of a Generator from an ADA-named state dict (name → array)."""
    tensor = tensor or (lambda name, a, is_param: torch_tensor(a, parameter=is_param))
    tree: dict = {}
    for name, a in sd.items():
        node = tree
        parts = name.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = np.asarray(a, dtype=np.float32)

    def build(node: dict, path: str):
        params, buffers, modules = {}, {}, {}
        for k, v in node.items():
            if isinstance(v, dict):
                modules[k] = build(v, f"{path}.{k}" if path else k)
            elif k in _BUFFERS:
                buffers[k] = tensor(f"{path}.{k}", v, False)
            else:
                params[k] = tensor(f"{path}.{k}", v, True)
        extra = {"_init_args": (), "_init_kwargs": easy_dict(init_kwargs)} if path == "" and init_kwargs else {}
        kwargs = {} if module_src is None else {"module_src": module_src}
        return persistent(_class_name(path), module_state(params, buffers, modules, extra), **kwargs)

    return build(tree, "")


def ada_init_kwargs(cfg) -> dict:
    return {"z_dim": cfg.z_dim, "c_dim": 0, "w_dim": cfg.w_dim, "img_resolution": cfg.img_resolution,
            "img_channels": cfg.img_channels,
            "mapping_kwargs": {"num_layers": cfg.mapping_layers},
            "synthesis_kwargs": {"channel_base": cfg.channel_base, "channel_max": cfg.channel_max,
                                 "num_fp16_res": cfg.num_fp16_res, "conv_clamp": cfg.conv_clamp}}


def ada_pickle(sd: dict[str, np.ndarray], cfg, *, with_g_and_d: bool = True, d_state: dict | None = None,
               **tree_kwargs) -> bytes:
    """A network-snapshot pickle: dict(training_set_kwargs, G, D, G_ema, augment_pipe); D holds `d_state`."""
    g = ada_module_tree(sd, ada_init_kwargs(cfg), **tree_kwargs)
    top = {"training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                                   "resolution": cfg.img_resolution}}
    if with_g_and_d:
        d_sd = d_state or {"b4.fc.weight": np.ones((4, 4), np.float32), "b4.fc.bias": np.zeros(4, np.float32)}
        top["G"] = g
        top["D"] = persistent("Discriminator", module_state({}, {}, {"net": ada_module_tree(d_sd)}))
    top["G_ema"] = g
    top["augment_pipe"] = None
    return dumps(top, 4)


# --------------------------------------------------------------------------------- TF network pickle


def tf_variables(sd: dict[str, np.ndarray], cfg) -> tuple[list, list, list]:
    """(Gs own, mapping, synthesis) variable lists in TF naming, inverse of the ADA conversion rules."""
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    own = [("dlatent_avg", f32(sd["mapping.w_avg"]))]
    mapping = []
    for i in range(cfg.mapping_layers):
        mapping += [(f"Dense{i}/weight", f32(sd[f"mapping.fc{i}.weight"]).T.copy()),
                    (f"Dense{i}/bias", f32(sd[f"mapping.fc{i}.bias"]))]
    synthesis = [("lod", np.float32(0.0).reshape(()))]
    res, noise = 4, {}
    while res <= cfg.img_resolution:
        b = f"synthesis.b{res}"
        layers = [("conv1", "Conv")] if res == 4 else [("conv0", "Conv0_up"), ("conv1", "Conv1")]
        if res == 4:
            synthesis.append(("4x4/Const/const", f32(sd[f"{b}.const"])[None]))
        k = 2 * int(np.log2(res))
        for ada, tf in layers:
            p = f"{b}.{ada}"
            w = f32(sd[f"{p}.weight"]).transpose(2, 3, 1, 0)
            if tf == "Conv0_up":
                w = w[::-1, ::-1]
            synthesis += [(f"{res}x{res}/{tf}/weight", w.copy()),
                          (f"{res}x{res}/{tf}/mod_weight", f32(sd[f"{p}.affine.weight"]).T.copy()),
                          (f"{res}x{res}/{tf}/mod_bias", f32(sd[f"{p}.affine.bias"]) - 1),
                          (f"{res}x{res}/{tf}/noise_strength", f32(sd[f"{p}.noise_strength"])),
                          (f"{res}x{res}/{tf}/bias", f32(sd[f"{p}.bias"]))]
            noise[k - 5 if ada == "conv0" else k - 4] = f32(sd[f"{p}.noise_const"])[None, None]
        synthesis += [(f"{res}x{res}/ToRGB/weight", f32(sd[f"{b}.torgb.weight"]).transpose(2, 3, 1, 0).copy()),
                      (f"{res}x{res}/ToRGB/mod_weight", f32(sd[f"{b}.torgb.affine.weight"]).T.copy()),
                      (f"{res}x{res}/ToRGB/mod_bias", f32(sd[f"{b}.torgb.affine.bias"]) - 1),
                      (f"{res}x{res}/ToRGB/bias", f32(sd[f"{b}.torgb.bias"]))]
        res *= 2
    synthesis += [(f"noise{k}", v) for k, v in sorted(noise.items())]
    return own, mapping, synthesis


def tf_network(name: str, variables: list, static_kwargs: dict | None = None, components: dict | None = None,
               build_module_src: str = "# build module source omitted\n", numpy_module="numpy.core.multiarray"):
    state = {"version": 4, "name": name, "static_kwargs": static_kwargs or {}, "components": components or {},
             "build_module_src": build_module_src, "build_func_name": name,
             "variables": [(k, numpy_array(v, numpy_module)) for k, v in variables]}
    return Build(NewObj(Global("dnnlib.tflib.network", "Network"), ()), state)


def tf_static_kwargs(cfg, fmap_base: bool = True) -> dict:
    kw = {"num_channels": cfg.img_channels, "resolution": cfg.img_resolution, "latent_size": cfg.z_dim,
          "dlatent_size": cfg.w_dim, "mapping_layers": cfg.mapping_layers, "architecture": "skip",
          "fmap_max": cfg.channel_max}
    if fmap_base:
        kw["fmap_base"] = cfg.channel_base // 2
    return kw


def tf_pickle(sd: dict[str, np.ndarray], cfg, *, static_kwargs: dict | None = None, protocol: int = 3,
              numpy_module: str = "numpy.core.multiarray") -> bytes:
    """(G, D, Gs) as the TF StyleGAN2 code pickles them."""
    own, mapping, synthesis = tf_variables(sd, cfg)
    kw = tf_static_kwargs(cfg) if static_kwargs is None else static_kwargs
    comps = {"mapping": tf_network("G_mapping", mapping, numpy_module=numpy_module),
             "synthesis": tf_network("G_synthesis", synthesis, numpy_module=numpy_module)}
    gs = tf_network("Gs", own, kw, comps, numpy_module=numpy_module)
    d = tf_network("D", [("Output/bias", np.zeros(1, np.float32))])
    return dumps((gs, d, gs), protocol)
