"""Display intensities: MONOCHROME1 inversion and contrast limits."""

from __future__ import annotations

import numpy as np

PERCENTILES = (0.5, 99.5)
_MAX_SAMPLES = 1_000_000


def invert(values: np.ndarray, offset: float) -> np.ndarray:
    """Mirror MONOCHROME1 values into MONOCHROME2: v' = offset - v.

    `offset` is the sum of the lowest and highest value the pixel format can hold after the
    modality LUT, so the mirrored values keep the same range, the mapping depends only on the
    header (not on the image content) and `offset - v'` gives the stored values back.
    """
    return offset - values


def invert_window(window: tuple[float, float] | None, offset: float) -> tuple[float, float] | None:
    """The window (centre, width) of `invert`ed data: the centre mirrors, the width stays."""
    return None if window is None else (offset - window[0], window[1])


def contrast_limits(data: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    """napari contrast limits: centre -/+ width / 2 of the window, else robust percentiles.

    The percentiles (0.5 and 99.5) ignore a few hot or dead pixels; they are taken on at most a
    million evenly strided samples so large volumes stay quick.
    """
    if window is not None:
        centre, width = window
        return float(centre - width / 2), float(centre + width / 2)
    flat = np.asarray(data).ravel()
    flat = flat[:: max(1, flat.size // _MAX_SAMPLES)]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(flat, PERCENTILES))
    if high <= low:
        low, high = float(flat.min()), float(flat.max())
    if high <= low:
        high = low + 1.0
    return low, high
