"""RED-Diff: the image estimate follows the data term and the denoiser's pull, timesteps walking down."""

from __future__ import annotations

import pytest
import torch

from napari_brgm.engine.metrics import psnr
from napari_brgm.operators import make_operator
from napari_brgm.priors.diffusion import DiffusionConfig, DiffusionPrior
from napari_brgm.solvers import Monitor, Problem
from napari_brgm.solvers.reddiff import WEIGHTINGS, RedDiffConfig, solve_reddiff, timestep_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


class PointPrior(torch.nn.Module):
    """The exact ε-predictor of a prior concentrated on one image x*: ε̂(x_t) = (x_t − √ᾱ·x*)/√(1 − ᾱ)."""

    def __init__(self, target: torch.Tensor, timesteps: int = 1000):
        super().__init__()
        self.target, self.timesteps = target, timesteps
        self.img_channels, self.img_resolution = target.shape[1], target.shape[-1]
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, timesteps), 0)

    def eps(self, x_t, t):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * self.target) / (1 - a).sqrt()


def _problem(x, task="superres", sigma=0.05, seed=0, **kw):
    A = make_operator(task, **kw)
    y = A(x) + sigma * torch.randn(A(x).shape, generator=torch.Generator().manual_seed(seed))
    return Problem(None, A, A.project_measurement(y))


@pytest.fixture
def target(truth):
    return truth[1]


def test_reddiff_improves_on_its_pseudo_inverse_start_for_sr_and_inpainting(target, half_mask):
    prior = PointPrior(target)
    for problem in (_problem(target, factor=4), _problem(target, "inpaint", mask=torch.as_tensor(half_mask))):
        start = problem.operator.pseudo_inverse(problem.y)
        out = solve_reddiff(problem, prior, RedDiffConfig(steps=60, lr=0.1, samples=2), seed=0)
        assert out.samples.shape == (2, 1, 32, 32) and not out.stopped
        gain = psnr(out.samples.mean(0)[0], target[0, 0]) - psnr(start[0, 0], target[0, 0])
        assert gain > 3, gain
        # the data term stays near the noise level: the prior fills the null space, it does not override y
        assert out.losses["data"][-1] < 4 * 0.05**2


def test_reddiff_without_prior_reduces_the_data_term_from_a_zero_start(target):
    problem = _problem(target, factor=2)
    out = solve_reddiff(problem, PointPrior(target), RedDiffConfig(steps=40, lam=0.0, init="zeros", samples=1), seed=0)
    assert out.losses["data"][-1] < 0.05 * out.losses["data"][0]
    assert out.losses["regulariser"] == [0.0] * 40


def test_timesteps_descend_and_every_weighting_is_finite():
    abar = PointPrior(torch.zeros(1, 1, 8, 8)).alphas_cumprod
    ts = timestep_schedule(RedDiffConfig(steps=10, t_max=0.8, t_min=0.1), abar)
    assert ts[0] == round(0.8 * 999) and ts[-1] == round(0.1 * 999) and bool((ts[1:] < ts[:-1]).all())
    auto = timestep_schedule(RedDiffConfig(steps=10, sigma_y=0.2), abar)  # stops where the noise reaches σ_y
    ratio = ((1 - abar) / abar).sqrt()
    assert ratio[auto[-1]] >= 0.2 > ratio[auto[-1] - 2] and auto[0] == 999
    r = torch.tensor([1e-4, 1.0, 2e4])
    for name, w in WEIGHTINGS.items():
        assert torch.isfinite(w(r)).all() and (w(r) > 0).all(), name
    assert WEIGHTINGS["linear"](r)[2] == pytest.approx(r[2].sqrt().item())
    with pytest.raises(ValueError, match="weighting"):
        RedDiffConfig(weighting="cubic")


def test_reddiff_is_seeded_and_cancels_within_a_step(target):
    prior = DiffusionPrior(DiffusionConfig(resolution=32, widths=(8, 16), attention=(False, False), norm_groups=4,
                                           head_channels=8))
    problem = _problem(target, factor=4)
    cfg = RedDiffConfig(steps=4, samples=2)
    a, b = (solve_reddiff(problem, prior, cfg, seed=5).samples for _ in range(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a[0], a[1])  # the seeds of one run differ
    calls = []
    out = solve_reddiff(problem, prior, RedDiffConfig(steps=50, samples=2), seed=0,
                        monitor=Monitor(should_stop=lambda: calls.append(1) or len(calls) >= 3))
    assert out.stopped and len(out.losses["total"]) == 3
