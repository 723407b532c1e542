"""Denoising: the identity with a stated σ."""

from __future__ import annotations

import torch

from napari_brgm.operators import Denoising


def test_identity_with_stated_sigma():
    op = Denoising(0.1)
    x = torch.randn(2, 1, 5, 6)
    assert op.noise_sigma == 0.1
    for t in (op(x), op.adjoint(x), op.pseudo_inverse(x), op.back_project(torch.zeros_like(x), x)):
        assert torch.equal(t, x)
    assert torch.allclose(op.back_project(torch.zeros_like(x), x, eta=3.0), x / 4)
    assert op.output_shape((5, 6)) == (5, 6)
