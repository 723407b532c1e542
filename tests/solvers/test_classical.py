"""The classical baselines: bicubic, biharmonic and non-local means do what the benchmarks assume."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brgm.solvers.classical import bicubic_upsample, biharmonic_inpaint, nlm_denoise


def _ramp(n=32):
    yy, xx = np.mgrid[0:n, 0:n]
    return (0.03 * yy + 0.02 * xx).astype(np.float32)


def test_bicubic_keeps_constants_and_biharmonic_continues_a_ramp():
    up = bicubic_upsample(np.full((4, 5), 7.0), 3)
    assert up.shape == (12, 15) and np.allclose(up, 7.0, atol=1e-5)
    ramp = _ramp()
    missing = np.zeros_like(ramp, np.uint8)
    missing[10:20, 12:24] = 1
    np.testing.assert_allclose(biharmonic_inpaint(ramp, missing), ramp, atol=1e-3)


def test_nlm_removes_most_of_known_noise_and_refuses_bad_sigma():
    clean = np.kron(np.array([[0.0, 1.0], [1.0, 0.0]]), np.ones((16, 16))).astype(np.float32)
    noisy = clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    before, after = np.sqrt(np.mean((noisy - clean) ** 2)), np.sqrt(np.mean((nlm_denoise(noisy, 0.1) - clean) ** 2))
    assert after < 0.5 * before
    with pytest.raises(ValueError, match="sigma must be positive"):
        nlm_denoise(noisy, 0.0)
