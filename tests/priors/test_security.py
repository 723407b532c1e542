"""Hostile and broken files: each raises CheckpointError, runs no code, allocates nothing big."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_brgm.priors import CheckpointError, load_generator
from tests.priors import pickles as P
from tests.priors.conftest import random_generator, small_config, state_arrays

MB = 1 << 20


def _load_fails(path, match: str, max_peak: int = 8 * MB) -> str:
    """load_generator(path) raises CheckpointError matching `match`, with a small traced allocation peak."""
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=match) as info:
            load_generator(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert str(path) in msg, msg  # the message names the file
    assert peak < max_peak + 2 * os.path.getsize(path), f"peak allocation {peak / MB:.1f} MB"
    return msg


@pytest.fixture
def small_sd():
    cfg = small_config(img_resolution=8)
    return state_arrays(random_generator(cfg, seed=40)), cfg


HOSTILE_GLOBALS = [("os", "system"), ("posix", "system"), ("nt", "system"), ("builtins", "eval"),
                   ("builtins", "exec"), ("builtins", "getattr"), ("builtins", "__import__"),
                   ("subprocess", "Popen"), ("subprocess", "check_output"), ("importlib", "import_module"),
                   ("torch", "load"), ("numpy", "load"), ("pickle", "loads"), ("functools", "partial"),
                   ("torch._utils", "_rebuild_tensor"), ("numpy.testing._private.utils", "runstring")]


@pytest.mark.parametrize("module,name", HOSTILE_GLOBALS)
def test_refused_globals_run_nothing(tmp_path, module, name):
    marker = tmp_path / "pwned"
    payload = P.Call(P.Global(module, name), (f"touch {marker}",))
    path = tmp_path / "evil.pkl"
    path.write_bytes(P.dumps({"G_ema": payload}, 4))
    _load_fails(path, f"refused global {module}.{name}")
    assert not marker.exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_refused_globals_in_every_protocol(tmp_path, protocol):
    """Real pickle.dumps output: GLOBAL (text) and STACK_GLOBAL opcodes, memo, frames."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}, protocol=protocol))
    if protocol == 0:  # protocol 0 is not a network checkpoint format at all
        _load_fails(path, "not a generator checkpoint")
    else:
        _load_fails(path, r"refused global (posix|os)\.system")
    assert not marker.exists()


def test_hostile_global_inside_a_storage_blob(tmp_path, small_sd):
    marker = tmp_path / "pwned"
    sd, cfg = small_sd
    evil_blob = P.dumps(P.Call(P.Global("os", "system"), (f"touch {marker}",)), 2) + P.legacy_blob(np.zeros(4))

    def tensor(name, a, is_param):
        return P.torch_tensor(a, parameter=is_param, blob=evil_blob if name.endswith("b8.conv1.weight") else None)

    path = tmp_path / "evil.pkl"
    path.write_bytes(P.ada_pickle(sd, cfg, tensor=tensor))
    _load_fails(path, "refused global os.system")
    assert not marker.exists()


def test_module_source_is_never_executed(tmp_path, small_sd):
    """A valid generator whose embedded module source writes a file: it loads, and the file never appears."""
    marker = tmp_path / "pwned"
    sd, cfg = small_sd
    src = f"open({str(marker)!r}, 'w').write('executed')\nimport os\nos.system('touch {marker}')\n"
    path = tmp_path / "network.pkl"
    path.write_bytes(P.ada_pickle(sd, cfg, module_src=src))
    g = load_generator(path)
    assert g.img_resolution == 8
    assert not marker.exists()
    evil_only = tmp_path / "evil.pkl"
    evil_only.write_bytes(P.dumps({"G_ema": P.persistent("Evil", P.module_state({}, {}, {}), src)}, 4))
    _load_fails(evil_only, "'G_ema' is a Evil, not a Generator")
    assert not marker.exists()


@pytest.mark.parametrize("fraction", [0.0001, 0.3, 0.5, 0.9999])
def test_truncated_fixture(tmp_path, tiny_fixture_dir, fraction):
    data = (tiny_fixture_dir / "network-snapshot.pkl").read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: int(len(data) * fraction)])
    _load_fails(path, "truncated")


def test_trailing_garbage_is_refused(tmp_path, tiny_fixture_dir):
    path = tmp_path / "extra.pkl"
    path.write_bytes((tiny_fixture_dir / "network-snapshot.pkl").read_bytes() + b"junk")
    _load_fails(path, "unexpected bytes after the end")


def test_tensor_larger_than_its_storage(tmp_path, small_sd):
    sd, cfg = small_sd

    def tensor(name, a, is_param):
        if name.endswith("b8.conv1.weight"):
            return P.torch_tensor(a, parameter=is_param, size=(a.shape[0] + 1, *a.shape[1:]))
        return P.torch_tensor(a, parameter=is_param)

    path = tmp_path / "big-view.pkl"
    path.write_bytes(P.ada_pickle(sd, cfg, tensor=tensor))
    _load_fails(path, "reaches element .* but its storage holds")


