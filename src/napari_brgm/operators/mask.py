"""Missing-pixel masks: one polarity for the whole package — NONZERO / True = MISSING."""

from __future__ import annotations

import numpy as np
import torch


def missing_to_observed(mask, name: str = "mask") -> torch.Tensor:
    """A missing-mask [H, W] or [N, 1, H, W] (nonzero = MISSING) → boolean observed [N|1, 1, H, W]."""
    if isinstance(mask, torch.Tensor):
        missing = mask.detach() != 0
    else:
        missing = torch.from_numpy(np.asarray(mask) != 0)
    if missing.ndim == 2:
        missing = missing[None, None]
    if missing.ndim != 4 or missing.shape[1] != 1:
        raise ValueError(f"{name} must be [H, W] or [N, 1, H, W] (nonzero = missing), got shape {tuple(missing.shape)}")
    return ~missing


def check_mask_fits(observed: torch.Tensor, t: torch.Tensor, name: str) -> None:
    """The mask must match t's spatial size, and its batch size must be 1 or t's."""
    if tuple(t.shape[-2:]) != tuple(observed.shape[-2:]):
        raise ValueError(f"{name} size {tuple(t.shape[-2:])} does not match the mask {tuple(observed.shape[-2:])}")
    if observed.shape[0] not in (1, t.shape[0]):
        raise ValueError(f"{name} batch size {t.shape[0]} does not match the mask batch size {observed.shape[0]}")
