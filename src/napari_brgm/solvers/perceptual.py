"""Optional perceptual term: LPIPS-style VGG16 feature distance from a LOCAL weights file.

BRGM adds λ_perc·mean((φ(f(G(w))) − φ(y))²) where φ is NVIDIA's VGG16 LPIPS feature stack. Those
weights are downloaded at run time in the reference code; here the user passes a file:
- torchvision VGG16 weights (`features.{0,2,5,...,28}.weight/bias`), as .safetensors or a
  tensors-only .pt/.pth (read with `torch.load(weights_only=True)`), optionally with
- LPIPS linear-layer weights (`lin{0..4}.model.1.weight`, shape [1, C, 1, 1]) in the same file.
φ = for the five LPIPS layers (relu1_2 … relu5_3): unit-normalise over channels, scale by √w_lin
(1 without LPIPS weights) and by 1/√(H·W), flatten and concatenate — so mean((φ₁ − φ₂)²) is
BRGM's term and Σ((φ₁ − φ₂)²) is the LPIPS distance.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # conv layers of torchvision's vgg16.features
CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
TAPS = (1, 3, 6, 9, 12)  # conv index (0-based among the 13) after whose ReLU LPIPS reads features
POOL_AFTER = (1, 3, 6, 9)  # max-pool after these convs
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
VGG_SIZE = 256  # BRGM resizes every image to 256×256 (area) before VGG


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"perceptual weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: not a plain tensor file
        raise ValueError(f"{path}: not a tensors-only weights file ({exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


class PerceptualDistance(torch.nn.Module):
    """mean((φ(a) − φ(b))²) for images on a 0..255 scale, 1 or 3 channels; frozen."""

    def __init__(self, convs: list[tuple[torch.Tensor, torch.Tensor]], lin: list[torch.Tensor] | None):
        super().__init__()
        for i, (w, b) in enumerate(convs):
            assert w.shape == (CONV_CHANNELS[i], 3 if i == 0 else CONV_CHANNELS[i - 1], 3, 3), (i, w.shape)
            self.register_buffer(f"w{i}", w.float())
            self.register_buffer(f"b{i}", b.float())
        for j in range(len(TAPS)):
            weight = torch.ones(CONV_CHANNELS[TAPS[j]]) if lin is None else lin[j].reshape(-1).float()
            self.register_buffer(f"lin{j}", weight.clamp_min(0).sqrt().reshape(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1))

    @classmethod
    def from_file(cls, path: str | Path) -> PerceptualDistance:
        tensors = _read_tensors(Path(path))
        missing = [f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")
                   if f"features.{i}.{p}" not in tensors]
        if missing:
            raise ValueError(f"{path}: not VGG16 weights; missing {missing[:3]}{' …' if len(missing) > 3 else ''}")
        convs = [(tensors[f"features.{i}.weight"], tensors[f"features.{i}.bias"]) for i in CONV_INDICES]
        lin_keys = [f"lin{j}.model.1.weight" for j in range(len(TAPS))]
        lin = [tensors[k] for k in lin_keys] if all(k in tensors for k in lin_keys) else None
        return cls(convs, lin).eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) [N, D] for images [N, C, H, W] on a 0..255 scale."""
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(VGG_SIZE, VGG_SIZE), mode="area")
        x = (x / 127.5 - 1 - self.shift) / self.scale
        taps = []
        for i in range(len(CONV_INDICES)):
            x = F.relu(F.conv2d(x, getattr(self, f"w{i}"), getattr(self, f"b{i}"), padding=1))
            if i in TAPS:
                j = TAPS.index(i)
                f = x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) * getattr(self, f"lin{j}")
                taps.append((f / (f.shape[-1] * f.shape[-2]) ** 0.5).flatten(1))
            if i in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        return torch.cat(taps, dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.features(a) - self.features(b)).square().mean()
