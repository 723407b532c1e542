"""napari layers in and out of a reconstruction: the input slice and mask, the result layers.

No Qt here: these functions read and write napari layer models only, so the widget stays a thin
form and this module can be tested without a window.

Naming and re-run rule: a result layer is named '<input> [z<k> | z<A>:<B>] <task> <method> <kind>' (z<A>:<B>
for a volume run over slices A..B-1, `widgets.volume`), plus the
interval state of an uncertainty layer (' (uncalibrated 90 %)') or the level of an interval layer
(' 90 %'), and carries ``metadata["brgm"]["key"]`` built from the same parts and
``metadata["brgm"]["name"]``, the name it was given. A run updates in place (data, placement,
metadata, name) the layers that have its key and kind and still bear the name they were given;
otherwise it adds new layers. Renaming a result layer therefore keeps it from being overwritten.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes
from napari.utils.transforms import CompositeAffine

TASK_LABELS = {"superres": "SR", "inpaint": "inpaint", "denoise": "denoise", "kspace": "k-space", "deblur": "deblur"}
MASK_GAP = 0.05  # the sampling-mask layer sits beside the input, this fraction of its width apart
METHOD_LABELS = {"map": "MAP", "vi": "VI", "csgm": "CSGM", "iagan": "IAGAN", "dip": "DIP", "reddiff": "RED-Diff",
                 "flow": "Flow"}
UNCERTAINTY_PERCENTILE = 99.5  # top of the uncertainty layer's contrast range (0 is the bottom)
PARTIAL = " (partial)"  # name suffix of the layers of a cancelled run


@dataclass
class Request:
    """One run: the 2-D slice (or the volume) and mask taken from the layers, where they came from, the engine options."""

    layer_name: str
    slice_index: int | None  # the displayed z index of a 3-D input, None for a 2-D input or a volume run
    image: np.ndarray  # [H, W]; a volume run: the whole [D, H, W] volume
    mask: np.ndarray | None  # [H, W] nonzero = missing (inpainting only); a volume run: [D, H, W] or [H, W]
    options: dict = field(default_factory=dict)  # reconstruct() keyword arguments except progress/should_stop
    interval_layers: bool = False  # add the lower and upper ends of the central interval as layers
    slices: list[int] | None = None  # a volume run (reconstruct_volume): the z slices A..B-1, else None
    spread: bool = False  # the method returns samples and an uncertainty map

    @property
    def factor(self) -> int:
        return int(self.options["factor"]) if self.options["task"] == "superres" else 1

    @property
    def label(self) -> str:
        """'<input> [z<k>] <task> <method>', the common start of the result layer names."""
        task = TASK_LABELS[self.options["task"]]
        if self.options["task"] == "superres":
            task += f"x{self.factor}"
        elif self.options["task"] == "kspace":
            task += f" R{float(self.options.get('acceleration', 4)):g}"
        where = f" z{self.slab}" if self.slices else "" if self.slice_index is None else f" z{self.slice_index}"
        return f"{self.layer_name}{where} {task} {self.method_label}"

    @property
    def slab(self) -> str | None:
        """A volume run's slices as 'A:B' (B excluded), else None."""
        return f"{self.slices[0]}:{self.slices[-1] + 1}" if self.slices else None

    @property
    def method_label(self) -> str:
        """MAP, VI, CSGM, IAGAN, IAGAN-VI, DIP, RED-Diff or Flow."""
        return METHOD_LABELS[self.options["method"]] + ("-VI" if self.options.get("iagan_vi") else "")

    @property
    def key(self) -> str:
        """Identifies the run for the re-run rule: same key, same layers."""
        return "|".join(map(str, (self.layer_name, self.slab or self.slice_index, self.options["task"], self.factor,
                                  self.options["method"] + ("+vi" if self.options.get("iagan_vi") else ""))))


def displayed_slice(layer: Image, viewer) -> int | None:
    """The z index of `layer` shown in `viewer` (None for 2-D layers); ValueError if no slice is shown."""
    if layer.ndim == 2:
        return None
    offset = viewer.dims.ndim - layer.ndim
    if viewer.dims.ndisplay != 2 or sorted(viewer.dims.displayed) != [offset + 1, offset + 2]:
        raise ValueError(f"show {layer.name!r} as 2-D slices along its first axis (2-D view, default axis order) "
                         "so that the displayed slice can be reconstructed")
    k = int(np.round(layer.world_to_data(viewer.dims.point)[0]))
    return int(np.clip(k, 0, layer.data.shape[0] - 1))


