"""Built-in priors: safetensors files shipped in `napari_brgm/priors/builtin/`, addressed by file stem."""

from __future__ import annotations

from pathlib import Path

from napari_brgm.priors.errors import CheckpointError

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


def builtin_priors() -> dict[str, Path]:
    """Name → path of every built-in prior (may be empty)."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.safetensors")) if p.is_file()}


def default_prior(kind: str) -> str | None:
    """The built-in prior used when none is given: the first name (sorted) of that kind, or None."""
    from napari_brgm.priors.modelfile import prior_kind

    return next((name for name, path in builtin_priors().items() if prior_kind(path) == kind), None)


def resolve_prior(name_or_path) -> Path:
    """The file of a built-in prior name or of an existing path; CheckpointError otherwise."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    builtins = builtin_priors()
    if isinstance(name_or_path, str) and name_or_path in builtins:
        return builtins[name_or_path]
    listed = ", ".join(builtins) or "none installed"
    if path.exists():
        raise CheckpointError(f"{path}: not a regular file")
    raise CheckpointError(f"{name_or_path}: no such file and no built-in prior of that name (built-in: {listed})")
