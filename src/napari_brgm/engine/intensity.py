"""Linear map between input intensities (HU, MR units, CR pixel values) and the generator's [-1, 1]."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

DEGENERATE_RANGE = 1e-6  # a range this small relative to the values' magnitude counts as constant


def _as_float(x):
    """numpy/torch arrays keep a floating dtype (integers become float64 / float32); scalars become float."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.float()
    if np.isscalar(x):
        return float(x)
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass(frozen=True)
class IntensityMap:
    """Input value `lo` ↦ −1 and `hi` ↦ +1, linearly, for numpy arrays, torch tensors and scalars.

    Values outside [lo, hi] map outside [−1, 1] (nothing is lost) unless `clip=True` is asked for;
    `to_input` is the exact inverse and keeps the output in the input's units.
    """

    lo: float
    hi: float

    def __post_init__(self):
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ValueError(f"intensity range must be finite, got [{self.lo}, {self.hi}]")
        if not self.hi > self.lo:
            raise ValueError(f"intensity range needs hi > lo, got [{self.lo}, {self.hi}]")

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @property
    def centre(self) -> float:
        return (self.lo + self.hi) / 2

    def as_dict(self) -> dict:
        """{"lo", "hi"} as plain floats, for recording a run (`IntensityMap(**d)` rebuilds it)."""
        return {"lo": self.lo, "hi": self.hi}

    @classmethod
    def from_window(cls, centre: float, width: float) -> IntensityMap:
        """A display window (centre/level, width) as in DICOM: [centre − width/2, centre + width/2] ↦ [−1, 1]."""
        if not float(width) > 0:
            raise ValueError(f"window width must be positive, got {width}")
        return cls(float(centre) - float(width) / 2, float(centre) + float(width) / 2)

    @classmethod
    def from_percentiles(cls, image, lo: float = 0.5, hi: float = 99.5, mask=None) -> IntensityMap:
        """Map the `lo`-th and `hi`-th percentiles of the image to −1 and +1.

        `mask` (same shape; NONZERO = MISSING) excludes missing pixels, whose values are not data.
        If the percentiles coincide (e.g. > 99% background), the observed min and max are used;
        a constant image raises ValueError.
        """
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles need 0 <= lo < hi <= 100, got lo={lo}, hi={hi}")
        values = _to_numpy(image).astype(np.float64, copy=False)
        if mask is not None:
            missing = _to_numpy(mask) != 0
            if missing.shape != values.shape:
                raise ValueError(f"mask shape {missing.shape} does not match image shape {values.shape}")
            values = values[~missing]
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError("no observed finite pixel to compute the intensity range from")
        p_lo, p_hi = np.percentile(values, [lo, hi])
        if _degenerate(p_lo, p_hi):
            p_lo, p_hi = values.min(), values.max()
        if _degenerate(p_lo, p_hi):
            raise ValueError(
                f"the image is constant ({p_lo:g}) over its observed pixels: no intensity range to map; give a window"
            )
        return cls(p_lo, p_hi)

    def to_model(self, x, clip: bool = False):
        """Input units → model units: lo ↦ −1, hi ↦ +1 (clip=True clamps to [−1, 1])."""
        out = 2 * (_as_float(x) - self.lo) / self.width - 1
        if clip:
            out = out.clamp(-1, 1) if isinstance(out, torch.Tensor) else np.clip(out, -1, 1)
        return out

    def to_input(self, x):
        """Model units → input units; the inverse of `to_model` (without clipping)."""
        return (_as_float(x) + 1) * (self.width / 2) + self.lo

    def scale_sigma(self, sigma_input):
        """A noise standard deviation (scalar or array) in input units → model units: × 2 / (hi − lo)."""
        return _as_float(sigma_input) * (2 / self.width)

    def sigma_to_input(self, sigma_model):
        """A standard deviation (scalar, or a std map) in model units → input units: × (hi − lo) / 2."""
        return _as_float(sigma_model) * (self.width / 2)


def _degenerate(a: float, b: float) -> bool:
    return not (b - a) > DEGENERATE_RANGE * max(abs(a), abs(b))
