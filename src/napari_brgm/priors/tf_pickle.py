"""TF StyleGAN2 pickles (`(G, D, Gs)` of dnnlib Network objects): `Gs` → ADA-named state dict + hints.

Conversion rules as StyleGAN2-ADA's legacy converter (docs/priors.md): transposed dense and conv
weights, Conv0_up flipped spatially, mod_bias + 1, noise{k} constants, dlatent_avg → w_avg.
"""

from __future__ import annotations

import math
import re

import numpy as np

from napari_brgm.priors.unpickle import Invalid, TFNetwork, unwrap_array

_MAX_DEPTH = 4
_MAX_VARIABLES = 5_000  # a 1024 px TF generator has ~300
_LAYER = {"Conv0_up": "conv0", "Conv1": "conv1", "ToRGB": "torgb"}
_PARAM = {"weight": "weight", "bias": "bias", "noise_strength": "noise_strength", "mod_weight": "affine.weight",
          "mod_bias": "affine.bias"}


def is_tf(top) -> bool:
    return isinstance(top, TFNetwork) or (isinstance(top, tuple) and any(isinstance(v, TFNetwork) for v in top))


def _gs(top) -> TFNetwork:
    if isinstance(top, tuple):
        if len(top) != 3 or not isinstance(top[2], TFNetwork):
            raise Invalid("TF pickle is not the tuple (G, D, Gs)")
        return top[2]
    return top


def _collect(net: TFNetwork, prefix: str, out: dict, kwargs: dict, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise Invalid("TF network nesting too deep")
    state = net.state
    if not isinstance(state, dict):
        raise Invalid("TF Network without state")
    sk = state.get("static_kwargs") or {}
    if not isinstance(sk, dict):
        raise Invalid("malformed TF static_kwargs")
    for k, v in sk.items():
        kwargs.setdefault(k, v)
    variables = state.get("variables") or []
    if not isinstance(variables, list):
        raise Invalid("malformed TF variables list")
    if len(out) + len(variables) > _MAX_VARIABLES:
        raise Invalid("too many TF variables for a StyleGAN2 generator")
    for item in variables:
        if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str):
            raise Invalid("malformed TF variable entry")
        out[prefix + item[0]] = unwrap_array(item[1])
    components = state.get("components") or {}
    if not isinstance(components, dict):
        raise Invalid("malformed TF components")
    for name, comp in components.items():
        if not isinstance(name, str) or not isinstance(comp, TFNetwork):
            raise Invalid(f"TF component {name!r} is not a Network")
        _collect(comp, f"{prefix}{name}/", out, kwargs, depth + 1)


def _convert(tf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    noise: dict[int, np.ndarray] = {}
    for name, v in tf.items():
        m = re.fullmatch(r"mapping/Dense(\d+)/(weight|bias)", name)
        if name == "dlatent_avg":
            out["mapping.w_avg"] = v
        elif m:
            out[f"mapping.fc{int(m[1])}.{m[2]}"] = v.T if m[2] == "weight" else v
        elif name == "synthesis/4x4/Const/const":
            if v.ndim != 4 or v.shape[0] != 1:
                raise Invalid(f"TF const has shape {v.shape}")
            out["synthesis.b4.const"] = v[0]
        elif name == "synthesis/lod":
            continue
        elif m := re.fullmatch(r"synthesis/noise(\d+)", name):
            if v.ndim != 4 or v.shape[:2] != (1, 1):
                raise Invalid(f"TF {name} has shape {v.shape}")
            noise[int(m[1])] = v[0, 0]
        elif m := re.fullmatch(r"synthesis/(\d+)x\1/(Conv|Conv0_up|Conv1|ToRGB)/(\w+)", name):
            res, layer, param = int(m[1]), m[2], m[3]
            if layer == "Conv" and res != 4 or layer != "Conv" and res == 4 and layer != "ToRGB" \
                    or param not in _PARAM or layer == "ToRGB" and param == "noise_strength":
                raise Invalid(f"unsupported TF variable {name}")
            key = f"synthesis.b{res}.{_LAYER.get(layer, 'conv1')}.{_PARAM[param]}"
            if param == "weight":
                if v.ndim != 4:
                    raise Invalid(f"TF {name} has shape {v.shape}")
                v = (v[::-1, ::-1] if layer == "Conv0_up" else v).transpose(3, 2, 0, 1)
            elif param == "mod_weight":
                v = v.T
            elif param == "mod_bias":
                v = v + 1
            out[key] = v
        else:
            raise Invalid(f"unsupported TF variable {name} (only the StyleGAN2 skip generator without labels is)")
    resolutions = sorted({int(k.split(".")[1][1:]) for k in out if k.startswith("synthesis.b")})
    for res in resolutions:
        k = int(math.log2(res)) * 2
        for layer, idx in (("conv0", k - 5), ("conv1", k - 4)):
            if res == 4 and layer == "conv0":
                continue
            if idx in noise:
                out[f"synthesis.b{res}.{layer}.noise_const"] = noise.pop(idx)
    if noise:
        raise Invalid(f"TF noise inputs {sorted(noise)} do not match the synthesis layers")
    return {k: np.asarray(v, dtype=np.float32, order="C") for k, v in out.items()}


def _hints(kw: dict) -> dict:
    if kw.get("label_size", 0):
        raise Invalid(f"class-conditional generators (label_size={kw.get('label_size')}) are not supported")
    for key, ok in (("architecture", "skip"), ("nonlinearity", "lrelu"), ("mapping_nonlinearity", "lrelu")):
        if kw.get(key, ok) != ok:
            raise Invalid(f"TF generator with {key}={kw.get(key)!r} is not supported (only {ok!r})")
    if list(kw.get("resample_kernel", [1, 3, 3, 1])) != [1, 3, 3, 1]:
        raise Invalid(f"TF generator with resample_kernel={kw.get('resample_kernel')!r} is not supported")
    hints = {"conv_clamp": None, "mapping_lr_multiplier": kw.get("mapping_lrmul", 0.01)}
    if isinstance(kw.get("fmap_base"), int):
        hints["channel_base"] = 2 * kw["fmap_base"]
    if isinstance(kw.get("fmap_max"), int):
        hints["channel_max"] = kw["fmap_max"]
    return hints


def read_tf(top) -> tuple[dict, dict[str, np.ndarray]]:
    """(config hints, ADA-named float32 arrays) of the pickle's Gs; resample_filter buffers are absent."""
    gs = _gs(top)
    tf: dict[str, np.ndarray] = {}
    kwargs: dict = {}
    _collect(gs, "", tf, kwargs, 0)
    return _hints(kwargs), _convert(tf)
