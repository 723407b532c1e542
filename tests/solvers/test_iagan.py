"""IAGAN: CSGM, then joint fine-tuning of z and the synthesis weights on a COPY of the generator."""

from __future__ import annotations

import torch

from napari_brgm.operators import make_operator
from napari_brgm.solvers import CsgmConfig, IaganConfig, Monitor, Problem, solve_iagan


def _problem(G, x):
    A = make_operator("superres", factor=4)
    return Problem(G, A, A(x))


def _cfg(**kw):
    return IaganConfig(**{"steps": 40, "csgm": CsgmConfig(steps=20, restarts=2), **kw})


def test_adaptation_fits_the_data_better_than_csgm_and_never_touches_the_given_generator(tiny_generator, truth):
    _, x = truth
    G = tiny_generator
    before = {k: v.clone() for k, v in G.state_dict().items()}
    problem = _problem(G, x)
    out = solve_iagan(problem, _cfg(lr_g=1e-3, early_stop=False), seed=0)
    assert problem.data_fit(out.image).item() < 0.5 * problem.data_fit(out.csgm_image).item()
    assert out.generator is not G and not out.stopped and len(out.losses["iagan/data"]) == 40
    after = G.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in G.parameters())
    assert not any(p.requires_grad for p in out.generator.parameters())  # frozen again for what follows
    changed = [k for k, v in out.generator.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.startswith("synthesis.") for k in changed)  # the mapping (and W statistics) stay


def test_early_stopping_ends_the_adaptation_at_the_noise_level(tiny_generator, truth):
    _, x = truth
    out = solve_iagan(_problem(tiny_generator, x), _cfg(steps=500, sigma_y=10.0), seed=0)
    assert out.early_stopped_at == 1 and len(out.losses["iagan/data"]) == 1 and not out.stopped


def test_cancel_in_the_adaptive_stage_returns_within_a_step(tiny_generator, truth):
    _, x = truth
    stages = []
    monitor = Monitor(progress=lambda stage, *a: stages.append(stage), should_stop=lambda: len(stages) >= 23)
    out = solve_iagan(_problem(tiny_generator, x), _cfg(steps=10_000, early_stop=False), seed=0, monitor=monitor)
    assert out.stopped and stages.count("csgm") == 20 and stages.count("iagan") == 3
    assert len(out.losses["iagan/data"]) == 3 and out.image.shape == (1, 1, 32, 32)