@pytest.mark.parametrize("kind,match", [
    ("count", "data header says"),
    ("short", "needs .* bytes but .* are present"),
    ("huge_numel", "needs .* bytes but .* are present"),
    ("huge_numel_1e12", "needs .* bytes but .* are present"),
])
def test_storage_declarations_checked_against_bytes(tmp_path, small_sd, kind, match):
    sd, cfg = small_sd
    a = sd["synthesis.b8.conv1.weight"]
    blob = {
        "count": P.legacy_blob(a, count=a.size + 1),
        "short": P.legacy_blob(a, data=a.tobytes()[:-4]),
        "huge_numel": P.legacy_blob(a, numel=10 ** 8, count=10 ** 8),  # would be a 400 MB allocation
        "huge_numel_1e12": P.legacy_blob(a, numel=10 ** 12, count=10 ** 12),
    }[kind]

    def tensor(name, arr, is_param):
        return P.torch_tensor(arr, parameter=is_param, blob=blob if name == "synthesis.b8.conv1.weight" else None)

    path = tmp_path / f"{kind}.pkl"
    path.write_bytes(P.ada_pickle(sd, cfg, tensor=tensor))
    _load_fails(path, match)


def test_integer_storage_is_converted_to_float(tmp_path, small_sd):
    """Not an attack, but odd: an integer storage where floats belong loads with exactly converted values."""
    sd, cfg = small_sd
    a = sd["synthesis.b8.conv1.weight"]
    ints = np.arange(a.size, dtype=np.int64).reshape(a.shape)

    def tensor(name, arr, is_param):
        if name == "synthesis.b8.conv1.weight":
            return P.torch_tensor(arr, parameter=is_param, blob=P.legacy_blob(
                ints, data=ints.tobytes(), storage="LongStorage"))
        return P.torch_tensor(arr, parameter=is_param)

    path = tmp_path / "ints.pkl"
    path.write_bytes(P.ada_pickle(sd, cfg, tensor=tensor))
    g = load_generator(path)
    np.testing.assert_array_equal(g.synthesis.b8.conv1.weight.numpy(), ints.astype(np.float32))


@pytest.mark.parametrize("raw,match", [
    (b"\x80\x04\x8e" + struct.pack("<Q", 5 * 10 ** 8) + b"abc.", "truncated"),  # BINBYTES8 of 500 MB
    (b"\x80\x04\x8d" + struct.pack("<Q", 5 * 10 ** 8) + b"abc.", "truncated"),  # BINUNICODE8
    (b"\x80\x04\x95" + struct.pack("<Q", 10 ** 12) + b"N.", "declared frame"),
    (b"\x80\x04N\x94r" + struct.pack("<I", 2 ** 31) + b".", "memo index"),  # LONG_BINPUT 2**31
    (b"\x80\x02\x82\x01.", "EXT1"),
    (b"\x80\x02\x8b" + struct.pack("<i", 4 * 10 ** 8) + b"\x01.", "truncated"),  # LONG4
])
def test_huge_declared_sizes_allocate_nothing(tmp_path, raw, match):
    path = tmp_path / "huge.pkl"
    path.write_bytes(raw)
    _load_fails(path, match, max_peak=2 * MB)


def test_huge_numpy_array_declaration(tmp_path, small_sd):
    sd, cfg = small_sd
    own, mapping, synthesis = P.tf_variables(sd, cfg)
    empty = P.Call(P.Global("numpy.core.multiarray", "_reconstruct"), (P.Global("numpy", "ndarray"), (0,), b"b"))
    fake = P.Build(empty, (1, (10 ** 6, 10 ** 6), P.numpy_dtype("f4"), False, b"\x00" * 16))
    gs = P.tf_network("Gs", [], P.tf_static_kwargs(cfg), {
        "mapping": P.tf_network("G_mapping", mapping), "synthesis": P.tf_network("G_synthesis", synthesis)})
    gs.state["variables"] = [("dlatent_avg", fake)]
    path = tmp_path / "tf.pkl"
    path.write_bytes(P.dumps((gs, gs, gs), 3))
    _load_fails(path, "needs 4000000000000 bytes but 16 are present")


def test_numpy_object_arrays_are_refused(tmp_path, small_sd):
    sd, cfg = small_sd
    obj = P.Build(P.Call(P.Global("numpy.core.multiarray", "_reconstruct"), (P.Global("numpy", "ndarray"), (0,), b"b")),
                  (1, (1,), P.numpy_dtype("O8"), False, [P.Call(P.Global("os", "system"), ("true",))]))
    gs = P.tf_network("Gs", [], P.tf_static_kwargs(cfg))
    gs.state["variables"] = [("dlatent_avg", obj)]
    path = tmp_path / "tf.pkl"
    path.write_bytes(P.dumps((gs, gs, gs), 3))
    _load_fails(path, "refused numpy dtype 'O8'")


