"""BRGM MAP and VI on the tiny generator, in model units, against known latents and hand-made losses."""

from __future__ import annotations

import math
import pytest
import torch
import torch.nn.functional as F

from napari_brgm.engine.metrics import psnr
from napari_brgm.operators import make_operator
from napari_brgm.solvers import MapConfig, Monitor, Problem, ViConfig, solve_map, solve_vi
from napari_brgm.solvers.latent_priors import LatentStats, colinearity
from napari_brgm.solvers.map import brgm_terms
from napari_brgm.solvers.vi import _brgm_terms


def _problem(G, task, x, **kw):
    A = make_operator(task, **kw)
    return Problem(G, A, A(x))


def test_map_improves_superres_far_beyond_the_start_and_fits_the_data(tiny_generator, truth):
    _, x = truth
    problem = _problem(tiny_generator, "superres", x, factor=4)
    out = solve_map(problem, MapConfig(steps=150))
    start = tiny_generator.synthesis(LatentStats.of(tiny_generator, x.device).initial_ws(tiny_generator.num_ws))
    gain = psnr(out.image[0, 0], x[0, 0]) - psnr(start[0, 0], x[0, 0])
    assert gain > 8, gain
    assert out.losses["pixel"][-1] < 0.05 * out.losses["pixel"][0]


def test_bf16_map_runs_its_first_steps_and_its_final_render_in_fp32(tiny_generator, truth, monkeypatch):
    _, x = truth
    problem = _problem(tiny_generator, "superres", x, factor=4)
    exact = solve_map(problem, MapConfig(steps=6))
    calls = []
    forward = tiny_generator.synthesis.forward

    def spy(ws, *args, precision=None, **kwargs):
        calls.append(precision)
        return forward(ws, *args, precision=precision, **kwargs)

    monkeypatch.setattr(tiny_generator.synthesis, "forward", spy)
    monkeypatch.setattr(tiny_generator, "precision", "bf16")
    mixed = solve_map(problem, MapConfig(steps=10, fp32_warmup=0.3))
    assert calls == ["fp32"] * 3 + [None] * 7 + ["fp32"]  # None: the generator's own precision, bf16
    all_fp32 = solve_map(problem, MapConfig(steps=6, fp32_warmup=1.0))
    torch.testing.assert_close(all_fp32.image, exact.image, rtol=0, atol=0)
    assert not torch.equal(mixed.ws, solve_map(problem, MapConfig(steps=10, fp32_warmup=1.0)).ws)


