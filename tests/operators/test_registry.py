"""The task registry."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brgm.operators import (OPERATORS, TASKS, Blur, Denoising, Inpainting, KSpace, SuperResolution,
                                   gaussian_psf, make_operator)


def test_tasks_and_factory():
    assert TASKS == ("superres", "inpaint", "denoise", "kspace", "deblur") == tuple(OPERATORS)
    op = make_operator("superres", factor=8, kind="bicubic", noise_sigma=0.01)
    assert isinstance(op, SuperResolution) and op.factor == 8 and op.kind == "bicubic" and op.noise_sigma == 0.01
    assert isinstance(make_operator("inpaint", mask=np.zeros((4, 4))), Inpainting)
    assert make_operator("denoise", sigma=0.2).noise_sigma == 0.2
    assert isinstance(make_operator("denoise"), Denoising)
    sampled = np.zeros((4, 4), bool)
    sampled[:, 2] = True
    assert isinstance(make_operator("kspace", sampled=sampled, noise_sigma=0.1), KSpace)
    assert isinstance(make_operator("deblur", psf=gaussian_psf(1.0)), Blur)


def test_unknown_task():
    with pytest.raises(ValueError, match="superres"):
        make_operator("deconvolve")
