"""Entry point of the `napari-brgm` console script.

Every subcommand lives in its own module with `register(subparsers)`, which adds its parser and
sets `func`; modules import their heavy dependencies inside `run` so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from napari_brgm import __version__

SUBCOMMANDS = ("info", "reconstruct", "batch", "calibrate", "train", "convert", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-brgm",
        description="Reconstruct medical images (super-resolution, inpainting) with generative priors.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"napari_brgm.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
