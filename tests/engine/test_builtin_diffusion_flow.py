"""The built-in diffusion and flow priors: installed, chosen by default for their methods, and better
than the pseudo-inverse on a real brain slice."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brgm import reconstruct
from napari_brgm.engine.metrics import psnr
from napari_brgm.operators import make_operator
from napari_brgm.priors import builtin_priors, default_prior, load_prior, prior_kind

pytestmark = pytest.mark.usefixtures("one_thread")
BUILTIN = {"diffusion": "brain-t1-64-ddpm", "flow": "brain-t1-64-glow"}
GAIN_MIN = 1.0  # dB over the pseudo-inverse (box-upsampled) start, ×4 SR of a training-head slice


@pytest.fixture(scope="module")
def brain_slice():
    """A middle slice of the brain sample (a Colin27 slab, a training head), prepared like training data."""
    import torch

    from napari_brgm.io.samples import BRAIN_T1, sample_path
    from napari_brgm.training.data import load_slices

    slices = load_slices([sample_path(BRAIN_T1)], 64)
    x = slices.images[len(slices) // 2, 0].numpy()
    low = make_operator("superres", factor=4).forward(torch.from_numpy(x)[None, None])[0, 0].numpy()
    return x, low


@pytest.mark.parametrize("kind", BUILTIN)
def test_builtin_prior_is_installed_and_is_the_default_of_its_kind(kind):
    name = BUILTIN[kind]
    assert name in builtin_priors() and prior_kind(name) == kind and default_prior(kind) == name
    model = load_prior(name)
    assert (model.img_resolution, model.img_channels) == (64, 1)


@pytest.mark.parametrize(("method", "options"), [("reddiff", dict(steps=60, samples=2)),
                                                 ("flow", dict(steps=150, samples=2, flow_langevin_steps=5))])
def test_builtin_prior_beats_the_pseudo_inverse_on_a_real_slice(brain_slice, method, options):
    x, low = brain_slice
    start = np.kron(low, np.ones((4, 4), np.float32))  # A⁺y of the box downsampling: each pixel repeated
    r = reconstruct(low, task="superres", factor=4, method=method, seed=0, **options)
    assert r.settings["prior"] is None and r.mean.shape == (64, 64)
    gain = psnr(r.mean, x) - psnr(start, x)
    assert gain > GAIN_MIN, gain
