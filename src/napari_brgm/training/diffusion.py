"""Diffusion-prior training: ε-prediction loss on MONAI's DDPM schedule, EMA weights, exact resume.

Each step draws a batch of slices (MONAI augmentation, as for the StyleGAN2 prior), timesteps
t ~ U{0, T−1} and noise ε, and minimises mean((ε̂(x_t, t) − ε)²). The exported prior is the EMA
of the weights. Every random draw of step k derives from (seed, k), so resume is exact.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from napari_brgm.priors.diffusion import DiffusionConfig, DiffusionPrior, save_diffusion
from napari_brgm.training.augment import SliceAugment
from napari_brgm.training.data import SliceSet
from napari_brgm.training.loop import TrainState, read_checkpoint, save_checkpoint, step_seed

KIND = "diffusion"
CHECKPOINT_VERSION = 1


@dataclass
class DiffusionTrainConfig:
    """Hyper-parameters; defaults: 0.86 s per step on one CPU thread at 64 px (docs/training.md)."""

    resolution: int = 64  # image side R
    widths: tuple[int, ...] = (16, 32, 64, 128)  # UNet feature maps per level
    attention: tuple[bool, ...] = (False, False, False, True)  # self-attention per level
    batch: int = 16  # images per step
    lr: float = 5e-4  # Adam learning rate (after warm-up)
    warmup: int = 200  # steps of linear learning-rate warm-up
    grad_clip: float = 1.0  # gradient-norm clipping
    ema: float = 0.999  # EMA decay of the exported weights (warmed up as (1 + k) / (10 + k))
    schedule: str = "linear_beta"  # MONAI noise schedule
    seed: int = 0  # everything random derives from (seed, step)

    def __post_init__(self) -> None:
        self.widths, self.attention = tuple(self.widths), tuple(self.attention)
        if self.batch < 1 or self.lr <= 0 or not 0 <= self.ema < 1:
            raise ValueError("batch ≥ 1, lr > 0 and 0 ≤ ema < 1 are required")
        self.model_config()  # validates resolution, levels and schedule

    def model_config(self, channels: int = 1) -> DiffusionConfig:
        return DiffusionConfig(resolution=self.resolution, channels=channels, widths=self.widths,
                               attention=self.attention, schedule=self.schedule,
                               norm_groups=min(8, *self.widths), head_channels=min(32, self.widths[-1]))


class DiffusionTrainer:
    """Owns the denoiser, its EMA copy and the optimiser; `step()` runs one ε-prediction update."""

    def __init__(self, data: SliceSet, config: DiffusionTrainConfig) -> None:
        if tuple(data.images.shape[-2:]) != (config.resolution, config.resolution):
            raise ValueError(f"slices are {tuple(data.images.shape[-2:])}, config resolution {config.resolution}")
        self.data, self.config = data, config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = DiffusionPrior(config.model_config(int(data.images.shape[1])))
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.augment = SliceAugment()
        self.state = TrainState()

    def step(self) -> dict:
        cfg, st = self.config, self.state
        k = st.step
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, k, 0))
        idx = torch.randint(0, len(self.data), (cfg.batch,), generator=gen)
        x0 = self.augment(self.data.images[idx], seed=step_seed(cfg.seed, k, 1))
        t = torch.randint(0, self.model.timesteps, (cfg.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = self.model.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        self.model.train()
        loss = (self.model.eps(x_t, t) - noise).square().mean()
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (k + 1) / max(cfg.warmup, 1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self._update_ema(k)
        st.step += 1
        st.nimg += cfg.batch
        out = {"loss": loss.item(), "grad_norm": float(grad_norm)}
        if k % 10 == 0:
            st.history.append([k, out["loss"], out["grad_norm"]])
        return out

    @torch.no_grad()
    def _update_ema(self, k: int) -> None:
        beta = min(self.config.ema, (1 + k) / (10 + k))
        for p_ema, p in zip(self.ema.parameters(), self.model.parameters()):
            p_ema.lerp_(p, 1 - beta)

    def save_checkpoint(self, path):
        parts = {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict()}
        return save_checkpoint(path, kind=KIND, version=CHECKPOINT_VERSION, config=self.config, data=self.data,
                               state=self.state, parts=parts)

    @classmethod
    def resume(cls, path, data: SliceSet) -> DiffusionTrainer:
        """A trainer in exactly the state saved at `path` (same data required)."""
        config, state, payload = read_checkpoint(path, kind=KIND, version=CHECKPOINT_VERSION, data=data)
        trainer = cls(data, DiffusionTrainConfig(**config))
        for name in ("model", "ema", "opt"):
            getattr(trainer, name).load_state_dict(payload[name])
        trainer.state = state
        return trainer

    def export(self, path):
        """The EMA denoiser in our safetensors format (what `load_diffusion` reads)."""
        return save_diffusion(self.ema, path)

    @torch.no_grad()
    def preview(self, n: int = 16, seed: int = 0, steps: int = 50) -> torch.Tensor:
        """n DDIM samples of the EMA denoiser from fixed noise."""
        return self.ema.sample(n, steps=steps, generator=torch.Generator().manual_seed(seed))