def test_brgm_map_loss_matches_the_reference_formula(tiny_generator, truth):
    """BRGM's loss computed literally as in bayesmap_recon.py: 0..255 images, mean pixel term, etc."""
    G = tiny_generator
    _, x = truth
    problem = _problem(G, "superres", x, factor=4)
    stats = LatentStats.of(G, x.device)
    ws = stats.initial_ws(G.num_ws) + 0.3 * torch.randn(1, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    img = G.synthesis(ws)
    cfg = MapConfig()
    terms = brgm_terms(problem, img, ws, ws, stats, cfg)
    synth = (img + 1) * 127.5
    target = (problem.y + 1) * 127.5
    pixel = 0.001 * (F.avg_pool2d(synth, 4) - target).square().mean()
    w_loss = 100 * (ws / stats.std - stats.mean / stats.std).square().mean()
    unit = F.normalize(ws[0], dim=1)
    cos = 0.1 * (1 - unit @ unit.T).reshape(-1).norm(p=1)
    assert terms["pixel"].item() == pytest.approx(pixel.item(), rel=1e-5)
    assert terms["w_prior"].item() == pytest.approx(w_loss.item(), rel=1e-5)
    assert terms["colinearity"].item() == pytest.approx(cos.item(), rel=1e-5)


def test_colinearity_is_zero_for_identical_layers_and_positive_otherwise():
    w = torch.randn(1, 1, 16).repeat(1, 6, 1)
    assert colinearity(w).item() == pytest.approx(0.0, abs=1e-5)
    assert colinearity(w + torch.randn(1, 6, 16)).item() > 0.1


def test_lambda_c_default_follows_brgm():
    assert MapConfig.default_lambda_c("superres", 32) == 1.0
    assert MapConfig.default_lambda_c("superres", 16) == 0.1
    assert MapConfig.default_lambda_c("inpaint", 1) == 0.1


def test_vi_brgm_mode_hyperprior_matches_the_inverse_gamma_density(tiny_generator, truth):
    G = tiny_generator
    _, x = truth
    problem = _problem(G, "superres", x, factor=4)
    stats = LatentStats.of(G, x.device)
    mu = stats.initial_ws(G.num_ws)
    sigma = torch.full_like(mu, 0.4)
    img = G.synthesis(mu)
    terms = _brgm_terms(problem, img, mu, mu, sigma, stats, ViConfig(mode="brgm"))
    a, b, s = 0.1, 0.95, 0.2  # inverse-gamma(α, β) at σ/2
    log_pdf = a * math.log(b) - math.lgamma(a) - (a + 1) * math.log(s) - b / s
    assert terms["hyperprior"].item() == pytest.approx(-log_pdf, rel=1e-5)


def test_vi_batches_its_samples_in_one_generator_call_per_step(tiny_generator, truth):
    G = tiny_generator
    _, x = truth
    problem = _problem(G, "superres", x, factor=4)
    batches = []
    hook = G.synthesis.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    try:
        solve_vi(problem, ViConfig(steps=4, mc_samples=5, samples=6, render_batch=4), seed=0)
    finally:
        hook.remove()
    assert batches == [5, 5, 5, 5, 4, 2]  # 4 steps of K=5, then the S=6 samples in batches of 4


def test_vi_is_repeatable_for_a_seed_and_differs_across_seeds(tiny_generator, truth):
    _, x = truth
    problem = _problem(tiny_generator, "superres", x, factor=4)
    cfg = ViConfig(steps=5, mc_samples=3, samples=4)
    a, b = solve_vi(problem, cfg, seed=7), solve_vi(problem, cfg, seed=7)
    c = solve_vi(problem, cfg, seed=8)
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=0)
    assert not torch.allclose(a.samples, c.samples)


def test_elbo_entropy_keeps_sigma_at_the_prior_without_data_and_shrinks_it_with_data(tiny_generator, truth):
    """A real ELBO: with an uninformative measurement q stays near the prior; informative data shrink it."""
    G = tiny_generator
    _, x = truth
    problem = _problem(G, "superres", x, factor=4)
    prior_sigma = LatentStats.of(G, x.device).std_per_dim
    vague = solve_vi(problem, ViConfig(steps=150, mc_samples=4, samples=2, sigma_y=1e4), seed=0)
    sharp = solve_vi(problem, ViConfig(steps=150, mc_samples=4, samples=2, sigma_y=0.01), seed=0)
    ratio_vague = (vague.sigma[0] / prior_sigma).median().item()
    ratio_sharp = (sharp.sigma[0] / prior_sigma).median().item()
    assert 0.7 < ratio_vague < 1.3, ratio_vague
    assert ratio_sharp < 0.5 * ratio_vague, (ratio_sharp, ratio_vague)


def test_monitor_stops_within_one_step_and_flags_the_output(tiny_generator, truth):
    _, x = truth
    problem = _problem(tiny_generator, "superres", x, factor=4)
    seen = []
    monitor = Monitor(progress=lambda *a: seen.append(a), should_stop=lambda: len(seen) >= 3, preview_every=2)
    out = solve_map(problem, MapConfig(steps=10_000), monitor)
    assert out.stopped and len(out.losses["total"]) == 3
    previews = [a[4] for a in seen]
    assert previews[0] is None and previews[1].shape == (1, 1, 32, 32)


def test_brgm_map_recovers_a_known_image_from_x4_measurements_above_30db():
    """Official StyleGAN2 widths (64 px, w_dim 512, random weights), w_true = mapping(z) at ψ 0.7:
    BRGM's MAP with its default weights recovers G(w_true) from the ×4 box-downsampled image."""
    from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(z_dim=512, w_dim=512, img_resolution=64, img_channels=1, channel_base=16384))
    G.eval().requires_grad_(False)
    x = G.synthesis(G.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(1)), 0.7))
    out = solve_map(_problem(G, "superres", x, factor=4), MapConfig(steps=100))
    assert psnr(out.image[0, 0], x[0, 0]) > 30.0
