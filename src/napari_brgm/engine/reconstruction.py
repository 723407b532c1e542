"""`reconstruct`: one call from a 2-D slice in input units to mean, samples and uncertainty.

Steps: validate (before any heavy work) → load the prior (cached) → map intensities to the
generator's [-1, 1] and fit the slice to the prior's resolution → build the forward operator →
run the solver → map every image back to the input's size and units.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from napari_brgm.engine.calibration import CalibrationError, CalibrationFile, gaussian_multiplier
from napari_brgm.engine.devices import resolve_device
from napari_brgm.engine.geometry import plan_fit
from napari_brgm.engine.intensity import IntensityMap
from napari_brgm.engine.methods import DipOptions, FlowOptions, IaganOptions, RedDiffOptions
from napari_brgm.engine.result import Progress, Result
from napari_brgm.engine.settings import PRIOR_KINDS, Settings, validate_inputs
from napari_brgm.engine.ood import judge_run
from napari_brgm.engine.uncertainty import calibration_key, file_sha256, load_calibration, run_intervals
from napari_brgm.operators import MaskedOperator, make_operator
from napari_brgm.priors.cpu import memory_retained
from napari_brgm.solvers import (
    CsgmConfig,
    DipConfig,
    IaganConfig,
    MapConfig,
    Monitor,
    Problem,
    ViConfig,
    back_project,
    solve_csgm,
    solve_dip,
    solve_iagan,
    solve_map,
    solve_vi,
)
from napari_brgm.solvers.dip import DIVISOR
from napari_brgm.solvers.map import MapOutput

DEFAULT_SIGMA_Y = 0.05  # measurement noise in model units when none is stated: 2.5% of the intensity range
DIP_MAX_AUTO_RESOLUTION = 256  # DIP on a CPU: larger inputs are reduced to fit (see engine/geometry.py)


def reconstruct(
    image,
    task: str = "superres",
    factor: int = 4,
    mask=None,
    prior: str | Path | None = None,
    method: str = "map",
    steps: int = 501,
    samples: int = 16,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
    **options,
) -> Result:
    """Reconstruct a 2-D slice with a generative prior: BRGM MAP / VI, CSGM, IAGAN, Deep Image Prior,
    RED-Diff (diffusion prior) or a normalizing flow.

    image: 2-D array in its own units (HU, MR units, CR values). mask: inpainting only, same shape,
    NONZERO = MISSING. method: "map", "vi", "csgm", "iagan" (StyleGAN2 prior), "reddiff" (diffusion
    prior), "flow" (flow prior) or "dip" (no prior) (docs/engine.md). prior: a built-in prior name
    or a file of the kind the method needs (None: the built-in prior of that kind); "dip" ignores
    it. Super-resolution outputs are `factor`× the input size.
    `progress` receives a `Progress` after every step; `should_stop()` is polled after every step
    and a cancelled run returns promptly with `Result.partial = True`. `on_prepared(prep)` is called once
    the request is validated and its problem built, before the solver (the GUI shows a k-space run's
    zero-filled image from it, `kspace_views`). Further keyword options are
    the common fields of `Settings` (sigma_y, window, fit, precision, back_project, bp_eta) and the
    options of the chosen task and method (`engine.tasks`, `engine.methods`; tables in
    docs/engine.md); one of another method or task, or an unknown one, is a TypeError that says
    whose it is. `Result.settings` records them nested ("task_options", "method_options"):
    `reconstruct(image, **Settings.from_dict(result.settings).as_kwargs())` runs the same again.
    Invalid requests raise ValueError before any heavy work.
    """
    prep = prepare(image, task=task, factor=factor, mask=mask, prior=prior, method=method, steps=steps,
                   samples=samples, seed=seed, device=device, **options)
    if on_prepared is not None:
        on_prepared(prep)
    monitor = Monitor(_progress_adapter(progress, prep.plan, prep.imap, prep.started), should_stop)
    with memory_retained():  # batched steps reuse freed memory (3x faster VI at 256 px); released after the run
        estimate = solve(prep, monitor)
    return finish(prep, estimate, progress, should_stop)


def solve(prep: Prepared, monitor: Monitor) -> _Estimate:
    """Run the method's solver on a prepared request."""
    return _SOLVERS[prep.settings.method](prep.problem, prep.settings, prep.sigma_y, monitor, prep.plan, prep.model)


