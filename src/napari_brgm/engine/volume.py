"""`reconstruct_volume`: every slice of a volume (or a range) through one loaded prior.

Slices are planes perpendicular to `axis`; each is reconstructed as `reconstruct` would do it with
the same seed, so slice k of a volume run equals `reconstruct(volume[k], ...)` (batched MAP agrees
to float rounding). Where the method allows it (BRGM MAP, and the MAP stage of VI's ELBO mode) the
slices go through the generator in batches; the other methods run slice after slice. Outputs are
kept per slice as they finish (mean, std, interval, data-consistent image; samples only when asked),
so memory grows with the output volume, not with samples × slices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from napari_brgm.engine.reconstruction import (Prepared, _Estimate, _map_config, _solve_brgm, finish, prepare,
                                               solve)
from napari_brgm.engine import nonfinite
from napari_brgm.engine.result import Progress, Result
from napari_brgm.engine.settings import Settings, validate_inputs
from napari_brgm.operators.base import LinearOperator
from napari_brgm.priors.cpu import memory_retained
from napari_brgm.solvers import Monitor, Problem, solve_map
from napari_brgm.solvers.map import MapOutput

AXES = {"z": 0, "y": 1, "x": 2}  # napari's (z, y, x) order
DEFAULT_BATCH = 8  # slices per generator batch on the built-in 64 px prior (benchmarks/bench_volume.py)
OUTPUTS = ("mean", "std", "lower", "upper", "consistent", "zero_filled")


@dataclass
class VolumeResult:
    """Reconstructed slices, stacked in the volume's own axis order.

    Along `axis` the arrays hold the reconstructed `slices` in order (all of them, or a range); the
    two in-plane axes are `factor`× finer for super-resolution. Slices not finished (a cancelled
    run: `partial`) are NaN; `done` lists those that are. `settings` and `losses` are per slice
    (keyed by the slice index in the volume); `copied` names slices passed through unchanged
    (inpainting slices whose mask is empty) with the reason.
    """

    mean: np.ndarray
    std: np.ndarray | None
    lower: np.ndarray | None
    upper: np.ndarray | None
    consistent: np.ndarray | None  # inpainting, k-space
    zero_filled: np.ndarray | None  # k-space only: the zero-filled magnitude of each slice's measurement
    samples: np.ndarray | None  # [S, ...] only with keep_samples=True
    axis: int
    slices: list[int]
    done: list[int]
    partial: bool
    factor: int
    settings: dict[int, dict] = field(default_factory=dict)
    losses: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    copied: dict[int, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def slice_result(self, k: int) -> dict[str, np.ndarray | None]:
        """The outputs of volume slice k as 2-D arrays."""
        i = self.slices.index(k)
        return {name: None if (a := getattr(self, name)) is None else np.take(a, i, axis=self.axis)
                for name in OUTPUTS}


def parse_axis(axis: int | str, ndim: int = 3) -> int:
    """An axis of a (z, y, x) volume: 0-2 or 'z', 'y', 'x'."""
    if isinstance(axis, str):
        if axis.lower() not in AXES:
            raise ValueError(f"axis {axis!r} does not exist: use z, y or x (or 0, 1, 2)")
        return AXES[axis.lower()]
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"axis {axis} does not exist in a {ndim}-D volume (0..{ndim - 1} or z, y, x)")
    return int(axis) % ndim


def parse_slices(spec, depth: int) -> list[int]:
    """Slice indices from None / 'all', an index, 'A:B' (B excluded, either may be empty), a slice or a list.

    Negative indices count from the end; an index or range outside 0..depth-1 is a ValueError.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(depth))
    if isinstance(spec, str):
        text = spec.strip()
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 2:
                raise ValueError(f"slices {spec!r}: use all, K or A:B")
            try:
                a, b = (int(p) if p.strip() else None for p in parts)
            except ValueError:
                raise ValueError(f"slices {spec!r}: use all, K or A:B with whole numbers") from None
            spec = slice(a, b)
        else:
            try:
                spec = int(text)
            except ValueError:
                raise ValueError(f"slices {spec!r}: use all, K or A:B") from None
    if isinstance(spec, slice):
        for end in (spec.start, spec.stop):
            if end is not None and not -depth <= end <= depth:
                raise ValueError(f"slice range {end} is outside the volume's {depth} slices (0..{depth - 1})")
        chosen = list(range(depth))[spec]
        if not chosen:
            raise ValueError(f"the slice range selects no slices of the volume's {depth}")
        return chosen
    indices = [int(spec)] if np.isscalar(spec) else [int(k) for k in spec]
    if not indices:
        raise ValueError("no slices given")
    for k in indices:
        if not -depth <= k < depth:
            raise ValueError(f"slice {k} is outside the volume's {depth} slices (0..{depth - 1})")
    return sorted({k % depth for k in indices})


