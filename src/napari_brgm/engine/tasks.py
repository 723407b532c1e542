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


@dataclass
class SuperresOptions(Options):
    """Super-resolution: y is the image box-averaged (or bicubically reduced) by `factor`."""

    sr_kind: str = option("box", 'super-resolution operator: "box" (area average) or "bicubic" (antialiased)',
                          choices=SR_KINDS)


@dataclass(frozen=True)
class TaskSpec:
    options: type[Options]  # its options dataclass: the flat keyword options reconstruct accepts for it
    description: str  # one line, for --help


TASK_SPECS: dict[str, TaskSpec] = {
    "superres": TaskSpec(SuperresOptions, "super-resolution by `factor`"),
    "inpaint": TaskSpec(NoOptions, "inpainting of the masked pixels (nonzero = missing)"),
    "denoise": TaskSpec(NoOptions, "denoising"),
}
TASKS: tuple[str, ...] = tuple(TASK_SPECS)
