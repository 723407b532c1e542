"""Shared helpers for the prior tests: small random generators with no trivially-zero term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.priors import Generator, GeneratorConfig


def small_config(**kw) -> GeneratorConfig:
    base = dict(z_dim=16, w_dim=24, img_resolution=32, img_channels=1, mapping_layers=2, channel_base=512,
                channel_max=32)
    base.update(kw)
    return GeneratorConfig(**base)


def random_generator(cfg: GeneratorConfig, seed: int = 0) -> Generator:
    """Random weights, then biases, noise strengths, noise constants and w_avg perturbed to non-zero values."""
    torch.manual_seed(seed)
    g = Generator(cfg)
    with torch.no_grad():
        for name, t in g.state_dict().items():
            if name.endswith(("bias", "noise_strength", "w_avg")):
                t.add_(torch.randn_like(t) * 0.3)
    return g.eval().requires_grad_(False)


def state_arrays(g: Generator) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in g.state_dict().items()}


# Configurations beyond the shared fixture: RGB, conv_clamp 256, deeper mapping, larger resolutions.
CONFIGS = {
    "rgb64_clamp256_map4": small_config(img_resolution=64, img_channels=3, mapping_layers=4, channel_base=1024,
                                        channel_max=32, conv_clamp=256.0),
    "gray128_map8": small_config(img_resolution=128, mapping_layers=8, z_dim=32, w_dim=32, channel_base=1024,
                                 channel_max=16),
    "rgb16_wide": small_config(img_resolution=16, img_channels=3, channel_base=2048, channel_max=64, z_dim=8),
    "gray4_minimal": small_config(img_resolution=4, channel_base=64, channel_max=8, mapping_layers=1),
}


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """These tests use tiny tensors: one thread avoids OpenMP stalls when other jobs load the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=sorted(CONFIGS))
def config_name(request) -> str:
    return request.param
