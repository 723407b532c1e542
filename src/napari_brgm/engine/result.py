"""What a reconstruction returns and what it reports while it runs (the engine's public contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Progress:
    """One progress report, sent to the `progress` callback after every optimisation step."""

    step: int  # steps done in this stage (1-based)
    total: int  # steps planned in this stage
    stage: str  # "map", "vi", "sampling", ...
    loss: float  # total loss of the last step
    terms: dict[str, float] = field(default_factory=dict)  # the loss terms of the last step
    elapsed: float = 0.0  # seconds since the run started
    preview: np.ndarray | None = None  # current estimate in input units and output size, every few steps
    slices_in_flight: tuple[int, ...] = ()  # volume runs: the slice(s) being reconstructed (a MAP batch: several)
    slices_done: int = 0  # volume runs: slices finished so far
    slices_total: int = 0  # volume runs: slices to reconstruct (0: a single-image run)


@dataclass
class Result:
    """A reconstruction in the input's intensity units; SR outputs are `factor`x the input size.

    `std` is the per-pixel standard deviation over `samples` (None for point estimates such as
    MAP, CSGM and IAGAN); for VI the samples come from the fitted posterior q, for Deep Image Prior
    they are its last iterates, so there `std` is the spread of the estimator, not a posterior.
    `lower`/`upper` bound the central interval of level `settings["interval"]["level"]` (methods
    with samples; None otherwise): calibrated per pixel group when a calibration record matched
    (`settings["interval"]["calibrated"]`), else mean ∓ m_S·std (engine/uncertainty.py).
    `consistent` is the inpainting result with observed pixels kept, for k-space the mean with the measured
    lines re-inserted (x + A⁺(y − A·x)); None for other tasks;
    `partial` is True when the run was cancelled before its last step.
    """

    mean: np.ndarray  # [H', W']
    samples: np.ndarray  # [S, H', W']
    std: np.ndarray | None  # [H', W']
    map: np.ndarray | None  # [H', W'] the MAP image G(w*) when the method has one
    consistent: np.ndarray | None  # [H', W'] inpainting only
    losses: dict[str, list[float]]  # per-step history of every loss term, "total" included
    partial: bool
    settings: dict[str, Any]  # everything needed to reproduce the run, plus timings
    lower: np.ndarray | None = None  # [H', W'] lower end of the central interval (methods with samples)
    upper: np.ndarray | None = None  # [H', W'] upper end
    zero_filled: np.ndarray | None = None  # [H', W'] k-space: |F^H(M ⊙ y)|, the zero-filled image, input units
    sampling_mask: np.ndarray | None = None  # [R, R] k-space: True = sampled, centred (the model's k-space grid)
