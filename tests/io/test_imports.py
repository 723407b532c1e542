"""napari_brgm.io stays light: no torch, no Qt, no MONAI when napari loads the reader."""

from __future__ import annotations

import subprocess
import sys

MODULES = ["napari_brgm.io", "napari_brgm.io.napari_reader", "napari_brgm.io.napari_writer", "napari_brgm.io.samples"]


def test_io_imports_neither_torch_nor_qt():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'qtpy', 'PyQt5', 'PyQt6'))\n"
        + "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_highdicom_loads_only_with_the_dicom_output():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "before = 'highdicom' in sys.modules\n"
        + "import napari_brgm.io.dicom_out\n"
        + "print(before, 'highdicom' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
