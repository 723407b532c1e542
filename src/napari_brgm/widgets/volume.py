"""Volume runs in napari: a slab of a 3-D image layer in, volume result layers out, filled slice by slice.

No Qt here (like `widgets.layers`). A volume run (Slices: all or a range A:B, along the layer's
first axis z) preallocates its result layers for the chosen slab, NaN everywhere: napari draws NaN
transparent, so the input shows through where no slice is finished yet. Each slice the engine
finishes is written into its plane on the GUI thread; at the end the layers are named and described
from the `VolumeResult`. Layers share the input's world coordinates: a slab A:B starts at slice A's
z, and super-resolution layers are `factor`× finer in-plane over the same field of view.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes

from napari_brgm.engine.volume import VolumeResult, parse_slices
from napari_brgm.widgets import layers as L

SLICE_MODES = (("displayed", "displayed"), ("all", "all"), ("range", "range"))  # (combo text, data)
OUTPUTS = {"mean": "mean", "uncertainty": "std", "lower": "lower", "upper": "upper", "consistent": "consistent",
           "zero-filled": "zero_filled"}


def chosen_slices(layer: Layer | None, mode: str, text: str = "") -> list[int] | None:
    """The z slices a run reconstructs: None for 'displayed' (or a 2-D input), else every slice or the range 'A:B'."""
    if not isinstance(layer, Image) or layer.ndim != 3 or mode == "displayed":
        return None
    depth = layer.data.shape[0]
    if mode == "all":
        return list(range(depth))
    if not text.strip():
        raise ValueError(f"Slices: enter a range A:B of {layer.name!r} (slices A to B-1 of 0..{depth - 1}), e.g. 0:4")
    try:
        return parse_slices(text, depth)
    except ValueError as err:
        raise ValueError(f"Slices {text.strip()!r} of {layer.name!r}: {err}") from None


def input_volume(layer: Layer | None) -> np.ndarray:
    """The whole volume as float32 (a copy: edits to the layer do not reach a run in flight)."""
    L.check_input(layer)
    return np.array(layer.data, dtype=np.float32)


def volume_mask(mask_layer: Layer | None, image: Image, slices: list[int]) -> np.ndarray:
    """The missing-region mask for a volume run: [D, H, W] (each slice its own) or [H, W] (every slice).

    A Labels layer of the volume's shape or of one slice's; Shapes are rasterised slice by slice.
    Another shape, or no missing pixel in the chosen slices, is a ValueError (before the run).
    """
    shape, plane = image.data.shape, image.data.shape[-2:]
    if mask_layer is None:
        raise ValueError("inpainting needs a mask layer: press 'New mask' and paint the missing region")
    if isinstance(mask_layer, Labels):
        if mask_layer.data.shape not in (shape, plane):
            raise ValueError(f"mask {mask_layer.name!r} has shape {mask_layer.data.shape}, but the volume "
                             f"{image.name!r} has shape {shape} (a mask for every slice: {plane})")
        L.check_mask_grid(mask_layer, image)
        mask = np.asarray(mask_layer.data) != 0
    elif isinstance(mask_layer, Shapes):
        mask = np.zeros(shape, dtype=bool)
        for k in slices:
            mask[k] = L._shapes_mask(mask_layer, image, k, plane)
    else:
        raise ValueError(f"mask {mask_layer.name!r} must be a Labels or Shapes layer")
    if not (mask[slices] if mask.ndim == 3 else mask).any():
        raise ValueError(f"mask {mask_layer.name!r} is empty in slices z{slices[0]}:{slices[-1] + 1}: "
                         "paint the missing region (nonzero = missing)")
    return mask


def kinds(request: L.Request) -> list[str]:
    """The result layers of a volume run, in order (no samples layer: memory grows with samples × slices)."""
    out = ["mean"]
    if request.spread:
        out.append("uncertainty")
    if request.interval_layers:
        out += ["lower", "upper"]
    if request.options["task"] in ("inpaint", "kspace"):
        out.append("consistent")
    if request.options["task"] == "kspace":
        out.append("zero-filled")
    return out


def reconstructed(result: VolumeResult) -> list[int]:
    """The finished slices that were reconstructed (not copied through)."""
    return [k for k in result.done if k not in result.copied and "copied" not in result.settings.get(k, {})]


def slice_intervals(result: VolumeResult) -> list[dict]:
    """The interval records of the reconstructed slices, in slice order."""
    records = [L.settings_interval(result.settings[k]) for k in reconstructed(result)]
    return [r for r in records if r is not None]


def interval_state(records: list[dict]) -> str | None:
    """'calibrated', 'uncalibrated', or 'calibrated 3/4' when only some slices matched a calibration record."""
    if not records:
        return None
    calibrated = sum(bool(r["calibrated"]) for r in records)
    if calibrated in (0, len(records)):
        return "calibrated" if calibrated else "uncalibrated"
    return f"calibrated {calibrated}/{len(records)}"


def interval_summary(records: list[dict]) -> str | None:
    """One line on the slices' intervals: `layers.interval_summary` when they agree, else what was calibrated where."""
    if not records:
        return None
    same = {(r["calibrated"], r.get("calibration"), r.get("match"), r.get("reason")) for r in records}
    if len(same) == 1:
        return L.interval_summary(records[0])
    level, n = L.percent(records[0]["level"]), len(records)
    calibrated = [r for r in records if r["calibrated"]]
    if not calibrated:
        return f"{level} interval uncalibrated in all {n} slices ({records[0]['reason']}, …): mean ± m_S·std"
    files = sorted({Path(r["calibration"]).name for r in calibrated})
    matches = Counter("exact match" if r["match"] == "exact" else str(r["match"]) for r in calibrated)
    detail = ", ".join(f"{m} in {c}" for m, c in matches.most_common())
    rest = f", uncalibrated in {n - len(calibrated)}" if len(calibrated) < n else ""
    return f"{level} interval calibrated with {', '.join(files)} in {len(calibrated)} of {n} slices ({detail}){rest}"


