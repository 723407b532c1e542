"""Engine speed: seconds per MAP and VI run, and the cost of a batched VI step relative to a MAP step.

Prints one table for the tiny fixture generator (32 px) and a 128-wide 256 px generator (random
weights): ms per MAP step, ms per VI step with K samples batched in one generator call, their ratio
(target: below 0.5·K) and the projected time of a full 501-step run. Run: python benchmarks/bench_engine.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from napari_brgm.operators import make_operator
from napari_brgm.priors import load_generator
from napari_brgm.priors.cpu import retain_freed_memory
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig
from napari_brgm.solvers import MapConfig, Problem, ViConfig, solve_map, solve_vi

TINY = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stylegan2-ada-tiny" / "network-snapshot.pkl"
FULL_RUN = 501


def _generators():
    yield "tiny 32px (fixture)", load_generator(TINY)
    torch.manual_seed(0)
    cfg = GeneratorConfig(z_dim=128, w_dim=128, img_resolution=256, img_channels=1, mapping_layers=4,
                          channel_base=16384, channel_max=128)
    yield "128-wide 256px", Generator(cfg).eval().requires_grad_(False)


def _ms_per_step(run, steps: int) -> float:
    run(2)  # warm-up
    t = time.perf_counter()
    run(steps)
    return (time.perf_counter() - t) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--k", type=int, nargs="+", default=[4, 6, 8], help="VI samples per step")
    ap.add_argument("--system-malloc", action="store_true", help="skip retain_freed_memory() (as a library caller)")
    args = ap.parse_args()
    if not args.system_malloc:
        retain_freed_memory()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'generator':22s} {'K':>3s} {'MAP ms/step':>12s} {'VI ms/step':>11s} {'VI/MAP':>7s} {'0.5K':>5s} "
          f"{'MAP 501 s':>10s} {'VI 501+501 s':>13s}")
    for name, G in _generators():
        G.w_stats  # computed once per generator, outside the timings
        res = G.img_resolution
        A = make_operator("superres", factor=4)
        x = G.synthesis(G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1))))
        problem = Problem(G, A, A(x))
        map_ms = _ms_per_step(lambda n: solve_map(problem, MapConfig(steps=n)), args.steps)
        for k in args.k:
            vi_ms = _ms_per_step(lambda n: solve_vi(problem, ViConfig(steps=n, mc_samples=k, samples=1), seed=0),
                                 args.steps)
            print(f"{name:22s} {k:3d} {map_ms:12.1f} {vi_ms:11.1f} {vi_ms / map_ms:7.2f} {0.5 * k:5.1f} "
                  f"{map_ms * FULL_RUN / 1e3:10.1f} {(map_ms + vi_ms) * FULL_RUN / 1e3:13.1f}")
        del G, problem, x, res


if __name__ == "__main__":
    main()
