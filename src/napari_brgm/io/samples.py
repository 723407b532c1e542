"""npe2 sample data: a chest radiograph and a brain T1 slab shipped in napari_brgm.sample_data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from napari_brgm.io.layer import layer_data
from napari_brgm.io.loader import load_image

CHEST_XRAY = "chest_xray_rg1.dcm"
BRAIN_T1 = "brain_t1_colin27_slab.nii.gz"


def sample_path(name: str) -> Path:
    """Path of a file shipped in napari_brgm.sample_data."""
    return Path(str(files("napari_brgm.sample_data").joinpath(name)))


def chest_xray() -> list[tuple]:
    """NEMA WG04 RG1 computed radiograph (MONOCHROME1, 15-bit), 2x2 block-averaged to 977 x 920."""
    return [layer_data(load_image(sample_path(CHEST_XRAY)))]


def brain_t1() -> list[tuple]:
    """Colin27 T1, a 36-slice 1 mm axial slab through the lateral ventricles."""
    return [layer_data(load_image(sample_path(BRAIN_T1)))]
