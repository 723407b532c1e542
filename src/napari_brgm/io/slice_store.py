"""Finished slices of a volume run on disk, one atomic file each, so an interrupted run resumes.

Layout: `<folder>/run.json` (the request's parameters and their hash) and `<folder>/zNNNN.npz`
(the slice's outputs) with `zNNNN.json` (its settings) written after it: a slice is done when
both exist. A folder made for other parameters is refused, never mixed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from napari_brgm.io.atomic import write_atomically

KINDS = ("mean", "std", "lower", "upper", "consistent", "zero_filled")


def params_hash(params: dict) -> str:
    """A short stable hash of JSON-serialisable run parameters."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differing(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two recorded parameter sets (for a refusal that says what changed)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class SliceStore:
    """Per-slice outputs of one run (`params`) in `folder`."""

    def __init__(self, folder: str | Path, params: dict, overwrite: bool = False):
        self.folder = Path(folder)
        self.params = json.loads(json.dumps(params, default=str))
        self.hash = params_hash(self.params)
        run = self.folder / "run.json"
        if run.exists() and not overwrite:
            found = json.loads(run.read_text())
            if found.get("params_hash") != self.hash:
                changed = differing(found.get("params", {}), self.params)
                raise FileExistsError(f"{self.folder.parent} holds a run with other parameters ({', '.join(changed)}); "
                                      "use --overwrite to replace it or choose another --out")
        elif overwrite and self.folder.exists():
            for f in self.folder.glob("z*.*"):
                f.unlink()
        self._started = run.exists() and not overwrite

    def _start(self) -> None:
        """Record the parameters with the first slice (a request that fails before any slice leaves nothing)."""
        if not self._started:
            write_atomically(self.folder / "run.json", lambda tmp: Path(tmp).write_text(
                json.dumps({"params": self.params, "params_hash": self.hash}, indent=2)))
            self._started = True

    def _npz(self, k: int) -> Path:
        return self.folder / f"z{k:04d}.npz"

    def done(self) -> list[int]:
        """Slices with both their outputs and their settings on disk."""
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem[1:]) for p in self.folder.glob("z*.json") if self._npz(int(p.stem[1:])).exists())

    def save(self, k: int, result) -> None:
        """Write slice k's outputs (a `Result`), then its settings: the json marks it done."""
        self._start()
        arrays = {name: getattr(result, name) for name in KINDS if getattr(result, name) is not None}
        def write_npz(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        write_atomically(self._npz(k), write_npz)
        write_atomically(self.folder / f"z{k:04d}.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(result.settings, default=str)))

    def load(self, k: int) -> tuple[dict[str, np.ndarray], dict]:
        """Slice k's outputs by kind and its settings."""
        with np.load(self._npz(k)) as f:
            arrays = {name: f[name] for name in f.files}
        return arrays, json.loads((self.folder / f"z{k:04d}.json").read_text())