def reconstruct_volume(
    volume,
    axis: int | str = 0,
    slices=None,
    mask=None,
    task: str = "superres",
    factor: int = 4,
    prior=None,
    method: str = "map",
    steps: int = 501,
    samples: int = 16,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_slice: Callable[[int, Result], None] | None = None,
    keep_samples: bool = False,
    batch: int | None = None,
    **options,
) -> VolumeResult:
    """Reconstruct the slices of a (z, y, x) volume perpendicular to `axis` (0-2 or 'z', 'y', 'x').

    slices: None / 'all', an index, 'A:B', a slice object or a list of indices. mask (inpainting):
    a 3-D array of the volume's shape (each slice its own missing region; slices with an empty
    mask are copied through unchanged) or a 2-D array used for every slice; nonzero = MISSING.
    The other arguments are those of `reconstruct` and apply to every slice (each slice uses
    `seed`). `progress` gets every step's `Progress` with `slices_in_flight`, `slices_done` and
    `slices_total`; `on_slice(k, result)` receives each finished slice (e.g. to write it at once).
    `should_stop()` cancels: the finished slices are kept and `partial` is True. `batch`: slices per
    generator batch where the method allows (default 8; 1 runs slice by slice). Invalid requests
    (axis, range, mask shape, a 4-D input, options) raise ValueError/TypeError before any work.
    """
    started = time.perf_counter()
    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume, mask = volume[None], (None if mask is None else np.asarray(mask)[None])
        axis = 0
    if volume.ndim != 3:
        raise ValueError(f"a volume must be 3-D (z, y, x), got shape {volume.shape}; for a 4-D input choose one "
                         "volume first (e.g. data[t])")
    axis = parse_axis(axis)
    stack = np.moveaxis(volume, axis, 0)  # [depth, H, W], a view
    chosen = parse_slices(slices, stack.shape[0])
    masks = _masks(mask, volume.shape, axis, task)
    settings = Settings.from_flat(task=task, factor=int(factor), prior=None if prior is None else str(prior),
                                  method=method, steps=int(steps), samples=int(samples), seed=int(seed),
                                  device=str(device), **options)
    settings.validate()
    masks = _nonfinite_masks(stack, masks, chosen, settings, axis)
    copied = _check_slices(stack, masks, chosen, settings)
    run_kwargs = dict(task=task, factor=factor, prior=prior, method=method, steps=steps, samples=samples, seed=seed,
                      device=device, **options)
    batch = _batch_size(settings, batch)

    out = _Outputs(stack.shape, chosen, settings.factor if settings.task == "superres" else 1, axis, keep_samples)
    pending_copies = [k for k in chosen if k in copied]
    todo = [k for k in chosen if k not in copied]
    stopped = False

    def emit(k: int, result: Result) -> None:
        out.put(k, result)
        if on_slice is not None:
            on_slice(k, result)

    def flush_copies(template: Result) -> None:
        while pending_copies:
            k = pending_copies.pop(0)
            emit(k, _copied_result(stack[k], template, copied[k]))

    with memory_retained():
        for start in range(0, len(todo), batch):
            group = todo[start : start + batch]
            report = _volume_progress(progress, lambda: len(out.done), len(chosen))
            for k, result in _run_group(stack, masks, group, run_kwargs, report, should_stop):
                if result.partial:
                    stopped = True
                    break
                emit(k, result)
                flush_copies(result)
            if stopped or (should_stop is not None and should_stop()):
                stopped = True
                break
    return out.result(partial=stopped or len(out.done) < len(chosen), copied=copied,
                      seconds=time.perf_counter() - started)


