"""Cartesian undersampling masks: fastMRI's line masks reproduced bit for bit, and user masks.

A mask here is a boolean array, True = SAMPLED (the k-space convention, the opposite of the
inpainting masks), in the centred layout of `operators.fourier` (DC at (H//2, W//2)). Line masks
sample whole phase-encode lines: columns (`axis=-1`, fastMRI's and deepinv's default: the lines
are vertical) or rows (`axis=-2`). The formulas and the random draws follow
`fastmri/data/subsample.py` exactly (../shared/docs/mri-kspace.md §3), with a private
`RandomState(seed)` — never the global RNG — so a seed gives fastMRI's mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASK_TYPES = ("random", "equispaced", "equispaced_integer")  # fastMRI Random, EquispacedFraction, EquiSpaced
MIN_ACCELERATION = 1.0
MAX_ACCELERATION = 16.0


class MaskError(ValueError):
    """A sampling mask that cannot be built or used (the message says why)."""


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's pairs (0.08 at 4×, 0.04 at 8×) as a rule: 0.08 below 8×, else 0.04 (deepinv's rule)."""
    return 0.08 if acceleration < 8 else 0.04


def center_lines(n: int, center_fraction: float) -> tuple[int, int]:
    """[start, stop) of the fully sampled centre: n_low = round(n·cf) lines, pad = (n − n_low + 1) // 2."""
    n_low = round(n * center_fraction)
    pad = (n - n_low + 1) // 2
    return pad, pad + n_low


def line_mask(n: int, acceleration: float, center_fraction: float | None = None, mask_type: str = "random",
              seed: int | None = 0) -> np.ndarray:
    """Bool [n]: the sampled phase-encode lines of fastMRI's mask functions for `n` lines.

    random: every line outside the centre with probability (n/R − n_low)/(n − n_low), so n/R lines
    on average; equispaced: fastMRI's EquispacedMaskFractionFunc (≈ n/R lines in total, a spacing
    adjusted for the centre, random offset); equispaced_integer: EquiSpacedMaskFunc (every R-th
    line plus the centre, so more than n/R lines).
    """
    acceleration = check_acceleration(acceleration, n)
    cf = default_center_fraction(acceleration) if center_fraction is None else float(center_fraction)
    if not 0 < cf < 1:
        raise MaskError(f"center_fraction must be between 0 and 1, got {cf:g}")
    if mask_type not in MASK_TYPES:
        raise MaskError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    start, stop = center_lines(n, cf)
    n_low = stop - start
    if n_low < 1:
        raise MaskError(f"center_fraction {cf:g} of {n} lines keeps no line of the centre (DC would be missing)")
    if n_low >= n / acceleration:
        raise MaskError(f"center_fraction {cf:g} alone samples {n_low} of {n} lines, at least the {n / acceleration:.1f} "
                        f"of acceleration {acceleration:g}: nothing is left to undersample; lower the centre fraction "
                        f"or the acceleration")
    rng = np.random.RandomState(seed)
    rng.randint(1)  # fastMRI draws the (centre fraction, acceleration) pair first, even when there is one
    mask = np.zeros(n, dtype=bool)
    if mask_type == "random":
        prob = (n / acceleration - n_low) / (n - n_low)
        mask = rng.uniform(size=n) < prob
    elif mask_type == "equispaced":
        spacing = acceleration * (n_low - n) / (n_low * acceleration - n)
        offset = rng.randint(0, high=round(spacing))
        mask[np.around(np.arange(offset, n - 1, spacing)).astype(np.uint64)] = True
    else:
        offset = rng.randint(0, high=round(acceleration))
        mask[offset :: round(acceleration)] = True
    mask[start:stop] = True
    return mask


def check_acceleration(acceleration, n: int) -> float:
    """An acceleration R in [1, 16] that leaves at least one line of `n`, else MaskError."""
    try:
        r = float(acceleration)
    except (TypeError, ValueError):
        raise MaskError(f"acceleration must be a number, got {acceleration!r}") from None
    if not MIN_ACCELERATION <= r <= MAX_ACCELERATION:
        raise MaskError(f"acceleration must be from {MIN_ACCELERATION:g} to {MAX_ACCELERATION:g}, got {r:g}")
    if r > n:
        raise MaskError(f"acceleration {r:g} is more than the {n} phase-encode lines of the image")
    return r


def sampling_mask(shape: tuple[int, int], acceleration: float = 4.0, center_fraction: float | None = None,
                  mask_type: str = "random", seed: int | None = 0, axis: int = -1) -> np.ndarray:
    """Bool [H, W]: a line mask along the phase-encode `axis` (-1: columns, fastMRI; -2: rows), broadcast."""
    h, w = (int(s) for s in shape)
    if axis not in (-1, -2):
        raise MaskError(f"axis must be -1 (columns) or -2 (rows), got {axis!r}")
    lines = line_mask(w if axis == -1 else h, acceleration, center_fraction, mask_type, seed)
    return np.broadcast_to(lines[None, :] if axis == -1 else lines[:, None], (h, w)).copy()


def user_mask(mask, shape: tuple[int, int], source: str = "the k-space mask") -> np.ndarray:
    """Bool [H, W] from a user's array (nonzero = sampled, DC at the centre); MaskError when it cannot be used."""
    m = np.asarray(mask)
    if m.ndim == 1:
        raise MaskError(f"{source} is 1-D: give a 2-D mask of the image's size {shape[0]}x{shape[1]}")
    m = np.squeeze(m)
    if m.ndim == 3 and m.shape[-1] in (3, 4):  # an RGB(A) image file
        m = m[..., :3].max(axis=-1)
    if m.ndim != 2:
        raise MaskError(f"{source} must be a 2-D array, got shape {np.shape(mask)}")
    if np.iscomplexobj(m) or not np.isfinite(m.astype(float)).all():
        raise MaskError(f"{source} must be real and finite")
    if tuple(m.shape) != tuple(shape):
        raise MaskError(f"{source} is {m.shape[0]}x{m.shape[1]}, the image is {shape[0]}x{shape[1]}")
    sampled = m != 0
    if not sampled.any():
        raise MaskError(f"{source} samples nothing: nonzero entries mark the sampled k-space locations")
    if not sampled[shape[0] // 2, shape[1] // 2]:
        raise MaskError(f"{source} does not sample DC (the centre pixel {shape[0] // 2},{shape[1] // 2}): masks are in "
                        f"centred layout, DC at the centre; an uncentred mask needs numpy.fft.fftshift first")
    return sampled


@dataclass(frozen=True)
class MaskInfo:
    """What a mask is, for Result.settings, the layer metadata and the evaluation tables."""

    kind: str  # a MASK_TYPES entry, or "user"
    sampled_fraction: float
    lines: int | None  # sampled phase-encode lines (line masks)
    effective_acceleration: float  # 1 / sampled fraction (fastMRI's R_eff = W / #lines)

    @classmethod
    def of(cls, sampled: np.ndarray, kind: str, axis: int = -1) -> MaskInfo:
        frac = float(np.mean(sampled))
        lines = None
        if kind != "user":
            lines = int(sampled.any(axis=0 if axis == -1 else 1).sum())
        return cls(kind=kind, sampled_fraction=frac, lines=lines, effective_acceleration=1.0 / frac)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "sampled_fraction": self.sampled_fraction, "lines": self.lines,
                "effective_acceleration": self.effective_acceleration}
