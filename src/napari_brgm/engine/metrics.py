"""Image-quality figures for tests and benchmarks, computed by MONAI's metrics on 2-D images."""

from __future__ import annotations

import numpy as np
import torch


def _batch(a) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a, dtype=np.float32))
    assert t.ndim == 2, f"expected a 2-D image, got shape {tuple(t.shape)}"
    return t[None, None]


def psnr(estimate, reference, data_range: float | None = None) -> float:
    """PSNR in dB; `data_range` defaults to the reference's max − min."""
    from monai.metrics import PSNRMetric

    ref = np.asarray(reference, dtype=np.float32)
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    return float(PSNRMetric(max_val=rng)(_batch(estimate), _batch(ref)).item())


def ssim(estimate, reference, data_range: float | None = None) -> float:
    """SSIM (MONAI's Gaussian-window SSIM, window 11, σ 1.5) on a 2-D image."""
    from monai.metrics import SSIMMetric

    ref = np.asarray(reference, dtype=np.float32)
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    return float(SSIMMetric(spatial_dims=2, data_range=rng)(_batch(estimate), _batch(ref)).item())
