"""The npe2 manifest validates, including importing every command it references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "--imports", "napari-brgm"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout.lower()
