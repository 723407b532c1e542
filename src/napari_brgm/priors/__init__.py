"""Generative priors: StyleGAN2 generators (and safe loading of published checkpoints), diffusion and flow priors.

`load_generator(path)` accepts StyleGAN2-ADA network pickles, TF StyleGAN2 pickles (read with a
restricted unpickler that never executes code from the file) and our safetensors format;
`save_generator` writes the latter. See docs/priors.md.
"""

from napari_brgm.priors.builtin import builtin_priors, default_prior, resolve_prior
from napari_brgm.priors.errors import CheckpointError
from napari_brgm.priors.loading import load_generator, save_generator
from napari_brgm.priors.modelfile import KINDS, load_prior, prior_kind
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig
from napari_brgm.priors.wstats import WStats

__all__ = [
    "CheckpointError",
    "Generator",
    "GeneratorConfig",
    "WStats",
    "KINDS",
    "builtin_priors",
    "default_prior",
    "load_prior",
    "prior_kind",
    "load_generator",
    "resolve_prior",
    "save_generator",
]