def flagged(result: VolumeResult) -> list[int]:
    """Reconstructed slices the engine judged out of distribution (``ok`` False)."""
    return [k for k in reconstructed(result)
            if (result.settings[k].get("in_distribution") or {}).get("ok") is False]


def volume_metadata(image: Image, request: L.Request, result: VolumeResult, kind: str) -> dict:
    """`layers.result_metadata` for a volume layer: the input's metadata (its geometry moved to the result grid)
    and a "brgm" record with the volume facts (axis, slices, done, partial, factor, copied) and per-slice records.

    Run-level fields (prior, method, seed, settings, interval) are those of the first reconstructed slice.
    """
    meta = copy.deepcopy(dict(image.metadata))
    if "affine" in meta:
        meta.update(L._result_geometry(np.asarray(meta["affine"], dtype=float), request, result.mean.shape[-2:]))
    done = reconstructed(result)
    first = result.settings[done[0]] if done else {}
    options = request.options
    bad = flagged(result)
    meta["brgm"] = {
        "key": request.key, "kind": kind, "input": request.layer_name, "slice": None, "axis": int(result.axis),
        "slices": list(result.slices), "done": list(result.done), "partial": bool(result.partial),
        "factor": request.factor, "copied": dict(result.copied),
        "task": first.get("task", options["task"]), "prior": first.get("prior", options.get("prior")),
        "prior_path": first.get("prior_path"), "method": first.get("method", options["method"]),
        "seed": first.get("seed", options.get("seed")),
        "interval": L.settings_interval(first),
        "in_distribution": copy.deepcopy((result.settings[bad[0]] if bad else first).get("in_distribution")),
        "out_of_distribution": bad, "settings": first,
        "slice_settings": {k: result.settings[k] for k in result.done},
        "final_losses": {k: {name: float(v[-1]) for name, v in result.losses.get(k, {}).items() if len(v)}
                         for k in result.done},
    }
    return meta


