"""A PNG overview of a reconstruction: input, (zero-filled,) mean, std heatmap and a few samples side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_SAMPLES_SHOWN = 3
GAP = 4  # pixels between tiles


def _gray(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    u = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.repeat((u * 255).astype(np.uint8)[..., None], 3, axis=2)


def _heat(img: np.ndarray) -> np.ndarray:
    """0 → black, through red and yellow, to white at the 99th percentile (an 'inferno'-like ramp)."""
    top = float(np.percentile(img, 99)) or 1.0
    u = np.clip(img / top, 0, 1)
    rgb = np.stack([np.clip(3 * u, 0, 1), np.clip(3 * u - 1, 0, 1), np.clip(3 * u - 2, 0, 1)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def _upscale(tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize so the low-resolution input shows at the output's size."""
    rows = (np.arange(size[0]) * tile.shape[0] // size[0])
    cols = (np.arange(size[1]) * tile.shape[1] // size[1])
    return tile[rows][:, cols]


def write_panel(path: Path, image: np.ndarray, result, mask: np.ndarray | None = None) -> Path:
    """Tiles at the output size: input (missing region darkened), the zero-filled image (k-space), mean, std (if
    any), samples."""
    import imageio.v3 as iio

    size = result.mean.shape
    lo, hi = np.percentile(image, (0.5, 99.5))
    shown = image.astype(np.float32)
    tiles = []
    first = _gray(shown, lo, hi)
    if mask is not None:
        first[mask] = (first[mask] * 0.25).astype(np.uint8)
    tiles.append(_upscale(first, size))
    if getattr(result, "zero_filled", None) is not None:
        tiles.append(_gray(result.zero_filled, lo, hi))
    tiles.append(_gray(result.mean, lo, hi))
    if result.std is not None:
        tiles.append(_heat(result.std))
    if len(result.samples) > 1:
        tiles += [_gray(s, lo, hi) for s in result.samples[:MAX_SAMPLES_SHOWN]]
    gap = np.zeros((size[0], GAP, 3), np.uint8)
    row = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
    path = Path(path)
    iio.imwrite(path, row)
    return path
