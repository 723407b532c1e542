"""Back-projection x + A⁺(y − A·x) as a post-step: exact data consistency, observed pixels kept."""

from __future__ import annotations

import pytest
import torch

from napari_brgm.operators import MaskedOperator, make_operator
from napari_brgm.solvers import Problem, back_project


def _images(n=3, size=32, seed=0):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["box", "bicubic"])
def test_superres_back_projection_reproduces_the_measurement(kind):
    A = make_operator("superres", factor=4, kind=kind)
    truth, estimates = _images(1, seed=1), _images(3, seed=2)
    problem = Problem(None, A, A(truth))
    projected = back_project(problem, estimates)
    torch.testing.assert_close(A(projected), problem.y.expand(3, -1, -1, -1), rtol=0, atol=1e-5)
    # only range(Aᵀ) changes: the part of the estimate A cannot see is kept
    torch.testing.assert_close(projected - A.pseudo_inverse(A(projected)),
                               estimates - A.pseudo_inverse(A(estimates)), rtol=0, atol=1e-5)


def test_padded_superres_back_projection_fits_the_observed_measurement_only():
    padding = torch.zeros(8, 8, dtype=torch.bool)
    padding[:, :2] = True  # MISSING measurement columns
    A = MaskedOperator(make_operator("superres", factor=4), padding)
    problem = Problem(None, A, A.project_measurement(A.inner(_images(1, seed=1))))
    projected = back_project(problem, _images(2, seed=2))
    torch.testing.assert_close(A(projected), problem.y.expand(2, -1, -1, -1), rtol=0, atol=1e-5)


def test_inpainting_back_projection_copies_the_observed_pixels_and_keeps_the_rest(half_mask):
    A = make_operator("inpaint", mask=torch.as_tensor(half_mask))
    truth, estimates = _images(1, seed=1), _images(2, seed=2)
    projected = back_project(Problem(None, A, A(truth)), estimates)
    observed = torch.as_tensor(half_mask == 0)
    torch.testing.assert_close(projected[..., observed], truth[..., observed].expand(2, -1, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(projected[..., ~observed], estimates[..., ~observed], rtol=0, atol=0)


def test_regularised_back_projection_moves_part_of_the_way():
    A = make_operator("superres", factor=4)
    problem = Problem(None, A, A(_images(1, seed=1)))
    x = _images(1, seed=2)
    misfit = [problem.data_fit(back_project(problem, x, eta)).item() for eta in (0.0, 0.01, 0.1)]
    start = problem.data_fit(x).item()
    assert misfit[0] < 1e-10 < misfit[1] < misfit[2] < start
