"""The generator's maths: NVIDIA reference outputs, a literal re-implementation, and properties."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from napari_brgm.priors import Generator, GeneratorConfig, WStats, load_generator
from tests.priors.conftest import CONFIGS, random_generator, small_config
from tests.priors.plain_stylegan2 import plain_mapping, plain_synthesis

ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tiny_fixture_dir):
    g = load_generator(tiny_fixture_dir / "network-snapshot.pkl")
    ref = dict(np.load(tiny_fixture_dir / "reference.npz"))
    return g, ref


def test_fixture_mapping_and_truncation_match_reference(tiny):
    g, ref = tiny
    z = torch.from_numpy(ref["z"])
    np.testing.assert_allclose(g.mapping.w_avg.numpy(), ref["w_avg"], atol=0)
    np.testing.assert_allclose(g.mapping(z).numpy(), ref["ws"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(g.mapping(z, truncation_psi=0.7).numpy(), ref["ws_trunc_0_7"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("noise_mode,ws_key,img_key", [
    ("const", "ws_plus", "img_const"), ("none", "ws_plus", "img_none"),
    ("const", "ws_trunc_0_7", "img_trunc_0_7_const")])
def test_fixture_synthesis_matches_reference(tiny, noise_mode, ws_key, img_key):
    g, ref = tiny
    img = g.synthesis(torch.from_numpy(ref[ws_key]), noise_mode=noise_mode)
    assert img.shape == (4, 1, 32, 32) and img.dtype == torch.float32
    np.testing.assert_allclose(img.numpy(), ref[img_key], atol=ATOL, rtol=0)


def test_fixture_reference_is_not_trivial(tiny):
    """Const noise must matter in the reference, otherwise the const test above proves nothing."""
    _, ref = tiny
    assert np.abs(ref["img_const"] - ref["img_none"]).max() > 0.1


def test_attributes_and_frozen_eval_state(tiny):
    g, _ = tiny
    assert isinstance(g, Generator) and isinstance(g, torch.nn.Module)
    assert (g.z_dim, g.w_dim, g.num_ws, g.img_resolution, g.img_channels) == (32, 32, 8, 32, 1)
    assert not g.training and all(not p.requires_grad for p in g.parameters())
    assert all(t.dtype == torch.float32 for t in g.state_dict().values())
    assert "img_resolution=32" in repr(g) and "up=2" in repr(g.synthesis.b8.conv0)


@pytest.mark.parametrize("cfg", [
    small_config(),
    small_config(img_resolution=1024, img_channels=3, channel_base=32768, channel_max=512, z_dim=512, w_dim=512,
                 mapping_layers=8)])
def test_state_shapes_describe_the_module(cfg):
    g = Generator(cfg)
    assert {k: tuple(v.shape) for k, v in g.state_dict().items()} == cfg.state_shapes()
    assert cfg.num_parameters() == sum(p.numel() for p in g.parameters())


def test_ffhq_config_f_parameter_count():
    cfg = GeneratorConfig(z_dim=512, w_dim=512, img_resolution=1024, img_channels=3, mapping_layers=8,
                          channel_base=32768, channel_max=512)
    assert cfg.num_parameters() == 30_370_060 and cfg.num_ws == 18


def test_matches_literal_implementation(config_name):
    """Our evaluation order (activation modulation, folded bias/noise) equals the literal maths."""
    cfg = CONFIGS[config_name]
    g = random_generator(cfg, seed=1)
    sd = dict(g.state_dict())
    z = torch.randn(3, cfg.z_dim, generator=torch.Generator().manual_seed(2))
    ws = g.mapping(z, truncation_psi=0.8)
    torch.testing.assert_close(ws, plain_mapping(sd, cfg, z, 0.8), atol=1e-5, rtol=1e-5)
    ws = ws + 0.3 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(3))
    for mode in ("const", "none"):
        ours, plain = g.synthesis(ws, noise_mode=mode), plain_synthesis(sd, cfg, ws, mode)
        assert ours.shape == (3, cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
        assert float((ours - plain).abs().max()) < ATOL * max(1.0, float(plain.abs().max()))
    a = g.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(5))
    b = plain_synthesis(sd, cfg, ws, "random", generator=torch.Generator().manual_seed(5))
    assert float((a - b).abs().max()) < ATOL * max(1.0, float(b.abs().max()))


def test_random_noise_is_seeded_and_differs_from_const():
    g = random_generator(small_config(), seed=3)
    ws = g.mapping(torch.randn(2, 16))
    a = g.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(9))
    b = g.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(9))
    c = g.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-3
    assert float((a - g.synthesis(ws, noise_mode="const")).abs().max()) > 1e-3


def test_const_noise_acts_as_a_bias_before_the_activation():
    """With spatially uniform noise constants k, const noise == no noise with bias + k·noise_strength.

    This pins where the noise enters: after demodulation, before bias, activation and clamp.
    """
    g = random_generator(small_config(conv_clamp=2.0), seed=4)
    shifted = copy.deepcopy(g)
    with torch.no_grad():
        for (name, layer), (_, other) in zip(g.named_modules(), shifted.named_modules()):
            if hasattr(layer, "noise_const"):
                k = float(torch.randn(()))
                layer.noise_const.fill_(k)
                other.bias.add_(k * layer.noise_strength)
    ws = g.mapping(torch.randn(2, 16))
    torch.testing.assert_close(g.synthesis(ws, noise_mode="const"), shifted.synthesis(ws, noise_mode="none"),
                               atol=1e-5, rtol=1e-5)
    assert float((g.synthesis(ws, noise_mode="const") - g.synthesis(ws, noise_mode="none")).abs().max()) > 1e-2


def test_zero_noise_strength_makes_modes_equal():
    g = random_generator(small_config(), seed=5)
    with torch.no_grad():
        for layer in g.modules():
            if hasattr(layer, "noise_strength"):
                layer.noise_strength.zero_()
    ws = g.mapping(torch.randn(2, 16))
    a = g.synthesis(ws, noise_mode="const")
    assert torch.equal(a, g.synthesis(ws, noise_mode="none"))
    assert torch.equal(a, g.synthesis(ws, noise_mode="random"))


def test_conv_clamp_bounds_every_layer_output():
    clamp = 0.3
    g = random_generator(small_config(conv_clamp=clamp), seed=6)
    outs = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o)) for m in g.modules()
             if type(m).__name__ in ("SynthesisLayer", "ToRGBLayer")]
    ws = g.mapping(torch.randn(2, 16))
    img = g.synthesis(ws)
    for h in hooks:
        h.remove()
    assert len(outs) == (g.num_ws - 1) + int(math.log2(g.img_resolution)) - 1  # convs + torgbs
    assert all(float(o.abs().max()) <= clamp + 1e-6 for o in outs)
    assert sum(int((o.abs() >= clamp - 1e-6).sum()) for o in outs) > 100  # the clamp is active
    plain = plain_synthesis(dict(g.state_dict()), g.config, ws)
    torch.testing.assert_close(img, plain, atol=ATOL, rtol=0)
    unclamped = random_generator(small_config(), seed=6)
    assert float((unclamped.synthesis(ws) - img).abs().max()) > 0.1


def test_truncation_formula_and_cutoff():
    g = random_generator(small_config(), seed=7)
    z = torch.randn(4, 16)
    ws = g.mapping(z)
    assert ws.shape == (4, g.num_ws, g.w_dim) and torch.equal(ws[:, 0], ws[:, -1])
    w_avg = g.mapping.w_avg
    torch.testing.assert_close(g.mapping(z, truncation_psi=0.5), w_avg + 0.5 * (ws - w_avg), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(g.mapping(z, truncation_psi=0.0), w_avg.expand_as(ws), atol=1e-6, rtol=0)
    cut = g.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], w_avg + 0.5 * (ws[:, :3] - w_avg))
    assert torch.equal(cut[:, 3:], ws[:, 3:])


def test_batch_equals_single_calls():
    g = random_generator(CONFIGS["rgb64_clamp256_map4"], seed=8)
    ws = g.mapping(torch.randn(4, 16)) + 0.2 * torch.randn(4, g.num_ws, g.w_dim)
    batch = g.synthesis(ws)
    single = torch.cat([g.synthesis(ws[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)


def test_gradient_wrt_ws_matches_literal_implementation():
    g = random_generator(small_config(conv_clamp=1.5), seed=9).double()
    sd = dict(g.state_dict())
    target = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    ws0 = g.mapping(torch.randn(2, 16, dtype=torch.float64)) + 0.2 * torch.randn(2, g.num_ws, g.w_dim,
                                                                                  dtype=torch.float64)
    grads = []
    for fn in (lambda w: g.synthesis(w), lambda w: plain_synthesis(sd, g.config, w)):
        ws = ws0.clone().requires_grad_(True)
        ((fn(ws) - target) ** 2).mean().backward()
        grads.append(ws.grad)
    assert all(p.grad is None for p in g.parameters())
    assert float(grads[0].abs().max()) > 0 and bool(torch.isfinite(grads[0]).all())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=1e-9)


def test_gradient_wrt_weights_of_an_unfrozen_copy():
    """IAGAN fine-tunes a deep copy: every parameter gets the literal implementation's gradient.

    In float64, so that the comparison is tight (fp32 convolutions differ by ~1e-4 relative here).
    """
    g = random_generator(small_config(img_resolution=16), seed=10).double()
    tuned = copy.deepcopy(g).requires_grad_(True)
    ws = g.mapping(torch.randn(2, 16, dtype=torch.float64))
    target = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    ((tuned.synthesis(ws) - target) ** 2).mean().backward()
    sd = {k: v.detach().clone().requires_grad_(v.dtype.is_floating_point) for k, v in g.state_dict().items()}
    ((plain_synthesis(sd, g.config, ws) - target) ** 2).mean().backward()
    checked = 0
    for name, p in tuned.named_parameters():
        if not name.startswith("synthesis."):
            continue
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, sd[name].grad, atol=1e-12, rtol=1e-9, msg=name)
        checked += 1
    assert checked == len([n for n, _ in g.named_parameters() if n.startswith("synthesis.")])
    assert all(not p.requires_grad and p.grad is None for p in g.parameters())  # the original stays frozen


def test_bf16_precision_is_close_and_keeps_fp32_parameters():
    g = random_generator(small_config(img_resolution=64, channel_base=2048, channel_max=64), seed=11)
    ws = g.mapping(torch.randn(2, 16))
    ref = g.synthesis(ws)
    low = g.synthesis(ws, precision="bf16")
    assert low.dtype == torch.float32
    rel = float((low - ref).abs().max() / ref.abs().max())
    assert 0 < rel < 0.03
    g.precision = "bf16"
    assert torch.equal(g.synthesis(ws), low)
    assert all(t.dtype == torch.float32 for t in g.state_dict().values())
    with pytest.raises(ValueError, match="precision"):
        g.precision = "fp16"


def test_invalid_inputs_are_rejected():
    g = random_generator(small_config(), seed=12)
    ws = g.mapping(torch.randn(1, 16))
    with pytest.raises(ValueError, match="noise_mode"):
        g.synthesis(ws, noise_mode="fixed")
    with pytest.raises(AssertionError):
        g.synthesis(ws[:, :-1])
    with pytest.raises(AssertionError):
        g.mapping(torch.randn(1, 15))
    with pytest.raises(ValueError, match="power of two"):
        small_config(img_resolution=48)
    with pytest.raises(ValueError, match="img_channels"):
        small_config(img_channels=2)


def test_w_stats_follow_the_reference_recipe_and_are_cached(tiny):
    g, _ = tiny
    g = copy.deepcopy(g)
    g.w_stats = None
    s = g.w_stats
    assert isinstance(s, WStats) and g.w_stats is s
    z = torch.from_numpy(np.random.RandomState(123).randn(10_000, g.z_dim)).float()
    w = g.mapping(z)[:, 0].double()
    mean = w.mean(0)
    var = ((w - mean) ** 2).mean(0)
    torch.testing.assert_close(s.mean.double(), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(s.std_per_dim.double(), var.sqrt(), atol=1e-5, rtol=1e-5)
    assert math.isclose(s.std, float(var.sum().sqrt()), rel_tol=1e-6)
    assert math.isclose(s.std, float(np.sqrt((s.std_per_dim.double() ** 2).sum())), rel_tol=1e-5)
    assert s.mean.shape == s.std_per_dim.shape == (g.w_dim,) and (s.num_samples, s.seed) == (10_000, 123)


@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("noise_batch", [0, 1, 2])
def test_bias_act_function_gradients(clamp, noise_batch):
    """The fused bias/noise/activation/clamp step against finite differences (float64)."""
    from napari_brgm.priors.stylegan2 import _BiasActClamp

    gen = torch.Generator().manual_seed(13)
    def leaf(t):
        return t.double().requires_grad_(True)

    x = leaf(torch.randn(2, 3, 5, 5, generator=gen))
    a = leaf(torch.rand(2, 3, 1, 1, generator=gen) + 0.5)
    b = leaf(torch.randn(1, 3, 1, 1, generator=gen))
    noise = leaf(torch.randn(noise_batch, 1, 5, 5, generator=gen)) if noise_batch else None
    assert torch.autograd.gradcheck(lambda *t: _BiasActClamp.apply(*t, clamp), (x, a, b, noise), eps=1e-6)
    y = _BiasActClamp.apply(x, a, b, noise, clamp)
    t = x * a + b + (0 if noise is None else noise)
    want = torch.nn.functional.leaky_relu(t, 0.2)
    torch.testing.assert_close(y, want if clamp is None else want.clamp(-clamp, clamp))


def test_outer_autocast_and_no_grad_modes():
    """An outer bf16 autocast does not change fp32 results; no_grad and inference_mode work."""
    g = random_generator(small_config(), seed=14)
    z = torch.randn(2, 16)
    ws = g.mapping(z)
    ref = g.synthesis(ws)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(g.mapping(z), ws)
        out = g.synthesis(ws)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    with torch.no_grad():
        assert torch.equal(g.synthesis(ws), ref)
    with torch.inference_mode():
        assert torch.equal(g.synthesis(ws), ref)
