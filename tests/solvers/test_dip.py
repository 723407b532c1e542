"""Deep Image Prior: an untrained MONAI network fitted to y; needs no generator."""

from __future__ import annotations

import pytest
import torch

from napari_brgm.operators import make_operator
from napari_brgm.solvers import DipConfig, Monitor, Problem, solve_dip
from napari_brgm.solvers.dip import build_network, restart_seed


def _problem(x, task="superres", **kw):
    A = make_operator(task, **kw)
    return Problem(None, A, A.project_measurement(A(x)))


def _initial_output(cfg, x, seed):
    net = build_network(cfg, 1, seed).train()
    z = 0.1 * torch.rand((1, cfg.input_channels, *x.shape[-2:]), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net(z)


def test_dip_fits_the_measurement_far_better_than_the_untrained_network(truth):
    _, x = truth
    problem = _problem(x, factor=4)
    cfg = DipConfig(steps=80, early_stop=False, samples=4)
    out = solve_dip(problem, cfg, seed=0, image_hw=(32, 32))
    start = problem.data_fit(_initial_output(cfg, x, 0)).item()
    assert problem.data_fit(out.image).item() < 0.1 * start
    assert out.losses["data"][-1] < 0.1 * out.losses["data"][0]
    assert out.samples.shape == (4, 1, 32, 32) and not out.stopped and out.early_stopped_at is None


def test_dip_inpaints_with_a_mask_and_the_ema_smooths_the_iterates(truth, half_mask):
    _, x = truth
    problem = _problem(x, "inpaint", mask=torch.as_tensor(half_mask))
    out = solve_dip(problem, DipConfig(steps=40, early_stop=False, samples=3, sample_every=5), seed=1,
                    image_hw=(32, 32))
    assert problem.data_fit(out.image).item() < 0.5 * out.losses["data"][0]
    assert out.samples.shape == (3, 1, 32, 32) and out.samples.std(dim=0).mean() > 0


def test_dip_stops_early_at_the_noise_level_and_is_repeatable(truth):
    _, x = truth
    problem = _problem(x, factor=2)
    cfg = DipConfig(steps=500, sigma_y=10.0)
    a, b = solve_dip(problem, cfg, seed=3, image_hw=(32, 32)), solve_dip(problem, cfg, seed=3, image_hw=(32, 32))
    assert a.early_stopped_at == 1 and len(a.losses["data"]) == 1 and a.samples.shape == (1, 1, 32, 32)
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)


def test_dip_cancel_returns_within_a_step(truth):
    _, x = truth
    seen = []
    monitor = Monitor(progress=lambda *a: seen.append(a), should_stop=lambda: len(seen) >= 3, preview_every=3)
    out = solve_dip(_problem(x, factor=4), DipConfig(steps=10_000, early_stop=False), seed=0, image_hw=(32, 32),
                    monitor=monitor)
    assert out.stopped and len(out.losses["data"]) == 3 and seen[-1][0] == "dip"
    assert seen[-1][4].shape == (1, 1, 32, 32) and out.samples.shape == (1, 1, 32, 32)


def test_dip_refuses_sizes_its_network_cannot_halve_four_times(truth):
    A = make_operator("denoise", sigma=0.1)
    with pytest.raises(ValueError, match="multiples of 16"):
        solve_dip(Problem(None, A, torch.zeros(1, 1, 24, 24)), DipConfig(steps=1), seed=0, image_hw=(24, 24))


def test_restarts_average_independent_networks_and_report_progress_over_all_of_them(truth):
    _, x = truth
    problem = _problem(x, factor=4)
    cfg = DipConfig(steps=15, early_stop=False, samples=5, sample_every=5, restarts=3)
    seen = []
    out = solve_dip(problem, cfg, seed=2, image_hw=(32, 32), monitor=Monitor(progress=lambda *a: seen.append(a[1:3])))
    single = DipConfig(steps=15, early_stop=False, samples=2, sample_every=5)
    singles = [solve_dip(problem, single, seed=restart_seed(2, r), image_hw=(32, 32)) for r in range(3)]
    torch.testing.assert_close(out.image, torch.stack([s.image for s in singles]).mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.samples, torch.cat([s.samples for s in singles]), rtol=0, atol=0)
    assert out.restarts_done == 3 and len(out.losses["data"]) == 45 and not out.stopped
    assert seen == [(step, 45) for step in range(1, 46)]
    errors = [((s.image - x) ** 2).mean().item() for s in singles]
    assert ((out.image - x) ** 2).mean().item() < max(errors)  # the mean of the restarts beats the worst of them


def test_restart_streams_differ_between_seeds_and_restarts():
    streams = {restart_seed(seed, r) for seed in range(4) for r in range(4)}
    assert len(streams) == 16 and restart_seed(5, 0) == 5


def test_cancel_in_a_later_restart_returns_the_mean_of_those_fitted_so_far(truth):
    _, x = truth
    problem = _problem(x, factor=4)
    seen = []
    monitor = Monitor(progress=lambda *a: seen.append(a), should_stop=lambda: len(seen) >= 13, preview_every=1)
    out = solve_dip(problem, DipConfig(steps=10, early_stop=False, restarts=3), seed=0, image_hw=(32, 32),
                    monitor=monitor)
    first = solve_dip(problem, DipConfig(steps=10, early_stop=False), seed=0, image_hw=(32, 32))
    assert out.stopped and out.restarts_done == 2 and len(out.losses["data"]) == 13
    assert not torch.allclose(out.image, first.image)
    torch.testing.assert_close(seen[-1][4], out.image, rtol=0, atol=1e-6)  # the preview is the running mean
