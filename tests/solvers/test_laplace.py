"""The Gauss–Newton Laplace posterior over W+ (VI's default family): its Jacobian, and a std that knows what is missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm import reconstruct
from napari_brgm.operators import make_operator
from napari_brgm.priors import save_generator
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig
from napari_brgm.solvers import Problem, ViConfig, solve_vi
from napari_brgm.solvers.laplace import laplace_factor
from napari_brgm.solvers.latent_priors import LatentStats

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(G, x, mask, sigma=0.05):
    A = make_operator("inpaint", mask=mask, noise_sigma=sigma)
    return Problem(G, A, A.project_measurement(A(x)))


def test_the_forward_difference_jacobian_matches_reverse_mode_autograd(tiny_generator, truth):
    """The precision I + JᵀJ/σ² of the factor against J built row by row with backward passes."""
    G = tiny_generator
    ws, x = truth
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[:, 16:] = True
    problem = _problem(G, x, mask)
    f = laplace_factor(problem, ws, sigma_y=0.05)
    scale = LatentStats.of(G, x.device).std_per_dim.repeat(G.num_ws)
    u = torch.zeros_like(scale, requires_grad=True)
    out = problem.operator.forward(G.synthesis(ws + (u * scale).reshape(ws.shape))).reshape(-1) / 0.05
    rows = [torch.autograd.grad(out[j], u, retain_graph=True)[0] for j in torch.nonzero(~mask.reshape(-1))[:, 0]]
    J = torch.stack(rows).double()
    exact = torch.linalg.eigvalsh(J.T @ J).flip(0)[:20]
    approx = f.eigenvalues.double().flip(0)[:20]
    np.testing.assert_allclose(approx.numpy(), exact.numpy(), rtol=0.05)


def test_directions_the_measurement_does_not_see_keep_the_prior_spread(tiny_generator, truth):
    G = tiny_generator
    ws, x = truth
    almost_all = torch.ones(32, 32, dtype=torch.bool)
    almost_all[:2, :2] = False  # 4 observed pixels: at most 4 directions are pinned
    f = laplace_factor(_problem(G, x, almost_all), ws, sigma_y=0.05)
    d = G.num_ws * G.w_dim
    assert f.free_directions >= d - 4 and (f.eigenvalues > 1).sum() <= 4


def test_laplace_samples_are_seeded_and_stop_with_the_monitor(tiny_generator, truth):
    from napari_brgm.solvers import Monitor

    G = tiny_generator
    ws, x = truth
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:24, 8:24] = True
    problem = _problem(G, x, mask)
    cfg = ViConfig(posterior="laplace", samples=4)
    a, b = (solve_vi(problem, cfg, seed=3, mu_init=ws) for _ in range(2))
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=0)
    assert not torch.equal(a.samples, solve_vi(problem, cfg, seed=4, mu_init=ws).samples)
    calls = []
    stopped = solve_vi(problem, cfg, seed=3, mu_init=ws,
                       monitor=Monitor(progress=lambda *a: calls.append(a), should_stop=lambda: len(calls) >= 2))
    assert stopped.stopped and len(calls) == 2 and stopped.samples.shape[0] == 1
    with pytest.raises(ValueError, match="MAP"):
        solve_vi(problem, cfg, seed=0)


def test_the_linear_predictive_renders_the_generator_linearised_at_the_map_point(tiny_generator, truth):
    """render("linear") = G(w*) + J_G·(w − w*), against a central difference at a 10× smaller step (O(h²); the
    double-backward jvp of torch.autograd does not see through the generator's custom ops); "generator" = G(w)."""
    G = tiny_generator
    ws, x = truth
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[:, 16:] = True
    f = laplace_factor(_problem(G, x, mask), ws, sigma_y=0.05)
    latents = f.sample(3, torch.Generator().manual_seed(0))
    linear = f.render(G, latents, "linear", batch=2)

    def image(w):
        return G.synthesis(w, noise_mode="const", precision="fp32")

    h = 1e-3
    with torch.no_grad():
        base = image(ws)
        for w, got in zip(latents, linear):
            delta = (w - ws[0])[None]
            jvp = (image(ws + h * delta) - image(ws - h * delta)) / (2 * h)
            assert torch.linalg.norm(got - base - jvp[0]) < 0.05 * torch.linalg.norm(jvp)
    np.testing.assert_allclose(f.render(G, latents, "generator", batch=2).numpy(), image(latents).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="predictive"):
        f.render(G, latents, "exact", batch=2)


@pytest.fixture(scope="module")
def untrained_64(tmp_path_factory):
    """An untrained 64 px gray StyleGAN2-ADA (default initialisation: noise strengths 0), narrower than official."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(z_dim=128, w_dim=128, img_resolution=64, img_channels=1, channel_base=2048,
                                  channel_max=64)).eval().requires_grad_(False)
    return G, save_generator(G, tmp_path_factory.mktemp("untrained") / "untrained64.safetensors")


@pytest.mark.parametrize("seed", [1, 2])
def test_default_vi_std_is_over_twice_larger_in_the_missing_half_of_an_in_prior_image(untrained_64, seed):
    """The issue's check: the generator's own image, right half missing, model units, window (0, 2)."""
    G, path = untrained_64
    with torch.no_grad():
        x = G.synthesis(G.mapping(torch.randn(1, 128, generator=torch.Generator().manual_seed(seed)), 0.7))[0, 0]
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    image = np.where(mask != 0, 0, x.numpy())
    r = reconstruct(image, task="inpaint", mask=mask, prior=str(path), method="vi", steps=200, samples=16, seed=0,
                    window=(0.0, 2.0))
    assert r.settings["method_options"]["vi_posterior"] == "laplace"
    assert r.settings["method_options"]["vi_predictive"] == "linear"
    assert r.settings["interval"]["key"]["predictive"] == "linear"
    inside, outside = r.std[:, 32:].mean(), r.std[:, :32].mean()
    assert inside > 2 * outside, (inside, outside)
    meanfield = reconstruct(image, task="inpaint", mask=mask, prior=str(path), method="vi", steps=200, samples=16,
                            seed=0, window=(0.0, 2.0), vi_posterior="meanfield")
    assert meanfield.std[:, 32:].mean() < 1.5 * meanfield.std[:, :32].mean()  # BRGM's W+-only q: nearly flat


def test_the_linear_predictive_keeps_measured_pixels_within_the_noise(untrained_64):
    """Theory: under the linearised generator an observed pixel's posterior variance is σ_y²·h ≤ σ_y² (h its
    leverage). Rendering the same latents through the generator itself bends them off the data (3× σ_y here)."""
    from napari_brgm.solvers import MapConfig, solve_map

    G, _ = untrained_64
    with torch.no_grad():
        x = G.synthesis(G.mapping(torch.randn(1, 128, generator=torch.Generator().manual_seed(1)), 0.7))
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[:, 32:] = True
    problem = _problem(G, x, mask, sigma=0.05)
    f = laplace_factor(problem, solve_map(problem, MapConfig(steps=100)).ws, sigma_y=0.05)
    latents = f.sample(32, torch.Generator().manual_seed(0))
    std = {p: f.render(G, latents, p, batch=8).std(0)[0] for p in ("linear", "generator")}
    observed = {k: v[~mask].mean().item() for k, v in std.items()}
    assert observed["linear"] < 0.05 < observed["generator"], observed
    assert std["linear"][mask].mean() > 5 * observed["linear"]


def test_the_linear_predictive_belongs_to_the_laplace_posterior(untrained_64):
    assert ViConfig(posterior="laplace").predictive == "linear"
    assert ViConfig(posterior="meanfield").predictive == "generator"
    with pytest.raises(ValueError, match="Laplace"):
        ViConfig(posterior="meanfield", predictive="linear")
    with pytest.raises(ValueError, match="Laplace"):  # refused before any work
        reconstruct(np.zeros((64, 64), np.float32), task="superres", factor=2, prior=str(untrained_64[1]),
                    method="vi", vi_posterior="meanfield", vi_predictive="linear")
