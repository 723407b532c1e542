"""The Glow prior: exact invertibility, the log-determinant, the density and its safetensors file."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_brgm.priors import CheckpointError
from napari_brgm.priors.glow import Glow, GlowConfig, bits_per_dim, load_flow, save_flow, squeeze, unsqueeze

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_flow(seed: int = 0, **kw) -> Glow:
    """A small flow, actnorm initialised on random data, every weight (zero-initialised ones too) perturbed."""
    cfg = GlowConfig(**({"resolution": 8, "levels": 2, "steps_per_level": 2, "hidden": 8, "hidden_max": 16} | kw))
    torch.manual_seed(seed)
    flow = Glow(cfg).train()
    with torch.no_grad():
        flow(torch.rand(16, cfg.channels, cfg.resolution, cfg.resolution) * 2 - 1)
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow.eval()


def _x(n=4, r=8, c=1, seed=1):
    return torch.rand(n, c, r, r, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="power of two"):
        GlowConfig(resolution=48)
    with pytest.raises(ValueError, match="too many"):
        GlowConfig(resolution=16, levels=4)
    with pytest.raises(ValueError, match="positive integer"):
        GlowConfig(hidden=0)
    with pytest.raises(ValueError, match="unknown flow config keys"):
        GlowConfig.from_dict({"resolution": 64, "depth": 3})
    cfg = GlowConfig(resolution=32, levels=2, steps_per_level=3, hidden=16)
    assert GlowConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert [GlowConfig().width(i) for i in range(3)] == [64, 128, 256]


def test_default_size():
    flow = Glow(GlowConfig())
    assert flow.z_dim == 64 * 64 and 1e6 < flow.num_parameters() < 3e6


def test_squeeze_is_inverted_by_unsqueeze():
    x = _x(2, 8, c=3)
    s = squeeze(x)
    assert s.shape == (2, 12, 4, 4)
    torch.testing.assert_close(s[0, :4, 0, 0], x[0, 0, :2, :2].flatten())
    torch.testing.assert_close(unsqueeze(s), x, rtol=0, atol=0)


@pytest.mark.parametrize("kw", [{}, {"resolution": 16, "levels": 3}, {"channels": 3, "levels": 1}])
def test_x_to_z_to_x_and_z_to_x_to_z(kw):
    flow = tiny_flow(**kw)
    c, r = flow.img_channels, flow.img_resolution
    x = _x(4, r, c)
    z, logdet = flow(x)
    assert z.shape == (4, c * r * r) == (4, flow.z_dim) and logdet.shape == (4,)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-4)
    z2 = torch.randn(3, flow.z_dim, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(flow(flow.inverse(z2))[0], z2, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kw", [{"levels": 1}, {"levels": 2}, {"resolution": 4 * 2, "levels": 2, "steps_per_level": 3}])
def test_logdet_equals_the_log_determinant_of_the_jacobian(kw):
    flow = tiny_flow(**kw).double()
    x = _x(1).double()
    jac = torch.autograd.functional.jacobian(lambda t: flow(t.reshape(x.shape))[0][0], x.flatten())
    assert jac.shape == (64, 64)
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    torch.testing.assert_close(flow(x)[1][0], logabs, rtol=0, atol=1e-6)


def test_log_prob_is_the_change_of_variables_formula():
    flow = tiny_flow().double()
    x = _x(3).double()
    z, logdet = flow(x)
    normal = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(flow.log_prob(x), normal + logdet)
    # and through the inverse: log p(x) = log N(z) − log|det ∂x/∂z|
    jac = torch.autograd.functional.jacobian(lambda t: flow.inverse(t[None]).flatten(), z[0])
    torch.testing.assert_close(flow.log_prob(x[:1])[0], normal[0] - torch.linalg.slogdet(jac)[1], rtol=0, atol=1e-8)


def test_a_wider_distribution_of_inputs_has_a_lower_density():
    flow = tiny_flow()
    x = _x(8)
    assert (flow.log_prob(x * 3) < flow.log_prob(x)).all()


def test_bits_per_dim_formula():
    flow = tiny_flow()
    x = _x(2)
    d = 64
    want = (-flow.log_prob(x) - d * math.log(2 / 256)) / (d * math.log(2))
    torch.testing.assert_close(bits_per_dim(flow, x), want)
    torch.testing.assert_close(bits_per_dim(flow, x, bins=512), want + 1.0)


def test_actnorm_initialises_once_on_the_first_training_batch():
    torch.manual_seed(0)
    flow = Glow(GlowConfig(resolution=8, levels=2, steps_per_level=2, hidden=8))
    assert not flow.initialized
    flow.eval()
    flow(_x())
    assert not flow.initialized  # eval mode never initialises
    flow.train()
    x = _x(64) * 0.3 + 0.2
    flow(x)
    assert flow.initialized
    h = squeeze(x)
    first = flow.levels[0][0].actnorm
    y = (h + first.bias) * first.logs.exp()
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(4), rtol=0, atol=1e-5)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(4), rtol=0, atol=1e-4)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    flow(_x(seed=5) * 5)
    for k, v in flow.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


def test_inverse_is_differentiable_with_respect_to_z():
    flow = tiny_flow().requires_grad_(False)
    z = torch.zeros(2, flow.z_dim, requires_grad=True)
    flow.inverse(z).square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert flow.sample(3, temperature=0.0).shape == (3, 1, 8, 8)
    torch.testing.assert_close(flow.sample(2, 0.0), flow.inverse(torch.zeros(2, flow.z_dim)))


def test_save_load_round_trip(tmp_path):
    flow = tiny_flow(resolution=16, levels=3)
    path = save_flow(flow, tmp_path / "flow.safetensors")
    loaded = load_flow(path)
    assert loaded.config == flow.config and loaded.initialized
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = _x(3, 16)
    for a, b in zip(loaded(x), flow(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    z = torch.randn(2, flow.z_dim)
    torch.testing.assert_close(loaded.inverse(z), flow.inverse(z), rtol=0, atol=0)
    loaded.train()  # a loaded flow never re-initialises its actnorm
    torch.testing.assert_close(loaded(x * 4)[0], flow(x * 4)[0], rtol=0, atol=0)


def test_saving_an_uninitialised_flow_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not initialised"):
        save_flow(Glow(GlowConfig(resolution=8, levels=1, steps_per_level=1, hidden=4)), tmp_path / "f.safetensors")


def test_other_kinds_and_corrupt_files_raise_checkpoint_errors(tmp_path, tiny_prior):
    with pytest.raises(CheckpointError, match="stylegan2 prior, not a flow prior"):
        load_flow("brain-t1-64")
    with pytest.raises(CheckpointError, match="not a flow prior"):
        load_flow(tiny_prior)
    path = save_flow(tiny_flow(), tmp_path / "flow.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_flow(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_flow(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        load_flow(tmp_path / "missing.safetensors")
    tensors = load_file(path)
    meta = {"format": "napari-brgm/flow", "format_version": "1", "config": json.dumps(tiny_flow().config.to_dict())}
    bad = dict(meta, config=json.dumps(GlowConfig(resolution=8, levels=1).to_dict()))
    save_file(tensors, tmp_path / "shape.safetensors", metadata=bad)
    with pytest.raises(CheckpointError, match="do not match"):
        load_flow(tmp_path / "shape.safetensors")
    save_file(tensors, tmp_path / "config.safetensors", metadata=dict(meta, config='{"resolution": 12}'))
    with pytest.raises(CheckpointError, match="invalid flow config"):
        load_flow(tmp_path / "config.safetensors")
    first = next(iter(tensors))
    save_file(tensors | {first: torch.full_like(tensors[first], math.nan)}, tmp_path / "nan.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="not finite"):
        load_flow(tmp_path / "nan.safetensors")
