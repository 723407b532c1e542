"""Task name → forward-model class, so the engine, the CLI and the tests share one list."""

from __future__ import annotations

from napari_brgm.operators.base import LinearOperator
from napari_brgm.operators.blur import Blur
from napari_brgm.operators.denoising import Denoising
from napari_brgm.operators.inpainting import Inpainting
from napari_brgm.operators.kspace import KSpace
from napari_brgm.operators.superres import SuperResolution

OPERATORS: dict[str, type[LinearOperator]] = {
    "superres": SuperResolution,
    "inpaint": Inpainting,
    "denoise": Denoising,
    "kspace": KSpace,
    "deblur": Blur,
}
TASKS: tuple[str, ...] = tuple(OPERATORS)


def make_operator(task: str, **kwargs) -> LinearOperator:
    """The forward model of `task`, built from keyword arguments.

    superres: factor, kind, noise_sigma; inpaint: mask (nonzero = MISSING), noise_sigma; denoise: sigma;
    kspace: sampled (nonzero = SAMPLED, DC at the centre), noise_sigma; deblur: psf (a kernel), noise_sigma.
    """
    try:
        cls = OPERATORS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}") from None
    return cls(**kwargs)
