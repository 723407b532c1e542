"""The three accepted formats (ADA pickle, TF pickle, our safetensors) give the same generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import napari_brgm
from napari_brgm import priors
from napari_brgm.priors import (CheckpointError, Generator, builtin_priors, load_generator, resolve_prior,
                                save_generator)
from tests.priors.conftest import CONFIGS, random_generator, small_config, state_arrays
from tests.priors.pickles import ada_pickle, tf_pickle, tf_static_kwargs, torch_tensor, zip_blob


def _same_generator(a: Generator, b: Generator) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-6, rtol=0, msg=k)


def test_fixture_pickle_equals_its_state_dict(tiny_fixture_dir):
    g = load_generator(tiny_fixture_dir / "network-snapshot.pkl")
    ref = np.load(tiny_fixture_dir / "G_ema_state_dict.npz")
    sd = g.state_dict()
    assert sorted(sd) == sorted(ref.files) and len(sd) == 75
    for k in ref.files:
        np.testing.assert_array_equal(sd[k].numpy(), ref[k], err_msg=k)
    cfg = json.loads((tiny_fixture_dir / "config.json").read_text())
    assert g.config.num_parameters() == cfg["n_params"]
    assert (g.config.channel_base, g.config.channel_max, g.num_ws) == (512, 64, cfg["num_ws"])


def test_three_formats_give_the_same_images(config_name, tmp_path):
    cfg = CONFIGS[config_name]
    ref = random_generator(cfg, seed=21)
    sd = state_arrays(ref)
    (tmp_path / "ada.pkl").write_bytes(ada_pickle(sd, cfg))
    save_generator(ref, tmp_path / "ours.safetensors")
    loaded = {"ada": load_generator(tmp_path / "ada.pkl"), "ours": load_generator(tmp_path / "ours.safetensors")}
    if cfg.conv_clamp is None:  # TF StyleGAN2 has no conv_clamp
        (tmp_path / "tf.pkl").write_bytes(tf_pickle(sd, cfg))
        loaded["tf"] = load_generator(tmp_path / "tf.pkl")
    ws = ref.mapping(torch.randn(2, cfg.z_dim)) + 0.3 * torch.randn(2, ref.num_ws, ref.w_dim)
    want = ref.synthesis(ws)
    for name, g in loaded.items():
        assert g.config == cfg, name
        assert not g.training and not any(p.requires_grad for p in g.parameters())
        _same_generator(g, ref)
        torch.testing.assert_close(g.synthesis(ws), want, atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(g.synthesis(ws, noise_mode="none"), ref.synthesis(ws, noise_mode="none"),
                                   atol=1e-5, rtol=0, msg=name)


def test_tf_pickle_with_conv_clamp_config_loads_without_clamp(tmp_path):
    cfg = CONFIGS["rgb64_clamp256_map4"]
    sd = state_arrays(random_generator(cfg, seed=22))
    (tmp_path / "tf.pkl").write_bytes(tf_pickle(sd, cfg))
    g = load_generator(tmp_path / "tf.pkl")
    assert g.config.conv_clamp is None and g.config.img_channels == 3 and g.config.mapping_layers == 4


@pytest.mark.parametrize("static_kwargs", [{}, {"fmap_base": 512, "fmap_max": 32}])
def test_tf_config_is_inferred_from_shapes(tmp_path, static_kwargs):
    """Channel base comes from the shapes when static kwargs are missing (or would give the same widths)."""
    cfg = small_config(img_resolution=64, channel_base=1024, channel_max=32)
    sd = state_arrays(random_generator(cfg, seed=23))
    (tmp_path / "tf.pkl").write_bytes(tf_pickle(sd, cfg, static_kwargs=static_kwargs, protocol=4,
                                                numpy_module="numpy._core.multiarray"))
    g = load_generator(tmp_path / "tf.pkl")
    assert {r: g.config.channels(r) for r in (4, 8, 16, 32, 64)} == {r: cfg.channels(r) for r in (4, 8, 16, 32, 64)}
    assert g.config.channel_base == (1024 if static_kwargs else 32 * 32)  # the smallest base giving these widths
    np.testing.assert_allclose(g.synthesis.b64.conv0.weight.numpy(), sd["synthesis.b64.conv0.weight"], atol=0)


def test_tf_conversion_rules_are_applied(tmp_path):
    """Conv0_up is flipped, mod_bias gets +1, dense weights are transposed, noise{k} lands on the right layer."""
    cfg = small_config(img_resolution=16)
    sd = state_arrays(random_generator(cfg, seed=24))
    (tmp_path / "tf.pkl").write_bytes(tf_pickle(sd, cfg))
    g = load_generator(tmp_path / "tf.pkl")
    for k in ("synthesis.b8.conv0.weight", "synthesis.b16.conv1.affine.bias", "mapping.fc1.weight",
              "synthesis.b8.conv0.noise_const", "synthesis.b16.conv1.noise_const", "synthesis.b4.conv1.noise_const"):
        np.testing.assert_allclose(g.state_dict()[k].numpy(), sd[k], atol=1e-6, err_msg=k)


def test_zip_format_storage_blobs_load(tmp_path):
    cfg = small_config(img_resolution=8)
    ref = random_generator(cfg, seed=25)
    sd = state_arrays(ref)
    (tmp_path / "zip.pkl").write_bytes(ada_pickle(sd, cfg, tensor=lambda _n, a, p: torch_tensor(
        a, parameter=p, blob=zip_blob(a))))
    _same_generator(load_generator(tmp_path / "zip.pkl"), ref)


def test_g_ema_alone_and_without_init_kwargs(tmp_path):
    """A bare Generator object (no dict, no _init_kwargs) still loads: the config comes from the shapes."""
    from tests.priors.pickles import ada_module_tree, dumps

    cfg = small_config(img_resolution=16, channel_base=256, channel_max=32)
    ref = random_generator(cfg, seed=26)
    (tmp_path / "g.pkl").write_bytes(dumps(ada_module_tree(state_arrays(ref)), 4))
    _same_generator(load_generator(tmp_path / "g.pkl"), ref)


def test_safetensors_round_trip_keeps_w_stats(tmp_path, monkeypatch):
    ref = random_generator(small_config(), seed=27)
    stats = ref.w_stats
    path = save_generator(ref, tmp_path / "p.safetensors")
    import napari_brgm.priors.wstats as wstats

    monkeypatch.setattr(wstats, "compute_w_stats", lambda *a, **k: pytest.fail("W stats were recomputed"))
    g = load_generator(path)
    _same_generator(g, ref)
    s = g.w_stats
    assert s.std == pytest.approx(stats.std, rel=1e-6) and (s.num_samples, s.seed) == (10_000, 123)
    torch.testing.assert_close(s.mean, stats.mean)
    torch.testing.assert_close(s.std_per_dim, stats.std_per_dim)


def test_safetensors_with_json_config_beside_it(tmp_path):
    ref = random_generator(small_config(), seed=28)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="without a generator config"):
        load_generator(tmp_path / "w.safetensors")
    (tmp_path / "w.json").write_text(json.dumps(ref.config.to_dict()))
    g = load_generator(tmp_path / "w.safetensors")
    _same_generator(g, ref)
    assert g.w_stats.std == pytest.approx(ref.w_stats.std, rel=1e-6)  # computed on demand


def test_format_is_detected_by_content_not_extension(tmp_path):
    cfg = small_config(img_resolution=8)
    ref = random_generator(cfg, seed=29)
    (tmp_path / "model.safetensors").write_bytes(ada_pickle(state_arrays(ref), cfg))
    save_generator(ref, tmp_path / "weights.pkl")
    _same_generator(load_generator(tmp_path / "model.safetensors"), ref)
    _same_generator(load_generator(tmp_path / "weights.pkl"), ref)


def test_device_argument_and_copy_independence(tmp_path):
    ref = random_generator(small_config(img_resolution=8), seed=30)
    save_generator(ref, tmp_path / "p.safetensors")
    g = load_generator(tmp_path / "p.safetensors", device="cpu")
    assert all(t.device.type == "cpu" for t in g.state_dict().values())


def test_unsupported_variants_are_refused_clearly(tmp_path):
    cfg = small_config(img_resolution=8)
    sd = state_arrays(random_generator(cfg, seed=31))
    (tmp_path / "resnet.pkl").write_bytes(tf_pickle(sd, cfg, static_kwargs={**tf_static_kwargs(cfg),
                                                                             "architecture": "resnet"}))
    with pytest.raises(CheckpointError, match="architecture='resnet'"):
        load_generator(tmp_path / "resnet.pkl")
    from tests.priors import pickles

    kwargs = pickles.ada_init_kwargs(cfg)
    kwargs["c_dim"] = 10
    tree = pickles.ada_module_tree(sd, kwargs)
    (tmp_path / "cond.pkl").write_bytes(pickles.dumps({"G_ema": tree}, 4))
    with pytest.raises(CheckpointError, match="class-conditional"):
        load_generator(tmp_path / "cond.pkl")
    (tmp_path / "noema.pkl").write_bytes(pickles.dumps({"G": tree}, 4))
    with pytest.raises(CheckpointError, match="no 'G_ema'"):
        load_generator(tmp_path / "noema.pkl")
    sd3 = {k: v for k, v in sd.items() if not k.startswith("synthesis.b8.torgb")}
    (tmp_path / "missing.pkl").write_bytes(pickles.dumps({"G_ema": pickles.ada_module_tree(sd3)}, 4))
    with pytest.raises(CheckpointError, match=r"missing \['synthesis.b8.torgb"):
        load_generator(tmp_path / "missing.pkl")


def test_builtin_priors_and_resolve_prior(tmp_path):
    found = builtin_priors()
    assert isinstance(found, dict) and all(p.suffix == ".safetensors" for p in found.values())
    assert (priors.builtin.BUILTIN_DIR / "README.md").is_file()
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"")
    assert resolve_prior(f) == f and resolve_prior(str(f)) == f
    with pytest.raises(CheckpointError, match="no built-in prior"):
        resolve_prior("no-such-prior")
    with pytest.raises(CheckpointError, match="no such file"):
        load_generator(tmp_path / "absent.pkl")


def test_builtin_name_resolves(tmp_path, monkeypatch):
    ref = random_generator(small_config(img_resolution=8), seed=32)
    save_generator(ref, tmp_path / "tiny-brain.safetensors")
    monkeypatch.setattr(priors.builtin, "BUILTIN_DIR", tmp_path)
    assert builtin_priors() == {"tiny-brain": tmp_path / "tiny-brain.safetensors"}
    _same_generator(load_generator("tiny-brain"), ref)


def test_public_names_are_exported_lazily():
    assert napari_brgm.load_generator is load_generator
    assert napari_brgm.CheckpointError is CheckpointError and issubclass(CheckpointError, Exception)
    assert napari_brgm.Generator is Generator
