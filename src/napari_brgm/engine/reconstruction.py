"""`reconstruct`: one call from a 2-D slice in input units to mean, samples and uncertainty.

Steps: validate (before any heavy work) → load the prior (cached) → map intensities to the
generator's [-1, 1] and fit the slice to the prior's resolution → build the forward operator →
run the solver → map every image back to the input's size and units.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from napari_brgm.engine.devices import resolve_device
from napari_brgm.engine.geometry import plan_fit
from napari_brgm.engine.intensity import IntensityMap
from napari_brgm.engine.result import Progress, Result
from napari_brgm.engine.settings import Settings, validate_inputs
from napari_brgm.operators import MaskedOperator, make_operator
from napari_brgm.solvers import MapConfig, Monitor, Problem, ViConfig, solve_map, solve_vi

DEFAULT_SIGMA_Y = 0.05  # measurement noise in model units when none is stated: 2.5% of the intensity range


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
    **options,
) -> Result:
    """Reconstruct a 2-D slice with a StyleGAN2 prior (BRGM MAP or variational inference).

    image: 2-D array in its own units (HU, MR units, CR values). mask: inpainting only, same shape,
    NONZERO = MISSING. prior: a built-in prior name or a checkpoint path (any format
    `load_generator` reads). Super-resolution outputs are `factor`× the input size. `progress`
    receives a `Progress` after every step; `should_stop()` is polled after every step and a
    cancelled run returns promptly with `Result.partial = True`. Further keyword options are the
    fields of `Settings` (vi_mode, mc_samples, sigma_y, window, sr_kind, fit, lambda_c,
    perceptual_weights, precision). Invalid requests raise ValueError before any heavy work.
    """
    started = time.perf_counter()
    unknown = set(options) - set(Settings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown reconstruct option(s): {sorted(unknown)}")
    settings = Settings(task=task, factor=int(factor), prior=None if prior is None else str(prior), method=method,
                        steps=int(steps), samples=int(samples), seed=int(seed), device=str(device), **options)
    settings.validate()
    image, missing = validate_inputs(image, mask, settings)
    if settings.task != "superres":
        settings.factor = 1
    prior_path = _resolve_prior(settings.prior)
    dev = resolve_device(settings.device)
    generator = _load(str(prior_path), dev)
    generator.precision = settings.precision  # the cached generator serves every run: set it each time
    plan = plan_fit(image.shape, generator.img_resolution, factor=settings.factor, mode=settings.fit)

    imap = (IntensityMap.from_window(*settings.window) if settings.window
            else IntensityMap.from_percentiles(image, mask=missing))
    sigma_y = imap.scale_sigma(settings.sigma_y) if settings.sigma_y is not None else DEFAULT_SIGMA_Y
    operator, y = _measurement(image, missing, plan, settings, sigma_y, imap, generator.img_channels, dev)
    problem = Problem(generator=generator, operator=operator, y=y)
    monitor = Monitor(_progress_adapter(progress, plan, imap, started), should_stop)
    settings_out = settings.as_dict() | {"prior_path": str(prior_path), "device_used": str(dev),
                                         "sigma_y_model": sigma_y, "intensity": imap.as_dict(),
                                         "prior_resolution": generator.img_resolution, "fit": plan.describe()}
    load_done = time.perf_counter()

    map_cfg = MapConfig(steps=settings.steps, lambda_c=settings.lambda_c if settings.lambda_c is not None
                        else MapConfig.default_lambda_c(settings.task, settings.factor),
                        perceptual=_perceptual(settings.perceptual_weights, dev))
    losses: dict[str, list[float]] = {}
    back = lambda t: imap.to_input(plan.from_model(_gray(t)))  # noqa: E731  model [N,C,R,R] → input units
    map_out = None
    if settings.method == "map" or settings.vi_mode == "elbo":  # the ELBO starts from the MAP estimate
        map_out = solve_map(problem, map_cfg, monitor)
        losses.update({f"map/{k}": v for k, v in map_out.losses.items()})
    map_image = None if map_out is None else back(map_out.image)[0]
    if settings.method == "map" or monitor.stopped:
        mean, samples_in, std, partial = map_image, map_image[None], None, map_out.stopped
    else:
        vi_cfg = ViConfig(steps=settings.steps, mc_samples=settings.mc_samples, samples=settings.samples,
                          mode=settings.vi_mode, sigma_y=sigma_y, map=map_cfg)
        vi = solve_vi(problem, vi_cfg, seed=settings.seed, monitor=monitor,
                      mu_init=None if map_out is None else map_out.ws)
        losses.update({f"vi/{k}": v for k, v in vi.losses.items()})
        samples_in = back(vi.samples)
        mean = samples_in.mean(axis=0)
        std = samples_in.std(axis=0, ddof=1 if len(samples_in) > 1 else 0)
        partial = vi.stopped
    consistent = np.where(missing, mean, image).astype(np.float32) if missing is not None else None
    finished = time.perf_counter()
    settings_out["timings"] = {"load_s": load_done - started, "solve_s": finished - load_done,
                               "total_s": finished - started}
    return Result(mean=mean.astype(np.float32), samples=samples_in.astype(np.float32),
                  std=None if std is None else std.astype(np.float32), map=map_image, consistent=consistent,
                  losses=losses, partial=bool(partial), settings=settings_out)


def _resolve_prior(prior: str | None) -> Path:
    from napari_brgm.priors import builtin_priors, resolve_prior

    if prior is None:
        names = sorted(builtin_priors())
        if not names:
            raise ValueError("no prior given and no built-in prior is installed; pass a checkpoint path")
        prior = names[0]
    return resolve_prior(prior)


@lru_cache(maxsize=2)
def _load(path: str, device: torch.device):
    """Loaded generators are kept (the last two): re-running with the same prior costs nothing."""
    from napari_brgm.priors import load_generator

    generator = load_generator(path, device=device)
    generator.w_stats  # computed once here, cached by the generator
    return generator


def _gray(t: torch.Tensor) -> np.ndarray:
    """Model images [N, C, R, R] → numpy [N, R, R]; an RGB prior's channels are averaged."""
    return t.detach().float().mean(dim=1).cpu().numpy()


def _measurement(image, missing, plan, settings: Settings, sigma_y: float, imap: IntensityMap, channels: int,
                 device: torch.device):
    """The forward operator at the prior's resolution and the measurement y [1, C, h, w]."""
    y = torch.as_tensor(plan.to_model(imap.to_model(image)), dtype=torch.float32, device=device)
    y = y.reshape(1, 1, *y.shape[-2:]).expand(1, channels, -1, -1).contiguous()
    if settings.task == "superres":
        operator = make_operator("superres", factor=settings.factor, kind=settings.sr_kind, noise_sigma=sigma_y)
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
