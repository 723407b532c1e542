import pytest
import torch

from napari_brgm import load_generator
from napari_brgm.training.augment import SliceAugment, diff_augment
from napari_brgm.training.data import SliceSet, load_slices
from napari_brgm.training.discriminator import Discriminator
from napari_brgm.training.stylegan2 import Trainer, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def slices(head_nifti):
    return load_slices([head_nifti], 16)


def test_resume_refuses_other_data(slices, tiny_config, tmp_path, head_nifti):
    t = Trainer(slices, tiny_config)
    t.step()
    t.save_checkpoint(tmp_path / "ck.pt")
    other = SliceSet(slices.images + 0.01, slices.sources)
    with pytest.raises(ValueError, match="different data"):
        Trainer.resume(tmp_path / "ck.pt", other)


def test_train_loop_snapshots_and_exports_a_loadable_prior(slices, tiny_config, tmp_path):
    seen = []
    t = Trainer(slices, tiny_config)
    train(t, kimg=0.02, checkpoint=tmp_path / "ck.pt", export=tmp_path / "p.safetensors", snapshot_kimg=0.008,
          on_snapshot=lambda tr: seen.append(tr.state.nimg))
    assert t.state.nimg == 20 and seen == [8, 16, 20]
    g = load_generator(tmp_path / "p.safetensors")
    assert (g.img_resolution, g.img_channels, g.z_dim) == (16, 1, 8)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(g.synthesis(g.mapping(z)), t.G_ema.synthesis(t.G_ema.mapping(z)))
    assert g.w_stats.std > 0


def test_stop_request_ends_between_steps(slices, tiny_config):
    t = Trainer(slices, tiny_config)
    calls = iter([False, False, True])
    train(t, kimg=1, should_stop=lambda: next(calls))
    assert t.state.step == 2


def test_lazy_r1_runs_on_its_interval(slices, tiny_config):
    t = Trainer(slices, tiny_config)
    r1 = [t.step()["r1"] for _ in range(4)]
    assert r1[0] > 0 and r1[2] > 0 and r1[1] == 0 and r1[3] == 0


def test_ema_generator_trails_the_generator(slices, tiny_config):
    t = Trainer(slices, tiny_config)
    for _ in range(5):
        t.step()
    g, e = t.G.synthesis.b16.conv1.weight, t.G_ema.synthesis.b16.conv1.weight
    assert not torch.equal(g, e)
    assert not e.requires_grad


def test_slice_augment_is_a_function_of_the_seed():
    x = torch.linspace(-1, 1, 2 * 16 * 16).reshape(2, 1, 16, 16)
    aug = SliceAugment()
    a, b, c = aug(x, seed=5), aug(x, seed=5), aug(x, seed=6)
    assert a.shape == x.shape
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_diff_augment_is_differentiable_and_fills_with_background():
    x = torch.ones(4, 1, 16, 16, requires_grad=True)
    y = diff_augment(x, torch.Generator().manual_seed(0), translation=0.25, cutout=0.5)
    assert y.shape == x.shape
    assert set(torch.unique(y.detach()).tolist()) <= {-1.0, 1.0} and (y == -1).any()
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    y2 = diff_augment(x.detach(), torch.Generator().manual_seed(0), translation=0.25, cutout=0.5)
    torch.testing.assert_close(y.detach(), y2)


def test_discriminator_shapes():
    d = Discriminator(img_resolution=16, img_channels=1, channel_base=64, channel_max=16)
    assert d(torch.zeros(8, 1, 16, 16)).shape == (8, 1)
    with pytest.raises(AssertionError):
        d(torch.zeros(2, 1, 8, 8))


def test_config_validation():
    with pytest.raises(ValueError, match="power of two"):
        TrainConfig(resolution=48)
    with pytest.raises(ValueError, match="divisible by 4"):
        TrainConfig(batch=6)
    assert TrainConfig(resolution=64, batch=16).gamma == pytest.approx(0.0002 * 64 ** 2 / 16)