def check_input(layer: Layer | None) -> Image:
    """The layer if it can be reconstructed (a single-channel 2-D image or 3-D volume), else ValueError."""
    if layer is None:
        raise ValueError("choose an input image layer")
    if not isinstance(layer, Image):
        raise ValueError(f"{layer.name!r} is not an image layer")
    if layer.multiscale or layer.rgb or layer.ndim not in (2, 3):
        raise ValueError(f"{layer.name!r} must be a single-channel 2-D image or 3-D volume "
                         f"(got {'multiscale' if layer.multiscale else 'RGB' if layer.rgb else f'{layer.ndim}-D'})")
    return layer


def input_slice(layer: Layer | None, viewer) -> tuple[np.ndarray, int | None]:
    """The 2-D array to reconstruct from an image layer (the displayed slice of a volume) and its z index."""
    check_input(layer)
    k = displayed_slice(layer, viewer)
    data = layer.data if k is None else layer.data[k]
    return np.array(data, dtype=np.float32), k  # a copy: edits to the layer do not reach a run in flight


def mask_slice(mask_layer: Layer | None, image_layer: Image, k: int | None) -> np.ndarray:
    """The missing-region mask (nonzero = missing) for slice `k` of the image, from Labels or Shapes."""
    shape = image_layer.data.shape[-2:]
    if mask_layer is None:
        raise ValueError("inpainting needs a mask layer: press 'New mask' and paint the missing region")
    if isinstance(mask_layer, Labels):
        data = mask_layer.data
        if data.ndim == 3 and k is not None and data.shape == image_layer.data.shape:
            data = data[k]
        if data.shape != shape:
            raise ValueError(f"mask {mask_layer.name!r} has shape {data.shape}, but the image "
                             f"{image_layer.name!r} {'slice ' if k is not None else ''}has shape {shape}")
        check_mask_grid(mask_layer, image_layer)
        return np.asarray(data) != 0
    if isinstance(mask_layer, Shapes):
        return _shapes_mask(mask_layer, image_layer, k, shape)
    raise ValueError(f"mask {mask_layer.name!r} must be a Labels or Shapes layer")


def check_mask_grid(mask: Labels, image: Image, tolerance: float = 1e-3) -> None:
    """ValueError unless the Labels' pixels are the image's pixels in world coordinates (scale, translate, rotate,
    shear, affine): a mask painted on another layer's grid would hide other pixels than those painted.

    A 2-D mask of a volume (one mask for every slice) is compared in-plane; `tolerance` is in image pixels.
    """
    shape = np.asarray(mask.data.shape, dtype=float) - 1
    corners = [np.zeros(mask.ndim)] + [np.where(np.arange(mask.ndim) == axis, shape, 0.0) for axis in range(mask.ndim)]
    offset = image.ndim - mask.ndim  # 0, or 1 for a 2-D mask of a volume (napari aligns trailing axes)
    for corner in corners:
        world = np.asarray(mask.data_to_world(corner), dtype=float)
        expected = np.asarray(image.data_to_world(np.r_[np.zeros(offset), corner]), dtype=float)[offset:]
        scale = np.abs(np.asarray(image.scale, dtype=float)[offset:])
        if not np.all(np.abs(world - expected) <= tolerance * scale):
            raise ValueError(f"mask {mask.name!r} lies on another grid than the image {image.name!r} (its pixels "
                             "are elsewhere in the world: scale, translate or rotation differ): paint the mask "
                             f"made by 'New mask' for {image.name!r}")


