"""The tiny 32 px diffusion and flow priors the tests run (random weights, seeded), written to safetensors files."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_diffusion_file(folder: Path, name: str = "tiny-diffusion.safetensors") -> Path:
    """A 2-level MONAI diffusion U-Net (widths 8, 16), seed 0."""
    from napari_brgm.priors.diffusion import DiffusionConfig, DiffusionPrior, save_diffusion

    torch.manual_seed(0)
    model = DiffusionPrior(DiffusionConfig(resolution=32, widths=(8, 16), attention=(False, False), norm_groups=4,
                                           head_channels=8))
    return Path(save_diffusion(model, Path(folder) / name))


def tiny_flow_file(folder: Path, image: torch.Tensor | None = None, name: str = "tiny-flow.safetensors") -> Path:
    """A 2-level Glow, seed 0, its actnorm initialised on 4 noisy copies of `image` [1, 1, 32, 32] (else on noise)."""
    from napari_brgm.priors.glow import Glow, GlowConfig, save_flow

    torch.manual_seed(0)
    flow = Glow(GlowConfig(resolution=32, levels=2, steps_per_level=2, hidden=8, hidden_max=16))
    with torch.no_grad():  # data-dependent actnorm init
        flow(0.5 * torch.randn(4, 1, 32, 32) if image is None else image.repeat(4, 1, 1, 1) + 0.1 * torch.randn(4, 1, 32, 32))
    return Path(save_flow(flow, Path(folder) / name))
