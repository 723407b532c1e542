"""The settings of one reconstruction, validated before any heavy work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_brgm.operators.registry import TASKS

METHODS = ("map", "vi", "csgm", "iagan", "dip", "reddiff", "flow")
PRIOR_KINDS = {  # the kind of prior each method needs (napari_brgm.priors.prior_kind); None: no prior
    "map": "stylegan2", "vi": "stylegan2", "csgm": "stylegan2", "iagan": "stylegan2",
    "dip": None, "reddiff": "diffusion", "flow": "flow",
}
REDDIFF_WEIGHTINGS = ("linear", "sqrt", "square", "log", "clip", "const")  # solvers.reddiff.WEIGHTINGS (no torch here)
DIP_RESOLUTIONS = (32, 64, 128, 256, 512)
DEFAULT_RESTARTS = {"csgm": 4, "iagan": 4, "dip": 1}  # methods that use `restarts`; DIP's cost grows with it
SR_FACTORS = range(2, 33)


@dataclass
class Settings:
    """Everything that determines a run; recorded in `Result.settings` and layer metadata."""

    task: str = "superres"  # "superres", "inpaint" or "denoise"
    factor: int = 4  # super-resolution factor (outputs are factor× the input size)
    prior: str | None = None  # built-in prior name or checkpoint path
    method: str = "map"  # "map", "vi" (BRGM), "csgm", "iagan", "dip", "reddiff" or "flow" (docs/engine.md)
    steps: int = 501  # optimisation steps per stage (BRGM: 501)
    samples: int = 16  # S: posterior samples drawn at the end (VI); DIP: last iterates kept for the spread
    seed: int = 0  # seeds every random draw of the run
    device: str = "auto"  # "auto", "cpu" or "cuda"
    vi_mode: str = "elbo"  # "elbo" (a real ELBO) or "brgm" (the reference code's loss)
    mc_samples: int = 6  # K: samples of q per VI step, batched in one generator call
    sigma_y: float | None = None  # measurement noise std in INPUT units (None: 2.5% of the intensity range)
    window: tuple[float, float] | None = None  # (centre, width) mapped to the generator's [-1, 1]; None: percentiles
    sr_kind: str = "box"  # super-resolution operator: "box" (area average) or "bicubic" (antialiased)
    fit: str = "auto"  # how the input meets the prior's resolution: "auto", "pad" or "resize"
    lambda_c: float | None = None  # colinearity weight (None: BRGM's default for the task)
    perceptual_weights: str | None = None  # local VGG16/LPIPS weights file enabling the perceptual term
    precision: str = "fp32"  # "fp32" (exact) or "bf16" (3×3 convolutions in bfloat16: faster on CPUs with bf16)
    back_project: bool = False  # every method: post-step x + A⁺(y − A·x), the result reproduces y where observed
    bp_eta: float = 0.0  # η of the regularised back-projection x + Aᵀ(AAᵀ + ηI)⁻¹(y − A·x); 0: exact
    restarts: int | None = None  # random starts (None: DEFAULT_RESTARTS). CSGM / IAGAN: z starts in one batch, the
    # best data fit is kept; DIP: networks fitted in turn, their estimates averaged
    lambda_z: float = 0.001  # CSGM / IAGAN: weight of the Gaussian prior ‖z‖²
    iagan_lr: float = 1e-4  # IAGAN: Adam learning rate of the adaptive stage (z and synthesis weights)
    iagan_vi: bool = False  # IAGAN: then variational inference around the adapted generator (samples + std)
    early_stop: bool = True  # IAGAN / DIP: stop once the data misfit reaches sigma_y² (discrepancy principle)
    dip_lr: float = 0.01  # DIP: Adam learning rate of the network weights
    dip_input_noise: float = 1 / 30  # DIP: std of the noise added to the fixed input each step
    dip_ema: float = 0.99  # DIP: weight of the past in the moving average of the outputs
    dip_resolution: int | None = None  # DIP: model image side (32-512); None: output size rounded up to 2^k, ≤ 256
    reddiff_lambda: float = 0.25  # RED-Diff: λ, weight of the diffusion regulariser
    reddiff_lr: float = 0.25  # RED-Diff: Adam learning rate on the image estimate
    reddiff_weighting: str = "linear"  # RED-Diff: timestep weighting w_t (solvers.reddiff.WEIGHTINGS)
    flow_gamma: float = 1.0  # flow: weight of the prior ‖z‖²/2 (1: the exact posterior; < 1 tempers the prior)
    flow_langevin_steps: int = 50  # flow: Langevin (MALA) steps of the S chains that give the samples

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.task == "superres" and self.factor not in SR_FACTORS:
            raise ValueError(f"super-resolution factor must be an integer from 2 to 32, got {self.factor!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.samples < 1 or self.mc_samples < 1:
            raise ValueError("samples and mc_samples must be at least 1")
        if self.vi_mode not in ("elbo", "brgm"):
            raise ValueError(f"vi_mode must be 'elbo' or 'brgm', got {self.vi_mode!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.sigma_y is not None and not self.sigma_y > 0:
            raise ValueError(f"sigma_y must be positive, got {self.sigma_y}")
        if self.window is not None and not self.window[1] > 0:
            raise ValueError(f"window width must be positive, got {self.window}")
        if not self.bp_eta >= 0:
            raise ValueError(f"bp_eta must be >= 0, got {self.bp_eta}")
        if self.restarts is not None and self.restarts < 1:
            raise ValueError(f"restarts must be at least 1, got {self.restarts}")
        if not self.lambda_z >= 0:
            raise ValueError(f"lambda_z must be >= 0, got {self.lambda_z}")
        if not (self.iagan_lr > 0 and self.dip_lr > 0):
            raise ValueError("iagan_lr and dip_lr must be positive")
        if self.iagan_vi and self.method != "iagan":
            raise ValueError(f"iagan_vi applies to method 'iagan', not {self.method!r}")
        if not self.dip_input_noise >= 0 or not 0 <= self.dip_ema < 1:
            raise ValueError("dip_input_noise must be >= 0 and dip_ema in [0, 1)")
        if not (self.reddiff_lambda >= 0 and self.reddiff_lr > 0):
            raise ValueError("reddiff_lambda must be >= 0 and reddiff_lr > 0")
        if not self.flow_gamma >= 0 or self.flow_langevin_steps < 0:
            raise ValueError("flow_gamma must be >= 0 and flow_langevin_steps >= 0")
        if self.reddiff_weighting not in REDDIFF_WEIGHTINGS:
            raise ValueError(f"reddiff_weighting must be one of {REDDIFF_WEIGHTINGS}, got {self.reddiff_weighting!r}")
        if self.dip_resolution is not None and self.dip_resolution not in DIP_RESOLUTIONS:
            raise ValueError(f"dip_resolution must be one of {DIP_RESOLUTIONS}, got {self.dip_resolution!r}")

    def resolve_defaults(self) -> None:
        """Fill in the method-dependent defaults, so that the recorded settings say what ran."""
        if self.task != "superres":
            self.factor = 1
        if self.restarts is None:
            self.restarts = DEFAULT_RESTARTS.get(self.method, 1)

    def as_dict(self) -> dict:
        return asdict(self)


def validate_inputs(image, mask, settings: Settings) -> tuple[np.ndarray, np.ndarray | None]:
    """Check the image and mask against the task; return float32 image and boolean missing-mask."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D array (one slice), got shape {image.shape}")
    if min(image.shape) < 2:
        raise ValueError(f"image is too small: {image.shape}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    if settings.task != "inpaint":
        if mask is not None:
            raise ValueError(f"a mask is only used for inpainting, not for task {settings.task!r}")
        return image, None
    if mask is None:
        raise ValueError("inpainting needs a mask (nonzero = missing)")
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
    missing = mask != 0
    if not missing.any():
        raise ValueError("the mask is empty: paint the missing region (nonzero = missing)")
    if missing.all():
        raise ValueError("the mask covers the whole image: nothing is observed")
    return image, missing