def test_deep_nesting_is_refused(tmp_path):
    node = P.persistent("FullyConnectedLayer", P.module_state({}, {}, {}))
    for _ in range(30):
        node = P.persistent("SynthesisBlock", P.module_state({}, {}, {"child": node}))
    path = tmp_path / "deep.pkl"
    path.write_bytes(P.dumps({"G_ema": P.persistent("Generator", P.module_state({}, {}, {"m": node}))}, 4))
    _load_fails(path, "nesting too deep")


def test_torch_save_files_are_refused(tmp_path):
    sd = {"w": torch.ones(3)}
    torch.save(sd, tmp_path / "zip.pt")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    _load_fails(tmp_path / "zip.pt", "zip archive")
    _load_fails(tmp_path / "legacy.pt", "legacy torch.save")


@pytest.mark.parametrize("content,match", [
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG image"),
    (np.random.RandomState(0).bytes(4096), "not a generator checkpoint"),
    (b"", "empty"),
    (b"just some text\n", "not a generator checkpoint"),
    (b'{"z_dim": 512}', "JSON file"),
    (b"\x80\x04K\x07.", "a pickle holding int"),
    (b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00}\x94.", "a pickle holding dict"),
])
def test_non_checkpoints(tmp_path, content, match):
    path = tmp_path / "file.pkl"
    path.write_bytes(content)
    _load_fails(path, match)


def test_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_generator(tmp_path)


def test_safetensors_config_cannot_force_a_big_allocation(tmp_path):
    """The config says 1024 px and 4096 channels; the tensors are tiny: refused before building anything."""
    import json

    g = random_generator(small_config(img_resolution=8), seed=41)
    big = dict(g.config.to_dict(), img_resolution=1024, channel_base=2 ** 22, channel_max=4096, w_dim=4096)
    path = tmp_path / "lie.safetensors"
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(path), metadata={"config": json.dumps(big)})
    msg = _load_fails(path, "do not match a StyleGAN2 generator", max_peak=4 * MB)
    assert "missing" in msg and "shape mismatches" in msg


@pytest.mark.parametrize("case,match", [
    ("bad_json", "not valid JSON"),
    ("unknown_key", "unknown generator config keys"),
    ("int_dtype", "expected floating point"),
    ("nan", "NaN or infinite"),
    ("corrupt_header", "corrupt safetensors|not a generator checkpoint"),
])
def test_broken_safetensors(tmp_path, case, match):
    import json

    g = random_generator(small_config(img_resolution=8), seed=42)
    tensors = {k: v.contiguous().clone() for k, v in g.state_dict().items()}
    meta = {"config": json.dumps(g.config.to_dict())}
    if case == "bad_json":
        meta["config"] = "{z_dim: 1"
    elif case == "unknown_key":
        meta["config"] = json.dumps(dict(g.config.to_dict(), exec="os.system('x')"))
    elif case == "int_dtype":
        tensors["mapping.w_avg"] = tensors["mapping.w_avg"].to(torch.int32)
    elif case == "nan":
        tensors["synthesis.b8.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "p.safetensors"
    save_file(tensors, str(path), metadata=meta)
    if case == "corrupt_header":
        data = bytearray(path.read_bytes())
        data[20:40] = b"\xff" * 20
        path.write_bytes(bytes(data))
    _load_fails(path, match)


def test_truncated_safetensors(tmp_path):
    g = random_generator(small_config(img_resolution=8), seed=43)
    from napari_brgm.priors import save_generator

    path = save_generator(g, tmp_path / "p.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    _load_fails(path, "corrupt safetensors")


def test_restricted_unpickler_allows_only_the_documented_globals():
    from napari_brgm.priors.unpickle import GLOBALS, Invalid, RestrictedUnpickler

    modules = {m for m, _ in GLOBALS}
    assert modules <= {"torch_utils.persistence", "torch._utils", "torch.storage", "collections", "builtins",
                       "dnnlib.util", "dnnlib", "dnnlib.tflib.network", "copyreg", "numpy", "numpy.core.multiarray",
                       "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"}
    assert ("builtins", "set") in GLOBALS and ("builtins", "eval") not in GLOBALS
    assert all(not getattr(v, "__module__", "napari_brgm").startswith(("os", "subprocess", "torch", "pickle"))
               for v in GLOBALS.values())
    with pytest.raises(Invalid, match=r"refused global (posix|os)\.system"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(os.system)), GLOBALS).load()


def test_repeated_references_cannot_blow_up_the_walk(tmp_path):
    """Memo references let a small file name the same big module many times; the walk has a budget."""
    params = {f"p{i}": P.Raw(b"h\x00") for i in range(200)}  # BINGET 0: the same (first memoised) object
    leaf = P.persistent("FullyConnectedLayer", P.module_state(params, {}, {}))
    body = P.dumps({"G_ema": P.persistent("Generator", P.module_state({}, {}, {f"m{i}": leaf for i in range(200)}))}, 4)
    # memoise a tensor-free placeholder first so that BINGET 0 resolves: MEMOIZE right after PROTO
    raw = b"\x80\x04N\x94" + b"0" + body[2:]  # push None, memoise as 0, pop it, then the real pickle
    path = tmp_path / "wide.pkl"
    path.write_bytes(raw)
    _load_fails(path, "too many modules or tensors")
