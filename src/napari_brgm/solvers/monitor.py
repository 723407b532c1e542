"""Progress reporting and cancellation shared by every iterative solver."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


class Monitor:
    """Called once per optimisation step; returns False when the caller asked to stop.

    `progress(stage, step, total, terms, preview)` receives plain floats and, every
    `preview_every` steps and on the last step, the current model-domain image (a detached
    tensor) — the engine converts it to input units only when it is shown. `should_stop()` is
    polled after every step, so a cancel takes effect within one step.
    """

    def __init__(
        self,
        progress: Callable[..., None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        preview_every: int = 10,  # steps between previews (0: never)
    ):
        self._progress = progress
        self._should_stop = should_stop
        self.preview_every = preview_every
        self.stopped = False
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, stage: str, step: int, total: int, terms: dict[str, float], image: torch.Tensor | None) -> bool:
        if self._progress is not None:
            due = self.preview_every and (step % self.preview_every == 0 or step == total)
            preview = image.detach() if (due and image is not None) else None
            self._progress(stage, step, total, terms, preview)
        if self._should_stop is not None and self._should_stop():
            self.stopped = True
        return not self.stopped


def record_step(losses: dict[str, list[float]], terms: dict[str, torch.Tensor], total: torch.Tensor) -> dict[str, float]:
    """Append this step's loss terms (and "total") to the history; return them as floats."""
    record = {name: v.item() for name, v in terms.items()} | {"total": total.item()}
    for name, v in record.items():
        losses.setdefault(name, []).append(v)
    return record


def end_of_step(monitor: Monitor | None, stage: str, step: int, total: int, record: dict[str, float],
                image: torch.Tensor | None, target: float | None) -> tuple[bool, bool, int | None]:
    """After a data-fit step (IAGAN, DIP): (finish now, cancelled early, step of early stop or None).

    Early stopping follows the discrepancy principle: the run ends once the data misfit reaches
    `target` (σ_y²); that is a normal end, never reported as cancelled.
    """
    early = step if target is not None and record["data"] <= target else None
    if monitor is not None and not monitor(stage, step, total, record, image):
        return True, step < total and early is None, early
    return early is not None, False, early
