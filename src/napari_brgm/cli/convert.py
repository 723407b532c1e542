"""`napari-brgm convert`: turn a StyleGAN2-ADA or TF StyleGAN2 network pickle into our safetensors format."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a StyleGAN2-ADA / TF StyleGAN2 network pickle to a napari-brgm .safetensors prior",
        description="Read a network pickle safely (no code from the file is run), check it, compute the "
                    "W statistics BRGM needs and write weights + config + statistics as one .safetensors file.",
    )
    p.add_argument("input", type=Path, metavar="IN", help="network pickle (.pkl) or .safetensors prior")
    p.add_argument("output", type=Path, metavar="OUT.safetensors", help="file to write")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    out: Path = args.output
    if out.suffix != ".safetensors":
        print(f"napari-brgm convert: {out}: the output name must end in .safetensors", file=sys.stderr)
        return 2
    if out.exists() and not args.force:
        print(f"napari-brgm convert: {out} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    if out.exists() and args.input.exists() and out.resolve() == args.input.resolve():
        print(f"napari-brgm convert: {out}: input and output are the same file", file=sys.stderr)
        return 2

    from napari_brgm.priors import CheckpointError, load_generator, save_generator

    try:
        g = load_generator(args.input)
        stats = g.w_stats
        save_generator(g, out)
    except CheckpointError as e:
        print(f"napari-brgm convert: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"napari-brgm convert: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    c = g.config
    n = c.num_parameters()
    print(f"{args.input} -> {out}: {c.img_resolution}x{c.img_resolution} px, {c.img_channels} channel(s), "
          f"z {c.z_dim}, w {c.w_dim}, {g.num_ws} ws, {n / 1e6:.2f} M parameters; W std {stats.std:.4f}")
    return 0
