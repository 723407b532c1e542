"""The task registry."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brgm.operators import OPERATORS, TASKS, Denoising, Inpainting, SuperResolution, make_operator


def test_tasks_and_factory():
    assert TASKS == ("superres", "inpaint", "denoise") == tuple(OPERATORS)
    op = make_operator("superres", factor=8, kind="bicubic", noise_sigma=0.01)
    assert isinstance(op, SuperResolution) and op.factor == 8 and op.kind == "bicubic" and op.noise_sigma == 0.01
    assert isinstance(make_operator("inpaint", mask=np.zeros((4, 4))), Inpainting)
    assert make_operator("denoise", sigma=0.2).noise_sigma == 0.2
    assert isinstance(make_operator("denoise"), Denoising)


def test_unknown_task():
    with pytest.raises(ValueError, match="superres"):
        make_operator("deblur")
