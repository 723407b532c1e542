"""`napari-brgm info FILE`: print what the napari-brgm reader sees in a file or series folder."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("info", help="show shape, spacing, modality and intensities of a DICOM/NIfTI/PNG image")
    p.add_argument("path", metavar="FILE", help="DICOM file, folder holding one DICOM series, NIfTI or PNG file")
    p.add_argument("--json", action="store_true", help="print the layer metadata as JSON instead")
    p.set_defaults(func=run)


def _fmt(values, digits: int = 4) -> str:
    return " x ".join(f"{v:.{digits}g}" for v in values)


def describe(image) -> str:
    """A short human-readable summary of a MedicalImage."""
    meta = image.metadata
    axes = ", ".join(image.axes)
    spacing = f"{_fmt(image.spacing)} mm ({axes}; from {meta.get('spacing_source')})"
    if not meta.get("spacing_known", True):
        spacing = f"unknown, 1 per pixel ({axes})"
    photometric = meta.get("photometric_interpretation") or "-"
    if meta.get("inverted"):
        photometric += f" (inverted for display: value = {meta['inversion_offset']:g} - stored)"
    data = image.data
    if image.window:
        window = f"centre {image.window[0]:g}, width {image.window[1]:g}"
    else:
        from napari_brgm.io.intensity import contrast_limits

        low, high = contrast_limits(data, None)
        window = f"none (display from 0.5-99.5 percentiles: {low:g} to {high:g})"
    lines = [
        ("file", image.source),
        ("format", meta.get("format", "-")),
        ("shape", f"{_fmt(data.shape, 6)} ({axes})"),
        ("spacing", spacing),
        ("modality", image.modality or "-"),
        ("photometric", photometric),
        ("intensity", f"{float(data.min()):g} to {float(data.max()):g} (mean {float(data.mean()):g}, float32)"),
        ("window", window),
    ]
    description = (meta.get("dicom") or {}).get("series_description") or (meta.get("nifti") or {}).get("description")
    if description:
        lines.append(("description", description))
    return "\n".join(f"{key + ':':<13}{value}" for key, value in lines)


def run(args) -> int:
    from napari_brgm.io import ReadError, load_image

    try:
        image = load_image(args.path)
    except ReadError as err:
        print(f"napari-brgm info: {err}", file=sys.stderr)
        return 2
    print(json.dumps(image.metadata, indent=2) if args.json else describe(image))
    return 0
