"""Copy a trained diffusion or flow prior into the package's built-in folder, weights in float16.

    python tools/ship_prior.py runs/brain-t1-64-ddpm/brain-t1-64-ddpm.safetensors brain-t1-64-ddpm

Half precision halves the wheel; the script prints how far the float16 copy's outputs move from
the float32 original on fixed inputs, so the loss is measured, not assumed.
"""

from __future__ import annotations

import argparse
import sys

import torch

from napari_brgm.priors import load_prior, prior_kind
from napari_brgm.priors.builtin import BUILTIN_DIR


def _outputs(model, kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    r, c = model.img_resolution, model.img_channels
    x = torch.randn((4, c, r, r), generator=gen).clamp(-1, 1)
    with torch.no_grad():
        if kind == "diffusion":
            return model.eps(x, torch.tensor([10, 200, 500, 900]))
        return model.inverse(0.7 * torch.randn((4, model.z_dim), generator=gen))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="the trained prior (.safetensors)")
    p.add_argument("name", help="built-in name (file stem)")
    args = p.parse_args(argv)
    kind = prior_kind(args.source)
    model = load_prior(args.source)
    target = BUILTIN_DIR / f"{args.name}.safetensors"
    if kind == "diffusion":
        from napari_brgm.priors.diffusion import save_diffusion

        save_diffusion(model, target, dtype=torch.float16)
    elif kind == "flow":
        from napari_brgm.priors.glow import save_flow

        save_flow(model, target, dtype=torch.float16)
    else:
        print("StyleGAN2 priors ship in float32 (save_generator)", file=sys.stderr)
        return 2
    target.chmod(0o644)
    a, b = _outputs(model, kind), _outputs(load_prior(target), kind)
    print(f"{target} ({target.stat().st_size / 1e6:.1f} MB): float16 vs float32 outputs, max |diff| "
          f"{(a - b).abs().max():.2e}, rms {(a - b).square().mean().sqrt():.2e} (output rms {a.square().mean().sqrt():.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
