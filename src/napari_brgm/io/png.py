"""8- and 16-bit grayscale PNG images with Pillow (for the command-line tools; napari reads PNG itself)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from napari_brgm.io.errors import ReadError
from napari_brgm.io.geometry import default_affine
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.limits import CappedFile, declared_voxels

_GRAY_MODES = ("1", "L", "I;16", "I;16B", "I;16L", "I", "F")


def read_png(path: str | Path) -> MedicalImage:
    """Read a grayscale PNG as (y, x) float32 with 1 mm "spacing" per pixel (PNG has no geometry).

    RGB(A) or palette images are accepted only when every pixel is gray (R = G = B); alpha is ignored.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) == 24 and head[12:16] == b"IHDR":  # the declared size, checked before Pillow sees the file
        width, height = struct.unpack(">II", head[16:24])
        declared_voxels(path, (height, width), "PNG image")
    try:
        # formats=["PNG"]: a damaged signature must not send the bytes to Pillow's ~40 other decoders
        # (EPS would start Ghostscript); found by fuzzing
        with open(path, "rb") as f, Image.open(CappedFile(f, path.stat().st_size), formats=["PNG"]) as img:
            declared_voxels(path, (img.height, img.width), "PNG image")  # from IHDR, before decoding
            img.load()
            mode = img.mode
            pixels = np.asarray(img if mode in _GRAY_MODES else img.convert("RGB"))
    except ReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as err:
        raise ReadError(path, f"not a readable PNG image ({err})") from err
    except (ValueError, TypeError, MemoryError, Image.DecompressionBombError) as err:  # damaged chunks
        raise ReadError(path, f"damaged PNG image ({type(err).__name__}: {err})") from err
    if pixels.ndim == 3:
        if not (np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])):
            reason = f"colour PNG images (mode {mode}) are not supported; napari-brgm works on grayscale images"
            raise ReadError(path, reason)
        pixels = pixels[..., 0]
    data = pixels.astype(np.float32)
    affine = default_affine((1.0, 1.0))
    metadata = {
        "source": str(path),
        "format": "png",
        "axes": "yx",
        "shape": list(data.shape),
        "spacing": [1.0, 1.0],
        "spacing_known": False,
        "spacing_source": "none",
        "affine": affine.tolist(),
        "modality": None,
        "window": None,
        "photometric_interpretation": None,
        "inverted": False,
        "inversion_offset": None,
        "rescale": None,
        "png": {"mode": mode},
    }
    return MedicalImage(np.ascontiguousarray(data), (1.0, 1.0), affine, None, None, metadata, str(path), path.stem)
