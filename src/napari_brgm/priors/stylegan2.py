"""StyleGAN2 generator (mapping + skip-architecture synthesis), written for inference and latent fitting.

Parameter and buffer names are those of the StyleGAN2-ADA `Generator.state_dict()`, so published
weights load with `strict=True`. The maths is StyleGAN2's (docs/priors.md); the evaluation order
differs where that is exact and faster on a CPU:

- modulation acts on the activations (x·s → one shared-weight conv for the whole batch → ·d)
  instead of building per-sample weights; autograd then never needs a weight gradient when the
  weights are frozen, which is the case while fitting W+;
- demodulation, noise, bias and the lrelu gain are folded into one multiply-add before the
  activation (lrelu is positively homogeneous), done by one autograd Function whose backward
  writes fewer full-size temporaries than the chain of elementary ops;
- upsampling of the skip image is one depthwise stride-2 transposed convolution.

`precision="bf16"` runs only the 3×3 convolutions under bfloat16 autocast (on a CPU with
AVX512-BF16 about 1.4-1.6x faster than our fp32 at official widths; images within ~1% of the range,
54-59 dB PSNR, of fp32). Parameters always stay fp32; an outer autocast does not change either mode.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

NOISE_MODES = ("const", "random", "none")
PRECISIONS = ("fp32", "bf16")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator; stored as JSON beside our safetensors weights."""

    z_dim: int  # input latent Z dimensionality
    w_dim: int  # intermediate latent W dimensionality
    img_resolution: int  # output resolution, a power of two 4..1024
    img_channels: int  # 1 (grey) or 3 (RGB)
    mapping_layers: int = 8  # fully connected layers of the mapping network
    channel_base: int = 32768  # feature maps at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512  # upper bound of feature maps per layer
    conv_clamp: float | None = None  # clamp conv outputs to ±conv_clamp (ADA-trained: 256; TF: None)
    mapping_lr_multiplier: float = 0.01  # learning-rate multiplier of the mapping (scales its weights)
    num_fp16_res: int = 0  # ADA's fp16 blocks; informative only, the CPU runs fp32

    def __post_init__(self) -> None:
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"invalid generator config: {what}")

        for name in ("z_dim", "w_dim", "img_resolution", "img_channels", "mapping_layers", "channel_base",
                     "channel_max", "num_fp16_res"):
            check(isinstance(getattr(self, name), int) and not isinstance(getattr(self, name), bool),
                  f"{name} must be an integer, got {getattr(self, name)!r}")
        r = self.img_resolution
        check(4 <= r <= 1024 and r & (r - 1) == 0, f"img_resolution {r} is not a power of two in 4..1024")
        check(self.img_channels in (1, 3), f"img_channels {self.img_channels} is not 1 or 3")
        check(1 <= self.z_dim <= 4096 and 1 <= self.w_dim <= 4096, "z_dim and w_dim must be in 1..4096")
        check(1 <= self.mapping_layers <= 64, f"mapping_layers {self.mapping_layers} not in 1..64")
        check(1 <= self.channel_max <= 4096, f"channel_max {self.channel_max} not in 1..4096")
        check(self.channel_base >= r, f"channel_base {self.channel_base} < resolution {r} gives 0 channels")
        check(self.conv_clamp is None or (isinstance(self.conv_clamp, (int, float)) and self.conv_clamp > 0),
              f"conv_clamp {self.conv_clamp!r} must be None or positive")
        check(isinstance(self.mapping_lr_multiplier, (int, float)) and self.mapping_lr_multiplier > 0,
              "mapping_lr_multiplier must be positive")

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.img_resolution)) - 2

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every entry of `Generator(self).state_dict()`, without building anything."""
        shapes: dict[str, tuple[int, ...]] = {"mapping.w_avg": (self.w_dim,)}
        features = [self.z_dim] + [self.w_dim] * self.mapping_layers
        for i in range(self.mapping_layers):
            shapes[f"mapping.fc{i}.weight"] = (features[i + 1], features[i])
            shapes[f"mapping.fc{i}.bias"] = (features[i + 1],)
        res = 4
        while res <= self.img_resolution:
            b, c = f"synthesis.b{res}", self.channels(res)
            shapes[f"{b}.resample_filter"] = (4, 4)
            if res == 4:
                shapes[f"{b}.const"] = (c, 4, 4)
                convs = [("conv1", c)]
            else:
                convs = [("conv0", self.channels(res // 2)), ("conv1", c)]
            for name, cin in convs:
                p = f"{b}.{name}"
                shapes.update({f"{p}.affine.weight": (cin, self.w_dim), f"{p}.affine.bias": (cin,),
                               f"{p}.weight": (c, cin, 3, 3), f"{p}.noise_strength": (), f"{p}.bias": (c,),
                               f"{p}.resample_filter": (4, 4), f"{p}.noise_const": (res, res)})
            shapes.update({f"{b}.torgb.affine.weight": (c, self.w_dim), f"{b}.torgb.affine.bias": (c,),
                           f"{b}.torgb.weight": (self.img_channels, c, 1, 1), f"{b}.torgb.bias": (self.img_channels,)})
            res *= 2
        return shapes

    def num_parameters(self) -> int:
        """Learnable parameters (buffers excluded), as counted for published models."""
        buffers = ("w_avg", "resample_filter", "noise_const")
        return sum(math.prod(s) for k, s in self.state_shapes().items() if not k.endswith(buffers))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        if not isinstance(d, dict):
            raise ValueError(f"generator config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown generator config keys {unknown}")
        return cls(**d)


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: weights are stored unscaled and scaled at run time."""

    def __init__(
        self,
        *,
        in_features: int,  # input width
        out_features: int,  # output width
        activation: str = "linear",  # "linear" or "lrelu" (slope 0.2, gain √2)
        lr_multiplier: float = 1.0,  # scales weight and bias at run time (mapping: 0.01)
        bias_init: float = 0.0,  # initial bias (affine layers: 1, so styles start at 1)
    ) -> None:
        super().__init__()
        assert activation in ("linear", "lrelu"), activation
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 2 and x.shape[1] == self.in_features, (tuple(x.shape), self.in_features)
        w = self.weight * self.weight_gain
        b = self.bias * self.lr_multiplier
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return F.leaky_relu(torch.addmm(b.unsqueeze(0), x, w.t()), LRELU_SLOPE) * LRELU_GAIN

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.activation}, lr_multiplier={self.lr_multiplier}")


