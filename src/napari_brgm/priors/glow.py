"""Glow (Kingma & Dhariwal 2018): a multi-scale normalizing flow, the invertible prior of GlowIP.

x [N, C, R, R] ↔ z [N, D] (D = C·R²), exactly invertible. Each of the `levels` levels squeezes
(2×2 space → 4× channels) and applies K steps of flow: actnorm (data-dependent init on the first
training batch, remembered in the `initialized` buffer), an invertible 1×1 convolution
(LU-decomposed: log|det| = H·W·Σ log|s|) and an affine coupling (scale sigmoid(s + 2), last conv
zero-initialised, so a fresh step is close to the identity). After every level but the last, half
of the channels are factored out with a learned conditional Gaussian N(μ(h), σ(h)²) given the
rest; the top gets a learned per-position Gaussian. Both are standardised inside the flow
(ε = (z − μ)/σ, −Σ log σ in the log-det), so the returned latent has prior exactly N(0, I):
log p(x) = log N(z; 0, I) + logdet, and ‖z‖²/2 is the prior term of a solver.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from napari_brgm.priors.modelfile import ConfiguredImageSize, load_model, save_model

FORMAT_VERSION = "1"
LOG_2PI = math.log(2 * math.pi)
MIN_INIT_STD = 1e-3  # actnorm never scales by more than 1/this at initialisation


@dataclass
class GlowConfig:
    """The flow's shape; defaults: 1.3 M parameters, ~0.45-0.5 s per training step of 16 at 64 px (1 thread)."""

    resolution: int = 64  # image side R (power of two)
    channels: int = 1  # image channels C
    levels: int = 3  # squeeze + K steps (+ split) per level; R / 2**levels ≥ 2
    steps_per_level: int = 8  # K: actnorm → 1×1 conv → affine coupling, per level
    hidden: int = 64  # width of the coupling networks at the first (finest) level
    hidden_max: int = 256  # widths double per level (the coarse levels are cheap) up to this

    def __post_init__(self) -> None:
        for name in ("resolution", "channels", "levels", "steps_per_level", "hidden", "hidden_max"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, got {self.resolution}")
        if self.resolution >> self.levels < 2:
            raise ValueError(f"{self.levels} levels are too many for {self.resolution} px (R / 2**levels < 2)")
        if self.channels > 4:
            raise ValueError(f"channels must be 1-4, got {self.channels}")
        if self.hidden > 4096 or self.hidden_max > 4096 or self.steps_per_level > 256 or self.levels > 10:
            raise ValueError("hidden, hidden_max ≤ 4096, steps_per_level ≤ 256 and levels ≤ 10")

    def width(self, level: int) -> int:
        return max(self.hidden, min(self.hidden << level, self.hidden_max))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GlowConfig:
        if not isinstance(d, dict):
            raise ValueError(f"flow config must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown flow config keys {sorted(unknown)}")
        return cls(**d)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] → [N, 4C, H/2, W/2] (each 2×2 block becomes 4 channels)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c // 4, 2 * h, 2 * w)


