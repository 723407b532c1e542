"""Shared test fixtures: the shared reference material beside the checkout, and the tiny prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINY_DIR = SHARED / "fixtures" / "stylegan2-ada-tiny"


@pytest.fixture
def one_thread():
    """Tests on tiny tensors: one torch thread avoids OpenMP stalls when other jobs load the CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_fixture_dir() -> Path:
    """The official StyleGAN2-ADA tiny network pickle and its reference outputs."""
    if not TINY_DIR.is_dir():
        pytest.fail(f"shared fixture folder missing: {TINY_DIR} (CI places ../shared beside the checkout)")
    return TINY_DIR


@pytest.fixture(scope="session")
def tiny_prior(tiny_fixture_dir):
    return str(tiny_fixture_dir / "network-snapshot.pkl")


@pytest.fixture(scope="session")
def tiny_generator(tiny_prior):
    from napari_brgm.priors import load_generator

    return load_generator(tiny_prior)


@pytest.fixture(scope="session")
def truth(tiny_generator):
    """A known latent and its image: w_true = mapping(z) for a fixed z, x_true = G(w_true) [1, 1, 32, 32]."""
    import torch

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