def _shapes_mask(shapes: Shapes, image: Image, k: int | None, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise the shapes that lie on slice `k` onto the image's pixel grid (through world coordinates)."""
    polygons, kinds = [], []
    for vertices, kind in zip(shapes.data, shapes.shape_type, strict=True):
        pixels = np.array([image.world_to_data(shapes.data_to_world(v)) for v in vertices])
        if k is not None and vertices.shape[1] == 3 and not np.all(np.round(pixels[:, 0]) == k):
            continue
        polygons.append(pixels[:, -2:])
        kinds.append(kind)
    if not polygons:
        return np.zeros(shape, dtype=bool)
    return Shapes(polygons, shape_type=kinds).to_masks(mask_shape=shape).any(axis=0)


def new_mask_layer(image: Image) -> Labels:
    """An empty Labels layer on the image's pixel grid, ready to paint the missing region with label 1."""
    labels = Labels(np.zeros(image.data.shape, dtype=np.uint8), name=f"{image.name} mask", scale=image.scale,
                    translate=image.translate, rotate=image.rotate, shear=image.shear, affine=image.affine,
                    units=image.units, axis_labels=image.axis_labels, opacity=0.5)
    labels.selected_label = 1
    labels.brush_size = max(1, min(image.data.shape[-2:]) // 16)
    return labels


def placement(image: Image, k: int | None, factor: int, stack: bool = False) -> dict:
    """Layer geometry (scale … affine, units, axis labels) so that an output `factor`× finer overlays slice `k`.

    Output pixel j sits at input pixel (j - (factor-1)/2) / factor (pixel centres), so in the
    simple case scale = scale_in / factor and translate = translate_in - scale_in·(factor-1)/(2·factor).
    A 3-D input gives (1, H', W') outputs at the z of slice k. `stack` adds a leading samples axis.
    """
    offset = np.full(image.ndim, -(factor - 1) / (2 * factor))
    if k is not None:
        offset[0] = k
    data2physical = CompositeAffine(scale=image.scale, translate=image.translate, rotate=image.rotate,
                                    shear=image.shear, ndim=image.ndim)
    scale = np.array(image.scale, dtype=float)
    scale[-2:] /= factor
    out = {"scale": scale, "translate": np.asarray(data2physical(offset)), "rotate": np.asarray(image.rotate),
           "shear": _shear_matrix(image.shear, image.ndim), "affine": np.asarray(image.affine.affine_matrix),
           "units": tuple(image.units), "axis_labels": tuple(image.axis_labels)}
    if stack:
        out = {"scale": np.r_[1.0, out["scale"]], "translate": np.r_[0.0, out["translate"]],
               "rotate": _embed(out["rotate"]), "shear": _embed(out["shear"]), "affine": _embed(out["affine"]),
               # the sample axis takes the spatial unit: napari warns ("inconsistent units") whenever
               # layers disagree on a world axis, and a 2-D input's stack shares one with any volume
               "units": (out["units"][0], *out["units"]), "axis_labels": ("sample", *out["axis_labels"])}
    return out


def _shear_matrix(shear, ndim: int) -> np.ndarray:
    """napari's shear (upper-triangular values or a matrix) as a matrix."""
    shear = np.asarray(shear, dtype=float)
    if shear.ndim == 2:
        return shear
    matrix = np.eye(ndim)
    matrix[np.triu_indices(ndim, 1)] = shear
    return matrix


def _embed(matrix: np.ndarray) -> np.ndarray:
    """The same transform with one more leading (identity) axis."""
    out = np.eye(matrix.shape[0] + 1)
    out[1:, 1:] = matrix
    return out


def result_metadata(image: Image, request: Request, result, kind: str) -> dict:
    """The input's metadata (its geometry moved to the result grid) plus what produced the result."""
    meta = copy.deepcopy(dict(image.metadata))
    if "affine" in meta:
        meta.update(_result_geometry(np.asarray(meta["affine"], dtype=float), request, result.mean.shape))
    settings = result.settings
    meta["brgm"] = {
        "key": request.key, "kind": kind, "input": request.layer_name, "slice": request.slice_index,
        "task": settings.get("task"), "factor": request.factor, "prior": settings.get("prior"),
        "prior_path": settings.get("prior_path"), "method": settings.get("method"), "seed": settings.get("seed"),
        "partial": bool(result.partial), "interval": interval_record(result),
        "in_distribution": in_distribution_record(result), "settings": settings,
        "final_losses": {name: float(values[-1]) for name, values in result.losses.items() if len(values)},
    }
    return meta


def _result_geometry(affine: np.ndarray, request: Request, out_shape: tuple[int, int]) -> dict:
    """The reader's affine/shape/spacing for a (1, H', W') slice k, an (n, H', W') slab of a volume run
    starting at slice A, or an (H', W') image, `factor`× finer in-plane."""
    from napari_brgm.io.geometry import resampled_affine, slab_affine, spacing_from_affine

    first = request.slices[0] if request.slices else request.slice_index
    if first is not None:
        affine = slab_affine(affine, 0, request.slices or [first], request.factor)
    else:
        affine = resampled_affine(affine, request.factor, axes=(1, 2))
    depth = [len(request.slices)] if request.slices else [1] if first is not None else []
    shape = [*depth, *out_shape]
    return {"affine": affine.tolist(), "shape": shape, "spacing": list(spacing_from_affine(affine, len(shape)))}


def result_arrays(request: Request, result) -> dict[str, np.ndarray]:
    """The result images by layer kind, shaped to sit on the input (a leading 1 for a volume slice)."""
    lift = (lambda a: a[None]) if request.slice_index is not None else (lambda a: a)
    arrays = {"mean": lift(result.mean)}
    if result.std is not None:
        arrays["samples"] = result.samples[:, None] if request.slice_index is not None else result.samples
        arrays["uncertainty"] = lift(result.std)
    if request.interval_layers and result.lower is not None:
        arrays["lower"], arrays["upper"] = lift(result.lower), lift(result.upper)
    if result.consistent is not None:
        arrays["consistent"] = lift(result.consistent)
    if getattr(result, "zero_filled", None) is not None:
        arrays["zero-filled"] = lift(result.zero_filled)
    return arrays


def interval_record(result) -> dict | None:
    """`settings["interval"]` of a run with an interval, else None.

    A point estimate (no samples) records only the requested level and why there is no interval
    (``reason``): no multiplier, not calibrated, so None here too.
    """
    return settings_interval(result.settings)


def settings_interval(settings: dict) -> dict | None:
    """`interval_record` from a run's (or a volume slice's) settings."""
    interval = settings.get("interval")
    if not isinstance(interval, dict) or not (interval.get("calibrated") or "multiplier" in interval):
        return None
    return interval


def in_distribution_record(result) -> dict | None:
    """`settings["in_distribution"]` of a run (a copy): the out-of-distribution flag, None if the engine gave none."""
    record = result.settings.get("in_distribution")
    return dict(record) if isinstance(record, dict) else None


def ood_warning(label: str, record: dict | None, partial: bool = False) -> str | None:
    """The one-line warning for a run (or a pre-run score) the engine flagged out of distribution (``ok`` False).

    ``ok`` None (Deep Image Prior: no trained prior to be out of; no reference) and True give no warning.
    """
    from napari_brgm.engine.ood import warning_text

    text = warning_text(record)
    if text is None:
        return None
    cancelled = "; the run was cancelled, and an unfinished fit misfits too" if partial else ""
    return (f"{label}: {text}{cancelled}: the reconstruction and its uncertainty may be confident nonsense; "
            "Deep Image Prior needs no trained prior")


def screen_request(request: Request) -> dict:
    """The pre-run out-of-distribution record of a request (`engine.ood.screen`; 20-120 ms, the first call more)."""
    from napari_brgm.engine.ood import screen

    o = request.options
    return screen(request.image, o.get("prior"), method=o["method"], task=o["task"], factor=o.get("factor", 1),
                  mask=request.mask, window=o.get("window"), fit=o.get("fit", "auto"), sigma_y=o.get("sigma_y"))


def percent(level: float) -> str:
    """An interval level as shown: 0.9 → '90 %'."""
    return f"{round(100 * level, 1):g} %"


def result_name(request: Request, kind: str, result) -> str:
    """A result layer's name: '<label> <kind>' and the interval's state or level, ' (partial)' if cancelled.

    'img SRx4 VI uncertainty (uncalibrated 90 %)', 'img SRx4 VI lower 90 %', 'img SRx4 MAP mean'.
    """
    return layer_name(request, kind, interval_record(result), result.partial)


def layer_name(request: Request, kind: str, interval: dict | None, partial: bool, state: str | None = None) -> str:
    """`result_name` from the parts; `state` replaces 'calibrated'/'uncalibrated' (a volume whose slices differ)."""
    name = f"{request.label} {kind}"
    if interval and kind == "uncertainty":
        state = state or ("calibrated" if interval["calibrated"] else "uncalibrated")
        name += f" ({state} {percent(interval['level'])})"
    elif interval and kind in ("lower", "upper"):
        name += f" {percent(interval['level'])}"
    return name + (PARTIAL if partial else "")


def interval_summary(interval: dict) -> str:
    """One line on how a run's interval was made: its level, and the calibration file and match, or the fallback."""
    level = percent(interval["level"])
    if interval["calibrated"]:
        match = "exact match" if interval["match"] == "exact" else interval["match"]
        from napari_brgm.engine.uncertainty import strata_text

        return f"{level} interval calibrated with {Path(interval['calibration']).name} ({match}{strata_text(interval)})"
    return f"{level} interval uncalibrated ({interval['reason']}): mean ± {interval['multiplier']:.2f}·std"


def find_result_layer(layers, request: Request, kind: str) -> Layer | None:
    """The layer a run of this request updates, if any: same key and kind, still the name it was given."""
    for layer in layers:
        brgm = layer.metadata.get("brgm", {})
        if brgm.get("key") == request.key and brgm.get("kind") == kind and layer.name == brgm.get("name"):
            return layer
    return None


def show_results(viewer, image: Image, request: Request, result) -> list[Image]:
    """Add the result layers, or update those of an earlier run with the same key; return them."""
    shown = []
    for kind, data in result_arrays(request, result).items():
        geometry = placement(image, request.slice_index, request.factor, stack=kind == "samples")
        style = _style(image, kind, data)
        metadata = result_metadata(image, request, result, kind)
        name = result_name(request, kind, result)
        layer = find_result_layer(viewer.layers, request, kind)
        if layer is None or layer.data.ndim != data.ndim:
            layer = viewer.add_image(data, name=name, metadata=metadata, **geometry, **style)
        else:
            layer.data = data
            for attr, value in {**geometry, **style, "metadata": metadata, "name": name}.items():
                setattr(layer, attr, value)
        _remember_name(layer)
        shown.append(layer)
    return shown


def uncertainty_top(data: np.ndarray) -> float:
    """Top of an uncertainty layer's contrast range: its 99.5th percentile, unfinished (NaN) pixels left out; 1 if none."""
    finite = np.asarray(data)[np.isfinite(data)]
    top = float(np.percentile(finite, UNCERTAINTY_PERCENTILE)) if finite.size else 0.0
    return top if top > 0 else 1.0


def _remember_name(layer: Layer) -> None:
    """Record the name the layer got (napari may have made it unique): the re-run rule looks for it."""
    layer.metadata["brgm"]["name"] = layer.name


def show_sampling_mask(viewer, image: Image, request: Request, sampled: np.ndarray) -> Image:
    """The k-space sampling mask (1 = sampled, DC at the centre) as '<label> sampling mask', beside the input.

    k-space has no place in the patient: the layer spans the input's extent, moved right of it, so the two can be
    looked at together; the mask is at the model's k-space grid (the prior's resolution).
    """
    data = np.asarray(sampled, np.float32)
    data = data[None] if request.slice_index is not None else data
    geometry = placement(image, request.slice_index, 1)
    h, w = image.data.shape[-2:]
    geometry["scale"] = np.array(geometry["scale"], float)
    geometry["scale"][-2:] *= (h / data.shape[-2], w / data.shape[-1])
    geometry["translate"] = np.array(geometry["translate"], float)
    geometry["translate"][-1] += (1 + MASK_GAP) * w * float(image.scale[-1])
    metadata = {"brgm": {"key": request.key, "kind": "sampling mask", "input": request.layer_name,
                         "slice": request.slice_index, "task": "kspace",
                         "lines": int(np.asarray(sampled).any(axis=0).sum())}}
    layer = find_result_layer(viewer.layers, request, "sampling mask")
    if layer is not None:
        viewer.layers.remove(layer)
    layer = viewer.add_image(data, name=f"{request.label} sampling mask", colormap="gray", contrast_limits=(0, 1),
                             metadata=metadata, **geometry)
    _remember_name(layer)
    return layer


def update_preview(viewer, image: Image, request: Request, preview: np.ndarray, k: int | None = None) -> Image:
    """Show the live estimate in '<label> preview' (created on the first call, updated afterwards).

    It sits at slice `k` of a volume (default: the request's slice); a volume run moves it to the slice in flight.
    """
    k = request.slice_index if k is None else k
    data = preview[None] if k is not None else preview
    layer = find_result_layer(viewer.layers, request, "preview")
    if layer is not None and layer.data.shape == data.shape:
        layer.data = data
        if layer.metadata["brgm"].get("slice") != k:
            layer.translate = placement(image, k, request.factor)["translate"]
            layer.metadata["brgm"]["slice"] = k
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    layer = viewer.add_image(data, name=f"{request.label} preview", blending="translucent",
                             metadata={"brgm": {"key": request.key, "kind": "preview", "input": request.layer_name,
                                                "slice": k}},
                             **placement(image, k, request.factor), **_style(image, "preview", data))
    _remember_name(layer)
    return layer


def remove_preview(viewer, request: Request) -> None:
    """Drop the live-estimate layer once the run has ended (its result layers supersede it)."""
    layer = find_result_layer(viewer.layers, request, "preview")
    if layer is not None:
        viewer.layers.remove(layer)


def _style(image: Image, kind: str, data: np.ndarray) -> dict:
    """Images (interval ends too) in the input's colormap and window; uncertainty in 'inferno' from 0 up."""
    if kind == "uncertainty":
        return {"colormap": "inferno", "contrast_limits": (0.0, uncertainty_top(data))}
    return {"colormap": image.colormap, "contrast_limits": tuple(image.contrast_limits)}
