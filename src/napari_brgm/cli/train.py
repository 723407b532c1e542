"""`napari-brgm train`: train a prior from DICOM/NIfTI/PNG data (not available yet)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("train", help="train a StyleGAN2 prior on your images (coming in a later release)")
    p.add_argument("data", nargs="*", help="DICOM files/series folders, NIfTI volumes or PNG folders")
    p.set_defaults(func=run)


def run(args) -> int:
    print("napari-brgm train: training is not available in this version.", file=sys.stderr)
    return 2