@dataclass
class Prepared:
    """A validated run up to the solver: the prior, the intensity map, the fit and the inverse problem."""

    image: np.ndarray  # the slice in input units (float32)
    missing: np.ndarray | None  # inpainting: True = missing
    settings: Settings
    kind: str | None  # the prior's kind (None: Deep Image Prior)
    model: object
    plan: object  # engine.geometry.FitPlan
    imap: IntensityMap
    sigma_y: float  # model units
    problem: Problem
    calibration: CalibrationFile | None
    calibration_source: str | None
    prior_sha: str | None
    settings_out: dict
    started: float
    load_done: float


def prepare(image, task: str = "superres", factor: int = 4, mask=None, prior=None, method: str = "map",
            steps: int = 501, samples: int = 16, seed: int = 0, device: str = "auto", **options) -> Prepared:
    """Everything `reconstruct` does before the solver runs; invalid requests raise here, before heavy work."""
    started = time.perf_counter()
    settings = Settings.from_flat(task=task, factor=int(factor), prior=None if prior is None else str(prior),
                                  method=method, steps=int(steps), samples=int(samples), seed=int(seed),
                                  device=str(device), **options)
    settings.validate()
    image, missing = validate_inputs(image, mask, settings)
    settings.resolve_defaults()
    dev = resolve_device(settings.device)
    kind = PRIOR_KINDS[settings.method]
    if kind is None:  # no prior: the model works at a size of its own
        prior_path, model, channels = None, None, 1
        resolution = _dip_resolution(image.shape, settings.factor, settings.method_options.dip_resolution)
    else:
        prior_path = _resolve_prior(settings.prior, kind)
        model = _load(str(prior_path), kind, dev)
        if kind == "stylegan2":
            model.precision = settings.precision  # the cached generator serves every run: set it each time
        resolution, channels = model.img_resolution, model.img_channels
    calibration, calibration_source, prior_sha = (_calibration(settings.calibration, prior_path)
                                                  if _has_samples(settings) else (None, None, None))
    plan = plan_fit(image.shape, resolution, factor=settings.factor, mode=settings.fit,
                    model="the prior's" if kind else f"Deep Image Prior's working size (dip_resolution {resolution}):")

    imap = (IntensityMap.from_window(*settings.window) if settings.window
            else IntensityMap.from_percentiles(image, mask=missing))
    sigma_y = imap.scale_sigma(settings.sigma_y) if settings.sigma_y is not None else DEFAULT_SIGMA_Y
    sampled, task_notes = None, {}
    if settings.task == "kspace":
        sampled, task_notes["kspace"] = kspace_sampling(settings, plan.measurement_hw)
        if settings.sigma_y is None and settings.task_options.kspace_noise > 0:
            sigma_y = imap.scale_sigma(settings.task_options.kspace_noise)
    operator, y = _measurement(image, missing, plan, settings, sigma_y, imap, channels, dev, sampled)
    problem = Problem(generator=model if kind == "stylegan2" else None, operator=operator, y=y)
    settings_out = settings.as_dict() | {"prior_path": None if prior_path is None else str(prior_path),
                                         "device_used": str(dev), "sigma_y_model": sigma_y,
                                         "intensity": imap.as_dict(),
                                         "prior_kind": kind, "prior_resolution": None if model is None else resolution,
                                         "model_resolution": resolution, "fit": plan.describe()} | task_notes
    return Prepared(image=image, missing=missing, settings=settings, kind=kind, model=model, plan=plan, imap=imap,
                    sigma_y=sigma_y, problem=problem, calibration=calibration, calibration_source=calibration_source,
                    prior_sha=prior_sha, settings_out=settings_out, started=started, load_done=time.perf_counter())


