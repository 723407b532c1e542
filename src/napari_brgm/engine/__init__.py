"""Reconstruction engine: the library core that the GUI and the CLI call. Knows nothing of Qt."""

from napari_brgm.engine.result import Progress, Result

__all__ = ["Progress", "Result", "VolumeResult", "reconstruct", "reconstruct_volume"]


def reconstruct(*args, **kwargs):
    """Reconstruct an image; see `napari_brgm.engine.reconstruction.reconstruct`."""
    from napari_brgm.engine.reconstruction import reconstruct as _reconstruct

    return _reconstruct(*args, **kwargs)


def reconstruct_volume(*args, **kwargs):
    """Reconstruct the slices of a volume; see `napari_brgm.engine.volume.reconstruct_volume`."""
    from napari_brgm.engine.volume import reconstruct_volume as _reconstruct_volume

    return _reconstruct_volume(*args, **kwargs)


def __getattr__(name):
    if name == "VolumeResult":
        from napari_brgm.engine.volume import VolumeResult

        return VolumeResult
    raise AttributeError(name)
