"""Load generators from StyleGAN2-ADA pickles, TF StyleGAN2 pickles and our safetensors format; save ours.

The format is detected from the content, never the extension. Every problem becomes a
`CheckpointError` naming the file and the reason. Nothing is allocated before the declared
shapes have been checked against the generator the config describes (`GeneratorConfig.state_shapes`)
and against the bytes actually present in the file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from napari_brgm.io.atomic import write_atomically
from napari_brgm.priors.errors import CheckpointError
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig, _setup_filter
from napari_brgm.priors.unpickle import Invalid, load_pickle
from napari_brgm.priors.wstats import WStats

FORMAT_NAME = "napari-brgm/stylegan2"
FORMAT_VERSION = "1"
_WSTATS_KEYS = ("w_stats.mean", "w_stats.std_per_dim", "w_stats.std")
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


# ----------------------------------------------------------------------------------- detection


def sniff(head: bytes, size: int) -> str:
    """What the first bytes say the file is: pickle, safetensors, or something we refuse."""
    if size == 0:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head.lstrip()[:1] == b"{":
        return "json"
    return "unknown"


_REFUSED = {
    "empty": "the file is empty",
    "zip": "a zip archive (a torch.save checkpoint?): torch.save files can run code when loaded and are not read; "
           "use a StyleGAN2-ADA/TF network pickle or a napari-brgm .safetensors file",
    "torch-legacy": "a legacy torch.save file: these can run code when loaded and are not read; "
                    "use a StyleGAN2-ADA/TF network pickle or a napari-brgm .safetensors file",
    "png": "a PNG image, not a generator checkpoint",
    "json": "a JSON file; pass the .safetensors weights it describes",
    "unknown": "not a generator checkpoint (neither a network pickle nor a safetensors file)",
}


# ------------------------------------------------------------------------------------- config


def _channel_params(chans: dict[int, int], resolution: int, hints: dict) -> tuple[int, int]:
    """(channel_base, channel_max) reproducing the per-resolution channel counts; the hints when they fit."""
    def fits(base: int, cmax: int) -> bool:
        return base >= resolution and all(min(base // r, cmax) == c for r, c in chans.items())

    base, cmax = hints.get("channel_base"), hints.get("channel_max")
    if isinstance(base, int) and isinstance(cmax, int) and fits(base, cmax):
        return base, cmax
    cmax = max(chans.values())
    base = max(c * r if c < cmax else cmax * r for r, c in chans.items())  # smallest base meeting every bound
    if fits(base, cmax):
        return base, cmax
    raise Invalid(f"channel counts {dict(sorted(chans.items()))} do not follow min(channel_base // r, channel_max)")


def infer_config(shapes: dict[str, tuple[int, ...]], hints: dict) -> GeneratorConfig:
    """Generator config from ADA-named tensor shapes; values the shapes cannot show come from `hints`."""
    def shape(name: str, ndim: int) -> tuple[int, ...]:
        s = shapes.get(name)
        if s is None or len(s) != ndim:
            raise Invalid(f"not a StyleGAN2 generator: {name} {'missing' if s is None else f'has shape {list(s)}'}")
        return s

    if any(k.startswith("synthesis.input") or ".L0_" in k for k in shapes):
        raise Invalid("StyleGAN3 generators are not supported (only StyleGAN2)")
    w_dim = shape("mapping.w_avg", 1)[0]
    z_dim = shape("mapping.fc0.weight", 2)[1]
    layers = 0
    while f"mapping.fc{layers}.weight" in shapes:
        layers += 1
    res = sorted(int(k.split(".")[1][1:]) for k in shapes
                 if k.startswith("synthesis.b") and k.endswith(".conv1.weight"))
    if not res or res[0] != 4 or any(b != 2 * a for a, b in zip(res, res[1:])):
        raise Invalid(f"synthesis blocks {res} are not 4, 8, ... up to a power of two")
    chans = {r: shape(f"synthesis.b{r}.conv1.weight", 4)[0] for r in res}
    img_channels = shape("synthesis.b4.torgb.weight", 4)[0]
    base, cmax = _channel_params(chans, res[-1], hints)
    try:
        return GeneratorConfig(
            z_dim=z_dim, w_dim=w_dim, img_resolution=res[-1], img_channels=img_channels, mapping_layers=layers,
            channel_base=base, channel_max=cmax, conv_clamp=hints.get("conv_clamp"),
            mapping_lr_multiplier=float(hints.get("mapping_lr_multiplier", 0.01)),
            num_fp16_res=int(hints.get("num_fp16_res", 0)))
    except (ValueError, TypeError) as e:
        raise Invalid(str(e)) from None


def check_shapes(config: GeneratorConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    expected = config.state_shapes()
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if tuple(shapes[k]) != expected[k])
    problems = []
    if missing:
        problems.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatches, e.g. {k} is {list(shapes[k])} but the config needs "
                        f"{list(expected[k])}")
    if problems:
        raise Invalid("tensors do not match a StyleGAN2 generator with config "
                      f"{config.to_dict()}: " + "; ".join(problems))


def build_generator(config: GeneratorConfig, tensors: dict[str, torch.Tensor], device="cpu") -> Generator:
    """Generator on `device` holding exactly `tensors` (checked: names, shapes, finiteness), frozen, eval."""
    check_shapes(config, {k: tuple(v.shape) for k, v in tensors.items()})
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise Invalid(f"{k} holds NaN or infinite values")
    g = Generator(config)
    g.load_state_dict(tensors, strict=True, assign=True)
    return g.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------- readers


def _from_pickle(path: Path, size: int) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    from napari_brgm.priors.ada_pickle import is_ada, read_ada
    from napari_brgm.priors.tf_pickle import is_tf, read_tf

    with open(path, "rb") as f:
        top = load_pickle(f, size)
    if is_ada(top):
        hints, lazy = read_ada(top)
        del top  # frees G and D; only G_ema's storages stay referenced
        shapes = {k: t.shape for k, t in lazy.items()}
        config = infer_config(shapes, hints)
        check_shapes(config, shapes)
        arrays = {}
        for k in list(lazy):  # copy tensor by tensor, releasing each storage blob after use
            arrays[k] = lazy.pop(k).numpy()
    elif is_tf(top):
        hints, arrays = read_tf(top)
        del top
        config = infer_config({k: v.shape for k, v in arrays.items()}, hints)
        for k in config.state_shapes():  # TF has no FIR buffers: StyleGAN2's fixed [1, 3, 3, 1] filter
            if k.endswith("resample_filter") and k not in arrays:
                arrays[k] = _setup_filter().numpy()
    else:
        raise Invalid(f"a pickle holding {type(top).__name__}, not a StyleGAN2-ADA network (dict with 'G_ema') "
                      "or a TF StyleGAN2 (G, D, Gs) tuple")
    return config, {k: torch.from_numpy(np.asarray(v, dtype=np.float32, order="C")) for k, v in arrays.items()}


def _sidecar_config(path: Path) -> dict | None:
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    if side.stat().st_size > 1 << 20:
        raise Invalid(f"config file {side.name} is larger than 1 MB")
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Invalid(f"config file {side.name} is not valid JSON ({e})") from None


def _from_safetensors(path: Path) -> tuple[GeneratorConfig, dict[str, torch.Tensor], WStats | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            fmt = meta.get("format", FORMAT_NAME)
            if fmt != FORMAT_NAME:
                raise Invalid(f"a {fmt.rsplit('/', 1)[-1]} prior, not a StyleGAN2 generator "
                              f"(methods 'reddiff' and 'flow' use diffusion and flow priors)")
            if "config" in meta:
                try:
                    raw = json.loads(meta["config"])
                except json.JSONDecodeError as e:
                    raise Invalid(f"config in the safetensors metadata is not valid JSON ({e})") from None
            else:
                raw = _sidecar_config(path)
                if raw is None:
                    raise Invalid(f"safetensors file without a generator config (no 'config' metadata and no "
                                  f"{path.with_suffix('.json').name} beside it)")
            try:
                config = GeneratorConfig.from_dict(raw)
            except (ValueError, TypeError) as e:
                raise Invalid(str(e)) from None
            keys = list(f.keys())
            weights = [k for k in keys if k not in _WSTATS_KEYS]
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
            for k in keys:
                if f.get_slice(k).get_dtype() not in ("F32", "F16", "BF16", "F64"):
                    raise Invalid(f"{k} has dtype {f.get_slice(k).get_dtype()}, expected floating point")
            check_shapes(config, {k: shapes[k] for k in weights})
            tensors = {k: f.get_tensor(k).to(torch.float32) for k in weights}
            stats = None
            if all(k in keys for k in _WSTATS_KEYS):
                if shapes["w_stats.mean"] != (config.w_dim,) or shapes["w_stats.std_per_dim"] != (config.w_dim,) \
                        or shapes["w_stats.std"] != ():
                    raise Invalid("stored W statistics have the wrong shapes")
                info = json.loads(meta.get("w_stats", "{}"))
                stats = WStats(mean=f.get_tensor("w_stats.mean").float(), std=float(f.get_tensor("w_stats.std")),
                               std_per_dim=f.get_tensor("w_stats.std_per_dim").float(),
                               num_samples=int(info.get("num_samples", 10_000)), seed=int(info.get("seed", 123)))
                if not (np.isfinite(stats.std) and stats.std > 0 and bool(torch.isfinite(stats.mean).all())):
                    raise Invalid("stored W statistics are not finite")
            elif any(k in keys for k in _WSTATS_KEYS):
                raise Invalid("incomplete W statistics in the file")
    except SafetensorError as e:
        raise Invalid(f"corrupt safetensors file ({e})") from None
    return config, tensors, stats


def read_checkpoint(path) -> tuple[GeneratorConfig, dict[str, torch.Tensor], WStats | None, str]:
    """(config, state dict, stored W stats or None, format name) of any accepted checkpoint file."""
    path = Path(path)
    try:
        if not path.is_file():
            raise Invalid("no such file" if not path.exists() else "not a regular file")
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
        kind = sniff(head, size)
        if kind in _REFUSED:
            raise Invalid(_REFUSED[kind])
        if kind == "safetensors":
            config, tensors, stats = _from_safetensors(path)
            return config, tensors, stats, "safetensors"
        config, tensors = _from_pickle(path, size)
        return config, tensors, None, "pickle"
    except CheckpointError:
        raise
    except Invalid as e:
        raise CheckpointError(f"{path}: {e}") from None
    except MemoryError:
        raise CheckpointError(f"{path}: not a valid checkpoint (declares more data than memory allows)") from None
    except Exception as e:  # anything else going wrong while parsing untrusted bytes means: invalid file
        raise CheckpointError(f"{path}: not a valid checkpoint ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------- public


def load_generator(path, device="cpu") -> Generator:
    """A frozen, eval-mode Generator from an ADA/TF network pickle, our .safetensors, or a built-in name."""
    from napari_brgm.priors.builtin import resolve_prior

    config, tensors, stats, _kind = read_checkpoint(resolve_prior(path))
    try:
        g = build_generator(config, tensors, device)
    except Invalid as e:
        raise CheckpointError(f"{path}: {e}") from None
    if stats is not None:
        g.w_stats = stats
    return g


def save_generator(generator: Generator, path) -> Path:
    """Write `generator` as our format: safetensors weights + config and W statistics in the metadata."""
    from safetensors.torch import save_file

    stats = generator.w_stats
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in generator.state_dict().items()}
    tensors["w_stats.mean"] = stats.mean.detach().to("cpu", torch.float32).contiguous()
    tensors["w_stats.std_per_dim"] = stats.std_per_dim.detach().to("cpu", torch.float32).contiguous()
    tensors["w_stats.std"] = torch.tensor(float(stats.std), dtype=torch.float32)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(generator.config.to_dict()),
        "w_stats": json.dumps({"num_samples": stats.num_samples, "seed": stats.seed, "std": float(stats.std)}),
    }
    return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
