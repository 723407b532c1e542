"""The settings of one reconstruction, validated before any heavy work starts.

`Settings` holds the fields every run has; the chosen task's and method's own options are
dataclasses from the registries (`engine.tasks`, `engine.methods`), held in `task_options` and
`method_options`. `Settings.from_flat` takes reconstruct's flat keyword options and sorts them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from napari_brgm.engine import nonfinite as _nonfinite
from napari_brgm.engine.methods import DEFAULT_RESTARTS, METHOD_SPECS, METHODS, PRIOR_KINDS
from napari_brgm.engine.options import Options, build, names
from napari_brgm.engine.tasks import TASK_SPECS, TASKS

__all__ = ["DEFAULT_RESTARTS", "METHODS", "PRIOR_KINDS", "TASKS", "OptionError", "Settings", "owners",
           "validate_inputs"]

SR_FACTORS = range(2, 33)
INTERVAL_LEVELS = (0.8, 0.9, 0.95)


class OptionError(TypeError):
    """A keyword option that is unknown, or that belongs to another method or task than the chosen one."""


@dataclass
class Settings:
    """Everything that determines a run; recorded in `Result.settings` and layer metadata.

    The common fields are here; the chosen task's and method's options are in `task_options` and
    `method_options` (their dataclasses: `engine.tasks.TASK_SPECS`, `engine.methods.METHOD_SPECS`).
    """

    task: str = "superres"  # "superres", "inpaint", "denoise", "kspace" (undersampled MRI) or "deblur"
    factor: int = 4  # super-resolution factor (outputs are factor× the input size); 1 for the other tasks
    prior: str | None = None  # built-in prior name or checkpoint path
    method: str = "map"  # "map", "vi" (BRGM), "csgm", "iagan", "dip", "reddiff" or "flow" (docs/engine.md)
    steps: int = 501  # optimisation steps per stage (BRGM: 501)
    samples: int = 16  # S: posterior samples drawn at the end (VI); DIP: last iterates kept for the spread
    seed: int = 0  # seeds every random draw of the run
    device: str = "auto"  # "auto", "cpu" or "cuda"
    sigma_y: float | None = None  # measurement noise std in INPUT units (None: 2.5% of the intensity range)
    window: tuple[float, float] | None = None  # (centre, width) mapped to the generator's [-1, 1]; None: percentiles
    fit: str = "auto"  # how the input meets the prior's resolution: "auto", "pad" or "resize"
    precision: str = "fp32"  # "fp32" (exact) or "bf16" (3×3 convolutions in bfloat16: faster on CPUs with bf16)
    back_project: bool = False  # every method: post-step x + A⁺(y − A·x), the result reproduces y where observed
    bp_eta: float = 0.0  # η of the regularised back-projection x + Aᵀ(AAᵀ + ηI)⁻¹(y − A·x); 0: exact
    interval: float = 0.9  # level of the central interval Result.lower/upper of methods with samples: 0.8, 0.9, 0.95
    calibration: str | None = None  # calibration file (None: <prior>.calibration.json beside the prior; "none": off)
    self_check: bool = False  # a second run with 10% of the observed pixels (k-space: sampled lines) hidden, their coverage reported
    nonfinite: str = "refuse"  # inf/NaN input pixels: "refuse" (say how many and where) or "missing" (inpainting)
    task_options: Options | None = None  # the task's options dataclass (None: its defaults)
    method_options: Options | None = None  # the method's options dataclass (None: its defaults)

    def __post_init__(self):
        if self.task_options is None and self.task in TASK_SPECS:
            self.task_options = TASK_SPECS[self.task].options()
        if self.method_options is None and self.method in METHOD_SPECS:
            self.method_options = METHOD_SPECS[self.method].options()

    @classmethod
    def from_flat(cls, **options) -> Settings:
        """Settings from flat keyword options: common fields, and the options of the chosen task and method.

        OptionError (a TypeError) for an option that no task or method has, or that belongs to
        another one than the chosen (it names the owner); ValueError for an unknown task or method.
        """
        unknown = [k for k in options if k not in COMMON and not any(owners(k).values())]
        if unknown:
            raise OptionError(f"unknown reconstruct option(s): {sorted(unknown)}")
        common = cls(**{k: v for k, v in options.items() if k in COMMON})
        common._check_choice()
        task_cls, method_cls = TASK_SPECS[common.task].options, METHOD_SPECS[common.method].options
        stray = [k for k in options if k not in COMMON and k not in names(task_cls) + names(method_cls)]
        if stray:
            raise OptionError("; ".join(_not_here(k, common) for k in stray))
        return replace(common, task_options=build(task_cls, options), method_options=build(method_cls, options))

    @classmethod
    def from_dict(cls, recorded: dict) -> Settings:
        """The settings of a recorded run (`Result.settings`, or summary.json's "settings"); other keys are ignored."""
        common = {k: recorded[k] for k in COMMON if k in recorded}
        if isinstance(common.get("fit"), dict):  # Result.settings records the fit plan, with the requested mode
            common["fit"] = common["fit"]["mode"]
        if isinstance(common.get("interval"), dict):  # Result.settings records the interval, with its level
            common["interval"] = common["interval"]["level"]
        if common.get("window") is not None:
            common["window"] = tuple(common["window"])
        return cls.from_flat(**common, **recorded.get("task_options", {}), **recorded.get("method_options", {}))

    def as_kwargs(self) -> dict:
        """Flat keyword options of `reconstruct` that re-create this run (with the same image and mask)."""
        common = {k: getattr(self, k) for k in COMMON}
        return common | asdict(self.task_options) | asdict(self.method_options)

    def _check_choice(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    def validate(self) -> None:
        self._check_choice()
        for kind, spec, given in (("task", TASK_SPECS[self.task], self.task_options),
                                  ("method", METHOD_SPECS[self.method], self.method_options)):
            if type(given) is not spec.options:
                raise OptionError(f"{kind}_options must be a {spec.options.__name__}, got {type(given).__name__}")
        if self.task == "superres" and self.factor not in SR_FACTORS:
            raise ValueError(f"super-resolution factor must be an integer from 2 to 32, got {self.factor!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.sigma_y is not None and not self.sigma_y > 0:
            raise ValueError(f"sigma_y must be positive, got {self.sigma_y}")
        if self.window is not None and not self.window[1] > 0:
            raise ValueError(f"window width must be positive, got {self.window}")
        if not self.bp_eta >= 0:
            raise ValueError(f"bp_eta must be >= 0, got {self.bp_eta}")
        if self.task == "kspace" and getattr(self.method_options, "perceptual_weights", None) is not None:
            raise ValueError("the perceptual term compares images; a k-space measurement is not one: leave "
                             "perceptual_weights unset for task 'kspace'")
        if self.interval not in INTERVAL_LEVELS:
            raise ValueError(f"interval must be one of {INTERVAL_LEVELS}, got {self.interval!r}")
        _nonfinite.check_choice(self.nonfinite, self.task)
        self.task_options.validate()
        self.method_options.validate()

    def resolve_defaults(self) -> None:
        """Fill in the task-dependent defaults, so that the recorded settings say what ran."""
        if self.task != "superres":
            self.factor = 1
        opts = self.method_options
        if getattr(opts, "vi_posterior", "") is None:
            opts.vi_posterior = "meanfield" if opts.vi_mode == "brgm" else "laplace"
        if hasattr(opts, "vi_predictive"):
            from napari_brgm.solvers.vi import default_predictive  # the rule lives with the solver (torch: lazy)

            opts.vi_predictive = default_predictive(opts.vi_posterior, opts.vi_predictive)

    def as_dict(self) -> dict:
        """JSON-ready: the common fields, and the options nested as "task_options" and "method_options"."""
        return asdict(self)


COMMON = tuple(f.name for f in fields(Settings) if f.name not in ("task_options", "method_options"))  # every run's


def owners(option: str) -> dict[str, list[str]]:
    """The tasks and the methods whose options dataclass has `option`: {"task": [...], "method": [...]}."""
    return {kind: [name for name, spec in specs.items() if option in names(spec.options)]
            for kind, specs in (("task", TASK_SPECS), ("method", METHOD_SPECS))}


def _not_here(option: str, settings: Settings) -> str:
    """'restarts is an option of methods 'csgm', 'iagan', 'dip', not of method 'map''."""
    chosen = {"task": settings.task, "method": settings.method}
    where = [f"{kind}{'s' if len(found) > 1 else ''} {', '.join(map(repr, found))}, not of {kind} {chosen[kind]!r}"
             for kind, found in owners(option).items() if found]
    return f"{option} is an option of {' and '.join(where)}"


def validate_inputs(image, mask, settings: Settings) -> tuple[np.ndarray, np.ndarray | None]:
    """Check the image and mask against the task; return float32 image and boolean missing-mask.

    Non-finite pixels are refused with their count and place, or (inpainting with
    `nonfinite="missing"`) join the missing-mask; the returned image is then finite everywhere.
    """
    image = np.asarray(image)
    if np.iscomplexobj(image):
        raise ValueError("the image is complex: every task reconstructs a real-valued image (k-space is simulated "
                         "from it); pass its magnitude (numpy.abs) or a phase-corrected real part")
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D array (one slice), got shape {image.shape}")
    if min(image.shape) < 2:
        raise ValueError(f"image is too small: {image.shape}")
    image = image.astype(np.float32, copy=False)
    nonfinite = settings.nonfinite
    if settings.task != "inpaint":
        if mask is not None:
            raise ValueError(f"a mask is only used for inpainting, not for task {settings.task!r}")
        image, _ = _nonfinite.resolve(image, None, nonfinite, settings.task)
        return image, None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
    image, missing = _nonfinite.resolve(image, None if mask is None else mask != 0, nonfinite, settings.task)
    if missing is None:
        raise ValueError("inpainting needs a mask (nonzero = missing)")
    if not missing.any():
        raise ValueError("the mask is empty: paint the missing region (nonzero = missing)")
    if missing.all():
        raise ValueError("the mask covers the whole image: nothing is observed")
    return image, missing
