"""Inpainting specifics: mask polarity (nonzero = MISSING), observed pixels kept exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.operators import Inpainting


def test_nonzero_mask_entries_are_missing():
    mask = np.array([[0, 1], [5, 0]])
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert torch.equal(Inpainting(mask)(x), torch.tensor([[[[1.0, 0.0], [0.0, 4.0]]]]))


def test_observed_pixels_are_kept_exactly():
    rng = np.random.default_rng(0)
    mask = rng.random((9, 11)) < 0.4
    x = torch.from_numpy(rng.standard_normal((3, 2, 9, 11)).astype(np.float32))
    y = Inpainting(torch.from_numpy(mask))(x)
    assert torch.equal(y[..., ~torch.from_numpy(mask)], x[..., ~torch.from_numpy(mask)])
    assert torch.all(y[..., torch.from_numpy(mask)] == 0)


def test_back_projection_copies_observed_pixels_and_keeps_the_rest():
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True
    op = Inpainting(mask)
    x, truth = torch.zeros(1, 1, 4, 4), torch.arange(16.0).view(1, 1, 4, 4)
    bp = op.back_project(x, op(truth))
    assert torch.equal(bp[..., 2:], truth[..., 2:])
    assert torch.equal(bp[..., :2], x[..., :2])
    half = op.back_project(x, op(truth), eta=1.0)
    assert torch.allclose(half[..., 2:], truth[..., 2:] / 2)


def test_per_sample_masks_and_missing_fraction():
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0, 0] = 1
    op = Inpainting(mask)
    y = op(torch.ones(2, 3, 2, 2))
    assert y[0, :, 0, 0].abs().sum() == 0 and y[1].min() == 1
    assert op.missing_fraction == pytest.approx(1 / 8)
    assert Inpainting(np.ones((3, 3))).missing_fraction == 1.0


def test_shape_errors():
    op = Inpainting(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="does not match"):
        op(torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="does not match"):
        op.output_shape((5, 4))
    with pytest.raises(ValueError, match="batch"):
        Inpainting(np.zeros((2, 1, 4, 4)))(torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="nonzero = missing"):
        Inpainting(np.zeros((2, 4, 4)))
