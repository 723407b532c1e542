"""plan_fit / FitPlan: an input of any size ↔ the prior's R×R model domain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_brgm.engine.geometry import MAX_OVERSIZE, area_matrix, plan_fit
from napari_brgm.operators import MaskedOperator, SuperResolution


def smooth(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return (np.sin(yy / 9.0) + np.cos(xx / 7.0) + 0.01 * yy).astype(np.float64)


SIZES_F1 = [(64, 64), (50, 37), (63, 1), (1, 64), (33, 64), (5, 7)]


@pytest.mark.parametrize("hw", SIZES_F1)
def test_inputs_that_fit_are_padded_and_cropped_back_exactly(hw):
    plan = plan_fit(hw, 64)
    assert not plan.resized and plan.scale == 1.0
    img = np.random.default_rng(0).random(hw)
    model = plan.to_model(img)
    assert tuple(model.shape) == (64, 64) and model.dtype == torch.float64
    np.testing.assert_array_equal(plan.from_model(model.numpy()), img)
    missing = plan.model_mask()
    assert missing.sum() == 64 * 64 - hw[0] * hw[1]
    top, left = plan.offset
    assert not missing[top : top + hw[0], left : left + hw[1]].any()
    assert abs((top - (64 - top - hw[0]))) <= 1 and abs(left - (64 - left - hw[1])) <= 1  # centred


def test_padding_replicates_the_edge():
    img = np.arange(12.0).reshape(3, 4)
    plan = plan_fit((3, 4), 8)
    m = plan.to_model(img).numpy()
    top, left = plan.offset
    assert (top, left) == (2, 2)
    np.testing.assert_array_equal(m[0, left : left + 4], img[0])
    np.testing.assert_array_equal(m[-1, left : left + 4], img[-1])
    np.testing.assert_array_equal(m[top : top + 3, 0], img[:, 0])
    assert m[0, 0] == img[0, 0] and m[-1, -1] == img[-1, -1]


@pytest.mark.parametrize(
    "hw,fitted", [((128, 128), (64, 64)), ((200, 100), (64, 32)), ((255, 99), (64, 25)), ((65, 64), (64, 63))]
)
def test_larger_inputs_are_reduced_keeping_the_aspect_ratio(hw, fitted):
    plan = plan_fit(hw, 64)
    assert plan.resized and plan.fitted_hw == fitted and plan.output_hw == hw
    assert plan.scale == pytest.approx(64 / max(hw))
    assert any("detail is lost" in n for n in plan.notes)
    img = smooth(*hw)
    model = plan.to_model(img)
    assert tuple(model.shape) == (64, 64)
    back = plan.from_model(model)
    assert back.shape == hw
    # a smooth image (range about 4) survives the round trip up to blur and interpolation error
    err = np.abs(back - img)
    assert err.mean() < 0.02 and err[8:-8, 8:-8].max() < 0.06


@pytest.mark.parametrize("n_in,n_out", [(200, 64), (99, 25), (7, 3), (128, 64)])
def test_area_matrix_keeps_pixel_centres_aligned(n_in, n_out):
    """Fractional overlaps: centres drift < 0.05 input pixel (torch's adaptive pooling: up to 0.44)."""
    a = area_matrix(n_in, n_out)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)
    centres = a @ (np.arange(n_in) + 0.5)
    np.testing.assert_allclose(centres, (np.arange(n_out) + 0.5) * n_in / n_out, atol=0.05)


def test_area_reduction_of_an_exact_multiple_is_the_block_mean():
    img = np.random.default_rng(1).random((128, 64))
    plan = plan_fit((128, 64), 64)
    top, left = plan.offset
    m = plan.to_model(img).numpy()[top : top + 64, left : left + 32]
    np.testing.assert_allclose(m, img.reshape(64, 2, 32, 2).mean(axis=(1, 3)), rtol=1e-12)