def _masks(mask, shape: tuple[int, ...], axis: int, task: str) -> np.ndarray | None:
    """The missing-masks as [depth, H, W] in slice order (a 2-D mask applies to every slice)."""
    if mask is None:
        return None
    if task != "inpaint":
        raise ValueError(f"a mask is only used for inpainting, not for task {task!r}")
    mask = np.asarray(mask) != 0
    if mask.shape == tuple(shape):
        return np.moveaxis(mask, axis, 0)
    plane = tuple(np.delete(np.asarray(shape), axis))
    if mask.shape == plane:
        return np.broadcast_to(mask, (shape[axis], *plane))
    raise ValueError(f"the mask has shape {mask.shape}; it must be the volume's {tuple(shape)} or one slice's {plane}")


def _nonfinite_masks(stack: np.ndarray, masks, chosen: list[int], settings: Settings, axis: int):
    """Refuse non-finite voxels in the chosen slices (how many, which slices, the bounding box), or with
    nonfinite="missing" (inpainting) add them to the slices' masks."""
    found = nonfinite.scan(stack, chosen)
    if not found:
        return masks
    if settings.nonfinite != "missing":
        raise ValueError(f"the volume has {nonfinite.describe_volume(stack, found, axis)}: reconstruction needs "
                         f"finite values; {nonfinite.advice(settings.task)}")
    out = np.zeros(stack.shape, dtype=bool) if masks is None else np.array(masks, dtype=bool)
    for k, bad in found.items():
        out[k] |= bad
    return out


def _check_slices(stack: np.ndarray, masks, chosen: list[int], settings: Settings) -> dict[int, str]:
    """Validate every chosen slice before any work; return the slices to copy through, with the reason."""
    if settings.task == "inpaint" and masks is None:
        raise ValueError("inpainting needs a mask (nonzero = missing)")
    copied = {}
    for k in chosen:
        if masks is not None and not masks[k].any():
            copied[k] = "empty mask: nothing to inpaint"
            continue
        try:
            validate_inputs(stack[k], None if masks is None else masks[k], settings)
        except ValueError as err:
            raise ValueError(f"slice {k}: {err}") from None
    if len(copied) == len(chosen) and masks is not None:
        raise ValueError("the mask is empty in every chosen slice: paint the missing region (nonzero = missing)")
    return copied


def _batch_size(settings: Settings, batch: int | None) -> int:
    """Slices per generator batch: only BRGM's MAP stage runs batched (MAP, VI in its ELBO mode)."""
    if batch is not None and int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    opts = settings.method_options
    batchable = (settings.method == "map" or (settings.method == "vi" and opts.vi_mode == "elbo")) \
        and opts.perceptual_weights is None
    return (DEFAULT_BATCH if batch is None else int(batch)) if batchable else 1


def _run_group(stack, masks, group: list[int], run_kwargs: dict, report, should_stop):
    """Reconstruct a group of slices, yielding (k, Result) as each finishes: one shared MAP batch when there are
    several, then each slice's own later stages. A cancelled MAP batch yields nothing."""
    preps = [prepare(stack[k], mask=None if masks is None else masks[k], **run_kwargs) for k in group]
    if len(preps) == 1:
        prep = preps[0]
        monitor = Monitor(_adapter(report, prep, group), should_stop)
        yield group[0], finish(prep, solve(prep, monitor))
        return
    first = preps[0]
    stacked = Problem(generator=first.problem.generator,
                      operator=_PerImage([p.problem.operator for p in preps]),
                      y=torch.cat([p.problem.y for p in preps]))
    monitor = Monitor(_adapter(report, first, group), should_stop)
    batch_map = solve_map(stacked, _map_config(first.settings, stacked.device), monitor)
    if batch_map.stopped:
        return
    for b, (k, prep) in enumerate(zip(group, preps, strict=True)):
        own = MapOutput(ws=batch_map.ws[b : b + 1], image=batch_map.image[b : b + 1],
                        losses=batch_map.batch_losses[b])
        monitor = Monitor(_adapter(report, prep, [k]), should_stop)
        estimate: _Estimate = _solve_brgm(prep.problem, prep.settings, prep.sigma_y, monitor, prep.plan, prep.model,
                                          map_out=own)
        yield k, finish(prep, estimate)
        if estimate.partial:
            return


