"""Reconstruction engine: the library core that the GUI and the CLI call. Knows nothing of Qt."""

from napari_brgm.engine.result import Progress, Result

__all__ = ["Progress", "Result", "reconstruct"]


def reconstruct(*args, **kwargs):
    """Reconstruct an image; see `napari_brgm.engine.reconstruction.reconstruct`."""
    from napari_brgm.engine.reconstruction import reconstruct as _reconstruct

    return _reconstruct(*args, **kwargs)