@pytest.mark.parametrize("hw", [(8, 8), (5, 7), (1, 3), (13, 16)])
@pytest.mark.parametrize("factor", [2, 4])
def test_super_resolution_output_is_exactly_factor_times_the_input(hw, factor):
    r = 16 * factor
    plan = plan_fit(hw, r, factor)
    assert plan.measurement_hw == (r // factor, r // factor)
    assert plan.output_hw == (factor * hw[0], factor * hw[1])
    y = plan.to_model(np.ones(hw, np.float32))
    assert tuple(y.shape) == plan.measurement_hw
    out = plan.from_model(np.zeros((2, r, r), np.float32))
    assert out.shape == (2, factor * hw[0], factor * hw[1]) and out.dtype == np.float32


@pytest.mark.parametrize("hw", [(8, 8), (5, 7), (3, 1)])
def test_super_resolution_measurement_and_model_domains_line_up(hw):
    """A high-res image placed by the plan, downsampled and masked, gives the planned measurement."""
    f, r = 4, 32
    plan = plan_fit(hw, r, f)
    truth = np.random.default_rng(2).random((f * hw[0], f * hw[1]))
    y = truth.reshape(hw[0], f, hw[1], f).mean(axis=(1, 3))  # the low-res input
    model_image = np.zeros((r, r))
    top, left = plan.offset
    model_image[f * top : f * (top + hw[0]), f * left : f * (left + hw[1])] = truth
    op = MaskedOperator(SuperResolution(f, "box"), plan.model_mask())
    measured = op(torch.from_numpy(model_image)[None, None])[0, 0]
    expected = op.project_measurement(plan.to_model(y)[None, None])[0, 0]
    torch.testing.assert_close(measured, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(plan.from_model(model_image), truth)


def test_super_resolution_of_a_larger_input_reduces_the_measurement_and_scales_back():
    plan = plan_fit((60, 36), 64, 4)
    assert plan.fitted_hw == (16, 10) and plan.resized and plan.offset == (0, 3)
    assert plan.output_hw == (240, 144)
    assert plan.from_model(np.zeros((64, 64))).shape == (240, 144)
    assert "measurement" in plan.notes[0]


def test_resize_mode_also_enlarges_small_inputs():
    plan = plan_fit((20, 10), 64, mode="resize")
    assert plan.fitted_hw == (64, 32) and plan.scale == pytest.approx(3.2)
    img = smooth(20, 10)
    back = plan.from_model(plan.to_model(img))
    assert back.shape == (20, 10)
    assert np.abs(back - img).max() < 0.02
    assert "enlarged" in plan.notes[0]


def test_user_mask_is_placed_and_joined_with_the_padding():
    plan = plan_fit((6, 4), 8)
    mask = np.zeros((6, 4), np.uint8)
    mask[1, 2] = 255
    missing = plan.model_mask(mask)
    top, left = plan.offset
    expected = plan.padding_mask.copy()
    expected[top + 1, left + 2] = True
    np.testing.assert_array_equal(missing, expected)
    assert missing.dtype == bool
    np.testing.assert_array_equal(plan.model_mask(torch.from_numpy(mask)), expected)


def test_reduced_mask_covers_every_pixel_touched_by_missing_input():
    """Painted-over values leak into neighbours when averaging; those neighbours must be missing."""
    hw = (96, 72)
    plan = plan_fit(hw, 64)
    rng = np.random.default_rng(3)
    mask = np.zeros(hw, bool)
    mask[rng.integers(0, 96, 40), rng.integers(0, 72, 40)] = True
    mask[30:50, 10:13] = True
    img = smooth(*hw)
    garbage = img.copy()
    garbage[mask] = 1e6
    missing = plan.model_mask(mask)
    clean, dirty = plan.to_model(img).numpy(), plan.to_model(garbage).numpy()
    np.testing.assert_allclose(dirty[~missing], clean[~missing], rtol=1e-12)
    assert missing.sum() - plan.padding_mask.sum() < 0.25 * 64 * 48  # conservative, not everything


def test_describe_and_measurement_padding():
    plan = plan_fit((20, 30), 256, 8)
    d = json.loads(json.dumps(plan.describe()))
    assert d["measurement_hw"] == [32, 32] and d["output_hw"] == [160, 240] and d["offset"] == [6, 1]
    assert d["padded"] and not d["resized"] and len(d["notes"]) == 1
    np.testing.assert_array_equal(plan.measurement_padding(), plan.padding_mask)
    assert plan_fit((32, 32), 256, 8).measurement_padding() is None


def test_torch_input_keeps_dtype_and_device():
    plan = plan_fit((10, 12), 16)
    t = torch.rand(10, 12, dtype=torch.float32)
    m = plan.to_model(t)
    assert m.dtype == torch.float32 and m.device == t.device
    assert plan.to_model(np.zeros((10, 12), np.uint16)).dtype == torch.float32
    out = plan.from_model(m.requires_grad_())
    assert isinstance(out, np.ndarray) and out.shape == (10, 12)


def test_oversize_limit_is_inclusive():
    plan_fit((MAX_OVERSIZE * 64, 10), 64)
    with pytest.raises(ValueError, match="far larger"):
        plan_fit((MAX_OVERSIZE * 64 + 1, 10), 64)
    with pytest.raises(ValueError, match="smaller factor"):
        plan_fit((MAX_OVERSIZE * 8 + 1, 10), 64, 8)


def test_errors():
    with pytest.raises(ValueError, match=r"allowed factors for this prior: \[2, 4, 8, 16, 32\]"):
        plan_fit((10, 10), 256, 3)
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        plan_fit((2, 2), 4, 8)
    with pytest.raises(ValueError, match="power of two"):
        plan_fit((10, 10), 100)
    with pytest.raises(ValueError, match="'auto' or 'resize'"):
        plan_fit((65, 10), 64, mode="pad")
    with pytest.raises(ValueError, match="fit mode"):
        plan_fit((10, 10), 64, mode="crop")
    with pytest.raises(ValueError, match="factor"):
        plan_fit((10, 10), 64, 33)
    with pytest.raises(ValueError, match="positive integers"):
        plan_fit((0, 10), 64)
    plan = plan_fit((10, 10), 64)
    with pytest.raises(ValueError, match="planned shape"):
        plan.to_model(np.zeros((10, 11)))
    with pytest.raises(ValueError, match="planned shape"):
        plan.model_mask(np.zeros((11, 10)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 64, 64\]"):
        plan.from_model(np.zeros((32, 32)))


def test_detail_lost_names_a_reduced_input_only():
    from napari_brgm.engine.geometry import detail_lost, plan_fit

    reduced = plan_fit((54, 45), 64, factor=4).describe()
    assert "54x45 reduced to 16x13" in detail_lost(reduced) and "detail is lost" in detail_lost(reduced)
    assert detail_lost(plan_fit((15, 12), 64, factor=4).describe()) is None  # padded, not reduced
    assert detail_lost(None) is None
