"""Does bf16 change BRGM reconstructions? bf16 against fp32 MAP, next to fp32 against itself.

BRGM's MAP (Adam, lr 0.1, in W+) need not be a smooth function of its input: a perturbation of
the measurement by 1e-5 of the image range can land it in another local optimum. So the
difference between a bf16 and an fp32 reconstruction is printed beside the difference between
two fp32 reconstructions whose measurements differ by that invisible perturbation (two draws),
per image and as mean ± standard error. Two bf16 variants: as shipped (the first
`MapConfig.fp32_warmup` of the steps in fp32) and bf16 from the first step. ×4 SR, PSNR against
the truth, in model units:

- default: the built-in trained prior `brain-t1-64` on held-out slices of the ITK head;
- `--random-official R`: a random-weight generator at official widths (channel_base 16384,
  max 512) at R px, on images G(w) of truncated random latents (where bf16 is faster).

    python benchmarks/precision_bf16.py [--slices 12] [--random-official 64 --images 6 --steps 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from napari_brgm.engine.metrics import psnr  # noqa: E402
from napari_brgm.operators import make_operator  # noqa: E402
from napari_brgm.priors import load_generator  # noqa: E402
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig  # noqa: E402
from napari_brgm.solvers import MapConfig, Problem, solve_map  # noqa: E402

PERTURBATION = 1e-5  # of the image range: far below any measurement noise
VARIANTS = {  # name: (precision, perturbation draw or None, fp32 warm-up fraction or None for the default)
    "fp32": ("fp32", None, None),
    "fp32 + δ₁": ("fp32", 1, None),
    "fp32 + δ₂": ("fp32", 2, None),
    "bf16": ("bf16", None, None),
    "bf16 from step 1": ("bf16", None, 0.0),
}


def brain_truths(prior: str, slices: int):
    """(label, generator, truth [1, 1, R, R] in [-1, 1]) for held-out brain slices."""
    from brain_t1_data import HELD_OUT
    from eval_brain_prior import pick_slices

    from napari_brgm.priors import resolve_prior
    from napari_brgm.training.data import load_slices

    G = load_generator(resolve_prior(prior))
    data = load_slices([HELD_OUT], G.img_resolution)
    for i in sorted(set(pick_slices(data.images, slices))):
        yield f"slice {i}", G, data.images[i: i + 1].float()


def random_truths(resolution: int, images: int):
    """(label, generator, G(w)) for a random official-width generator and truncated random latents."""
    torch.manual_seed(0)
    cfg = GeneratorConfig(z_dim=512, w_dim=512, img_resolution=resolution, img_channels=1, channel_base=16384)
    G = Generator(cfg).eval().requires_grad_(False)
    for k in range(images):
        z = torch.randn(1, 512, generator=torch.Generator().manual_seed(k + 1))
        yield f"G(w_{k + 1})", G, G.synthesis(G.mapping(z, 0.7))


def psnr_of(G, x: torch.Tensor, steps: int) -> dict[str, float]:
    op = make_operator("superres", factor=4)
    y, span = op(x), float(x.max() - x.min())
    row = {}
    for name, (precision, draw, warmup) in VARIANTS.items():
        noise = 0 if draw is None else torch.randn(y.shape, generator=torch.Generator().manual_seed(draw))
        cfg = MapConfig(steps=steps) if warmup is None else MapConfig(steps=steps, fp32_warmup=warmup)
        G.precision = precision
        try:
            out = solve_map(Problem(G, op, y + PERTURBATION * span * noise), cfg)
        finally:
            G.precision = "fp32"
        row[name] = psnr(out.image[0, 0], x[0, 0], span)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="brain-t1-64", help="trained StyleGAN2 prior (default: the built-in brain-t1-64)")
    p.add_argument("--slices", type=int, default=12, help="held-out brain slices (default 12)")
    p.add_argument("--random-official", type=int, metavar="R", help="instead: a random official-width generator at R px")
    p.add_argument("--images", type=int, default=6, help="random-generator images (default 6)")
    p.add_argument("--steps", type=int, default=501, help="MAP steps (default 501, as BRGM)")
    args = p.parse_args(argv)
    truths = (random_truths(args.random_official, args.images) if args.random_official
              else brain_truths(args.prior, args.slices))
    names = list(VARIANTS)
    print(f"MAP ×4 SR, {args.steps} steps, fp32 warm-up {MapConfig.fp32_warmup:g} of the steps; PSNR dB and the "
          f"difference to fp32 (δ: {PERTURBATION:g} of the range added to the measurement)")
    print("| image | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    diffs = {name: [] for name in names[1:]}
    for label, G, x in truths:
        row = psnr_of(G, x, args.steps)
        cells = [f"{row['fp32']:.2f}"] + [f"{row[n]:.2f} ({row[n] - row['fp32']:+.2f})" for n in names[1:]]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        for name in diffs:
            diffs[name].append(row[name] - row["fp32"])
    print("\n| against fp32 | mean difference ± s.e. | mean |difference| | max |difference| |\n|---|---|---|---|")
    for name, d in diffs.items():
        d = np.asarray(d)
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        print(f"| {name} | {d.mean():+.3f} ± {se:.3f} | {np.abs(d).mean():.3f} | {np.abs(d).max():.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
