"""VI posterior families on in-prior half-mask inpainting: does the std know what is missing?

Target: an image the generator itself produced (w = mapping(z), ψ 0.7), right half missing,
σ_y = 0.05 in model units, MAP warm start then VI (as the engine runs it). Prints, per generator
and family, M9 = median std(missing) / median std(observed), the ratio of mean stds, and
coverage of mean ± m_S·std over the missing and observed pixels (the truth is known here).

    python benchmarks/vi_posteriors.py [--steps 200] [--generators builtin,untrained,narrow,tiny]
                                       [--posteriors laplace,laplace:generator,meanfield,...]

A posterior is a family of `solvers.vi.POSTERIORS`, optionally with its predictive after a colon
(`solvers.laplace.PREDICTIVES`; default: the family's own, linear for laplace).
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_brgm.engine.calibration import gaussian_multiplier
from napari_brgm.operators import make_operator
from napari_brgm.priors import builtin_priors, load_generator
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig
from napari_brgm.solvers import MapConfig, Problem, ViConfig, solve_map, solve_vi
from napari_brgm.solvers.vi import POSTERIORS


def generators(names: list[str]):
    for name in names:
        if name == "builtin":
            yield name, load_generator(builtin_priors()["brain-t1-64"])
        elif name == "untrained":  # official widths, 64 px, gray, default (ADA) initialisation: noise strengths 0
            torch.manual_seed(0)
            G = Generator(GeneratorConfig(z_dim=512, w_dim=512, img_resolution=64, img_channels=1,
                                          channel_base=16384))
            yield name, G.eval().requires_grad_(False)
        elif name == "narrow":  # the test's untrained generator (tests/solvers/test_laplace.py)
            torch.manual_seed(0)
            G = Generator(GeneratorConfig(z_dim=128, w_dim=128, img_resolution=64, img_channels=1, channel_base=2048,
                                          channel_max=64))
            yield name, G.eval().requires_grad_(False)
        elif name == "tiny":
            yield name, load_generator("../shared/fixtures/stylegan2-ada-tiny/network-snapshot.pkl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--sigma-y", type=float, default=0.05)
    ap.add_argument("--generators", default="builtin,untrained")
    ap.add_argument("--posteriors", default=",".join(POSTERIORS) + ",laplace:generator")
    ap.add_argument("--seeds", type=int, default=2, help="targets per generator")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| generator | target | posterior | M9 | mean ratio | cov. missing | cov. observed | VI s |")
    print("|---|---|---|---|---|---|---|---|")
    m = gaussian_multiplier(0.9, args.samples)
    for gname, G in generators(args.generators.split(",")):
        G.requires_grad_(False)
        res = G.img_resolution
        mask = torch.zeros(res, res, dtype=torch.bool)
        mask[:, res // 2:] = True
        for t in range(args.seeds):
            z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(100 + t))
            with torch.no_grad():
                x = G.synthesis(G.mapping(z, truncation_psi=0.7))
            A = make_operator("inpaint", mask=mask, noise_sigma=args.sigma_y)
            problem = Problem(G, A, A.project_measurement(A(x)))
            map_out = solve_map(problem, MapConfig(steps=args.steps))
            for post in args.posteriors.split(","):
                family, _, predictive = post.partition(":")
                started = time.perf_counter()
                out = solve_vi(problem, ViConfig(steps=args.steps, samples=args.samples, sigma_y=args.sigma_y,
                                                 posterior=family, predictive=predictive or None), seed=0,
                               mu_init=map_out.ws)
                secs = time.perf_counter() - started
                mean, std = out.samples.mean(0)[0], out.samples.std(0)[0]
                inside = ((x[0, 0] - mean).abs() <= m * std)
                row = (gname, t, post, (std[mask].median() / std[~mask].median()).item(),
                       (std[mask].mean() / std[~mask].mean()).item(), inside[mask].float().mean().item(),
                       inside[~mask].float().mean().item(), secs)
                print("| {} | {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.0f} |".format(*row), flush=True)


if __name__ == "__main__":
    main()
