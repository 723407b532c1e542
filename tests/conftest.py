"""Shared test fixtures: paths to the shared reference material beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINY_DIR = SHARED / "fixtures" / "stylegan2-ada-tiny"


@pytest.fixture(scope="session")
def tiny_fixture_dir() -> Path:
    """The official StyleGAN2-ADA tiny network pickle and its reference outputs."""
    if not TINY_DIR.is_dir():
        pytest.fail(f"shared fixture folder missing: {TINY_DIR} (CI places ../shared beside the checkout)")
    return TINY_DIR
