"""CSGM on the tiny generator: batched restarts in z, the best data fit kept, progress and cancel."""

from __future__ import annotations

import torch

from napari_brgm.engine.metrics import psnr
from napari_brgm.operators import make_operator
from napari_brgm.solvers import CsgmConfig, Monitor, Problem, solve_csgm
from napari_brgm.solvers.csgm import initial_z, render


def _problem(G, x, factor=4):
    A = make_operator("superres", factor=factor)
    return Problem(G, A, A(x))


def test_csgm_fits_the_data_far_better_than_its_random_starts(tiny_generator, truth):
    _, x = truth
    problem = _problem(tiny_generator, x)
    out = solve_csgm(problem, CsgmConfig(steps=60, restarts=3), seed=0)
    with torch.no_grad():
        starts = render(tiny_generator, initial_z(tiny_generator, 3, 0, x.device))
    start_fit = problem.data_fit(starts).min().item()
    assert problem.data_fit(out.image).item() < 0.3 * start_fit
    best_start_psnr = max(psnr(s[0], x[0, 0]) for s in starts)
    assert psnr(out.image[0, 0], x[0, 0]) > best_start_psnr + 3


def test_restarts_run_in_one_generator_call_and_the_best_data_fit_is_kept(tiny_generator, truth):
    _, x = truth
    problem = _problem(tiny_generator, x)
    batches = []
    hook = tiny_generator.synthesis.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        out = solve_csgm(problem, CsgmConfig(steps=5, restarts=4), seed=1)
    finally:
        hook.remove()
    assert batches == [4] * 6  # 5 steps and the final render, all four restarts at once
    assert out.data_fits.shape == (4,) and out.z.shape == (1, tiny_generator.z_dim)
    torch.testing.assert_close(problem.data_fit(out.image), out.data_fits.min()[None])
    torch.testing.assert_close(out.ws, tiny_generator.mapping(out.z))


def test_csgm_is_repeatable_for_a_seed(tiny_generator, truth):
    _, x = truth
    problem = _problem(tiny_generator, x)
    cfg = CsgmConfig(steps=3, restarts=2)
    a, b, c = (solve_csgm(problem, cfg, seed=s) for s in (4, 4, 5))
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
    assert not torch.allclose(a.image, c.image)


def test_csgm_cancel_returns_after_the_step_with_a_flag(tiny_generator, truth):
    _, x = truth
    seen = []
    monitor = Monitor(progress=lambda *a: seen.append(a), should_stop=lambda: len(seen) >= 2, preview_every=1)
    out = solve_csgm(_problem(tiny_generator, x), CsgmConfig(steps=10_000, restarts=2), seed=0, monitor=monitor)
    assert out.stopped and len(out.losses["total"]) == 2
    assert seen[0][0] == "csgm" and seen[0][4].shape == (1, 1, 32, 32)  # the preview is the best restart
    assert set(seen[0][3]) == {"data", "z_prior", "best_data", "total"}