def finish(prep: Prepared, estimate: _Estimate, progress=None, should_stop=None) -> Result:
    """The solver's estimate in the input's size and units, with its interval, flags and timings."""
    image, missing, settings, problem, imap, plan = (prep.image, prep.missing, prep.settings, prep.problem,
                                                     prep.imap, prep.plan)
    sigma_y, settings_out = prep.sigma_y, dict(prep.settings_out)
    settings_out.update(estimate.notes)
    misfit = _misfit(problem, estimate, sigma_y, prep.kind)
    back = lambda t: imap.to_input(plan.from_model(_gray(t)))  # noqa: E731  model [N,C,R,R] → input units
    if settings.back_project:
        estimate.samples = back_project(problem, estimate.samples, settings.bp_eta)
        estimate.mean = None if estimate.mean is None else back_project(problem, estimate.mean, settings.bp_eta)
    samples_in = back(estimate.samples)
    mean = samples_in.mean(axis=0) if estimate.mean is None else back(estimate.mean)[0]
    std = samples_in.std(axis=0, ddof=1 if len(samples_in) > 1 else 0) if estimate.spread else None
    map_image = None if estimate.map is None else back(estimate.map)[0]
    consistent = np.where(missing, mean, image).astype(np.float32) if missing is not None else None
    zero_filled = sampling = None
    if settings.task == "kspace":  # the measurement as MRI readers show it, and the estimate with the measured lines
        zero_filled, sampling = kspace_views(prep)
        consistent = back(back_project(problem, estimate.mean if estimate.mean is not None
                                       else estimate.samples.mean(dim=0, keepdim=True)))[0].astype(np.float32)
    lower = upper = None
    settings_out["interval"] = {"level": settings.interval, "calibrated": False, "calibration": None,
                                "reason": "point estimate: no samples"}
    if std is not None:
        posterior, predictive = _vi_stage(settings)
        key = calibration_key(settings.method, settings.task, settings.factor, missing, settings.steps,
                              len(samples_in), settings.interval, sigma_y, posterior, task_key(settings), predictive)
        lower, upper, settings_out["interval"] = run_intervals(
            mean, std, len(samples_in), missing, key=key, level=settings.interval,
            sigma_y=imap.sigma_to_input(sigma_y), value_range=imap.width, calibration=prep.calibration,
            source=prep.calibration_source, prior_sha256=prep.prior_sha, partial=bool(estimate.partial))
    settings_out["in_distribution"] = judge_run(image, missing, settings, settings_out["prior_path"], prep.kind,
                                                misfit, settings_out["interval"].get("misfit_q99"))
    if settings.self_check and std is not None:
        settings_out["interval"]["self_check"] = (
            _kspace_self_check(prep, progress, should_stop) if settings.task == "kspace"
            else _self_check(image, missing, settings, imap.sigma_to_input(sigma_y), progress, should_stop))
    finished = time.perf_counter()
    settings_out["timings"] = {"load_s": prep.load_done - prep.started, "solve_s": finished - prep.load_done,
                               "total_s": finished - prep.started}
    return Result(mean=mean.astype(np.float32), samples=samples_in.astype(np.float32),
                  std=None if std is None else std.astype(np.float32), map=map_image, consistent=consistent,
                  losses=estimate.losses, partial=bool(estimate.partial), settings=settings_out, lower=lower,
                  upper=upper, zero_filled=zero_filled, sampling_mask=sampling)


SELF_CHECK_FRACTION = 0.1  # of the observed pixels hidden by the self-check
SELF_CHECK_WARN = 0.8  # a self-check coverage below this is flagged


def _self_check(image, missing, settings: Settings, sigma_y: float, progress, should_stop) -> dict:
    """Coverage of held-out measurements (no ground truth needed): hide a seeded 10 % of the observed pixels,
    reconstruct again with the same settings, and count the hidden pixels inside the run's interval widened
    by the noise (mean ± √(half-width² + (z·σ_y)²)). A necessary check of the observed support, not of the hole.
    """
    if settings.task != "inpaint":
        return {"coverage": None, "reason": "self-check is implemented for inpainting and k-space only"}
    rng = np.random.default_rng(settings.seed + 1)
    observed = np.flatnonzero(~missing)
    hidden = np.zeros(missing.size, bool)
    hidden[rng.choice(observed, max(1, int(round(SELF_CHECK_FRACTION * observed.size))), replace=False)] = True
    hidden = hidden.reshape(missing.shape)
    kwargs = settings.as_kwargs() | {"self_check": False}
    check = reconstruct(np.where(hidden, 0, image), mask=missing | hidden, progress=progress,
                        should_stop=should_stop, **kwargs)
    z = gaussian_multiplier(settings.interval)  # the normal quantile
    half = np.sqrt(((check.upper - check.lower) / 2) ** 2 + (z * sigma_y) ** 2)
    inside = np.abs(image - check.mean) <= half
    cov = float(inside[hidden].mean())
    return {"coverage": cov, "pixels": int(hidden.sum()), "ok": cov >= SELF_CHECK_WARN,
            "calibrated": check.settings["interval"]["calibrated"], "partial": check.partial}