class MappingNetwork(nn.Module):
    """z → w: 2nd-moment normalisation, `num_layers` lrelu dense layers, broadcast to num_ws."""

    def __init__(
        self,
        *,
        z_dim: int,  # input latent dimensionality
        w_dim: int,  # output latent dimensionality
        num_ws: int,  # copies of w produced (one per synthesis input)
        num_layers: int = 8,  # dense layers
        lr_multiplier: float = 0.01,  # learning-rate multiplier of the dense layers
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            layer = FullyConnectedLayer(in_features=features[i], out_features=features[i + 1], activation="lrelu",
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def map_single(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, z_dim] → w [N, w_dim], without broadcasting or truncation; always at the weights' precision."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, (tuple(z.shape), self.z_dim)
        with _no_autocast(z.device):
            x = z.to(self.w_avg.dtype)
            x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
            for i in range(self.num_layers):
                x = getattr(self, f"fc{i}")(x)
        return x

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
                ) -> torch.Tensor:
        x = self.map_single(z).unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, num_layers={self.num_layers}"


class _BiasActClamp(torch.autograd.Function):
    """y = clamp(lrelu(x·a + b + noise), ±c): a [N,C,1,1], b [1,C,1,1], noise [N or 1,1,H,W] or None.

    The same maths as the chain of autograd ops, with fewer full-size passes: the forward works in
    place on one buffer, the backward forms each gradient directly (no `value` scaling, no
    broadcast temporaries). Matters at 128-256 px where the activations are large.
    """

    @staticmethod
    def forward(ctx, x, a, b, noise, clamp):
        y = torch.addcmul(b, x, a)
        if noise is not None:
            y.add_(noise)
        F.leaky_relu_(y, LRELU_SLOPE)
        if clamp is not None:
            y.clamp_(-clamp, clamp)
        ctx.clamp = clamp
        ctx.save_for_backward(x, a, y)
        ctx.noise_shape = None if noise is None else noise.shape
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, a, y = ctx.saved_tensors
        g = torch.ops.aten.leaky_relu_backward(gy, y, LRELU_SLOPE, True)
        if ctx.clamp is not None:
            g.masked_fill_(y.abs() >= ctx.clamp, 0)
        need = ctx.needs_input_grad
        gx = g * a if need[0] else None
        ga = (g * x).sum((2, 3), keepdim=True) if need[1] else None
        gb = g.sum((0, 2, 3), keepdim=True) if need[2] else None
        gn = g.sum(1, keepdim=True).sum_to_size(ctx.noise_shape) if need[3] else None
        return gx, ga, gb, gn, None


def _bf16_autocast(enabled: bool, device: torch.device):
    """bfloat16 autocast around the convolutions in precision "bf16"; nothing otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _no_autocast(device: torch.device):
    return torch.autocast(device.type, enabled=False)


class SynthesisLayer(nn.Module):
    """Modulated 3×3 convolution (optionally ×2 upsampling) + noise + bias + lrelu (+ clamp)."""

    def __init__(
        self,
        *,
        in_channels: int,  # input feature maps
        out_channels: int,  # output feature maps
        w_dim: int,  # latent dimensionality read by the affine (style) layer
        resolution: int,  # output resolution (size of the noise input)
        up: int = 1,  # 2: transposed stride-2 conv followed by the 4×4 FIR filter
        conv_clamp: float | None = None,  # clamp the output to ±conv_clamp
    ) -> None:
        super().__init__()
        assert up in (1, 2), up
        self.in_channels, self.out_channels = in_channels, out_channels
        self.w_dim, self.resolution, self.up, self.conv_clamp = w_dim, resolution, up, conv_clamp
        self.affine = FullyConnectedLayer(in_features=w_dim, out_features=in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", _setup_filter())
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                generator: torch.Generator | None = None, bf16: bool = False,
                noise_input: torch.Tensor | None = None) -> torch.Tensor:
        """`noise_input` [N or 1, 1, R, R] in N(0, 1) units replaces the noise of `noise_mode` when given."""
        n, c, h, wd = x.shape
        assert c == self.in_channels and h * self.up == self.resolution and wd * self.up == self.resolution, (
            tuple(x.shape), self.in_channels, self.resolution, self.up)
        styles = self.affine(w)  # [N, in]
        # d = rsqrt(Σ_{in,kh,kw} (W·s)² + 1e-8), computed without materialising per-sample weights.
        wsq = self.weight.square().sum(dim=(2, 3))  # [out, in]
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, out]
        x = x * styles.reshape(n, c, 1, 1).to(x.dtype)
        with _bf16_autocast(bf16, x.device):
            if self.up == 1:
                x = F.conv2d(x, self.weight, padding=1)
            else:
                x = F.conv_transpose2d(x, self.weight.transpose(0, 1), stride=2)
        x = x.to(styles.dtype)
        if self.up == 2:
            x = _fir_same(x, self.resample_filter, gain=4.0)
        assert x.shape[2:] == (self.resolution, self.resolution), tuple(x.shape)
        # lrelu(x·d + b + noise)·√2 == lrelu(x·(d√2) + b√2 + noise√2): lrelu(a·t) = a·lrelu(t) for a > 0.
        gain = (dcoefs * LRELU_GAIN).reshape(n, -1, 1, 1)
        bias = (self.bias * LRELU_GAIN).reshape(1, -1, 1, 1)
        noise = None
        if noise_input is not None:
            assert noise_input.shape[1:] == (1, *x.shape[2:]), (tuple(noise_input.shape), tuple(x.shape))
            noise = noise_input.to(x.dtype) * (self.noise_strength * LRELU_GAIN)
        elif noise_mode == "const":
            noise = (self.noise_const * (self.noise_strength * LRELU_GAIN)).reshape(1, 1, *x.shape[2:])
        elif noise_mode == "random":
            noise = torch.randn((n, 1, *x.shape[2:]), generator=generator, device=x.device, dtype=x.dtype)
            noise = noise * (self.noise_strength * LRELU_GAIN)
        return _BiasActClamp.apply(x, gain, bias, noise, self.conv_clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"resolution={self.resolution}, up={self.up}, conv_clamp={self.conv_clamp}")


class ToRGBLayer(nn.Module):
    """1×1 modulated convolution without demodulation (style scaled by 1/√in) + bias (+ clamp)."""

    def __init__(
        self,
        *,
        in_channels: int,  # input feature maps
        out_channels: int,  # image channels
        w_dim: int,  # latent dimensionality read by the affine (style) layer
        conv_clamp: float | None = None,  # clamp the output to ±conv_clamp
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim, self.conv_clamp = in_channels, out_channels, w_dim, conv_clamp
        self.affine = FullyConnectedLayer(in_features=w_dim, out_features=in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, c, h, wd = x.shape
        assert c == self.in_channels, (tuple(x.shape), self.in_channels)
        styles = self.affine(w) * self.weight_gain  # [N, in]
        # A 1×1 conv with per-sample weights is a batched matrix product; the weights are tiny.
        wmod = self.weight.reshape(1, self.out_channels, c) * styles.reshape(n, 1, c)  # [N, img, in]
        y = torch.bmm(wmod, x.reshape(n, c, h * wd))  # fp32 even in bf16 mode: cheap, and it writes the image
        y = y.reshape(n, self.out_channels, h, wd) + self.bias.reshape(1, -1, 1, 1)
        return y.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else y

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"conv_clamp={self.conv_clamp}")


class SynthesisBlock(nn.Module):
    """One resolution of the skip architecture: [conv0 ↑2,] conv1, torgb; img = up(img) + torgb(x)."""

    def __init__(
        self,
        *,
        in_channels: int,  # feature maps entering the block (0 for b4, which starts from `const`)
        out_channels: int,  # feature maps of this resolution
        w_dim: int,  # latent dimensionality
        resolution: int,  # output resolution of the block
        img_channels: int,  # image channels
        conv_clamp: float | None = None,  # clamp of conv and torgb outputs
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.img_channels = img_channels
        self.register_buffer("resample_filter", _setup_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels=in_channels, out_channels=out_channels, w_dim=w_dim,
                                        resolution=resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(in_channels=out_channels, out_channels=out_channels, w_dim=w_dim,
                                    resolution=resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(in_channels=out_channels, out_channels=img_channels, w_dim=w_dim,
                                conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str,
                generator: torch.Generator | None, bf16: bool,
                noise_inputs: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = ws.shape[0]
        assert ws.shape[1] == self.num_conv + self.num_torgb, tuple(ws.shape)
        given = (None,) * self.num_conv if noise_inputs is None else noise_inputs
        assert len(given) == self.num_conv, (len(given), self.num_conv)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(n, -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, generator, bf16, given[0])
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator, bf16, given[0])
            x = self.conv1(x, ws[:, 1], noise_mode, generator, bf16, given[1])
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else _upsample2d(img, self.resample_filter) + y
        return x, img

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, img_channels={self.img_channels}")


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] → image [N, img_channels, R, R] (skip architecture)."""

    def __init__(
        self,
        *,
        w_dim: int,  # latent dimensionality
        img_resolution: int,  # output resolution
        img_channels: int,  # image channels
        channel_base: int = 32768,  # feature maps at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,  # upper bound of feature maps
        conv_clamp: float | None = None,  # clamp of conv outputs
    ) -> None:
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = 0 if res == 4 else min(channel_base // (res // 2), channel_max)
            block = SynthesisBlock(in_channels=in_ch, out_channels=min(channel_base // res, channel_max),
                                   w_dim=w_dim, resolution=res, img_channels=img_channels, conv_clamp=conv_clamp)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's torgb
        self.precision = "fp32"

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", generator: torch.Generator | None = None,
                precision: str | None = None, noise_inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """noise_mode const/random/none; `generator` seeds random noise; precision None: `self.precision`.

        `noise_inputs`: one N(0, 1)-unit map [N or 1, 1, r, r] per synthesis layer, in the order of
        `noise_shapes()`, used instead of `noise_mode` (VI treats them as latent variables).
        """
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), (tuple(ws.shape), self.num_ws, self.w_dim)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        precision = self.precision if precision is None else precision
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        bf16 = precision == "bf16"
        if noise_inputs is not None:
            assert len(noise_inputs) == self.num_ws - 1, (len(noise_inputs), self.num_ws - 1)
        ws = ws.to(self.b4.const.dtype)
        x = img = None
        w_idx = 0
        with _no_autocast(ws.device):  # an outer autocast must not change what `precision` promises
            for res in self.block_resolutions:
                block = getattr(self, f"b{res}")
                given = None if noise_inputs is None else tuple(noise_inputs[w_idx:w_idx + block.num_conv])
                x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + block.num_torgb], noise_mode, generator,
                               bf16, given)
                w_idx += block.num_conv
        return img

    def noise_layers(self) -> list[SynthesisLayer]:
        """The synthesis layers that take a noise input, in the order of `noise_inputs`."""
        layers = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            layers += [block.conv1] if block.in_channels == 0 else [block.conv0, block.conv1]
        return layers

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(r, r) of every noise input, in order: one at 4², two at each higher resolution."""
        return [(layer.resolution, layer.resolution) for layer in self.noise_layers()]

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, precision={self.precision}")


class Generator(nn.Module):
    """StyleGAN2 generator: `mapping(z, truncation_psi) → ws`, `synthesis(ws, noise_mode) → images`.

    Images are roughly in [-1, 1]. `w_stats` holds the mapped-W statistics BRGM's prior needs.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.z_dim, self.w_dim = config.z_dim, config.w_dim
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        self.num_ws = config.num_ws
        self.mapping = MappingNetwork(z_dim=config.z_dim, w_dim=config.w_dim, num_ws=self.num_ws,
                                      num_layers=config.mapping_layers, lr_multiplier=config.mapping_lr_multiplier)
        self.synthesis = SynthesisNetwork(
            w_dim=config.w_dim, img_resolution=config.img_resolution, img_channels=config.img_channels,
            channel_base=config.channel_base, channel_max=config.channel_max, conv_clamp=config.conv_clamp)
        assert self.synthesis.num_ws == self.num_ws
        self._w_stats = None

    @property
    def precision(self) -> str:
        """"fp32" (exact) or "bf16" (convolutions under bfloat16 autocast); used by `synthesis`."""
        return self.synthesis.precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
        self.synthesis.precision = value

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode=noise_mode)

    @property
    def w_stats(self):
        """Mapped-W statistics (mean, scalar std, per-dim std) from 10,000 z; computed once, cached."""
        if self._w_stats is None:
            from napari_brgm.priors.wstats import compute_w_stats

            self._w_stats = compute_w_stats(self.mapping)
        return self._w_stats

    @w_stats.setter
    def w_stats(self, value) -> None:
        self._w_stats = value

    def extra_repr(self) -> str:
        c = self.config
        return (f"z_dim={c.z_dim}, w_dim={c.w_dim}, num_ws={self.num_ws}, img_resolution={c.img_resolution}, "
                f"img_channels={c.img_channels}, channel_base={c.channel_base}, channel_max={c.channel_max}, "
                f"conv_clamp={c.conv_clamp}")


def _setup_filter() -> torch.Tensor:
    """The 4×4 FIR filter: outer product of [1, 3, 3, 1], normalised to sum 1."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = f[:, None] * f[None, :]
    return f / f.sum()


def _fir_same(x: torch.Tensor, f: torch.Tensor, gain: float) -> torch.Tensor:
    """upfirdn2d(x, f, padding=1, gain): 4×4 filter with padding 1 on every side, [.., H, W] → [.., H-1, W-1]."""
    c = x.shape[1]
    k = (f.flip([0, 1]) * gain).to(x.dtype).reshape(1, 1, 4, 4).expand(c, 1, 4, 4)
    return F.conv2d(x, k, padding=1, groups=c)


def _upsample2d(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """upfirdn2d.upsample2d (zero insertion ×2, pad (2, 1), 4×4 filter ×4) as one depthwise transposed conv."""
    c = img.shape[1]
    k = (f * 4.0).to(img.dtype).reshape(1, 1, 4, 4).expand(c, 1, 4, 4)
    return F.conv_transpose2d(img, k, stride=2, padding=1, groups=c)
