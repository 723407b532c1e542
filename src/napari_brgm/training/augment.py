"""Augmentations for training on a handful of volumes.

- `SliceAugment` (data level, MONAI, not differentiable): left-right flip, small rotation, scaling
  and shift, gamma; what the generator learns includes these variations.
- `diff_augment` (discriminator level, differentiable; Zhao et al. 2020, "DiffAugment"): random
  translation and cutout applied to real and fake images alike before the discriminator, so that
  it cannot memorise a few hundred slices; the generator does not learn the augmentation.
Both draw from explicit seeds/generators, so a training step is a function of (seed, step).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandFlip

BACKGROUND = -1.0  # model units of the background; what moves in at the borders


class SliceAugment:
    """MONAI transforms over a batch [B, 1, R, R] in [-1, 1]; `seed` fixes every random choice."""

    def __init__(self, rotate: float = 0.12, scale: float = 0.08, shift: float = 0.04, gamma=(0.8, 1.25)) -> None:
        self.rotate, self.scale, self.shift, self.gamma = rotate, scale, shift, tuple(gamma)
        self._compose = None

    def _build(self, resolution: int) -> Compose:
        return Compose([
            RandFlip(prob=0.5, spatial_axis=1),
            RandAffine(prob=0.8, rotate_range=(self.rotate,), scale_range=(self.scale, self.scale),
                       translate_range=(self.shift * resolution, self.shift * resolution),
                       padding_mode="border", mode="bilinear"),
            RandAdjustContrast(prob=0.5, gamma=self.gamma),
        ])

    def __call__(self, batch: torch.Tensor, seed: int) -> torch.Tensor:
        assert batch.ndim == 4 and batch.shape[1] == 1, tuple(batch.shape)
        if self._compose is None:
            self._compose = self._build(batch.shape[-1])
        self._compose.set_random_state(seed=int(seed) % (2 ** 32))
        # RandAdjustContrast works on [0, 1]-like data: map there and back.
        out = [self._compose((x + 1) / 2) * 2 - 1 for x in batch]
        return torch.stack([torch.as_tensor(np.asarray(o) if not isinstance(o, torch.Tensor) else o)
                            for o in out]).float()

    def __repr__(self) -> str:
        return f"SliceAugment(rotate={self.rotate}, scale={self.scale}, shift={self.shift}, gamma={self.gamma})"


def diff_augment(x: torch.Tensor, generator: torch.Generator, translation: float = 0.125,
                 cutout: float = 0.5) -> torch.Tensor:
    """Differentiable random translation (± `translation` of the size, background fill) and one
    square cutout (side `cutout` of the size, background fill) per image."""
    n, _, h, w = x.shape
    dev = x.device
    if translation > 0:
        sh, sw = int(h * translation + 0.5), int(w * translation + 0.5)
        ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=generator).to(dev)
        tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=generator).to(dev)
        gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        yy = (gy[None] + ty + sh).clamp(0, h + 2 * sh - 1)  # index into the padded image
        xx = (gx[None] + tx + sw).clamp(0, w + 2 * sw - 1)
        padded = F.pad(x, (sw, sw, sh, sh), value=BACKGROUND)
        flat = padded.reshape(n, x.shape[1], -1)
        idx = (yy * (w + 2 * sw) + xx).reshape(n, 1, -1).expand(-1, x.shape[1], -1)
        x = flat.gather(2, idx).reshape(n, x.shape[1], h, w)
    if cutout > 0:
        ch, cw = int(h * cutout + 0.5), int(w * cutout + 0.5)
        cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=generator).to(dev)
        cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=generator).to(dev)
        gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        inside = ((gy[None] - cy + ch // 2).clamp(min=0) < ch) & ((gy[None] - cy + ch // 2) >= 0) & \
                 ((gx[None] - cx + cw // 2) >= 0) & ((gx[None] - cx + cw // 2) < cw)
        x = torch.where(inside[:, None], torch.full_like(x, BACKGROUND), x)
    return x
