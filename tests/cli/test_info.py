"""`napari-brgm info`: what the reader sees, and a clean failure for bad input."""

from __future__ import annotations

import argparse
import json

import pytest

from napari_brgm.cli import info
from tests.io.conftest import BRAIN_SAMPLE, XRAY_SAMPLE


def run_info(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="napari-brgm")
    info.register(parser.add_subparsers())
    args = parser.parse_args(["info", *argv])
    return args.func(args)


def _fields(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines())


def test_info_on_the_xray(capsys):
    assert run_info(str(XRAY_SAMPLE)) == 0
    fields = {k: v.strip() for k, v in _fields(capsys.readouterr().out).items()}
    assert fields["shape"] == "977 x 920 (y, x)"
    assert fields["spacing"] == "unknown, 1 per pixel (y, x)"
    assert fields["modality"] == "CR"
    assert fields["photometric"] == "MONOCHROME1 (inverted for display: value = 32767 - stored)"
    assert fields["window"] == "centre 17767, width 30000"
    assert fields["intensity"].startswith("6329 to 31809")


def test_info_on_the_brain(capsys):
    assert run_info(str(BRAIN_SAMPLE)) == 0
    fields = {k: v.strip() for k, v in _fields(capsys.readouterr().out).items()}
    assert fields["shape"] == "36 x 217 x 181 (z, y, x)"
    assert fields["spacing"] == "1 x 1 x 1 mm (z, y, x; from NIfTI affine)"
    assert fields["window"].startswith("none (display from 0.5-99.5 percentiles")


def test_info_json_is_the_layer_metadata(capsys):
    assert run_info("--json", str(BRAIN_SAMPLE)) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["shape"] == [36, 217, 181] and meta["axes"] == "zyx"


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x00" * 128 + b"DICM" + b"\x00" * 10])
def test_bad_input_exits_2_with_one_line_on_stderr(tmp_path, capsys, content):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(content)
    assert run_info(str(bad)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"napari-brgm info: Cannot open {bad}: ")
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
