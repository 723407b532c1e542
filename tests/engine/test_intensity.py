"""IntensityMap: input units ↔ the generator's [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.engine.intensity import IntensityMap


def test_lo_and_hi_map_to_minus_one_and_one():
    m = IntensityMap(-1000.0, 3000.0)
    np.testing.assert_array_equal(m.to_model(np.array([-1000.0, 1000.0, 3000.0, 5000.0])), [-1.0, 0.0, 1.0, 2.0])
    assert m.to_model(-1000.0) == -1.0 and m.to_model(3000) == 1.0


@pytest.mark.parametrize("lo,hi", [(-1024.0, 3071.0), (0.0, 32767.0), (0.013, 0.017), (-5.5, 1e6)])
def test_round_trip_numpy_and_torch(lo, hi):
    m = IntensityMap(lo, hi)
    x = np.random.default_rng(0).uniform(lo - (hi - lo), hi + (hi - lo), size=(7, 5))
    np.testing.assert_allclose(m.to_input(m.to_model(x)), x, rtol=1e-12, atol=1e-12 * (hi - lo))
    t = torch.from_numpy(x)
    back = m.to_input(m.to_model(t))
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float64
    torch.testing.assert_close(back, t, rtol=1e-12, atol=1e-12 * (hi - lo))


def test_dtypes_are_kept_and_integers_become_float():
    m = IntensityMap(0, 4095)
    assert m.to_model(np.zeros(3, np.float32)).dtype == np.float32
    assert m.to_model(np.array([0, 4095], np.uint16)).tolist() == [-1.0, 1.0]
    assert m.to_model(torch.tensor([0, 4095])).dtype == torch.float32
    assert m.to_model(torch.zeros(2, dtype=torch.float64)).dtype == torch.float64


def test_clip_is_optional():
    m = IntensityMap(0, 10)
    x = np.array([-5.0, 5.0, 20.0])
    np.testing.assert_array_equal(m.to_model(x), [-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(m.to_model(x, clip=True), [-1.0, 0.0, 1.0])
    assert m.to_model(torch.tensor(x), clip=True).tolist() == [-1.0, 0.0, 1.0]


def test_as_dict_rebuilds_the_map():
    m = IntensityMap.from_window(40, 400)
    assert m.as_dict() == {"lo": -160.0, "hi": 240.0}
    assert IntensityMap(**m.as_dict()) == m


def test_window():
    m = IntensityMap.from_window(40, 400)  # a CT soft-tissue window, in HU
    assert (m.lo, m.hi) == (-160.0, 240.0)
    assert m.centre == 40 and m.width == 400
    assert m.to_model(40.0) == 0.0
    with pytest.raises(ValueError, match="width"):
        IntensityMap.from_window(40, 0)


def test_sigma_scaling():
    m = IntensityMap(-1000, 1000)
    assert m.scale_sigma(25.0) == pytest.approx(0.025)
    assert m.sigma_to_input(m.scale_sigma(25.0)) == pytest.approx(25.0)
    np.testing.assert_allclose(m.sigma_to_input(np.array([0.1, 0.2])), [100.0, 200.0])
    # consistent with the map: noise of std s in input units has std scale_sigma(s) in model units
    noise = np.random.default_rng(1).normal(0, 25.0, 200_000)
    assert np.std(m.to_model(noise) - m.to_model(0.0)) == pytest.approx(0.025, rel=0.01)


def test_percentiles():
    img = np.arange(1000.0).reshape(20, 50)
    m = IntensityMap.from_percentiles(img, 1, 99)
    assert m.lo == pytest.approx(np.percentile(img, 1)) and m.hi == pytest.approx(np.percentile(img, 99))
    m_t = IntensityMap.from_percentiles(torch.from_numpy(img), 1, 99)
    assert (m_t.lo, m_t.hi) == (m.lo, m.hi)


def test_percentiles_ignore_missing_pixels():
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 100, (32, 32))
    mask = np.zeros(img.shape, bool)
    mask[:, :8] = True
    img[mask] = 1e6  # whatever was painted over must not set the range
    m = IntensityMap.from_percentiles(img, 0, 100, mask=mask.astype(np.uint8))
    assert (m.lo, m.hi) == (img[~mask].min(), img[~mask].max())
    m_t = IntensityMap.from_percentiles(torch.from_numpy(img), 0, 100, mask=torch.from_numpy(mask))
    assert m_t.hi == img[~mask].max()
    assert IntensityMap.from_percentiles(img, 0, 100).hi == 1e6


def test_sparse_image_falls_back_to_min_max():
    img = np.zeros((100, 100))
    img[0, :10] = 50.0  # 0.1% non-zero: both percentiles are 0
    m = IntensityMap.from_percentiles(img)
    assert (m.lo, m.hi) == (0.0, 50.0)


def test_errors():
    with pytest.raises(ValueError, match="constant"):
        IntensityMap.from_percentiles(np.full((8, 8), 3.0))
    with pytest.raises(ValueError, match="constant"):
        IntensityMap.from_percentiles(np.where(np.eye(8) > 0, 9.0, 3.0), mask=np.eye(8))
    with pytest.raises(ValueError, match="no observed"):
        IntensityMap.from_percentiles(np.ones((4, 4)), mask=np.ones((4, 4)))
    with pytest.raises(ValueError, match="does not match"):
        IntensityMap.from_percentiles(np.ones((4, 4)), mask=np.ones((4, 5)))
    with pytest.raises(ValueError, match="percentiles"):
        IntensityMap.from_percentiles(np.arange(16.0), lo=60, hi=40)
    with pytest.raises(ValueError, match="hi > lo"):
        IntensityMap(1.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        IntensityMap(0.0, float("inf"))
