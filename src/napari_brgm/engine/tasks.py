"""The reconstruction tasks: each registered once with the options of its forward model.

The names are those of the operator registry (`operators.registry.OPERATORS`, a test keeps the two
lists equal); this module imports no torch, so that `--help` stays light. The super-resolution
factor and the noise σ are common settings (`Settings.factor`, `Settings.sigma_y`: the geometry
and the solvers use them for every task), and the inpainting mask is an argument of
`reconstruct`, not a recorded option.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_brgm.engine.options import NoOptions, Options, option

SR_KINDS = ("box", "bicubic")  # operators.superres.KINDS (no torch here)
MASK_TYPES = ("random", "equispaced", "equispaced_integer")  # operators.kspace_masks.MASK_TYPES
PHASE_AXES = ("columns", "rows")
PSF_KINDS = ("gaussian", "box")  # operators.blur.PSF_KINDS


@dataclass
class SuperresOptions(Options):
    """Super-resolution: y is the image box-averaged (or bicubically reduced) by `factor`."""

    sr_kind: str = option("box", 'super-resolution operator: "box" (area average) or "bicubic" (antialiased)',
                          choices=SR_KINDS)


@dataclass
class KspaceOptions(Options):
    """Undersampled single-coil MRI: the slice's k-space is simulated (a real-valued image: Hermitian k-space),
    undersampled by a line mask or the user's mask, and the image is reconstructed from the sampled lines."""

    acceleration: float = option(4.0, "undersampling factor R: about 1/R of the phase-encode lines are sampled",
                                 minimum=1, maximum=16)
    center_fraction: float | None = option(None, "fraction of fully sampled central lines (None: 0.08 below R = 8, "
                                                 "else 0.04, fastMRI's pairs)", above=0, below=1)
    mask_type: str = option("random", 'line mask: "random", "equispaced" (fastMRI\'s equispaced-fraction) or '
                                      '"equispaced_integer" (every R-th line plus the centre)', choices=MASK_TYPES)
    mask_seed: int | None = option(None, "seed of the line mask (None: the run's seed)")
    phase_axis: str = option("columns", 'phase-encode direction: "columns" (vertical lines, fastMRI) or "rows"',
                             choices=PHASE_AXES)
    kspace_mask: str | None = option(None, "sampling mask file (.npy, .png, .nii; nonzero = sampled, DC at the centre, "
                                           "the model's k-space size) instead of a line mask; Python: also an array")
    kspace_noise: float = option(0.0, "complex Gaussian noise σ added to each real and imaginary part of the "
                                      "simulated k-space, in input units (also sigma_y's default when > 0)", minimum=0)


@dataclass
class DeblurOptions(Options):
    """Deblurring: the input is blurred by a known point-spread function (circular convolution, in input pixels)."""

    psf: str = option("gaussian", 'point-spread function: "gaussian" or "box"', choices=PSF_KINDS)
    psf_sigma: float = option(1.5, "Gaussian PSF σ in input pixels", above=0)
    psf_width: float = option(3.0, "box PSF width in input pixels", minimum=1)


@dataclass(frozen=True)
class TaskSpec:
    options: type[Options]  # its options dataclass: the flat keyword options reconstruct accepts for it
    description: str  # one line, for --help


TASK_SPECS: dict[str, TaskSpec] = {
    "superres": TaskSpec(SuperresOptions, "super-resolution by `factor`"),
    "inpaint": TaskSpec(NoOptions, "inpainting of the masked pixels (nonzero = missing)"),
    "denoise": TaskSpec(NoOptions, "denoising"),
    "kspace": TaskSpec(KspaceOptions, "undersampled MRI k-space (simulated from the slice by `acceleration`)"),
    "deblur": TaskSpec(DeblurOptions, "deblurring of a known Gaussian or box blur"),
}
TASKS: tuple[str, ...] = tuple(TASK_SPECS)
