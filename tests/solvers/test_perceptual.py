"""The optional perceptual term reads VGG16 (+ LPIPS) weights from a local file only."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from napari_brgm.operators import make_operator
from napari_brgm.solvers import MapConfig, Problem, solve_map
from napari_brgm.solvers.perceptual import CONV_CHANNELS, CONV_INDICES, TAPS, PerceptualDistance


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    tensors = {}
    cin = 3
    for idx, cout in zip(CONV_INDICES, CONV_CHANNELS):
        tensors[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        tensors[f"features.{idx}.bias"] = torch.zeros(cout)
        cin = cout
    for j, tap in enumerate(TAPS):
        tensors[f"lin{j}.model.1.weight"] = torch.rand(1, CONV_CHANNELS[tap], 1, 1, generator=g)
    path = tmp_path_factory.mktemp("vgg") / "vgg16_lpips.safetensors"
    save_file(tensors, str(path))
    return path


def test_distance_is_zero_for_equal_images_positive_otherwise_and_differentiable(vgg_file):
    d = PerceptualDistance.from_file(vgg_file)
    a = torch.rand(1, 1, 32, 32) * 255
    b = (a + 40 * torch.rand(1, 1, 32, 32)).requires_grad_(True)
    assert d(a, a).item() == pytest.approx(0.0, abs=1e-12)
    loss = d(a, b)
    loss.backward()
    assert loss.item() > 0 and b.grad.abs().sum() > 0


def test_lpips_weights_change_the_distance(vgg_file, tmp_path):
    from safetensors.torch import load_file

    tensors = {k: v for k, v in load_file(str(vgg_file)).items() if not k.startswith("lin")}
    plain = tmp_path / "vgg16.safetensors"
    save_file(tensors, str(plain))
    a, b = torch.rand(1, 1, 32, 32) * 255, torch.rand(1, 1, 32, 32) * 255
    assert PerceptualDistance.from_file(plain)(a, b).item() != pytest.approx(PerceptualDistance.from_file(vgg_file)(a, b).item())


def test_files_that_are_not_vgg_weights_are_refused(tmp_path):
    bad = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match="not VGG16 weights"):
        PerceptualDistance.from_file(bad)
    with pytest.raises(FileNotFoundError):
        PerceptualDistance.from_file(tmp_path / "missing.safetensors")


def test_map_adds_the_weighted_perceptual_term(vgg_file, tiny_generator, truth):
    _, x = truth
    A = make_operator("superres", factor=4)
    cfg = MapConfig(steps=2, perceptual=PerceptualDistance.from_file(vgg_file), lambda_perc=10.0)
    out = solve_map(Problem(tiny_generator, A, A(x)), cfg)
    assert len(out.losses["perceptual"]) == 2 and out.losses["perceptual"][0] > 0
