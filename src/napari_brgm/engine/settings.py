"""The settings of one reconstruction, validated before any heavy work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_brgm.operators.registry import TASKS

METHODS = ("map", "vi")
SR_FACTORS = range(2, 33)


@dataclass
class Settings:
    """Everything that determines a run; recorded in `Result.settings` and layer metadata."""

    task: str = "superres"  # "superres", "inpaint" or "denoise"
    factor: int = 4  # super-resolution factor (outputs are factor× the input size)
    prior: str | None = None  # built-in prior name or checkpoint path
    method: str = "map"  # "map" or "vi"
    steps: int = 501  # optimisation steps per stage (BRGM: 501)
    samples: int = 16  # S: posterior samples drawn at the end (VI)
    seed: int = 0  # seeds every random draw of the run
    device: str = "auto"  # "auto", "cpu" or "cuda"
    vi_mode: str = "elbo"  # "elbo" (a real ELBO) or "brgm" (the reference code's loss)
    mc_samples: int = 6  # K: samples of q per VI step, batched in one generator call
    sigma_y: float | None = None  # measurement noise std in INPUT units (None: 2.5% of the intensity range)
    window: tuple[float, float] | None = None  # (centre, width) mapped to the generator's [-1, 1]; None: percentiles
    sr_kind: str = "box"  # super-resolution operator: "box" (area average) or "bicubic" (antialiased)
    fit: str = "auto"  # how the input meets the prior's resolution: "auto", "pad" or "resize"
    lambda_c: float | None = None  # colinearity weight (None: BRGM's default for the task)
    perceptual_weights: str | None = None  # local VGG16/LPIPS weights file enabling the perceptual term
    precision: str = "fp32"  # "fp32" (exact) or "bf16" (3×3 convolutions in bfloat16: faster on CPUs with bf16)

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.task == "superres" and self.factor not in SR_FACTORS:
            raise ValueError(f"super-resolution factor must be an integer from 2 to 32, got {self.factor!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.samples < 1 or self.mc_samples < 1:
            raise ValueError("samples and mc_samples must be at least 1")
        if self.vi_mode not in ("elbo", "brgm"):
            raise ValueError(f"vi_mode must be 'elbo' or 'brgm', got {self.vi_mode!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.sigma_y is not None and not self.sigma_y > 0:
            raise ValueError(f"sigma_y must be positive, got {self.sigma_y}")
        if self.window is not None and not self.window[1] > 0:
            raise ValueError(f"window width must be positive, got {self.window}")

    def as_dict(self) -> dict:
        return asdict(self)


def validate_inputs(image, mask, settings: Settings) -> tuple[np.ndarray, np.ndarray | None]:
    """Check the image and mask against the task; return float32 image and boolean missing-mask."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D array (one slice), got shape {image.shape}")
    if min(image.shape) < 2:
        raise ValueError(f"image is too small: {image.shape}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    if settings.task != "inpaint":
        if mask is not None:
            raise ValueError(f"a mask is only used for inpainting, not for task {settings.task!r}")
        return image, None
    if mask is None:
        raise ValueError("inpainting needs a mask (nonzero = missing)")
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
    missing = mask != 0
    if not missing.any():
        raise ValueError("the mask is empty: paint the missing region (nonzero = missing)")
    if missing.all():
        raise ValueError("the mask covers the whole image: nothing is observed")
    return image, missing
