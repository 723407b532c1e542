"""One contract for every trainer kind: a resumed run is bit-identical to an uninterrupted one, and a
checkpoint of another kind is refused."""

from __future__ import annotations

import pytest
import torch

from napari_brgm.training.data import load_slices
from napari_brgm.training.diffusion import DiffusionTrainConfig, DiffusionTrainer
from napari_brgm.training.flow import FlowTrainConfig, FlowTrainer
from napari_brgm.training.stylegan2 import Trainer, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINERS = {  # kind: (trainer class, tiny config, parts whose state must match, a weight training changes)
    "stylegan2": (Trainer, lambda: TrainConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64,
                                               channel_max=16, batch=4, r1_interval=2, seed=3),
                  ("G", "D", "G_ema", "opt_G", "opt_D"), lambda t: t.G.synthesis.b4.conv1.weight),
    "diffusion": (DiffusionTrainer, lambda: DiffusionTrainConfig(resolution=16, widths=(8, 16), attention=(False, False),
                                                                 batch=4, warmup=5, seed=2),
                  ("model", "ema", "opt"), lambda t: t.model.unet.conv_in.conv.weight),
    "flow": (FlowTrainer, lambda: FlowTrainConfig(resolution=16, levels=2, steps_per_level=2, hidden=8, hidden_max=16,
                                                  batch=4, init_batch=16, lr=5e-3, warmup=5, seed=3),
             ("flow", "ema", "opt"), lambda t: t.flow.levels[0][0].coupling.net[0].weight),
}


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    from tests.training.conftest import head_volume, write_nifti

    spacing = (2.0, 1.0, 1.0)
    path = write_nifti(tmp_path_factory.mktemp("head") / "head.nii.gz", head_volume(spacing=spacing), spacing)
    return load_slices([path], 16)


def _flat(state, prefix=""):
    """Every tensor of a (nested) state dict, optimiser states included, by a dotted name."""
    if isinstance(state, dict):
        return {k: v for key, sub in state.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    if isinstance(state, list | tuple):
        return {k: v for i, sub in enumerate(state) for k, v in _flat(sub, f"{prefix}{i}.").items()}
    if state is None or isinstance(state, str):
        return {}
    return {prefix[:-1]: torch.as_tensor(state).clone()}


@pytest.mark.parametrize("kind", TRAINERS)
def test_resumed_training_is_identical_to_uninterrupted(kind, slices, tmp_path):
    cls, config, parts, weight = TRAINERS[kind]
    straight = cls(slices, config())
    for _ in range(6):
        straight.step()
    first = cls(slices, config())
    for _ in range(3):
        first.step()
    first.save_checkpoint(tmp_path / "ck.pt")
    resumed = cls.resume(tmp_path / "ck.pt", slices)
    assert resumed.state.step == 3 and resumed.state.nimg == 12
    for _ in range(3):
        resumed.step()
    for part in parts:
        a, b = _flat(getattr(straight, part).state_dict()), _flat(getattr(resumed, part).state_dict())
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{part}.{k}")
    assert not torch.equal(weight(straight), weight(cls(slices, config())))  # and training did change it


@pytest.mark.parametrize("kind", TRAINERS)
def test_a_checkpoint_of_another_kind_is_refused(kind, slices, tmp_path):
    cls, config, _, _ = TRAINERS[kind]
    other = next(k for k in TRAINERS if k != kind)
    other_cls, other_config, _, _ = TRAINERS[other]
    other_cls(slices, other_config()).save_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match=f"a {other} checkpoint, not {kind}"):
        cls.resume(tmp_path / "other.pt", slices)
