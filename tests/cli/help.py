"""A subcommand's --help text, rendered in a fresh interpreter to see whether it imports torch."""

from __future__ import annotations

import subprocess
import sys


def subcommand_help(name: str) -> tuple[bool, str]:
    """(whether building and formatting the parser imported torch, the help text) of `napari-brgm <name>`."""
    code = (f"import sys, argparse; from napari_brgm.cli import {name}; p = argparse.ArgumentParser(); "
            f"sub = p.add_subparsers(); {name}.register(sub); h = sub.choices['{name}'].format_help(); "
            "print('torch' in sys.modules); print(h)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, _, help_text = res.stdout.partition("\n")
    return first == "True", help_text
