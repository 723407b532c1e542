"""Glow training: the likelihood improves, resume is bit-exact, the export is a loadable flow prior."""

from __future__ import annotations

import pytest
import torch

from napari_brgm.priors.glow import load_flow
from napari_brgm.training.data import SliceSet, load_slices
from napari_brgm.training.flow import FlowTrainConfig, FlowTrainer, evaluate_bpd, train
from napari_brgm.training.stylegan2 import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def slices(head_nifti):
    return load_slices([head_nifti], 16)


@pytest.fixture
def flow_config():
    return FlowTrainConfig(resolution=16, levels=2, steps_per_level=2, hidden=8, hidden_max=16, batch=4,
                           init_batch=16, lr=5e-3, warmup=5, seed=3)


def test_bits_per_dim_decrease(slices, flow_config):
    t = FlowTrainer(slices, flow_config)
    before = evaluate_bpd(t.flow, slices)
    losses = [t.step()["bpd"] for _ in range(25)]
    after = evaluate_bpd(t.flow, slices)
    assert after < before - 0.5, (before, after)
    assert sum(losses[-5:]) < sum(losses[:5]) - 2.5
    assert t.state.step == 25 and t.state.nimg == 100 and len(t.state.history) == 3


def test_resume_refuses_other_data_and_other_kinds(slices, flow_config, tiny_config, tmp_path):
    t = FlowTrainer(slices, flow_config)
    t.step()
    t.save_checkpoint(tmp_path / "ck.pt")
    with pytest.raises(ValueError, match="different data"):
        FlowTrainer.resume(tmp_path / "ck.pt", SliceSet(slices.images + 0.01, slices.sources))
    with pytest.raises(ValueError, match="a flow checkpoint, not stylegan2"):
        Trainer.resume(tmp_path / "ck.pt", slices)
    Trainer(slices, tiny_config).save_checkpoint(tmp_path / "gan.pt")
    with pytest.raises(ValueError, match="a stylegan2 checkpoint, not flow"):
        FlowTrainer.resume(tmp_path / "gan.pt", slices)


def test_train_loop_exports_a_loadable_flow(slices, flow_config, tmp_path):
    seen = []
    t = FlowTrainer(slices, flow_config)
    train(t, kimg=0.02, checkpoint=tmp_path / "ck.pt", export=tmp_path / "flow.safetensors", snapshot_kimg=0.008,
          on_snapshot=lambda tr: seen.append(tr.state.nimg))
    assert t.state.nimg == 20 and seen == [8, 16, 20]
    flow = load_flow(tmp_path / "flow.safetensors")
    assert (flow.img_resolution, flow.img_channels, flow.z_dim) == (16, 1, 256)
    x = slices.images[:3]
    torch.testing.assert_close(flow(x)[0], t.ema(x)[0], rtol=0, atol=0)
    assert not torch.equal(t.ema.top_mean, t.flow.top_mean)  # the EMA is what is exported
    assert evaluate_bpd(flow, slices) == evaluate_bpd(t.ema, slices)


def test_preview_is_fixed_by_its_seed_and_without_ema_the_raw_flow_is_exported(slices, flow_config, tmp_path):
    t = FlowTrainer(slices, FlowTrainConfig(**(vars(flow_config) | {"ema": 0.0})))
    t.step()
    assert t.ema is None and t.exported is t.flow
    a, b, c = t.preview(4, seed=1), t.preview(4, seed=1), t.preview(4, seed=2)
    assert a.shape == (4, 1, 16, 16) and t.flow.training
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    torch.testing.assert_close(a, t.flow.inverse(0.7 * torch.randn(4, 256, generator=torch.Generator().manual_seed(1))))
    t.save_checkpoint(tmp_path / "ck.pt")
    assert FlowTrainer.resume(tmp_path / "ck.pt", slices).ema is None
    t.export(tmp_path / "raw.safetensors")
    torch.testing.assert_close(load_flow(tmp_path / "raw.safetensors").top_logs, t.flow.top_logs.detach())


def test_stop_request_ends_between_steps(slices, flow_config):
    t = FlowTrainer(slices, flow_config)
    calls = iter([False, False, True])
    train(t, kimg=1, should_stop=lambda: next(calls))
    assert t.state.step == 2


def test_learning_rate_warms_up_and_the_gradient_is_clipped(slices, flow_config):
    t = FlowTrainer(slices, FlowTrainConfig(**(vars(flow_config) | {"grad_clip": 1e-3})))
    out = [t.step() for _ in range(6)]
    assert [o["lr"] for o in out] == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 5e-3])
    assert all(o["grad_norm"] > 1e-3 and o["skipped"] == 0 for o in out)  # the norm before clipping
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in t.flow.parameters()]))
    assert total.item() == pytest.approx(1e-3, rel=1e-3)


def test_evaluate_bpd_is_deterministic_and_needs_an_initialised_flow(slices, flow_config):
    t = FlowTrainer(slices, flow_config)
    assert evaluate_bpd(t.flow, slices, batch=5) == pytest.approx(evaluate_bpd(t.flow, slices, batch=5), abs=0)
    from napari_brgm.priors.glow import Glow

    with pytest.raises(ValueError, match="not initialised"):
        evaluate_bpd(Glow(flow_config.glow_config(1)), slices)


def test_config_validation(slices):
    with pytest.raises(ValueError, match="power of two"):
        FlowTrainConfig(resolution=48)
    with pytest.raises(ValueError, match="too many"):
        FlowTrainConfig(resolution=16, levels=4)
    with pytest.raises(ValueError, match="ema"):
        FlowTrainConfig(ema=1.0)
    with pytest.raises(ValueError, match="grad_clip"):
        FlowTrainConfig(grad_clip=0)
    with pytest.raises(ValueError, match="config resolution"):
        FlowTrainer(slices, FlowTrainConfig(resolution=32, levels=2, steps_per_level=1, hidden=4))
