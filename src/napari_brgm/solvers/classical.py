"""Classical baselines every learned method must beat: bicubic interpolation, biharmonic inpainting, NLM denoising.

Both work on 2-D numpy arrays in any units and need no prior; the benchmarks compare against them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bicubic_upsample(image, factor: int) -> np.ndarray:
    """[h, w] → [factor·h, factor·w], bicubic interpolation with pixel centres aligned (align_corners=False)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"bicubic_upsample needs a 2-D image, got shape {image.shape}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    t = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    up = F.interpolate(t, scale_factor=int(factor), mode="bicubic", align_corners=False)
    return up[0, 0].numpy()


def biharmonic_inpaint(image, missing) -> np.ndarray:
    """Fill the MISSING (nonzero) pixels with the smoothest (biharmonic) continuation of the observed ones."""
    from skimage.restoration import inpaint_biharmonic

    image = np.asarray(image, dtype=np.float64)
    missing = np.asarray(missing) != 0
    if image.ndim != 2 or missing.shape != image.shape:
        raise ValueError(f"biharmonic_inpaint needs a 2-D image and a same-shape mask, got {image.shape}, {missing.shape}")
    if missing.all():
        raise ValueError("the mask covers the whole image: nothing to continue from")
    if not missing.any():
        return image.astype(np.float32)
    lo, hi = float(image[~missing].min()), float(image[~missing].max())
    scale = hi - lo if hi > lo else 1.0
    filled = inpaint_biharmonic((image - lo) / scale, missing)  # skimage expects roughly unit-range values
    return (filled * scale + lo).astype(np.float32)


def nlm_denoise(image, sigma: float) -> np.ndarray:
    """Non-local means (skimage, 5×5 patches, 13×13 search, h = 0.8σ) for noise of known std `sigma`."""
    from skimage.restoration import denoise_nl_means

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"nlm_denoise needs a 2-D image, got shape {image.shape}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return denoise_nl_means(image, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma,
                            fast_mode=True).astype(np.float32)
