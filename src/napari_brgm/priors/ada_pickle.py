"""StyleGAN2-ADA network pickles (`network-snapshot-*.pkl`): `G_ema` → state dict + config hints.

The pickle is read by `unpickle.load_pickle` (allow-listed globals, module source never run); here
the persistent-object tree is walked the way `Module.state_dict()` walks modules.
"""

from __future__ import annotations

from napari_brgm.priors.unpickle import Invalid, LazyTensor, PersistentObject

_MAX_DEPTH = 12
_MAX_ENTRIES = 20_000  # a 1024 px generator has ~100 modules and ~250 tensors; memo references could repeat more


def is_ada(top) -> bool:
    return isinstance(top, PersistentObject) or (isinstance(top, dict) and any(
        isinstance(v, PersistentObject) for v in top.values()))


def _generator(top) -> PersistentObject:
    if isinstance(top, dict):
        g = top.get("G_ema")
        if g is None:
            raise Invalid(f"network pickle has no 'G_ema' (keys: {sorted(map(str, top))})")
    else:
        g = top
    if not isinstance(g, PersistentObject) or g.class_name != "Generator":
        raise Invalid(f"'G_ema' is a {getattr(g, 'class_name', type(g).__name__)}, not a Generator")
    return g


def _walk(obj: PersistentObject, prefix: str, out: dict, depth: int, budget: list[int]) -> None:
    if depth > _MAX_DEPTH:
        raise Invalid("module nesting too deep")
    state = obj.state
    params, buffers = state.get("_parameters", {}), state.get("_buffers", {})
    skip = state.get("_non_persistent_buffers_set", set())
    modules = state.get("_modules", {})
    if not all(isinstance(d, dict) for d in (params, buffers, modules)) or not isinstance(skip, set):
        raise Invalid(f"module {prefix or 'G_ema'} has a malformed state")
    budget[0] -= 1 + len(params) + len(buffers) + len(modules)
    if budget[0] < 0:
        raise Invalid("too many modules or tensors for a StyleGAN2 generator")
    for name, t in list(params.items()) + [(n, b) for n, b in buffers.items() if n not in skip]:
        if t is None:
            continue
        if not isinstance(name, str) or not isinstance(t, LazyTensor):
            raise Invalid(f"{prefix}{name} is not a tensor")
        out[prefix + name] = t
    for name, child in modules.items():
        if child is None:
            continue
        if not isinstance(name, str) or not isinstance(child, PersistentObject):
            raise Invalid(f"submodule {prefix}{name} is not a persistent network module")
        _walk(child, f"{prefix}{name}.", out, depth + 1, budget)


def _hints(g: PersistentObject) -> dict:
    """Config values not visible in the shapes, from the Generator's `_init_kwargs`; refuse unsupported variants."""
    kw = g.state.get("_init_kwargs") or {}
    if not isinstance(kw, dict):
        raise Invalid("malformed Generator _init_kwargs")
    mk = kw.get("mapping_kwargs") or {}
    sk = kw.get("synthesis_kwargs") or {}
    if not isinstance(mk, dict) or not isinstance(sk, dict):
        raise Invalid("malformed Generator mapping/synthesis kwargs")
    if kw.get("c_dim", 0):
        raise Invalid(f"class-conditional generators (c_dim={kw.get('c_dim')}) are not supported")
    unsupported = {
        "architecture": (sk.get("architecture", "skip"), "skip"),
        "resample_filter": (list(sk.get("resample_filter", [1, 3, 3, 1])), [1, 3, 3, 1]),
        "use_noise": (sk.get("use_noise", True), True),
        "activation": (sk.get("activation", "lrelu"), "lrelu"),
        "mapping activation": (mk.get("activation", "lrelu"), "lrelu"),
    }
    for what, (value, ok) in unsupported.items():
        if value != ok:
            raise Invalid(f"generator with {what}={value!r} is not supported (only {ok!r})")
    hints = {
        "z_dim": kw.get("z_dim"), "w_dim": kw.get("w_dim"), "img_resolution": kw.get("img_resolution"),
        "img_channels": kw.get("img_channels"), "mapping_layers": mk.get("num_layers"),
        "channel_base": sk.get("channel_base", 32768), "channel_max": sk.get("channel_max", 512),
        "conv_clamp": sk.get("conv_clamp"), "mapping_lr_multiplier": mk.get("lr_multiplier", 0.01),
        "num_fp16_res": sk.get("num_fp16_res", 0),
    }
    return {k: v for k, v in hints.items() if v is not None or k == "conv_clamp"}


def read_ada(top) -> tuple[dict, dict[str, LazyTensor]]:
    """(config hints, ADA-named lazy tensors) of the pickle's G_ema."""
    g = _generator(top)
    tensors: dict[str, LazyTensor] = {}
    _walk(g, "", tensors, 0, [_MAX_ENTRIES])
    return _hints(g), tensors
