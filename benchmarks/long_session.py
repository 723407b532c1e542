"""Long sessions: resident memory over many successive runs in one napari viewer and many `reconstruct` calls.

Part 1 docks the BRGM widget in a napari viewer (real Qt, run it under Xvfb without a display) and presses Run
`--viewer-runs` times on an 8×8 input with the tiny 32 px StyleGAN2-ADA fixture prior (MAP ×4, a few steps),
changing the seed each time and deleting the result layers every `--delete-every` runs, as a user would.
Part 2 calls `napari_brgm.reconstruct` `--engine-calls` times in this process (the same tiny prior, seeds
varying). Each part prints the resident set size (RSS, psutil, after gc) every `--every` runs and its growth
after the first `--warmup` runs (the prior's load, torch's and Qt's first allocations), per run and in all,
and checks that the runs are released (weak references) once their layers are gone.

Run:  xvfb-run -a python benchmarks/long_session.py            (50 viewer runs, 200 engine calls)
      python benchmarks/long_session.py --viewer-runs 0        (engine only, no display needed)
      xvfb-run -a python benchmarks/long_session.py --engine-calls 0 --replay   (the viewer's share alone)

Measured (napari 0.9.2, torch 2.13 CPU, one thread, 2 shared cores): engine +0.1 MB over calls 5-200
(344.1 → 344.3 MB, 0.7 KB per call); viewer +18.4 MB over runs 5-50 (555.5 → 573.9 MB, 419 KB per run),
the same with the engine replayed (405 KB per run): napari's, whose bare viewer grows ~1.9 MB per add and
remove of a 32 px image layer; 0 of 50 runs alive after their layers were deleted.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time
import weakref
from pathlib import Path

import numpy as np

TINY = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stylegan2-ada-tiny" / "network-snapshot.pkl"
MB = 1024 * 1024


def rss(collect: bool = True) -> int:
    """Resident set size in bytes, after a full collection (`collect`: a collection in napari's process takes
    0.1-0.5 s, so only the printed points collect)."""
    import psutil

    if collect:
        gc.collect()
    return psutil.Process().memory_info().rss


class Track:
    """RSS after each run; growth after the warm-up."""

    def __init__(self, name: str, warmup: int, every: int):
        self.name, self.warmup, self.every = name, warmup, every
        self.samples: list[int] = []
        self.started = time.perf_counter()

    def add(self, i: int, total: int) -> None:
        shown = (i + 1) % self.every == 0 or i + 1 == total
        self.samples.append(rss(collect=shown or i + 1 == self.warmup))
        if shown:
            print(f"  {self.name} run {i + 1:4d}/{total}: RSS {self.samples[-1] / MB:8.1f} MB "
                  f"({time.perf_counter() - self.started:6.1f} s)", flush=True)

    def summary(self) -> dict:
        base, end = self.samples[self.warmup - 1], self.samples[-1]
        runs = len(self.samples) - self.warmup
        peak = max(self.samples[self.warmup - 1:])
        out = {"runs": len(self.samples), "rss_first_mb": self.samples[0] / MB, "rss_after_warmup_mb": base / MB,
               "rss_end_mb": end / MB, "rss_peak_after_warmup_mb": peak / MB, "growth_mb": (end - base) / MB,
               "growth_per_run_kb": (end - base) / max(runs, 1) / 1024, "seconds": time.perf_counter() - self.started}
        print(f"{self.name}: {out['runs']} runs in {out['seconds']:.1f} s; RSS {out['rss_first_mb']:.1f} MB after "
              f"run 1, {out['rss_after_warmup_mb']:.1f} MB after run {self.warmup}, {out['rss_end_mb']:.1f} MB at the "
              f"end (peak {out['rss_peak_after_warmup_mb']:.1f}): growth after the warm-up {out['growth_mb']:+.1f} MB "
              f"({out['growth_per_run_kb']:+.1f} KB per run)", flush=True)
        return out


def _replay(real):
    """An engine that runs `real` once, then replays that run's progress reports and a copy of its result at once:
    the widget and napari do the same work as before, the engine none (the `--replay` control)."""
    first: dict = {}

    def engine(image, progress=None, should_stop=None, **options):
        if not first:
            first["reports"] = reports = []
            first["result"] = real(image, progress=lambda r: (reports.append(r), progress(r)), should_stop=should_stop,
                                   **options)
            return first["result"]
        for report in first["reports"]:
            progress(report)
        return copy.deepcopy(first["result"])

    return engine


def viewer_session(runs: int, prior: str, steps: int, warmup: int, every: int, delete_every: int,
                   replay: bool = False) -> dict:
    """`runs` presses of Run in one viewer; the result layers deleted every `delete_every` runs."""
    import napari
    from qtpy.QtCore import QSettings
    from qtpy.QtWidgets import QApplication, QFileDialog

    from napari_brgm.widgets import reconstruction
    from napari_brgm.widgets.reconstruction import LOAD_CHECKPOINT

    settings = Path(os.environ.get("TMPDIR", "/tmp")) / f"long-session-{os.getpid()}.ini"
    reconstruction._settings = lambda: QSettings(str(settings), QSettings.Format.IniFormat)  # not the user's file
    if replay:
        reconstruction.reconstruct = _replay(reconstruction.reconstruct)
    QFileDialog.getOpenFileName = staticmethod(lambda *args, **kwargs: (prior, ""))
    viewer = napari.Viewer(show=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-brgm", "BRGM Reconstruction")
    viewer.add_image(np.random.default_rng(0).random((8, 8), dtype=np.float32), name="img")
    index = widget.prior_combo.findText(LOAD_CHECKPOINT)
    widget.prior_combo.setCurrentIndex(index)
    widget.prior_combo.activated.emit(index)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    widget.steps_spin.setValue(steps)
    app = QApplication.instance()
    track, refs, finished = Track("viewer (replayed engine)" if replay else "viewer", warmup, every), [], [0]
    widget.run_finished.connect(lambda _run: finished.__setitem__(0, finished[0] + 1))  # keeps no run
    for i in range(runs):
        widget.seed_spin.setValue(i)
        run = widget.run()
        while finished[0] <= i:
            app.processEvents()
            time.sleep(0.002)
        if run.result is None:
            sys.exit(f"run {i + 1} failed: {widget.status.text()}")
        refs.append(weakref.ref(run))
        del run
        if (i + 1) % delete_every == 0:
            for layer in [x for x in viewer.layers if "brgm" in x.metadata]:
                viewer.layers.remove(layer)
        for _ in range(3):
            app.processEvents()
        track.add(i, runs)
    for layer in [x for x in viewer.layers if "brgm" in x.metadata]:
        viewer.layers.remove(layer)
    widget.image_combo.setCurrentText("img")  # nothing in flight: the shown run is only weakly held
    for _ in range(3):
        app.processEvents()
    gc.collect()
    out = track.summary()
    out["runs_alive"] = sum(ref() is not None for ref in refs)
    print(f"viewer: {out['runs_alive']} of {runs} runs still alive after their layers were deleted")
    viewer.close()
    settings.unlink(missing_ok=True)
    return out


def engine_session(calls: int, prior: str, steps: int, warmup: int, every: int) -> dict:
    """`calls` successive `reconstruct` calls in this process (MAP ×4 on 8×8, seeds varying)."""
    from napari_brgm import reconstruct

    image = np.random.default_rng(1).random((8, 8), dtype=np.float32)
    track = Track("engine", warmup, every)
    for i in range(calls):
        result = reconstruct(image, prior=prior, method="map", steps=steps, seed=i, device="cpu")
        assert result.mean.shape == (32, 32)
        del result
        track.add(i, calls)
    return track.summary()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewer-runs", type=int, default=50)
    ap.add_argument("--engine-calls", type=int, default=200)
    ap.add_argument("--prior", default=str(TINY))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5, help="runs before the baseline RSS")
    ap.add_argument("--every", type=int, default=10, help="print the RSS every this many runs")
    ap.add_argument("--delete-every", type=int, default=5, help="delete the result layers every this many runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--replay", action="store_true", help="control: the viewer's runs after the first replay its "
                                                           "reports and result (no engine work)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), prior {args.prior}, {args.steps} steps per run")
    if args.engine_calls:
        engine_session(args.engine_calls, args.prior, args.steps, args.warmup, args.every)
    if args.viewer_runs:
        out = viewer_session(args.viewer_runs, args.prior, args.steps, args.warmup, args.every, args.delete_every,
                             args.replay)
        if out["runs_alive"]:
            sys.exit("runs were kept alive after their layers were deleted")


if __name__ == "__main__":
    main()
