"""Generative priors: our StyleGAN2 generator and safe loading of published checkpoints.

`load_generator(path)` accepts StyleGAN2-ADA network pickles, TF StyleGAN2 pickles (read with a
restricted unpickler that never executes code from the file) and our safetensors format;
`save_generator` writes the latter. See docs/priors.md.
"""

from napari_brgm.priors.builtin import builtin_priors, resolve_prior
from napari_brgm.priors.errors import CheckpointError
from napari_brgm.priors.loading import load_generator, save_generator
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig
from napari_brgm.priors.wstats import WStats

__all__ = [
    "CheckpointError",
    "Generator",
    "GeneratorConfig",
    "WStats",
    "builtin_priors",
    "load_generator",
    "resolve_prior",
    "save_generator",
]
