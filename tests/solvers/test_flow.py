"""The flow solver on a tiny random Glow: MAP in z beats the pseudo-inverse, Langevin chains give a spread."""

from __future__ import annotations

import pytest
import torch

from napari_brgm.engine.metrics import psnr
from napari_brgm.operators import make_operator
from napari_brgm.priors.glow import Glow, GlowConfig
from napari_brgm.solvers.flow import FlowSolverConfig, initial_z, solve_flow
from napari_brgm.solvers.monitor import Monitor
from napari_brgm.solvers.problem import Problem

pytestmark = pytest.mark.usefixtures("one_thread")
R = 16


@pytest.fixture(scope="module")
def flow():
    """16 px, 2 levels, actnorm initialised on random data, every weight perturbed (so it is not linear)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        f = Glow(GlowConfig(resolution=R, levels=2, steps_per_level=2, hidden=8, hidden_max=16)).train()
        with torch.no_grad():
            f(torch.rand(16, 1, R, R) * 2 - 1)
            for p in f.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return f.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def x_true(flow):
    """x = G(z_true), z_true ~ N(0, 0.8²·I)."""
    return flow.inverse(0.8 * torch.randn(1, flow.z_dim, generator=torch.Generator().manual_seed(7)))


@pytest.fixture(scope="module")
def missing():
    mask = torch.zeros(R, R)
    mask[:, : R // 2] = 1  # left half missing
    return mask


def _problem(x, task, **kw):
    A = make_operator(task, **kw)
    return Problem(None, A, A(x))


def _quick(**kw):
    return FlowSolverConfig(**({"steps": 100, "samples": 8, "langevin_steps": 20} | kw))


@pytest.mark.parametrize("init", ["zero", "pinv"])
@pytest.mark.parametrize("task", ["superres", "inpaint"])
def test_map_fits_the_data_and_beats_the_pseudo_inverse(flow, x_true, missing, task, init):
    problem = _problem(x_true, task, **({"factor": 2} if task == "superres" else {"mask": missing}))
    out = solve_flow(problem, flow, _quick(langevin_steps=0, init=init), seed=0)
    start = problem.data_fit(flow.inverse(initial_z(problem, flow, _quick(init=init))))
    assert problem.data_fit(out.image).item() < 0.01 * start.item()
    assert out.losses["data"][-1] < 0.01 * out.losses["data"][0]
    pinv = problem.operator.pseudo_inverse(problem.y)
    assert psnr(out.image[0, 0], x_true[0, 0]) > psnr(pinv[0, 0], x_true[0, 0]) + 0.5
    assert out.image.shape == (1, 1, R, R) and out.z.shape == (1, flow.z_dim)
    torch.testing.assert_close(out.samples, out.image)  # no chains: the estimate is the only sample
    assert not out.stopped and set(out.losses) == {"data", "z_prior", "total"}


def test_objective_is_the_negative_log_posterior(flow, x_true):
    cfg = _quick(steps=1, gamma=0.3, sigma_y=0.1, langevin_steps=0, init="zero")
    problem = _problem(x_true, "superres", factor=2)
    out = solve_flow(problem, flow, cfg, seed=0)
    x0 = flow.inverse(torch.zeros(1, flow.z_dim))
    sse = problem.residual(x0).square().sum()
    assert out.losses["total"][0] == pytest.approx(float(sse / (2 * 0.1 ** 2)), rel=1e-5)
    assert out.losses["data"][0] == pytest.approx(float(sse / (R // 2) ** 2), rel=1e-5)
    assert out.losses["z_prior"][0] == 0


def test_initialisations(flow, x_true):
    problem = _problem(x_true, "superres", factor=2)
    assert initial_z(problem, flow, _quick(init="zero")).abs().sum() == 0
    enc = flow(problem.operator.pseudo_inverse(problem.y))[0]
    torch.testing.assert_close(initial_z(problem, flow, _quick(init="pinv", init_scale=0.25)), 0.25 * enc)
    assert initial_z(problem, flow, _quick(init="pinv", init_scale=0)).abs().sum() == 0


def test_langevin_samples_spread_more_where_pixels_are_missing(flow, x_true, missing):
    problem = _problem(x_true, "inpaint", mask=missing)
    out = solve_flow(problem, flow, _quick(samples=8, langevin_steps=30), seed=0)
    assert out.samples.shape == (8, 1, R, R)
    assert all(not torch.equal(out.samples[0], s) for s in out.samples[1:])
    std = out.samples.std(0)[0]
    assert std[:, : R // 2].mean() > 3 * std[:, R // 2 :].mean()
    assert len(out.losses["langevin_accept"]) == 30 and 0.2 < sum(out.losses["langevin_accept"]) / 30 < 0.95
    assert out.losses["langevin_step_size"][-1] != pytest.approx(FlowSolverConfig.langevin_step_size)  # adapted


def test_unadjusted_chains_run_at_the_given_step_size(flow, x_true):
    problem = _problem(x_true, "superres", factor=2)
    out = solve_flow(problem, flow, _quick(steps=20, samples=3, langevin_steps=5, metropolis=False,
                                           langevin_step_size=1e-4), seed=0)
    assert out.losses["langevin_accept"] == [1.0] * 5 and out.losses["langevin_step_size"] == pytest.approx([1e-4] * 5)
    assert out.samples.shape == (3, 1, R, R) and out.samples.std(0).mean() > 0


def test_every_chain_runs_in_one_batched_flow_call(flow, x_true, monkeypatch):
    calls = []
    inverse = flow.inverse
    monkeypatch.setattr(flow, "inverse", lambda z: calls.append(z.shape[0]) or inverse(z))
    solve_flow(_problem(x_true, "superres", factor=2), flow, _quick(steps=3, samples=5, langevin_steps=4), seed=0)
    assert calls == [1, 1, 1, 1, 5, 5, 5, 5, 5]  # 3 steps + the estimate; the chains' start + 4 steps


def test_same_seed_same_result(flow, x_true, missing):
    problem = _problem(x_true, "inpaint", mask=missing)
    cfg = _quick(steps=10, samples=4, langevin_steps=5)
    a, b, c = (solve_flow(problem, flow, cfg, seed=s) for s in (4, 4, 5))
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=0)
    torch.testing.assert_close(a.image, c.image, rtol=0, atol=0)  # the MAP stage is deterministic
    assert not torch.allclose(a.samples, c.samples)


@pytest.mark.parametrize("stop_after, stage", [(2, "flow"), (7, "flow-langevin")])
def test_cancel_returns_promptly_with_a_flag(flow, x_true, stop_after, stage):
    seen = []
    monitor = Monitor(progress=lambda *a: seen.append(a), should_stop=lambda: len(seen) >= stop_after, preview_every=1)
    cfg = _quick(steps=5, samples=3, langevin_steps=10_000)
    out = solve_flow(_problem(x_true, "superres", factor=2), flow, cfg, seed=0, monitor=monitor)
    assert out.stopped and len(seen) == stop_after and seen[-1][0] == stage
    assert seen[-1][4].shape == (1, 1, R, R)
    if stage == "flow":
        assert len(out.losses["total"]) == 2 and out.samples.shape == (1, 1, R, R)
        assert set(seen[0][3]) == {"data", "z_prior", "total"}
    else:
        assert len(out.losses["total"]) == 5 and len(out.losses["langevin_total"]) == 2
        assert out.samples.shape == (3, 1, R, R)
        assert set(seen[-1][3]) == {"data", "accept", "step_size", "total"}


def test_config_validation_and_uninitialised_flows(x_true):
    with pytest.raises(ValueError, match="init"):
        FlowSolverConfig(init="random")
    with pytest.raises(ValueError, match="samples"):
        FlowSolverConfig(samples=0)
    with pytest.raises(ValueError, match="sigma_y"):
        FlowSolverConfig(sigma_y=0)
    fresh = Glow(GlowConfig(resolution=R, levels=1, steps_per_level=1, hidden=4))
    with pytest.raises(ValueError, match="not initialised"):
        solve_flow(_problem(x_true, "superres", factor=2), fresh, FlowSolverConfig(steps=1), seed=0)


class LinearFlow(torch.nn.Module):
    """x = c·z on 8×8 images: with a Gaussian likelihood the posterior is Gaussian and known exactly."""

    img_channels, img_resolution, z_dim, initialized, c = 1, 8, 64, True, 0.5

    def inverse(self, z):
        return self.c * z.reshape(-1, 1, 8, 8)

    def forward(self, x):
        return x.flatten(1) / self.c, torch.zeros(x.shape[0])


@pytest.mark.parametrize("metropolis", [True, False])
def test_chains_sample_the_exact_posterior_of_a_linear_model(metropolis):
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1
    x = torch.linspace(-0.5, 0.5, 64).reshape(1, 1, 8, 8)
    problem = _problem(x, "inpaint", mask=mask)
    cfg = FlowSolverConfig(steps=200, samples=256, langevin_steps=300, sigma_y=0.05, metropolis=metropolis,
                           langevin_step_size=1e-5 if metropolis else 2e-4)
    out = solve_flow(problem, LinearFlow(), cfg, seed=0)
    # observed: precision c²/σ² + 1 in z, so std c/√101 in x; missing: the prior, std c in x
    torch.testing.assert_close(out.image[..., 4:], x[..., 4:] * 100 / 101, rtol=0, atol=1e-3)
    std = out.samples.std(0)[0]
    assert std[:, 4:].mean().item() == pytest.approx(0.5 / 101 ** 0.5, rel=0.1)  # MALA: ~1%, ULA: ~5% off
    assert std[:, :4].mean().item() == pytest.approx(0.5, rel=0.1)


class OverflowingFlow(LinearFlow):
    """LinearFlow whose inverse overflows (inf) beyond |z| = 2, as a flow's division by sigmoid can."""

    overflows = 0

    def inverse(self, z):
        out = super().inverse(z)
        bad = (z.abs() > 2).reshape(out.shape)
        self.overflows += int(bad.any())
        return torch.where(bad, torch.full_like(out, torch.inf), out)


def test_steps_into_overflow_are_undone_with_a_smaller_learning_rate():
    x = torch.linspace(-0.5, 0.5, 64).reshape(1, 1, 8, 8)  # z = 2x within the finite region
    flow = OverflowingFlow()
    cfg = FlowSolverConfig(steps=200, lr=3.0, samples=4, langevin_steps=20, langevin_step_size=0.1)
    problem = _problem(x, "superres", factor=2)
    out = solve_flow(problem, flow, cfg, seed=0)
    assert flow.overflows > 0
    assert all(torch.isfinite(torch.tensor(v)).all() for v in out.losses.values())
    assert torch.isfinite(out.image).all() and torch.isfinite(out.samples).all()
    reference = solve_flow(problem, LinearFlow(), FlowSolverConfig(steps=300, langevin_steps=0), seed=0)
    assert out.losses["total"][-1] == pytest.approx(reference.losses["total"][-1], rel=0.01)
