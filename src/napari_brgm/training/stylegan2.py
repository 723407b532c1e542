"""StyleGAN2 training on CPU: non-saturating logistic loss, lazy R1, EMA generator, exact resume.

Every random choice of step k (batch indices, augmentation, latents, noise) is drawn from seeds
derived from (seed, k), so a run resumed from a checkpoint continues exactly as an uninterrupted
one would. Checkpoints hold G, D, G_ema and both Adam states (tensors and plain values only) and
are read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from napari_brgm.priors import save_generator
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig
from napari_brgm.training.augment import SliceAugment, diff_augment
from napari_brgm.training.data import SliceSet
from napari_brgm.training.discriminator import Discriminator
from napari_brgm.training.loop import TrainState, read_checkpoint, save_checkpoint, step_seed, train  # noqa: F401

KIND = "stylegan2"
CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    """Hyper-parameters; defaults sized for a 2-core CPU (64 px: ~50 images/s, see docs/training.md)."""

    resolution: int = 64  # image size R (power of two)
    z_dim: int = 256  # latent Z dimensionality
    w_dim: int = 256  # latent W dimensionality
    mapping_layers: int = 2  # mapping depth (StyleGAN2-ADA uses 2 for small data)
    channel_base: int = 1024  # feature maps at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 128  # upper bound of feature maps
    batch: int = 16  # images per step
    lr: float = 0.0025  # Adam learning rate of G and D (betas 0, 0.99)
    r1_gamma: float | None = None  # R1 weight; None: 0.0002 · R² / batch (StyleGAN2-ADA's heuristic)
    r1_interval: int = 16  # lazy regularisation: R1 every this many D steps
    style_mixing: float = 0.9  # probability of mixing two latents in a batch
    ema_kimg: float | None = None  # EMA half-life in thousands of images; None: batch · 10 / 32
    ema_rampup: float = 0.05  # EMA half-life ≤ this × images seen so far
    w_avg_beta: float = 0.995  # tracking of the mean W (truncation)
    diffaugment: bool = True  # translation + cutout before D (real and fake)
    precision: str = "fp32"  # "fp32" or "bf16" (generator convolutions under bfloat16 autocast)
    seed: int = 0  # everything random derives from (seed, step)

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, got {self.resolution}")
        if self.batch < 2 or self.batch % min(4, self.batch):
            raise ValueError(f"batch must be ≥ 2 and divisible by 4 (minibatch-std groups), got {self.batch}")

    @property
    def gamma(self) -> float:
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * self.resolution ** 2 / self.batch

    @property
    def ema_half_life(self) -> float:
        return (self.ema_kimg if self.ema_kimg is not None else self.batch * 10 / 32) * 1000

    def generator_config(self, channels: int) -> GeneratorConfig:
        return GeneratorConfig(z_dim=self.z_dim, w_dim=self.w_dim, img_resolution=self.resolution,
                               img_channels=channels, mapping_layers=self.mapping_layers,
                               channel_base=self.channel_base, channel_max=self.channel_max,
                               conv_clamp=256.0, mapping_lr_multiplier=0.01)


class Trainer:
    """Owns G, D, G_ema and the optimisers; `step()` runs one G and one D update (+ R1 when due)."""

    def __init__(self, data: SliceSet, config: TrainConfig) -> None:
        if data.images.shape[-1] != config.resolution or data.images.shape[-2] != config.resolution:
            raise ValueError(f"slices are {tuple(data.images.shape[-2:])}, config resolution {config.resolution}")
        self.data, self.config = data, config
        channels = int(data.images.shape[1])
        torch.manual_seed(config.seed)
        self.G = Generator(config.generator_config(channels))
        self.G.precision = config.precision
        self.D = Discriminator(img_resolution=config.resolution, img_channels=channels,
                               channel_base=config.channel_base, channel_max=config.channel_max)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        ratio = config.r1_interval / (config.r1_interval + 1)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=(0.0, 0.99), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
        self.augment = SliceAugment()
        self.state = TrainState()

    # -- one step ---------------------------------------------------------------------------------
    def _latents(self, gen: torch.Generator, n: int) -> torch.Tensor:
        cfg, G = self.config, self.G
        z = torch.randn(n, cfg.z_dim, generator=gen)
        ws = G.mapping(z)
        if cfg.style_mixing > 0 and float(torch.rand((), generator=gen)) < cfg.style_mixing:
            cutoff = int(torch.randint(1, G.num_ws, (), generator=gen))
            z2 = torch.randn(n, cfg.z_dim, generator=gen)
            ws = torch.cat([ws[:, :cutoff], G.mapping(z2)[:, cutoff:]], dim=1)
        with torch.no_grad():
            G.mapping.w_avg.lerp_(ws[:, 0].mean(0), 1 - cfg.w_avg_beta)
        return ws

    def _fake(self, gen: torch.Generator, n: int) -> torch.Tensor:
        return self.G.synthesis(self._latents(gen, n), noise_mode="random", generator=gen)

    def _disc(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.config.diffaugment:
            x = diff_augment(x, gen)
        return self.D(x)

    def _reals(self, step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(step_seed(self.config.seed, step, 0))
        idx = torch.randint(0, len(self.data), (self.config.batch,), generator=gen)
        return self.augment(self.data.images[idx], seed=step_seed(self.config.seed, step, 1))

    def step(self) -> dict:
        cfg, st = self.config, self.state
        k = st.step
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, k, 2))
        # G: non-saturating loss softplus(−D(G(z))).
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        loss_g = F.softplus(-self._disc(self._fake(gen, cfg.batch), gen)).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()
        # D: softplus(D(G(z))) + softplus(−D(x)), plus lazy R1 on reals.
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        reals = self._reals(k)
        with torch.no_grad():
            fakes = self._fake(gen, cfg.batch)
        do_r1 = cfg.gamma > 0 and k % cfg.r1_interval == 0
        reals.requires_grad_(do_r1)
        real_logits = self._disc(reals, gen)
        loss_d = F.softplus(self._disc(fakes, gen)).mean() + F.softplus(-real_logits).mean()
        r1 = torch.zeros(())
        if do_r1:
            (grad,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + r1 * (cfg.gamma / 2 * cfg.r1_interval)
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        self._update_ema()
        st.step += 1
        st.nimg += cfg.batch
        out = {"loss_G": loss_g.item(), "loss_D": loss_d.item(), "r1": r1.item()}
        if k % 10 == 0:
            st.history.append([k, out["loss_G"], out["loss_D"], out["r1"]])
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        cfg = self.config
        half_life = min(cfg.ema_half_life, self.state.nimg * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_half_life
        beta = 0.5 ** (cfg.batch / max(half_life, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, path) -> Path:
        parts = {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                 "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict()}
        return save_checkpoint(path, kind=KIND, version=CHECKPOINT_VERSION, config=self.config, data=self.data,
                               state=self.state, parts=parts)

    @classmethod
    def resume(cls, path, data: SliceSet) -> Trainer:
        """A trainer in exactly the state saved at `path` (same data required)."""
        config, state, payload = read_checkpoint(path, kind=KIND, version=CHECKPOINT_VERSION, data=data)
        trainer = cls(data, TrainConfig(**config))
        for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
            getattr(trainer, name).load_state_dict(payload[name])
        trainer.state = state
        return trainer

    def export(self, path) -> Path:
        """The EMA generator in our safetensors format (what `load_generator` reads), W statistics included."""
        g = copy.deepcopy(self.G_ema)
        g.precision = "fp32"
        g.w_stats = None
        return save_generator(g, path)

    @torch.no_grad()
    def preview(self, n: int = 16, seed: int = 0) -> torch.Tensor:
        """n images of the EMA generator from fixed latents (ψ = 1, constant noise)."""
        z = torch.randn(n, self.config.z_dim, generator=torch.Generator().manual_seed(seed))
        return self.G_ema.synthesis(self.G_ema.mapping(z), noise_mode="const")
