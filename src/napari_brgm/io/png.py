"""8- and 16-bit grayscale PNG images with Pillow (for the command-line tools; napari reads PNG itself)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from napari_brgm.io.errors import ReadError
from napari_brgm.io.geometry import default_affine
from napari_brgm.io.image import MedicalImage
from napari_brgm.io.limits import CappedFile, declared_voxels

_GRAY_MODES = ("1", "L", "I;16", "I;16B", "I;16L", "I", "F")


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_DEFLATE_MAX_RATIO = 1032  # zlib expands at most ~1032x
_CHUNK = 1 << 20


def _check_declared(path: Path) -> None:
    """The IHDR size against `MAX_VOXELS`, and the image data against it, before Pillow allocates the image.

    Pillow allocates width x height at load() and only then finds the data missing: a height of
    0x00748280 in a 76-byte PNG cost 364 MB and a 20 s decode (found by tools/fuzz_readers.py).
    So the IDAT chunks are inflated here in 1 MB pieces, counting, up to the bytes the header needs.
    """
    data = path.read_bytes() if path.stat().st_size <= 64 * _CHUNK else None
    if data is None:  # large files: the ratio bound only
        with open(path, "rb") as f:
            data = f.read(33)
    if len(data) < 33 or data[12:16] != b"IHDR":
        return  # not a PNG header: Pillow gives the reason
    width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", data[16:29])
    declared_voxels(path, (height, width), "PNG image")
    if colour not in _CHANNELS or depth not in (1, 2, 4, 8, 16):
        return  # Pillow refuses these itself
    row = 1 + (width * _CHANNELS[colour] * depth + 7) // 8
    needed = height * row
    idat, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        if kind == b"IEND":
            break
        pos += 12 + length
    compressed = sum(len(c) for c in idat)
    if needed > _DEFLATE_MAX_RATIO * compressed + 1024:
        raise ReadError(path, f"{compressed:,} bytes of image data cannot hold the {width} x {height} pixels "
                        "the header declares (damaged IHDR or truncated file)")
    if interlace or len(data) == 33:
        return  # Adam7 rows differ in length: the ratio bound above only
    inflate, got = zlib.decompressobj(), 0
    try:
        for part in idat:
            while part and got < needed:
                out = inflate.decompress(part, min(_CHUNK, needed - got))
                got += len(out)
                part = inflate.unconsumed_tail
            if got >= needed:
                return
    except zlib.error:
        return  # a damaged stream: Pillow reports it
    if got < needed:
        raise ReadError(path, f"truncated PNG image data ({got} of {needed} bytes for {width} x {height} pixels)")


def read_png(path: str | Path) -> MedicalImage:
    """Read a grayscale PNG as (y, x) float32 with 1 mm "spacing" per pixel (PNG has no geometry).

    RGB(A) or palette images are accepted only when every pixel is gray (R = G = B); alpha is ignored.
    """
    path = Path(path)
    _check_declared(path)
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
