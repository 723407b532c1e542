"""The diffusion prior: MONAI denoiser + schedule, our safetensors format, kind detection."""

from __future__ import annotations

import pytest
import torch

from napari_brgm.priors import CheckpointError, load_generator, load_prior, prior_kind
from napari_brgm.priors.diffusion import DiffusionConfig, DiffusionPrior, load_diffusion, save_diffusion

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(resolution=16, widths=(8, 16), attention=(False, True), norm_groups=4, head_channels=8)


@pytest.fixture
def tiny_diffusion(tmp_path):
    torch.manual_seed(0)
    model = DiffusionPrior(DiffusionConfig(**TINY))
    with torch.no_grad():  # MONAI zero-initialises the output convolution: make the denoiser non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, save_diffusion(model, tmp_path / "d.safetensors")


def test_round_trip_gives_the_same_denoiser_and_schedule(tiny_diffusion):
    model, path = tiny_diffusion
    loaded = load_diffusion(path)
    x, t = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 500, 999])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eps(x, t), model.eps(x, t), rtol=0, atol=1e-6)
    assert loaded.config == model.config and not any(p.requires_grad for p in loaded.parameters())
    abar = loaded.alphas_cumprod
    assert abar.shape == (1000,) and bool((abar[1:] < abar[:-1]).all()) and 0.99 < abar[0] < 1 and abar[-1] < 1e-3


def test_kind_is_read_from_the_file_and_wrong_kinds_are_refused(tiny_diffusion, tiny_prior):
    _, path = tiny_diffusion
    assert prior_kind(path) == "diffusion" and prior_kind(tiny_prior) == "stylegan2"
    assert isinstance(load_prior(path), DiffusionPrior)
    with pytest.raises(CheckpointError, match="diffusion prior, not a StyleGAN2 generator"):
        load_generator(path)
    with pytest.raises(CheckpointError, match="stylegan2 prior, not a diffusion prior"):
        load_diffusion(tiny_prior)


def test_a_file_whose_weights_disagree_with_its_config_is_refused(tiny_diffusion, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    _, path = tiny_diffusion
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name] = torch.zeros(3)
    save_file(tensors, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_diffusion(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{" + b"x" * 40)
    with pytest.raises(CheckpointError):
        load_diffusion(tmp_path / "junk.safetensors")


def test_sampling_is_seeded_and_config_is_validated(tiny_diffusion):
    model, _ = tiny_diffusion
    a = model.sample(2, steps=5, generator=torch.Generator().manual_seed(3))
    b = model.sample(2, steps=5, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 1, 16, 16) and torch.equal(a, b) and torch.isfinite(a).all()
    with pytest.raises(ValueError, match="levels are too many"):
        DiffusionConfig(resolution=16, widths=(8, 8, 8, 8), attention=(False,) * 4, norm_groups=4)
    with pytest.raises(ValueError, match="unknown diffusion config keys"):
        DiffusionConfig.from_dict({"resolution": 16, "depth": 3})