def _kspace_self_check(prep: Prepared, progress, should_stop) -> dict:
    """k-space's check without ground truth: hide a seeded 10 % of the sampled lines outside the fully sampled
    centre (of the sampled entries but DC, for a user mask), reconstruct from the rest with the same settings, and
    count the hidden measurements (real and imaginary parts) inside the samples' predictive interval: the mean of
    A·x_s ± √((m_S·std)² + (z·σ_y)²) over the samples x_s. Uncalibrated: image-space calibration does not carry
    over to k-space values."""
    from napari_brgm.operators.fourier import to_complex
    from napari_brgm.operators.kspace_masks import center_lines

    settings, op = prep.settings, prep.problem.operator
    sampled = op.sampled.cpu().numpy()
    rng = np.random.default_rng(settings.seed + 1)
    hidden = np.zeros_like(sampled)
    if prep.settings_out["kspace"]["kind"] == "user":
        entries = np.flatnonzero(sampled)
        entries = entries[entries != np.ravel_multi_index((sampled.shape[0] // 2, sampled.shape[1] // 2),
                                                          sampled.shape)]
        if entries.size:
            hidden.flat[rng.choice(entries, max(1, round(SELF_CHECK_FRACTION * entries.size)), replace=False)] = True
    else:
        columns = settings.task_options.phase_axis == "columns"
        lines = sampled.any(axis=0 if columns else 1)
        start, stop = center_lines(lines.size, prep.settings_out["kspace"]["center_fraction"])
        outer = [i for i in np.flatnonzero(lines) if not start <= i < stop]
        if outer:
            chosen = rng.choice(outer, max(1, round(SELF_CHECK_FRACTION * len(outer))), replace=False)
            hidden[(slice(None), chosen) if columns else (chosen, slice(None))] = True
    hidden &= sampled
    if not hidden.any():
        return {"coverage": None, "reason": "no sampled line outside the fully sampled centre to hide"}
    kwargs = settings.as_kwargs() | {"self_check": False, "kspace_mask": sampled & ~hidden}
    check = prepare(prep.image, **kwargs)
    monitor = Monitor(_progress_adapter(progress, check.plan, check.imap, check.started), should_stop)
    with memory_retained():
        estimate = solve(check, monitor)
    with torch.no_grad():
        predicted = to_complex(op(estimate.samples.float()))[:, :, torch.as_tensor(hidden)]  # [S, C, n]
        measured = to_complex(prep.problem.y.float())[:, :, torch.as_tensor(hidden)]
    predicted = torch.cat([predicted.real, predicted.imag], dim=-1)
    measured = torch.cat([measured.real, measured.imag], dim=-1)[0]
    count = len(predicted)
    spread = predicted.std(dim=0, unbiased=count > 1) if count > 1 else torch.zeros_like(measured)
    half = torch.sqrt((gaussian_multiplier(settings.interval, count) * spread) ** 2
                      + (gaussian_multiplier(settings.interval) * prep.sigma_y) ** 2)
    cov = float(((measured - predicted.mean(dim=0)).abs() <= half).float().mean())
    return {"coverage": cov, "entries": int(measured.numel()), "hidden_fraction": float(hidden.sum() / sampled.sum()),
            "ok": cov >= SELF_CHECK_WARN, "calibrated": False, "space": "k-space", "partial": bool(estimate.partial)}


def _misfit(problem: Problem, estimate: _Estimate, sigma_y: float, kind: str | None) -> float | None:
    """Data misfit of the estimate (before back-projection), mean over observed entries, in units of σ_y²."""
    if kind is None:  # Deep Image Prior fits any image: its misfit says nothing about the input
        return None
    x = estimate.mean if estimate.mean is not None else estimate.samples.mean(dim=0, keepdim=True)
    with torch.no_grad():
        return float(problem.data_fit(x.float())[0]) / sigma_y**2


def _vi_stage(settings: Settings) -> tuple[str | None, str | None]:
    """VI's posterior family and predictive when the run had a VI stage (part of the calibration key), else None."""
    opts = settings.method_options
    ran_vi = settings.method == "vi" or (settings.method == "iagan" and opts.iagan_vi)
    return (opts.vi_posterior, opts.vi_predictive) if ran_vi else (None, None)


def _has_samples(settings: Settings) -> bool:
    """Whether the method gives samples (and so an interval): not MAP, CSGM, or IAGAN without its VI stage."""
    return settings.method not in ("map", "csgm") and (settings.method != "iagan" or settings.method_options.iagan_vi)


def _calibration(requested, prior_path) -> tuple[CalibrationFile | None, str | None, str | None]:
    """The run's calibration file, its path and the prior's hash; an explicit file for another prior is refused."""
    calibration, source = load_calibration(requested, prior_path)
    sha = None if prior_path is None else file_sha256(prior_path)
    if calibration is not None and calibration.prior_sha256 != (sha or "none"):
        if requested is not None:
            raise CalibrationError(f"calibration file {source} was made for prior {calibration.prior_sha256[:12]}… "
                                   f"({calibration.prior_name or 'unnamed'}), not for this prior "
                                   f"({(sha or 'none')[:12]}…); calibrate this prior with napari-brgm calibrate")
        warnings.warn(f"{source} is for another prior file; intervals stay uncalibrated", stacklevel=3)
        return None, None, sha
    return calibration, source, sha


@dataclass
class _Estimate:
    """A solver's answer in model units [N, C, R, R], before back-projection and the way back to input units."""

    samples: torch.Tensor  # [S, C, R, R]; a point estimate is one "sample"
    mean: torch.Tensor | None  # [1, C, R, R]; None: the pixel-wise mean of the samples (in input units)
    spread: bool  # whether Result.std is the spread of the samples (else None)
    map: torch.Tensor | None  # BRGM's MAP image G(w*) when the method computed one (never back-projected)
    losses: dict[str, list[float]]  # prefixed by stage: "map/…", "vi/…", "csgm/…", "iagan/…", "dip/…"
    partial: bool
    notes: dict = field(default_factory=dict)  # recorded in Result.settings (e.g. early stopping)


def _map_config(settings: Settings, device: torch.device) -> MapConfig:
    opts = settings.method_options  # map, vi, iagan: MapOptions, ViOptions, IaganOptions
    return MapConfig(steps=settings.steps, lambda_c=opts.lambda_c if opts.lambda_c is not None
                     else MapConfig.default_lambda_c(settings.task, settings.factor),
                     perceptual=_perceptual(opts.perceptual_weights, device))


def _vi_config(settings: Settings, sigma_y: float, map_cfg: MapConfig) -> ViConfig:
    opts = settings.method_options  # vi, iagan: ViOptions, IaganOptions
    return ViConfig(steps=settings.steps, mc_samples=opts.mc_samples, samples=settings.samples,
                    mode=opts.vi_mode, posterior=opts.vi_posterior, rank=opts.vi_rank, sigma_y=sigma_y, map=map_cfg,
                    predictive=opts.vi_predictive)


def _solve_brgm(problem: Problem, settings: Settings, sigma_y: float, monitor: Monitor, plan, model,
                map_out: MapOutput | None = None) -> _Estimate:
    """BRGM: MAP in W+; VI starts from the MAP estimate in its ELBO mode (a MAP stage runs first).

    `map_out`: the MAP stage already done (a volume's slices share one batched MAP run).
    """
    map_cfg = _map_config(settings, problem.device)
    losses: dict[str, list[float]] = {}
    if map_out is None and (settings.method == "map" or settings.method_options.vi_mode == "elbo"):
        map_out = solve_map(problem, map_cfg, monitor)
    if map_out is not None:
        losses.update({f"map/{k}": v for k, v in map_out.losses.items()})
    if settings.method == "map" or monitor.stopped:
        return _Estimate(samples=map_out.image, mean=map_out.image, spread=False, map=map_out.image,
                         losses=losses, partial=map_out.stopped)
    vi = solve_vi(problem, _vi_config(settings, sigma_y, map_cfg), seed=settings.seed, monitor=monitor,
                  mu_init=None if map_out is None else map_out.ws)
    losses.update({f"vi/{k}": v for k, v in vi.losses.items()})
    return _Estimate(samples=vi.samples, mean=None, spread=True, map=None if map_out is None else map_out.image,
                     losses=losses, partial=vi.stopped)


def _csgm_config(settings: Settings) -> CsgmConfig:
    opts = settings.method_options  # csgm, iagan: CsgmOptions, IaganOptions
    return CsgmConfig(steps=settings.steps, restarts=opts.restarts, lambda_z=opts.lambda_z)


def _solve_csgm(problem: Problem, settings: Settings, sigma_y: float, monitor: Monitor, plan, model) -> _Estimate:
    out = solve_csgm(problem, _csgm_config(settings), seed=settings.seed, monitor=monitor)
    return _Estimate(samples=out.image, mean=out.image, spread=False, map=None,
                     losses={f"csgm/{k}": v for k, v in out.losses.items()}, partial=out.stopped,
                     notes={"restart_data_fits": out.data_fits.tolist()})


def _solve_iagan(problem: Problem, settings: Settings, sigma_y: float, monitor: Monitor, plan, model) -> _Estimate:
    """IAGAN on a copy of the cached generator; with iagan_vi, VI around the adapted generator follows."""
    opts: IaganOptions = settings.method_options
    cfg = IaganConfig(steps=settings.steps, lr_z=opts.iagan_lr, lr_g=opts.iagan_lr, early_stop=opts.early_stop,
                      sigma_y=sigma_y, csgm=_csgm_config(settings))
    out = solve_iagan(problem, cfg, seed=settings.seed, monitor=monitor)
    notes = {"early_stopped_at": {"iagan": out.early_stopped_at}}
    if not opts.iagan_vi or out.stopped:
        return _Estimate(samples=out.image, mean=out.image, spread=False, map=None, losses=out.losses,
                         partial=out.stopped, notes=notes)
    adapted = replace(problem, generator=out.generator)
    vi = solve_vi(adapted, _vi_config(settings, sigma_y, _map_config(settings, problem.device)), seed=settings.seed,
                  monitor=monitor, mu_init=out.ws)
    losses = out.losses | {f"vi/{k}": v for k, v in vi.losses.items()}
    return _Estimate(samples=vi.samples, mean=None, spread=True, map=None, losses=losses, partial=vi.stopped,
                     notes=notes)


def _solve_dip(problem: Problem, settings: Settings, sigma_y: float, monitor: Monitor, plan, model) -> _Estimate:
    opts: DipOptions = settings.method_options
    cfg = DipConfig(steps=settings.steps, lr=opts.dip_lr, input_noise=opts.dip_input_noise, ema=opts.dip_ema,
                    early_stop=opts.early_stop, sigma_y=sigma_y, samples=settings.samples, restarts=opts.restarts)
    out = solve_dip(problem, cfg, seed=settings.seed, image_hw=plan.model_hw, monitor=monitor)
    return _Estimate(samples=out.samples, mean=out.image, spread=len(out.samples) > 1, map=None,
                     losses={f"dip/{k}": v for k, v in out.losses.items()}, partial=out.stopped,
                     notes={"early_stopped_at": {"dip": out.early_stopped_at}, "restarts_done": out.restarts_done})


def _solve_reddiff(problem: Problem, settings: Settings, sigma_y: float, monitor: Monitor, plan, model) -> _Estimate:
    """RED-Diff with a diffusion prior: `samples` noise seeds batched; their spread is the estimator's."""
    from napari_brgm.solvers.reddiff import RedDiffConfig, solve_reddiff

    opts: RedDiffOptions = settings.method_options
    cfg = RedDiffConfig(steps=settings.steps, lr=opts.reddiff_lr, lam=opts.reddiff_lambda,
                        weighting=opts.reddiff_weighting, sigma_y=sigma_y, samples=settings.samples)
    out = solve_reddiff(problem, model, cfg, seed=settings.seed, monitor=monitor)
    return _Estimate(samples=out.samples, mean=None, spread=len(out.samples) > 1, map=None,
                     losses={f"reddiff/{k}": v for k, v in out.losses.items()}, partial=out.stopped)


def _solve_flow(problem: Problem, settings: Settings, sigma_y: float, monitor: Monitor, plan, model) -> _Estimate:
    """MAP in the flow's latent z, then S Langevin chains around it: the samples' spread is a posterior spread."""
    from napari_brgm.solvers.flow import FlowSolverConfig, solve_flow

    opts: FlowOptions = settings.method_options
    cfg = FlowSolverConfig(steps=settings.steps, gamma=opts.flow_gamma, sigma_y=sigma_y, samples=settings.samples,
                           langevin_steps=opts.flow_langevin_steps)
    out = solve_flow(problem, model, cfg, seed=settings.seed, monitor=monitor)
    sampled = opts.flow_langevin_steps > 0 and len(out.samples) > 1
    return _Estimate(samples=out.samples, mean=None if sampled else out.image, spread=sampled, map=out.image,
                     losses={f"flow/{k}": v for k, v in out.losses.items()}, partial=out.stopped)


_SOLVERS = {"map": _solve_brgm, "vi": _solve_brgm, "csgm": _solve_csgm, "iagan": _solve_iagan, "dip": _solve_dip,
            "reddiff": _solve_reddiff, "flow": _solve_flow}  # one for each method of engine.methods.METHOD_SPECS


def _dip_resolution(input_hw: tuple[int, int], factor: int, requested: int | None) -> int:
    """DIP's model image side: as asked, else the output's longer side rounded up to a power of two in 32-256."""
    if requested is not None:
        return int(requested)
    side = factor * max(input_hw)
    return min(DIP_MAX_AUTO_RESOLUTION, max(DIVISOR * 2, 1 << max(side - 1, 1).bit_length()))


def _resolve_prior(prior: str | None, kind: str) -> Path:
    """The prior's file; None: the default built-in prior of that kind. A prior of another kind is refused."""
    from napari_brgm.priors import default_prior, prior_kind, resolve_prior

    if prior is None:
        name = default_prior(kind)
        if name is None:
            raise ValueError(f"no prior given and no built-in {kind} prior is installed; pass a checkpoint path")
        prior = name
    path = resolve_prior(prior)
    found = prior_kind(path)
    if found != kind:
        raise ValueError(f"{prior} is a {found} prior; this method needs a {kind} prior")
    return path


@lru_cache(maxsize=3)
def _load(path: str, kind: str, device: torch.device):
    """Loaded priors are kept (the last three): re-running with the same prior costs nothing."""
    from napari_brgm.priors import load_prior

    model = load_prior(path, device=device)
    if kind == "stylegan2":
        model.w_stats  # computed once here, cached by the generator
    return model


def _gray(t: torch.Tensor) -> np.ndarray:
    """Model images [N, C, R, R] → numpy [N, R, R]; an RGB prior's channels are averaged."""
    return t.detach().float().mean(dim=1).cpu().numpy()


def _measurement(image, missing, plan, settings: Settings, sigma_y: float, imap: IntensityMap, channels: int,
                 device: torch.device, sampled: np.ndarray | None = None):
    """The forward operator at the prior's resolution and the measurement y [1, C, h, w] ([1, 2C, h, w] for k-space,
    simulated from the image: `sampled` is the k-space mask)."""
    y = torch.as_tensor(plan.to_model(imap.to_model(image)), dtype=torch.float32, device=device)
    y = y.reshape(1, 1, *y.shape[-2:]).expand(1, channels, -1, -1).contiguous()
    if settings.task == "kspace":
        return _kspace_measurement(y, sampled, settings, sigma_y, imap, device)
    if settings.task in ("superres", "deblur"):
        if settings.task == "superres":
            operator = make_operator("superres", factor=settings.factor, kind=settings.task_options.sr_kind,
                                     noise_sigma=sigma_y)
        else:
            operator = _blur(settings.task_options, plan.scale, sigma_y)
        unobserved = plan.measurement_padding()
        if unobserved is not None:
            operator = MaskedOperator(operator, torch.as_tensor(unobserved, device=device), noise_sigma=sigma_y)
    else:
        model_missing = plan.model_mask(missing)
        if settings.task == "inpaint" or model_missing is not None and model_missing.any():
            operator = make_operator("inpaint", mask=torch.as_tensor(model_missing, device=device),
                                     noise_sigma=sigma_y)
        else:
            operator = make_operator("denoise", sigma=sigma_y)
    return operator.to(device), operator.project_measurement(y)


def kspace_views(prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """(zero-filled magnitude image in input units and output geometry, sampling mask [model grid]) of a prepared
    k-space run: what the GUI shows before the solver starts, and Result.zero_filled / sampling_mask."""
    op = prep.problem.operator  # KSpace (never wrapped)
    zf = op.zero_filled(prep.problem.y)  # complex, model units: the intensity map's offset sits in DC's real part
    magnitude = np.hypot(prep.imap.to_input(_gray(zf.real)), prep.imap.sigma_to_input(_gray(zf.imag)))
    return prep.plan.from_model(magnitude)[0].astype(np.float32), op.sampled.cpu().numpy().copy()


def kspace_sampling(settings: Settings, hw: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """The run's k-space mask (bool [hw], True = sampled) and its description for Result.settings["kspace"].

    A line mask along the phase-encode axis (seeded by `mask_seed`, else the run's seed), or the user's
    `kspace_mask` (a file, or an array from Python) at the model's k-space size `hw`. The array itself is
    not recorded: the settings name it by its hash.
    """
    from napari_brgm.operators.kspace_masks import MaskInfo, default_center_fraction, sampling_mask, user_mask

    opts = settings.task_options
    axis = -1 if opts.phase_axis == "columns" else -2
    given = opts.kspace_mask
    if given is None:
        seed = settings.seed if opts.mask_seed is None else opts.mask_seed
        sampled = sampling_mask(hw, opts.acceleration, opts.center_fraction, opts.mask_type, seed=seed, axis=axis)
        info = MaskInfo.of(sampled, opts.mask_type, axis).as_dict() | {"seed": seed}
    else:
        sampled = user_mask(_mask_array(given), hw, "the k-space mask" if not isinstance(given, str) else given)
        info = MaskInfo.of(sampled, "user").as_dict()
        if not isinstance(given, str):
            opts.kspace_mask = f"array:{hashlib.sha1(np.packbits(sampled).tobytes()).hexdigest()[:12]}"
    center = opts.center_fraction if opts.center_fraction is not None else default_center_fraction(opts.acceleration)
    info |= {"acceleration": opts.acceleration, "center_fraction": center if given is None else None,
             "axis": opts.phase_axis, "grid": list(hw), "noise": opts.kspace_noise,
             "domain": "real image (magnitude-simulated, Hermitian k-space)"}
    return sampled, info


def _mask_array(given) -> np.ndarray:
    """A k-space mask given as an array, a .npy file or an image file the readers know."""
    if not isinstance(given, str):
        return np.asarray(given)
    if given.startswith("array:"):
        raise ValueError(f"this run's k-space mask was an array ({given}); pass the array again as kspace_mask=")
    path = Path(given).expanduser()
    if not path.is_file():
        raise ValueError(f"k-space mask file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path} is not a plain numpy array: {err}") from None
    from napari_brgm.io import load_image

    return load_image(path).data


def _kspace_measurement(x: torch.Tensor, sampled: np.ndarray, settings: Settings, sigma_y: float, imap: IntensityMap,
                        device: torch.device):
    """(KSpace operator, y = M ⊙ (F_c x + n)): the slice's k-space simulated at the model's grid, seeded noise of
    `kspace_noise` (input units) on every real and imaginary part of the sampled entries. y is not projected on
    range(A): noisy mirror pairs need not be conjugate, and the least-squares data term does not need it."""
    operator = make_operator("kspace", sampled=torch.as_tensor(sampled), noise_sigma=sigma_y).to(device)
    y = operator(x)
    noise = imap.scale_sigma(settings.task_options.kspace_noise)
    if noise > 0:
        gen = torch.Generator().manual_seed(settings.seed + 7)
        n = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(device) * noise
        y = y + n * operator.sampled.to(y)  # noise on the sampled entries only: y is 0 off the mask
    return operator, y


def task_key(settings: Settings) -> dict:
    """The task's fields of a calibration key beyond the factor / missing fraction: what changes the error's scale."""
    opts = settings.task_options
    if settings.task == "kspace":
        return {"acceleration": float(opts.acceleration),
                "mask_type": "user" if opts.kspace_mask is not None else opts.mask_type}
    if settings.task == "deblur":
        return {"psf": opts.psf, "psf_size": float(opts.psf_sigma if opts.psf == "gaussian" else opts.psf_width)}
    return {}


def _blur(opts, scale: float, sigma_y: float):
    """The blur of the input's PSF at the model's grid: its size in input pixels times the fit's scale."""
    from napari_brgm.operators import Blur

    size = (opts.psf_sigma if opts.psf == "gaussian" else opts.psf_width) * scale
    if opts.psf == "box":
        size = max(1.0, size)
    return Blur.of(opts.psf, size, noise_sigma=sigma_y)


def _progress_adapter(progress, plan, imap: IntensityMap, started: float):
    if progress is None:
        return None

    def report(stage, step, total, terms, preview):
        shown = None if preview is None else imap.to_input(plan.from_model(_gray(preview)))[0].astype(np.float32)
        progress(Progress(step=step, total=total, stage=stage, loss=terms["total"], terms=terms,
                          elapsed=time.perf_counter() - started, preview=shown))

    return report


def _perceptual(weights: str | None, device: torch.device):
    if weights is None:
        return None
    from napari_brgm.solvers.perceptual import PerceptualDistance

    return PerceptualDistance.from_file(weights).to(device)
