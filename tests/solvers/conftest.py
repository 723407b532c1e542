"""The tiny real StyleGAN2-ADA network (32 px, 1 channel, random weights) as the engine's prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.priors import load_generator


@pytest.fixture(scope="session")
def tiny_prior(tiny_fixture_dir):
    return str(tiny_fixture_dir / "network-snapshot.pkl")


@pytest.fixture(scope="session")
def tiny_generator(tiny_prior):
    return load_generator(tiny_prior)


@pytest.fixture(scope="session")
def truth(tiny_generator):
    """A known latent and its image: w_true = mapping(z) for a fixed z, x_true = G(w_true) [1, 1, 32, 32]."""
    z = torch.randn(1, tiny_generator.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ws = tiny_generator.mapping(z)
        return ws, tiny_generator.synthesis(ws, noise_mode="const")


@pytest.fixture
def half_mask():
    """32×32, left half missing (nonzero = MISSING)."""
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, :16] = 1
    return mask