class VolumeLayers:
    """The result layers of one volume run: made (or taken over from an earlier run) at the start, NaN; filled
    slice by slice; finished from the `VolumeResult`, or dropped (earlier data put back) if no slice finished."""

    def __init__(self, viewer, image: Image, request: L.Request):
        self.viewer, self.image, self.request = viewer, image, request
        h, w = image.data.shape[-2:]
        shape = (len(request.slices), h * request.factor, w * request.factor)
        self.settings: dict[int, dict] = {}  # per finished slice, as the engine reported it
        self.top = 0.0  # the uncertainty's contrast top over the finished slices
        self.losses: dict[int, dict] = {}
        self.layers: dict[str, Image] = {}
        self.previous: dict[str, dict] = {}  # layers taken over from an earlier run: what to put back
        geometry = L.placement(image, request.slices[0], request.factor)
        for kind in kinds(request):
            data = np.full(shape, np.nan, np.float32)
            style = L._style(image, kind, data)
            metadata = {"brgm": {"key": request.key, "kind": kind, "input": request.layer_name, "axis": 0,
                                 "slices": list(request.slices), "done": [], "partial": True}}
            name = f"{request.label} {kind}"
            layer = L.find_result_layer(viewer.layers, request, kind)
            if layer is None or layer.data.ndim != 3:
                layer = viewer.add_image(data, name=name, metadata=metadata, **geometry, **style)
            else:
                self.previous[kind] = {"data": layer.data, "name": layer.name, "metadata": layer.metadata,
                                       "contrast_limits": tuple(layer.contrast_limits)}
                layer.data = data
                for attr, value in {**geometry, **style, "metadata": metadata, "name": name}.items():
                    setattr(layer, attr, value)
            L._remember_name(layer)
            self.layers[kind] = layer

    def fill(self, k: int, result) -> None:
        """Write finished slice k (a `Result`) into its plane of every layer (GUI thread only)."""
        i = self.request.slices.index(k)
        for kind, layer in self.layers.items():
            value = getattr(result, OUTPUTS[kind])
            if value is None:
                continue
            layer.data[i] = value
            if kind == "uncertainty" and "copied" not in result.settings:
                self.top = max(self.top, L.uncertainty_top(value))
                layer.contrast_limits_range = (0.0, self.top)
                layer.contrast_limits = (0.0, self.top)
            layer.refresh()
        self.settings[k], self.losses[k] = result.settings, result.losses

    def collected(self) -> VolumeResult:
        """What the finished slices gave, from the layers (a run that failed midway: partial)."""
        arrays = {OUTPUTS[kind]: np.asarray(layer.data) for kind, layer in self.layers.items()}
        return VolumeResult(mean=arrays["mean"], std=arrays.get("std"), lower=arrays.get("lower"),
                            upper=arrays.get("upper"), consistent=arrays.get("consistent"),
                            zero_filled=arrays.get("zero_filled"), samples=None, axis=0,
                            slices=list(self.request.slices), done=sorted(self.settings), partial=True,
                            factor=self.request.factor, settings=dict(self.settings), losses=dict(self.losses),
                            copied={k: s["copied"] for k, s in self.settings.items() if "copied" in s})

    def finish(self, result: VolumeResult) -> list[Image]:
        """Final data, names (interval state, ' (partial)') and metadata; the layers still in the viewer."""
        records = slice_intervals(result)
        interval, state = (records[0] if records else None), interval_state(records)
        shown = []
        for kind, layer in self.layers.items():
            if not self._alive(layer):
                continue  # removed by the user during the run
            value = getattr(result, OUTPUTS[kind])
            if value is not None and value.shape == layer.data.shape:
                layer.data = value
            if kind == "uncertainty":
                top = L.uncertainty_top(layer.data)
                layer.contrast_limits_range = (0.0, top)
                layer.contrast_limits = (0.0, top)
            layer.metadata = volume_metadata(self.image, self.request, result, kind)
            layer.name = L.layer_name(self.request, kind, interval, result.partial, state)
            L._remember_name(layer)
            shown.append(layer)
        return shown

    def drop(self) -> None:
        """No slice finished: remove the layers this run made and put back those it took over."""
        for kind, layer in self.layers.items():
            if not self._alive(layer):
                continue
            before = self.previous.get(kind)
            if before is None:
                self.viewer.layers.remove(layer)
                continue
            layer.data = before["data"]
            layer.contrast_limits = before["contrast_limits"]
            layer.metadata = before["metadata"]
            layer.name = before["name"]

    def _alive(self, layer: Layer) -> bool:
        return any(x.unique_id == layer.unique_id for x in self.viewer.layers)


def notification(request: L.Request, result: VolumeResult, names: list[str]) -> str:
    """After a volume run: the slice count (and copies), the calibration of the intervals; or what a cancel kept."""
    n = len(result.slices)
    if result.partial:
        return (f"{request.label} cancelled: {len(result.done)} of {n} slices finished, kept in: {', '.join(names)}; "
                "the other slices are empty (NaN)")
    copied = f" ({len(result.copied)} copied through: empty mask)" if result.copied else ""
    summary = interval_summary(slice_intervals(result))
    return f"{request.label} finished: {n} slices{copied}" + (f"; {summary}" if summary else "")