def zero_conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ActNorm(nn.Module):
    """y = (x + b)·exp(logs) per channel; b, logs set from the first training batch (mean 0, std 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.zeros(()))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(-std.clamp_min(MIN_INIT_STD).log())
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor, logdet: torch.Tensor):
        if self.training and not bool(self.initialized):
            self.initialize(x)
        return (x + self.bias) * self.logs.exp(), logdet + x.shape[2] * x.shape[3] * self.logs.sum()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * (-self.logs).exp() - self.bias


class InvConv(nn.Module):
    """Invertible 1×1 convolution W = P·L·(U + diag(sign·exp(log_s))), P fixed (from a random rotation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("mask", torch.tril(torch.ones(channels, channels), -1), persistent=False)
        self.register_buffer("eye", torch.eye(channels), persistent=False)
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(s.abs().log())

    def _factors(self):
        lower = self.lower * self.mask + self.eye
        upper = self.upper * self.mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return lower, upper

    def forward(self, x: torch.Tensor, logdet: torch.Tensor):
        lower, upper = self._factors()
        weight = self.perm @ lower @ upper
        return F.conv2d(x, weight[:, :, None, None]), logdet + x.shape[2] * x.shape[3] * self.log_s.sum()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        lower, upper = self._factors()
        l_inv = torch.linalg.solve_triangular(lower, self.eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(upper, self.eye, upper=True)
        return F.conv2d(y, (u_inv @ l_inv @ self.perm.T)[:, :, None, None])


class Coupling(nn.Module):
    """Affine coupling: the second half is shifted and scaled by sigmoid(s + 2), both from the first half."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.keep = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(self.keep, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            zero_conv(hidden, 2 * (channels - self.keep)))

    def _shift_scale(self, xa: torch.Tensor):
        h = self.net(xa)
        return h[:, 0::2], h[:, 1::2] + 2.0

    def forward(self, x: torch.Tensor, logdet: torch.Tensor):
        xa, xb = x[:, :self.keep], x[:, self.keep:]
        shift, s = self._shift_scale(xa)
        yb = (xb + shift) * torch.sigmoid(s)
        return torch.cat([xa, yb], 1), logdet + F.logsigmoid(s).flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y[:, :self.keep], y[:, self.keep:]
        shift, s = self._shift_scale(ya)
        return torch.cat([ya, yb / torch.sigmoid(s) - shift], 1)


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv(channels)
        self.coupling = Coupling(channels, hidden)

    def forward(self, x: torch.Tensor, logdet: torch.Tensor):
        x, logdet = self.actnorm(x, logdet)
        x, logdet = self.invconv(x, logdet)
        return self.coupling(x, logdet)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.actnorm.inverse(self.invconv.inverse(self.coupling.inverse(y)))


class GaussianSplit(nn.Module):
    """Factor out the last `out` channels with prior N(μ(h), exp(logs(h))²) given the kept ones, standardised."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.keep = channels // 2
        self.prior = zero_conv(self.keep, 2 * (channels - self.keep))

    def _params(self, kept: torch.Tensor):
        h = self.prior(kept)
        return h[:, 0::2], h[:, 1::2]

    def forward(self, x: torch.Tensor, logdet: torch.Tensor):
        kept, out = x[:, :self.keep], x[:, self.keep:]
        mean, logs = self._params(kept)
        return kept, (out - mean) * (-logs).exp(), logdet - logs.flatten(1).sum(1)

    def inverse(self, kept: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mean, logs = self._params(kept)
        return torch.cat([kept, mean + eps * logs.exp()], 1)


class Glow(ConfiguredImageSize, nn.Module):
    """x [N, C, R, R] ↔ whitened latents z [N, D] with prior N(0, I); see the module docstring."""

    def __init__(self, config: GlowConfig) -> None:
        super().__init__()
        self.config = config
        c, r = config.channels, config.resolution
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        self.latent_shapes: list[tuple[int, int, int]] = []
        for level in range(config.levels):
            c, r = 4 * c, r // 2
            self.levels.append(nn.ModuleList(FlowStep(c, config.width(level)) for _ in range(config.steps_per_level)))
            if level < config.levels - 1:
                self.splits.append(GaussianSplit(c))
                self.latent_shapes.append((c - c // 2, r, r))
                c //= 2
        self.latent_shapes.append((c, r, r))
        self.top_mean = nn.Parameter(torch.zeros(1, c, r, r))
        self.top_logs = nn.Parameter(torch.zeros(1, c, r, r))

    @property
    def z_dim(self) -> int:
        return self.config.channels * self.config.resolution ** 2

    @property
    def initialized(self) -> bool:
        """True once every actnorm has its data-dependent initialisation (a loaded flow always has)."""
        return all(bool(m.initialized) for m in self.modules() if isinstance(m, ActNorm))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [N, D] whitened latents, log|det ∂z/∂x| [N]) for images x [N, C, R, R]."""
        r, c = self.img_resolution, self.img_channels
        assert x.ndim == 4 and tuple(x.shape[1:]) == (c, r, r), f"expected [N, {c}, {r}, {r}], got {tuple(x.shape)}"
        logdet = x.new_zeros(x.shape[0])
        zs = []
        h = x
        for i, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, logdet = step(h, logdet)
            if i < len(self.splits):
                h, eps, logdet = self.splits[i](h, logdet)
                zs.append(eps.flatten(1))
        zs.append(((h - self.top_mean) * (-self.top_logs).exp()).flatten(1))
        return torch.cat(zs, 1), logdet - self.top_logs.sum()

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Images [N, C, R, R] for whitened latents z [N, D]; differentiable w.r.t. z."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"expected [N, {self.z_dim}], got {tuple(z.shape)}"
        sizes = [math.prod(s) for s in self.latent_shapes]
        parts = [p.reshape(-1, *s) for p, s in zip(torch.split(z, sizes, dim=1), self.latent_shapes)]
        h = self.top_mean + parts[-1] * self.top_logs.exp()
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                h = self.splits[i].inverse(h, parts[i])
            for step in reversed(self.levels[i]):
                h = step.inverse(h)
            h = unsqueeze(h)
        return h

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) [N] in nats: the continuous density of images in model units."""
        z, logdet = self(x)
        return -0.5 * (z.square().sum(1) + z.shape[1] * LOG_2PI) + logdet

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from z ~ N(0, temperature²·I)."""
        z = torch.randn((n, self.z_dim), generator=generator, device=self.top_mean.device)
        return self.inverse(temperature * z)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        c = self.config
        return (f"resolution={c.resolution}, channels={c.channels}, levels={c.levels}, K={c.steps_per_level}, "
                f"hidden={c.hidden}..{c.hidden_max}")


def bits_per_dim(model: Glow, x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Bits per dimension [N] of images x, [-1, 1] read as `bins` bins of width 2/bins.

    P(bin) ≈ p(x)·(2/bins)^D, so bpd = (−log p(x) − D·log(2/bins)) / (D·ln 2): comparable with the
    usual 8-bit figures when x carries dequantisation noise of one bin.
    """
    d = x[0].numel()
    return (-model.log_prob(x) - d * math.log(2 / bins)) / (d * math.log(2))


def save_flow(model: Glow, path, dtype: torch.dtype = torch.float32):
    """Write `model` in our safetensors format (config in the metadata; weights in `dtype`)."""
    if not model.initialized:
        raise ValueError("the flow's actnorm layers are not initialised yet (run a training batch first)")
    return save_model(path, "flow", FORMAT_VERSION, model.config.to_dict(), model, dtype=dtype)


def load_flow(path, device="cpu") -> Glow:
    """A frozen eval-mode flow prior from our safetensors file or a built-in name."""
    model, _meta = load_model(path, "flow", lambda cfg: Glow(GlowConfig.from_dict(cfg)), device)
    return model
