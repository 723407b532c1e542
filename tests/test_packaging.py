"""The package list in pyproject.toml must name every package under src/ (it is written by hand)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.conftest import REPO


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    src = REPO / "src"
    found = {
        ".".join(p.parent.relative_to(src).parts)
        for p in src.rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found | {"napari_brgm.sample_data"} == listed


def test_torch_requirement_admits_the_local_cpu_build_only():
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert "2.13.0" in torch.specifier
    assert "2.14.0" not in torch.specifier


def test_cli_help_lists_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "napari_brgm.cli.main", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("info", "reconstruct", "train", "convert", "demo"):
        assert name in out
