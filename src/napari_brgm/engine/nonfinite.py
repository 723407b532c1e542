"""Non-finite (NaN / ±inf) pixels in the input: how many, where, and what a run does with them.

A file may store NaN or inf (a float NIfTI with a failed fit, a masked export): the readers open
it so the user can see it, but a reconstruction needs finite measurements. With the common
option `nonfinite="refuse"` (the default) the run stops before any work with a message that
counts the pixels and says where they are; with `nonfinite="missing"` (inpainting only; CLI
`--nonfinite missing`) they join the missing-mask and are filled in like the painted region.
"""

from __future__ import annotations

import numpy as np

CHOICES = ("refuse", "missing")
_SHOWN = 8  # slice indices listed before "..."


def _ranges(indices) -> str:
    """'3-5, 9, 12-14' for sorted unique integers (at most `_SHOWN` runs)."""
    runs: list[list[int]] = []
    for k in indices:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:_SHOWN])
    return text + (", ..." if len(runs) > _SHOWN else "")


def describe(bad: np.ndarray, values: np.ndarray, axes: str = "yx", slice_axis: int | None = None) -> str:
    """'37 non-finite pixels (12 NaN, 25 +inf) in rows 10-14 and columns 3-40' (`bad`: the non-finite mask).

    For a volume (`axes` 'zyx'), also the slices along `slice_axis` that hold them and the bounding box.
    """
    count = int(bad.sum())
    picked = values[bad]
    kinds = [(int(np.isnan(picked).sum()), "NaN"), (int(np.isposinf(picked).sum()), "+inf"),
             (int(np.isneginf(picked).sum()), "-inf")]
    what = ", ".join(f"{n:,} {name}" for n, name in kinds if n)
    where = np.nonzero(bad)
    box = {a: (int(w.min()), int(w.max())) for a, w in zip(axes, where)}
    span = lambda a: f"{box[a][0]}" if box[a][0] == box[a][1] else f"{box[a][0]}-{box[a][1]}"  # noqa: E731
    unit = "voxels" if len(axes) == 3 else "pixels"
    text = f"{count:,} non-finite {unit} ({what}) of {bad.size:,}"
    if len(axes) == 2:
        return f"{text}, in rows {span('y')} and columns {span('x')}"
    axis = 0 if slice_axis is None else slice_axis
    slices = sorted({int(k) for k in where[axis]})
    return (f"{text}, in {len(slices)} slice{'s' if len(slices) > 1 else ''} along {axes[axis]} "
            f"({_ranges(slices)}); bounding box " + ", ".join(f"{a} {span(a)}" for a in axes))


def advice(task: str) -> str:
    if task == "inpaint":
        return "fix the data, or pass nonfinite='missing' (CLI --nonfinite missing) to inpaint them as missing"
    return "fix the data (with inpainting, nonfinite='missing' / --nonfinite missing treats them as missing)"


def check_choice(nonfinite: str, task: str) -> None:
    if nonfinite not in CHOICES:
        raise ValueError(f"nonfinite must be one of {CHOICES}, got {nonfinite!r}")
    if nonfinite == "missing" and task != "inpaint":
        raise ValueError(f"nonfinite='missing' marks inf/NaN pixels as missing for inpainting; task {task!r} "
                         "has no missing pixels (use nonfinite='refuse' and fix the data)")


def fill_value(image: np.ndarray, missing: np.ndarray) -> float:
    """What the missing non-finite pixels are set to: the median of the observed finite ones (never used as data)."""
    observed = image[~missing & np.isfinite(image)]
    return float(np.median(observed)) if observed.size else 0.0


def resolve(image: np.ndarray, missing: np.ndarray | None, nonfinite: str, task: str,
            what: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """(image with finite values, missing-mask) of a 2-D slice, or ValueError for non-finite pixels under "refuse".

    Under "missing" (inpainting) the non-finite pixels join `missing` and get the median of the
    observed pixels, so no NaN reaches the intensity map, the operator or the solver.
    """
    bad = ~np.isfinite(image)
    if not bad.any():
        return image, missing
    if nonfinite != "missing" or task != "inpaint":
        raise ValueError(f"the {what} has {describe(bad, image)}: reconstruction needs finite values; "
                         f"{advice(task)}")
    missing = bad if missing is None else (np.asarray(missing) != 0) | bad
    out = image.copy()
    out[bad] = fill_value(image, missing)
    return out, missing


def scan(stack: np.ndarray, chosen) -> dict[int, np.ndarray]:
    """{slice k: its non-finite mask} for the chosen slices of a [depth, H, W] stack that have any."""
    found = {}
    for k in chosen:
        plane = stack[k]
        if not np.isfinite(plane).all():
            found[int(k)] = ~np.isfinite(plane)
    return found


def describe_volume(stack: np.ndarray, found: dict[int, np.ndarray], axis: int) -> str:
    """The `describe` text for the non-finite voxels `found` by `scan` in volume axes ('zyx'), slices along `axis`."""
    names = "zyx"
    plane_names = [a for i, a in enumerate(names) if i != axis]
    count = sum(int(b.sum()) for b in found.values())
    picked = np.concatenate([stack[k][b] for k, b in found.items()])
    kinds = [(int(np.isnan(picked).sum()), "NaN"), (int(np.isposinf(picked).sum()), "+inf"),
             (int(np.isneginf(picked).sum()), "-inf")]
    rows = np.concatenate([np.nonzero(b)[0] for b in found.values()])
    cols = np.concatenate([np.nonzero(b)[1] for b in found.values()])
    slices = sorted(found)
    span = lambda lo, hi: f"{lo}" if lo == hi else f"{lo}-{hi}"  # noqa: E731
    box = {names[axis]: span(slices[0], slices[-1]), plane_names[0]: span(int(rows.min()), int(rows.max())),
           plane_names[1]: span(int(cols.min()), int(cols.max()))}
    what = ", ".join(f"{n:,} {name}" for n, name in kinds if n)
    return (f"{count:,} non-finite voxels ({what}) in {len(slices)} slice{'s' if len(slices) > 1 else ''} along "
            f"{names[axis]} ({_ranges(slices)}); bounding box " + ", ".join(f"{a} {box[a]}" for a in names))
