"""StyleGAN2 ResNet discriminator (equalised learning rate, minibatch-std), for training only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_brgm.priors.stylegan2 import LRELU_GAIN, LRELU_SLOPE, FullyConnectedLayer


class Conv2dLayer(nn.Module):
    """3×3 (or 1×1) convolution with equalised learning rate, lrelu; `down`: 2×2 average pool first.

    Pooling before the convolution (instead of StyleGAN2's blur + stride-2 convolution) keeps the
    anti-aliasing and the 4× saving in multiply-adds of a strided convolution."""

    def __init__(
        self,
        *,
        in_channels: int,  # input feature maps
        out_channels: int,  # output feature maps
        kernel_size: int = 3,  # 1 or 3
        down: bool = False,  # halve the resolution first (2×2 average)
        activation: str = "lrelu",  # "lrelu" (gain √2) or "linear"
        bias: bool = True,  # add a learned bias
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.down, self.activation = down, activation
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.kernel_size // 2)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * (LRELU_GAIN * gain)
        elif gain != 1:
            x = x * gain
        return x

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, k={self.kernel_size}, "
                f"down={self.down}, activation={self.activation}")


class DiscriminatorBlock(nn.Module):
    """conv → conv+down, plus a 1×1 down skip; outputs scaled by √0.5 (ResNet architecture)."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels=in_channels, out_channels=in_channels)
        self.conv1 = Conv2dLayer(in_channels=in_channels, out_channels=out_channels, down=True)
        self.skip = Conv2dLayer(in_channels=in_channels, out_channels=out_channels, kernel_size=1, down=True,
                                activation="linear", bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x, gain=math.sqrt(0.5))
        return y.add_(self.conv1(self.conv0(x), gain=math.sqrt(0.5)))


class Discriminator(nn.Module):
    """Image [N, C, R, R] → logits [N, 1]; widths min(channel_base // r, channel_max) as in the generator."""

    def __init__(
        self,
        *,
        img_resolution: int,  # input resolution, a power of two ≥ 8
        img_channels: int,  # 1 or 3
        channel_base: int = 32768,  # feature maps at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,  # upper bound of feature maps
        mbstd_group: int = 4,  # minibatch-std group size (batch must be divisible by min(group, N))
    ) -> None:
        super().__init__()
        self.img_resolution, self.img_channels, self.mbstd_group = img_resolution, img_channels, mbstd_group

        def ch(r: int) -> int:
            return min(channel_base // r, channel_max)

        self.fromrgb = Conv2dLayer(in_channels=img_channels, out_channels=ch(img_resolution), kernel_size=1)
        self.resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        for r in self.resolutions:
            setattr(self, f"b{r}", DiscriminatorBlock(in_channels=ch(r), out_channels=ch(r // 2)))
        c4 = ch(4)
        self.conv = Conv2dLayer(in_channels=c4 + 1, out_channels=c4)
        self.fc = FullyConnectedLayer(in_features=c4 * 16, out_features=c4, activation="lrelu")
        self.out = FullyConnectedLayer(in_features=c4, out_features=1)

    def _mbstd(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.mbstd_group, n)
        assert n % g == 0, (n, g)
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # [n/g]
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        assert img.ndim == 4 and img.shape[1:] == (self.img_channels, self.img_resolution, self.img_resolution), (
            tuple(img.shape))
        x = self.fromrgb(img)
        for r in self.resolutions:
            x = getattr(self, f"b{r}")(x)
        x = self.conv(self._mbstd(x))
        return self.out(self.fc(x.flatten(1)))

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, img_channels={self.img_channels}, mbstd_group={self.mbstd_group}"
