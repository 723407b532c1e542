"""`napari-brgm convert IN OUT.safetensors`."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from napari_brgm.cli import convert
from napari_brgm.priors import load_generator
from tests.cli.help import subcommand_help


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-brgm")
    convert.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", *map(str, argv)])
    return args.func(args)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_convert_fixture_pickle(tmp_path, tiny_fixture_dir, capsys):
    out = tmp_path / "tiny.safetensors"
    assert _run([tiny_fixture_dir / "network-snapshot.pkl", out]) == 0
    assert "32x32 px, 1 channel(s)" in capsys.readouterr().out
    g = load_generator(out)
    ref = np.load(tiny_fixture_dir / "reference.npz")
    img = g.synthesis(torch.from_numpy(ref["ws_plus"]), noise_mode="const")
    np.testing.assert_allclose(img.numpy(), ref["img_const"], atol=1e-4, rtol=0)
    assert g.w_stats.num_samples == 10_000


@pytest.mark.parametrize("content,reason", [(b"\x89PNG\r\n\x1a\n" + bytes(64), "PNG image"),
                                            (b"\x80\x04cos\nsystem\n(X\x04\x00\x00\x00trueR.", "refused global")])
def test_convert_refuses_bad_input_without_traceback(tmp_path, capsys, content, reason):
    src, out = tmp_path / "in.pkl", tmp_path / "out.safetensors"
    src.write_bytes(content)
    assert _run([src, out]) == 2
    err = capsys.readouterr().err
    assert reason in err and str(src) in err and "Traceback" not in err
    assert not out.exists()


def test_convert_output_rules(tmp_path, tiny_fixture_dir, capsys):
    src = tiny_fixture_dir / "network-snapshot.pkl"
    assert _run([src, tmp_path / "out.pt"]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old")
    assert _run([src, out]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"old"
    assert _run([src, out, "--force"]) == 0
    assert load_generator(out).img_resolution == 32
    assert _run([tmp_path / "missing.pkl", tmp_path / "x.safetensors"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_convert_help_does_not_import_torch():
    imported_torch, help_text = subcommand_help("convert")
    assert not imported_torch
    assert "OUT.safetensors" in help_text and "--force" in help_text
