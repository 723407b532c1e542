"""Our safetensors format for every prior kind, and which kind a file holds.

A prior file is safetensors weights with string metadata: `format` ("napari-brgm/stylegan2",
"napari-brgm/diffusion", "napari-brgm/flow"), `format_version` and `config` (JSON). StyleGAN2
network pickles (ADA or TF) are always "stylegan2". Nothing here executes code from a file; the
tensors are checked against the shapes the config's model declares before they are used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from napari_brgm.io.atomic import write_atomically
from napari_brgm.priors.errors import CheckpointError

KINDS = ("stylegan2", "diffusion", "flow")
_FORMAT_PREFIX = "napari-brgm/"
MAX_RESOLUTION = 4096
"""Largest image side a prior file may declare (a config is checked before any model is built)."""
_EXTRA_ELEMENTS = 1 << 24  # buffers a model may build beyond the tensors its file holds (schedules, masks)


class ConfiguredImageSize:
    """`img_resolution` / `img_channels` (what the engine reads from every prior) from `config.resolution` / `.channels`."""

    @property
    def img_resolution(self) -> int:
        return self.config.resolution

    @property
    def img_channels(self) -> int:
        return self.config.channels


def prior_kind(path) -> str:
    """"stylegan2", "diffusion" or "flow" — from the safetensors metadata; pickles are StyleGAN2."""
    from napari_brgm.priors.builtin import resolve_prior
    from napari_brgm.priors.loading import sniff

    path = resolve_prior(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if sniff(head, path.stat().st_size) != "safetensors":
        return "stylegan2"  # pickles (and files the StyleGAN2 loader will refuse with its own message)
    meta = _metadata(path)
    fmt = meta.get("format", _FORMAT_PREFIX + "stylegan2")
    kind = fmt[len(_FORMAT_PREFIX):] if fmt.startswith(_FORMAT_PREFIX) else None
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown prior format {fmt!r} (known: {', '.join(_FORMAT_PREFIX + k for k in KINDS)})")
    return kind


def _metadata(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from None


def save_model(path, kind: str, version: str, config: dict, module: torch.nn.Module, extra: dict | None = None,
               dtype: torch.dtype = torch.float32) -> Path:
    """Write `module`'s state dict with `config` in the metadata, atomically.

    dtype float16 halves the file (the built-in priors ship so); loading always gives float32.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", dtype).contiguous().clone() for k, v in module.state_dict().items()}
    metadata = {"format": _FORMAT_PREFIX + kind, "format_version": version, "config": json.dumps(config)}
    metadata |= {k: json.dumps(v) for k, v in (extra or {}).items()}
    return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_model(path, kind: str, build, device="cpu") -> tuple[torch.nn.Module, dict]:
    """A frozen eval-mode module of `kind` from `path` (a file or a built-in name), and the metadata.

    `build(config: dict) -> module` makes the empty model; its state dict's keys and shapes must be
    exactly those in the file (checked before any tensor is read). Every problem is a CheckpointError.
    """
    from safetensors import SafetensorError, safe_open

    from napari_brgm.priors.builtin import resolve_prior

    path = resolve_prior(path)
    found = prior_kind(path)
    if found != kind:
        raise CheckpointError(f"{path}: a {found} prior, not a {kind} prior")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            try:
                config = json.loads(meta["config"])
                resolution = config.get("resolution") if isinstance(config, dict) else None
                if isinstance(resolution, int) and resolution > MAX_RESOLUTION:
                    raise ValueError(f"resolution {resolution} is above the {MAX_RESOLUTION} px napari-brgm accepts")
                # the shapes the config implies, from a model on the meta device: nothing is allocated, so a
                # config declaring a huge model cannot cost memory before it is checked against the file
                with torch.device("meta"):
                    skeleton = build(config)
            except (KeyError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
                raise CheckpointError(f"{path}: invalid {kind} config ({type(e).__name__}: {e})") from None
            expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
            present = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            if expected != present:
                missing, unexpected = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
                wrong = sorted(k for k in set(expected) & set(present) if expected[k] != present[k])
                raise CheckpointError(f"{path}: weights do not match the {kind} config (missing {missing[:3]}, "
                                      f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
            in_file = sum(math.prod(s) for s in present.values())
            built = sum(t.numel() for t in list(skeleton.parameters()) + list(skeleton.buffers()))
            if built > in_file + _EXTRA_ELEMENTS:
                raise CheckpointError(f"{path}: the {kind} config builds {built:,} values, far more than the "
                                      f"{in_file:,} the file holds")
            del skeleton
            for k in present:
                if f.get_slice(k).get_dtype() not in ("F32", "F16", "BF16", "F64"):
                    raise CheckpointError(f"{path}: {k} is not floating point")
            module = build(config)
            state = {k: f.get_tensor(k).to(torch.float32) for k in present}
    except SafetensorError as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from None
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise CheckpointError(f"{path}: weights are not finite")
    module.load_state_dict(state, strict=True)
    return module.to(device).eval().requires_grad_(False), meta


def load_prior(path, device="cpu") -> torch.nn.Module:
    """Any prior, by its kind: a StyleGAN2 `Generator`, a `DiffusionPrior` or a `Glow` flow (frozen, eval mode)."""
    kind = prior_kind(path)
    if kind == "diffusion":
        from napari_brgm.priors.diffusion import load_diffusion

        return load_diffusion(path, device)
    if kind == "flow":
        from napari_brgm.priors.glow import load_flow

        return load_flow(path, device)
    from napari_brgm.priors.loading import load_generator

    return load_generator(path, device)
