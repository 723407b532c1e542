"""`napari-brgm demo --screenshot`: the README's main job renders napari with the sample and widget."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_demo_writes_a_screenshot_showing_the_brain_and_the_widget(tmp_path):
    png = tmp_path / "demo.png"
    subprocess.run([sys.executable, "-m", "napari_brgm.cli.main", "demo", "--screenshot", str(png)],
                   check=True, timeout=240, capture_output=True)
    import imageio.v3 as iio

    img = iio.imread(png)
    assert img.shape[0] > 500 and img.shape[1] > 800
    gray = img[..., :3].mean(axis=2)
    centre = gray[img.shape[0] // 4 : 3 * img.shape[0] // 4, img.shape[1] // 3 : 2 * img.shape[1] // 3]
    assert centre.std() > 20  # the brain slice is rendered (a black or blank canvas has no contrast)
