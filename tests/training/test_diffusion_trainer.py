"""Diffusion-prior training: ε-prediction loss falls, resume is exact, the export loads."""

from __future__ import annotations

import pytest
import torch

from napari_brgm.priors.diffusion import load_diffusion
from napari_brgm.training.data import load_slices
from napari_brgm.training.diffusion import DiffusionTrainConfig, DiffusionTrainer
from napari_brgm.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(resolution=16, widths=(8, 16), attention=(False, False), batch=4, warmup=5, seed=2)


@pytest.fixture
def slices(head_nifti):
    return load_slices([head_nifti], 16)


def test_training_lowers_the_noise_prediction_loss_and_exports_the_ema(slices, tmp_path):
    trainer = DiffusionTrainer(slices, DiffusionTrainConfig(**TINY | {"lr": 2e-3, "batch": 8}))
    losses = []
    train(trainer, 0.48, checkpoint=tmp_path / "d.pt", export=tmp_path / "d.safetensors", snapshot_kimg=1,
          progress=lambda st, out, rate: losses.append(out["loss"]))
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    model = load_diffusion(tmp_path / "d.safetensors")
    for p_ema, p in zip(model.parameters(), trainer.ema.parameters()):
        torch.testing.assert_close(p_ema, p)
    assert trainer.preview(2, steps=3).shape == (2, 1, 16, 16)
