"""Size limits checked against a file's header before any pixel data are read or allocated.

A damaged or hostile header can declare any size (a DICOM Rows of 65535 times Columns 65535 times
NumberOfFrames 10**9, a NIfTI dim[] of 32767^7, a PNG IHDR of 2^31 x 2^31). The readers compute
the declared number of voxels and bytes from the header alone and refuse, with a `ReadError`
naming the file, before asking pydicom, nibabel or Pillow for the pixels:

- more than `MAX_VOXELS` voxels (2^29 = 536 870 912, i.e. 2 GiB as the float32 napari-brgm
  works in; a 512 x 512 x 2048 CT fits);
- uncompressed data that need more bytes than the file holds (truncated or lying headers);
- RLE-compressed DICOM that would expand more than RLE can (64x per segment; `RLE_MAX_RATIO`).

pydicom and Pillow read a length-prefixed element or chunk with `file.read(declared length)`, and
Python allocates the whole declared length before reading; `CappedFile` limits every read to
the bytes left in the file, so a damaged length costs nothing (pydicom allocated 740 MB for one
zeroed run in a 10 kB DICOM file, Pillow 128 MB for one flipped bit in a 119-byte PNG).

So a header declaring 100 000 x 100 000 pixels is refused with a few kilobytes allocated
(tests/io/test_fuzz_readers.py measures it with tracemalloc).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from napari_brgm.io.errors import ReadError

MAX_VOXELS = 1 << 29
"""Largest image (voxels over all frames / slices) any reader accepts: 2 GiB as float32."""

RLE_MAX_RATIO = 64
"""Decoded bytes per byte of RLE data at most (PackBits: 128 equal bytes in 2), plus headers."""


def declared_voxels(path: str | Path, shape: Sequence, what: str = "image") -> int:
    """The voxel count of a header-declared `shape`; ReadError unless every axis is a positive integer
    and the total is at most `MAX_VOXELS`."""
    try:
        dims = [int(n) for n in shape]
    except (TypeError, ValueError, OverflowError):
        raise ReadError(path, f"the header declares an invalid {what} size {tuple(shape)!r}") from None
    if not dims or any(n < 1 for n in dims):
        raise ReadError(path, f"the header declares an empty {what} (size {' x '.join(map(str, dims)) or 'none'})")
    total = math.prod(dims)
    if total > MAX_VOXELS:
        raise ReadError(path, f"the header declares a {' x '.join(map(str, dims))} {what} ({total:,} voxels), "
                        f"more than the {MAX_VOXELS:,} napari-brgm reads (damaged header?)")
    return total


def check_bytes(path: str | Path, needed: int, present: int, what: str = "pixel data") -> None:
    """ReadError when the header's `needed` bytes are more than the `present` ones."""
    if needed > present:
        raise ReadError(path, f"truncated {what} ({max(present, 0)} of {needed} bytes)")


class CappedFile:
    """A binary file whose read(n) never asks for more than the bytes left before `size`."""

    def __init__(self, f, size: int) -> None:
        self._f, self._size = f, size

    def read(self, n: int | None = -1) -> bytes:
        left = max(0, self._size - self._f.tell())
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def __getattr__(self, name):
        return getattr(self._f, name)