class _PerImage(LinearOperator):
    """Independent operators A_b stacked over a batch: (A·x)_b = A_b·x_b (each slice its own mask or padding)."""

    def __init__(self, operators: Sequence[LinearOperator]):
        super().__init__(operators[0].noise_sigma)
        self.parts = torch.nn.ModuleList(operators)

    def _each(self, name: str, t: torch.Tensor) -> torch.Tensor:
        assert t.shape[0] == len(self.parts), f"batch {t.shape[0]} != {len(self.parts)} operators"
        return torch.cat([getattr(op, name)(t[b : b + 1]) for b, op in enumerate(self.parts)])

    def forward(self, x):
        return self._each("forward", x)

    def adjoint(self, y):
        return self._each("adjoint", y)

    def pseudo_inverse(self, y):
        return self._each("pseudo_inverse", y)

    def output_shape(self, input_hw):
        return self.parts[0].output_shape(input_hw)

    @property
    def channel_stride(self) -> int:
        return self.parts[0].channel_stride


def _volume_progress(progress, done: Callable[[], int], total: int):
    """A per-step reporter that adds the volume's position to each `Progress`."""
    if progress is None:
        return None
    return lambda p, flight: progress(replace(p, slices_in_flight=tuple(flight), slices_done=done(),
                                              slices_total=total))


def _adapter(report, prep: Prepared, flight: list[int]):
    """The engine's step reporter for one slice (or the MAP batch led by it) feeding `report`."""
    if report is None:
        return None
    from napari_brgm.engine.reconstruction import _progress_adapter

    return _progress_adapter(lambda p: report(p, flight), prep.plan, prep.imap, prep.started)


def _copied_result(plane: np.ndarray, template: Result, reason: str) -> Result:
    """A slice passed through unchanged, with the outputs the reconstructed slices have (std 0)."""
    plane = plane.astype(np.float32)
    has = (lambda name: getattr(template, name) is not None)  # noqa: E731
    zero = np.zeros_like(plane)
    return Result(mean=plane, samples=plane[None], std=zero if has("std") else None, map=None,
                  consistent=plane if has("consistent") else None, losses={}, partial=False,
                  settings={"copied": reason}, lower=plane if has("lower") else None,
                  upper=plane if has("upper") else None, zero_filled=plane if has("zero_filled") else None)


class _Outputs:
    """Output arrays, allocated (NaN) when a slice first brings that output, filled slice by slice."""

    def __init__(self, shape, chosen: list[int], factor: int, axis: int, keep_samples: bool):
        self.plane = (shape[1] * factor, shape[2] * factor)
        self.chosen, self.factor, self.axis, self.keep_samples = chosen, factor, axis, keep_samples
        self.position = {k: i for i, k in enumerate(chosen)}
        self.arrays: dict[str, np.ndarray] = {}
        self.samples: np.ndarray | None = None
        self.done: list[int] = []
        self.settings: dict[int, dict] = {}
        self.losses: dict[int, dict] = {}

    def put(self, k: int, result: Result) -> None:
        i = self.position[k]
        for name in OUTPUTS:
            value = getattr(result, name)
            if value is None:
                continue
            if value.shape != self.plane:
                raise AssertionError(f"slice {k}: {name} {value.shape}, expected {self.plane}")
            if name not in self.arrays:
                self.arrays[name] = np.full((len(self.chosen), *self.plane), np.nan, np.float32)
            self.arrays[name][i] = value
        if self.keep_samples and "copied" not in result.settings:
            if self.samples is None:
                self.samples = np.full((len(result.samples), len(self.chosen), *self.plane), np.nan, np.float32)
            self.samples[:, i] = result.samples
        self.done.append(k)
        self.settings[k] = result.settings
        self.losses[k] = result.losses

    def result(self, partial: bool, copied: dict[int, str], seconds: float) -> VolumeResult:
        moved = {name: None if name not in self.arrays else np.moveaxis(self.arrays[name], 0, self.axis)
                 for name in OUTPUTS}
        if "mean" not in self.arrays:
            moved["mean"] = np.moveaxis(np.full((len(self.chosen), *self.plane), np.nan, np.float32), 0, self.axis)
        samples = None if self.samples is None else np.moveaxis(self.samples, 1, self.axis + 1)
        return VolumeResult(**moved, samples=samples, axis=self.axis, slices=list(self.chosen),
                            done=sorted(self.done), partial=partial, factor=self.factor, settings=self.settings,
                            losses=self.losses, copied=copied, timings={"total_s": seconds})
