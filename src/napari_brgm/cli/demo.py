"""`napari-brgm demo`: open napari with the brain sample and the reconstruction widget docked.

Without a display (a server, CI) the demo re-runs itself under Xvfb and writes a screenshot PNG
instead of opening a window, so the main job always produces something to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLE = "brain_t1"  # the chest X-ray is one click away: File > Open Sample > BRGM Reconstruction
DEFAULT_PNG = Path("out") / "demo.png"


def register(sub) -> None:
    p = sub.add_parser("demo", help="open napari with the brain sample and the reconstruction widget (headless: write a PNG)")
    p.add_argument(
        "--screenshot",
        type=Path,
        metavar="PNG",
        help="render off-screen, save a screenshot of the window to PNG and exit",
    )
    p.set_defaults(func=run)


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args) -> int:
    screenshot = args.screenshot
    if not _has_display():
        png = screenshot or DEFAULT_PNG
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("napari-brgm demo: no display and no xvfb-run; install xvfb (apt-get install xvfb)", file=sys.stderr)
            return 2
        print(f"No display: rendering under Xvfb and writing {png}")
        cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", "napari_brgm.cli.main",
               "demo", "--screenshot", str(png)]
        return subprocess.call(cmd)
    return _show(screenshot)


def _show(screenshot: Path | None) -> int:
    import napari

    viewer = napari.Viewer(title="napari-brgm demo")
    viewer.open_sample("napari-brgm", SAMPLE)
    viewer.window.add_plugin_dock_widget("napari-brgm", "BRGM Reconstruction")
    viewer.reset_view()
    if screenshot is None:
        napari.run()
        return 0
    from qtpy.QtWidgets import QApplication

    viewer.window.resize(1400, 900)
    for _ in range(20):
        QApplication.processEvents()
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(screenshot), canvas_only=False)
    viewer.close()
    print(f"wrote {screenshot}")
    return 0
