"""napari-brgm: Bayesian reconstruction of medical images with generative priors.

The heavy parts (torch, the generator, the engine) are imported lazily so that napari's start-up
and the readers stay light.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_generator": "napari_brgm.priors",
    "CheckpointError": "napari_brgm.priors",
    "Generator": "napari_brgm.priors",
    "reconstruct": "napari_brgm.engine",
    "reconstruct_volume": "napari_brgm.engine",
    "Result": "napari_brgm.engine",
    "VolumeResult": "napari_brgm.engine",
    "ReadError": "napari_brgm.io",
    "batch": "napari_brgm.engine.batch",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_brgm' has no attribute {name!r}")
