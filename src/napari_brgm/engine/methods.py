"""The reconstruction methods: each registered once with its options dataclass and the prior kind it needs.

`reconstruct(..., method=m, **options)` accepts the fields of `METHOD_SPECS[m].options` as flat
keyword options; the CLI flags, the widget's "Advanced" group and the tables of docs/engine.md
are built from the same dataclasses. Adding an option is one `option(...)` line in its dataclass.
The solvers behind the names are in `engine.reconstruction`.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_brgm.engine.options import Options, describe, option

REDDIFF_WEIGHTINGS = ("linear", "sqrt", "square", "log", "clip", "const")  # solvers.reddiff.WEIGHTINGS (no torch here)
DIP_RESOLUTIONS = (32, 64, 128, 256, 512)
VI_POSTERIORS = ("laplace", "lowrank", "noise", "lowrank+noise", "meanfield")  # solvers.vi.POSTERIORS (no torch here)
VI_PREDICTIVES = ("linear", "generator")  # solvers.laplace.PREDICTIVES


@dataclass
class _MapTerms(Options):
    """The MAP objective's optional terms (BRGM's MAP stage, and VI's objective in its "brgm" mode)."""

    lambda_c: float | None = option(None, "colinearity weight of the W+ layers (None: BRGM's default for the task: "
                                          "0.1, or 1.0 for super-resolution factors above 16)")
    perceptual_weights: str | None = option(None, "local VGG16/LPIPS weights file enabling the perceptual term "
                                                  "(None: off; nothing is downloaded)")


@dataclass
class _Variational(Options):
    """Variational inference over W+."""

    vi_mode: str = option("elbo", 'VI objective: "elbo" (a real ELBO) or "brgm" (the reference code\'s loss)',
                          choices=("elbo", "brgm"))
    mc_samples: int = option(6, "K: samples of q per VI step, batched in one generator call", minimum=1)
    vi_posterior: str | None = option(None, "family of q: \"laplace\" (full-covariance Gaussian over W+ at the MAP), "
                                            "\"lowrank\", \"noise\", \"lowrank+noise\" or \"meanfield\" (BRGM's); None: "
                                            "laplace in elbo mode, meanfield in brgm mode", choices=(None, *VI_POSTERIORS))
    vi_rank: int = option(16, "rank of the low-rank families' correlated part", minimum=1)
    vi_predictive: str | None = option(None, "how the Laplace posterior's samples become images: \"linear\" (the "
                                             "generator linearised at the MAP point, the model the posterior is "
                                             "exact for) or \"generator\"; None: linear for laplace, else generator",
                                       choices=(None, *VI_PREDICTIVES))


@dataclass
class _EarlyStop(Options):
    early_stop: bool = option(True, "stop once the data misfit reaches sigma_y² (the discrepancy principle)")


@dataclass
class MapOptions(_MapTerms):
    """BRGM's MAP estimate in W+."""


@dataclass
class ViOptions(_MapTerms, _Variational):
    """BRGM's variational posterior over W+ (in "elbo" mode it starts from a MAP stage)."""


@dataclass
class CsgmOptions(Options):
    """CSGM: a search over z from random starts."""

    restarts: int = option(4, "random z starts, optimised in one batch; the best data fit is kept", minimum=1)
    lambda_z: float = option(0.001, "weight of the Gaussian prior ‖z‖²", minimum=0)


@dataclass
class _Adaptation(_EarlyStop):
    """IAGAN's own stage (a base class so that these come before the options of its VI stage)."""

    iagan_lr: float = option(1e-4, "Adam learning rate of the adaptive stage (z and the synthesis weights)", above=0)
    iagan_vi: bool = option(False, "then variational inference around the adapted generator (samples + std)")


@dataclass
class IaganOptions(_MapTerms, _Variational, _Adaptation, CsgmOptions):
    """IAGAN: CSGM, then z and the synthesis weights adapted to the image; VI after that with iagan_vi."""


@dataclass
class DipOptions(_EarlyStop):
    """Deep Image Prior: an untrained network fitted to the measurement."""

    restarts: int = option(1, "networks fitted one after another, their estimates averaged (each costs the steps "
                              "again)", minimum=1)
    dip_lr: float = option(0.01, "Adam learning rate of the network weights", above=0)
    dip_input_noise: float = option(1 / 30, "std of the noise added to the fixed input each step", minimum=0)
    dip_ema: float = option(0.99, "weight of the past in the moving average of the outputs", minimum=0, below=1)
    dip_resolution: int | None = option(None, "model image side (None: the output size rounded up to a power of "
                                              "two, at most 256)", choices=(None, *DIP_RESOLUTIONS))


@dataclass
class RedDiffOptions(Options):
    """RED-Diff: the image itself optimised against a diffusion prior's denoiser."""

    reddiff_lambda: float = option(0.25, "λ, weight of the diffusion regulariser", minimum=0)
    reddiff_lr: float = option(0.25, "Adam learning rate on the image estimate", above=0)
    reddiff_weighting: str = option("linear", "timestep weighting w_t as a function of the inverse SNR",
                                    choices=REDDIFF_WEIGHTINGS)


@dataclass
class FlowOptions(Options):
    """A normalizing flow: MAP in its latent z, then Langevin chains around it."""

    flow_gamma: float = option(1.0, "weight of the prior ‖z‖²/2 (1: the exact posterior; < 1 tempers the prior)",
                               minimum=0)
    flow_langevin_steps: int = option(50, "Langevin (MALA) steps of the chains that give the samples (0: the point "
                                          "estimate alone)", minimum=0)


@dataclass(frozen=True)
class MethodSpec:
    options: type[Options]  # its options dataclass: the flat keyword options reconstruct accepts for it
    prior_kind: str | None  # the kind of prior it needs (napari_brgm.priors.prior_kind); None: no prior
    description: str  # one line, for --help


METHOD_SPECS: dict[str, MethodSpec] = {
    "map": MethodSpec(MapOptions, "stylegan2", "BRGM MAP estimate in W+"),
    "vi": MethodSpec(ViOptions, "stylegan2", "BRGM variational posterior (samples + uncertainty)"),
    "csgm": MethodSpec(CsgmOptions, "stylegan2", "latent z search with restarts"),
    "iagan": MethodSpec(IaganOptions, "stylegan2", "CSGM, then the generator adapted to the image"),
    "dip": MethodSpec(DipOptions, None, "Deep Image Prior (needs no prior)"),
    "reddiff": MethodSpec(RedDiffOptions, "diffusion", "RED-Diff with a diffusion prior"),
    "flow": MethodSpec(FlowOptions, "flow", "latent search and Langevin sampling in a normalizing flow"),
}
METHODS: tuple[str, ...] = tuple(METHOD_SPECS)
PRIOR_KINDS: dict[str, str | None] = {name: spec.prior_kind for name, spec in METHOD_SPECS.items()}
DEFAULT_RESTARTS: dict[str, int] = {  # the methods that take `restarts`, and its default for each
    name: info.default for name, spec in METHOD_SPECS.items() for info in describe(spec.options)
    if info.name == "restarts"}
