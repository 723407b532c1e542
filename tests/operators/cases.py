"""Operator configurations shared by the contract tests: (id, factory, input shape [N, C, H, W])."""

from __future__ import annotations

import numpy as np

from napari_brgm.operators import Blur, Denoising, Inpainting, KSpace, MaskedOperator, SuperResolution, sampling_mask


def random_mask(shape, fraction=0.3, seed=0):
    """A random missing-mask (True = missing)."""
    return np.random.default_rng(seed).random(shape) < fraction


def rect_mask(h, w, top, left, height, width):
    """A rectangular missing region (True = missing)."""
    mask = np.zeros((h, w), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


def _masked_bicubic():
    inner = SuperResolution(4, "bicubic")
    mask = rect_mask(6, 5, 0, 3, 6, 2) | random_mask((6, 5), 0.2, seed=3)
    return MaskedOperator(inner, mask)


def _odd_user_kspace():
    """A 2-D mask of scattered samples on an odd grid (not conjugate-symmetric), DC sampled."""
    sampled = np.random.default_rng(4).random((7, 9)) < 0.4
    sampled[3, 4] = True
    return KSpace(sampled)


CASES = [
    ("box-f2", lambda: SuperResolution(2, "box"), (2, 2, 8, 12)),
    ("box-f3", lambda: SuperResolution(3, "box"), (2, 1, 12, 9)),
    ("box-f4", lambda: SuperResolution(4, "box"), (1, 2, 16, 16)),
    ("box-f8", lambda: SuperResolution(8, "box"), (2, 1, 16, 24)),
    ("box-f32", lambda: SuperResolution(32, "box"), (1, 1, 64, 32)),
    ("bicubic-f2", lambda: SuperResolution(2, "bicubic"), (2, 2, 8, 12)),
    ("bicubic-f3", lambda: SuperResolution(3, "bicubic"), (2, 1, 12, 9)),
    ("bicubic-f4", lambda: SuperResolution(4, "bicubic"), (1, 2, 16, 16)),
    ("bicubic-f8", lambda: SuperResolution(8, "bicubic"), (2, 1, 16, 24)),
    ("bicubic-f32", lambda: SuperResolution(32, "bicubic"), (1, 1, 64, 32)),
    ("inpaint-random", lambda: Inpainting(random_mask((10, 12))), (2, 2, 10, 12)),
    ("inpaint-rect", lambda: Inpainting(rect_mask(10, 12, 2, 3, 5, 6)), (1, 1, 10, 12)),
    ("inpaint-batched-mask", lambda: Inpainting(random_mask((2, 1, 8, 8), 0.5, seed=1)), (2, 1, 8, 8)),
    ("denoise", lambda: Denoising(0.1), (2, 2, 7, 9)),
    ("masked-box-f2", lambda: MaskedOperator(SuperResolution(2, "box"), rect_mask(6, 6, 0, 0, 6, 2)), (2, 1, 12, 12)),
    ("masked-bicubic-f4", _masked_bicubic, (1, 2, 24, 20)),
    ("kspace-random", lambda: KSpace(sampling_mask((8, 10), 4, 0.2, "random", seed=1)), (2, 1, 8, 10)),
    ("kspace-odd", _odd_user_kspace, (1, 2, 7, 9)),
    ("kspace-rows", lambda: KSpace(sampling_mask((12, 8), 3, 0.1, "equispaced", seed=2, axis=-2)), (2, 2, 12, 8)),
    ("blur-gaussian", lambda: Blur.of("gaussian", 0.7), (2, 1, 8, 10)),
    ("blur-box", lambda: Blur.of("box", 3), (1, 2, 9, 9)),
    ("masked-denoise", lambda: MaskedOperator(Denoising(0.05), random_mask((6, 7), 0.4, seed=2)), (1, 1, 6, 7)),
]
