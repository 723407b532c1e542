"""`layer_data`: a MedicalImage as a napari image LayerDataTuple (no napari import needed)."""

from __future__ import annotations

import copy

from napari_brgm.io.geometry import layer_scale_translate
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.intensity import contrast_limits


def layer_data(image: MedicalImage) -> tuple:
    """(data, kwargs, "image") for napari: physical scale and translate, window, gray colormap, metadata.

    Units are millimetres, or pixels when the file gives no spacing.
    """
    scale, translate = layer_scale_translate(image.affine, image.data.ndim)
    unit = "mm" if image.metadata.get("spacing_known", True) else "pixel"
    kwargs = {
        "name": image.name,
        "scale": scale,
        "translate": translate,
        "contrast_limits": contrast_limits(image.data, image.window),
        "colormap": "gray",
        "units": (unit,) * image.data.ndim,
        "axis_labels": tuple(image.axes),
        "metadata": copy.deepcopy(image.metadata),
    }
    return image.data, kwargs, "image"
