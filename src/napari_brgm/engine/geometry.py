"""How an input slice of any size meets a prior of fixed square resolution R, and the way back.

Policy (see docs/operators.md, "Geometry"):

* Inpainting / denoising (factor 1): the model works on an R×R image. An input of at most R on
  both sides is centre-padded to R×R; a larger one is resized down (area average, aspect ratio
  kept) to fit, then padded. Results are cropped (and resized back, bicubic) to H×W.
* Super-resolution by f: the input is the measurement y; the model image is R×R and its
  measurement R/f × R/f (R must be divisible by f). An input of at most R/f on both sides is
  centre-padded to R/f; a larger one is resized down to fit. Results are the f×-scaled region,
  cropped (and resized back) to exactly f·H × f·W.

Padded pixels replicate the edge (a smooth start for solvers) and are always MISSING: they enter
`padding_mask` / `model_mask` so that they never act as data. Inputs more than MAX_OVERSIZE times
the model-domain size on a side are refused. Every map here is linear in the intensities, so it
commutes with `IntensityMap`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_brgm.operators.superres import MAX_FACTOR, MIN_FACTOR, check_factor

MAX_OVERSIZE = 4  # refuse inputs more than this many times the model-domain size on a side
FIT_MODES = ("auto", "pad", "resize")


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


def _as_tensor(a) -> torch.Tensor:
    """numpy or torch → a floating torch tensor (float dtypes kept, integers → float32)."""
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t if t.is_floating_point() else t.float()


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] exact area resampling along one axis: fractional overlaps, rows sum to 1.

    Output pixel i covers [i·s, (i+1)·s) in input pixel units (s = n_in / n_out), so pixel centres
    stay aligned to a small fraction of a pixel for any ratio (torch's adaptive pooling rounds the
    bins outwards and shifts them by up to half a pixel); an entry is zero exactly when the two
    pixels do not overlap, which makes "> 0" an any-overlap test for masks.
    """
    s = n_in / n_out
    start = np.arange(n_out)[:, None] * s
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(start + s, j + 1) - np.maximum(start, j), 0, None)
    return overlap / s


def _resize(t: torch.Tensor, hw: tuple[int, int], kind: str) -> torch.Tensor:
    """Resize [B, 1, h, w] to hw.

    kind="image" (going into the model): exact area average when no side grows, else bicubic.
    kind="result" (coming back): antialiased bicubic when no side grows, else bicubic.
    kind="mask": exact area in every direction, so that > 0 means "overlaps a marked pixel".
    """
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    shrinking = hw[0] <= t.shape[-2] and hw[1] <= t.shape[-1]
    if kind == "mask" or (kind == "image" and shrinking):
        a_h, a_w = (torch.from_numpy(area_matrix(n, m)).to(t) for n, m in zip(t.shape[-2:], hw))
        return a_h @ t @ a_w.T
    return F.interpolate(t, size=hw, mode="bicubic", antialias=shrinking, align_corners=False)


@dataclass(frozen=True)
class FitPlan:
    """Where an H×W input sits in the model domain; build it with `plan_fit`.

    Shapes: the model image is `model_hw` = R×R; the measurement in the model domain is
    `measurement_hw` (R×R for factor 1, R/f × R/f for super-resolution); the input, after an
    optional resize to `fitted_hw`, sits in the measurement at `offset` (top, left); results map
    back to `output_hw` = f·H × f·W.
    """

    input_hw: tuple[int, int]
    resolution: int
    factor: int
    mode: str  # the requested mode: "auto", "pad" or "resize"
    fitted_hw: tuple[int, int]
    offset: tuple[int, int]

    @property
    def model_hw(self) -> tuple[int, int]:
        return self.resolution, self.resolution

    @property
    def measurement_hw(self) -> tuple[int, int]:
        side = self.resolution // self.factor
        return side, side

    @property
    def output_hw(self) -> tuple[int, int]:
        return self.factor * self.input_hw[0], self.factor * self.input_hw[1]

    @property
    def resized(self) -> bool:
        return self.fitted_hw != self.input_hw

    @property
    def scale(self) -> float:
        """fitted / input size along the longer side (1.0 when no resize happens)."""
        return max(self.fitted_hw) / max(self.input_hw)

    @property
    def padded(self) -> bool:
        return self.fitted_hw != self.measurement_hw

    @property
    def padding_mask(self) -> np.ndarray:
        """bool [measurement_hw], True = padded pixel (MISSING, never data)."""
        mask = np.ones(self.measurement_hw, dtype=bool)
        (top, left), (h, w) = self.offset, self.fitted_hw
        mask[top : top + h, left : left + w] = False
        return mask

    @property
    def notes(self) -> tuple[str, ...]:
        """Human-readable remarks for the log / the GUI (empty when the input fits as is)."""
        target = "x".join(map(str, self.measurement_hw))
        what = "measurement" if self.factor > 1 else "image"
        out = []
        if self.resized:
            h, w = self.input_hw
            fh, fw = self.fitted_hw
            verb = "reduced" if self.scale < 1 else "enlarged"
            loss = "; detail is lost" if self.scale < 1 else ""
            out.append(
                f"input {h}x{w} {verb} to {fh}x{fw} (scale {self.scale:.3g}) to fit the prior's "
                f"{target} {what}{loss}; the result is resized back"
            )
        if self.padded:
            n = int(self.padding_mask.sum())
            out.append(f"{what} padded to {target}; the {n} padded pixels are treated as missing")
        return tuple(out)

    def measurement_padding(self) -> np.ndarray | None:
        """`padding_mask` when something is padded, else None (then no measurement mask is needed)."""
        return self.padding_mask if self.padded else None

    def describe(self) -> dict:
        """The plan as plain, JSON-ready values, for recording a run."""
        return {
            "input_hw": list(self.input_hw),
            "resolution": self.resolution,
            "factor": self.factor,
            "mode": self.mode,
            "fitted_hw": list(self.fitted_hw),
            "offset": list(self.offset),
            "measurement_hw": list(self.measurement_hw),
            "output_hw": list(self.output_hw),
            "resized": self.resized,
            "scale": self.scale,
            "padded": self.padded,
            "notes": list(self.notes),
        }

    def _check_input(self, a, name: str) -> None:
        if tuple(np.shape(a)) != tuple(self.input_hw):
            raise ValueError(f"{name} must be 2-D with the planned shape {self.input_hw}, got {tuple(np.shape(a))}")

    def _place(self, t: torch.Tensor, kind: str, pad: str, value: float = 0.0) -> torch.Tensor:
        """[1, 1, H, W] → resized to fitted_hw → padded to measurement_hw."""
        t = _resize(t, self.fitted_hw, kind)
        (top, left), (h, w), (mh, mw) = self.offset, self.fitted_hw, self.measurement_hw
        padding = (left, mw - w - left, top, mh - h - top)
        if pad == "replicate":
            return F.pad(t, padding, mode="replicate")
        return F.pad(t, padding, value=value)

    def to_model(self, image) -> torch.Tensor:
        """Input image [H, W] (numpy or torch, any units) → measurement [measurement_hw] (torch).

        For factor 1 this is the R×R image to inpaint/denoise, for super-resolution the R/f × R/f
        measurement y. Floating dtypes are kept (integers become float32), torch devices too;
        padded pixels replicate the nearest edge pixel.
        """
        self._check_input(image, "image")
        return self._place(_as_tensor(image)[None, None], kind="image", pad="replicate")[0, 0]

    def model_mask(self, user_mask=None) -> np.ndarray:
        """Missing-mask in the measurement domain: bool [measurement_hw], True = MISSING.

        The union of `padding_mask` and the user's mask ([H, W], NONZERO = MISSING). After a
        resize, a model pixel is missing if any input pixel it overlaps is missing.
        """
        if user_mask is None:
            return self.padding_mask
        self._check_input(user_mask, "mask")
        missing = np.asarray(user_mask.detach().cpu() if isinstance(user_mask, torch.Tensor) else user_mask) != 0
        t = torch.from_numpy(missing.astype(np.float64))[None, None]
        placed = self._place(t, kind="mask", pad="constant", value=1.0)[0, 0].numpy()
        return (placed > 0) | self.padding_mask

    def from_model(self, model_output) -> np.ndarray:
        """Model image(s) [..., R, R] (numpy or torch) → numpy [..., f·H, f·W] in the input geometry.

        Leading dimensions (samples, channels) are kept: [R, R] gives [f·H, f·W], [S, R, R] gives
        [S, f·H, f·W]. Crops the region that holds the input and, if the input was resized,
        resizes it back (bicubic).
        """
        t = _as_tensor(model_output.detach() if isinstance(model_output, torch.Tensor) else np.asarray(model_output))
        if t.ndim < 2 or tuple(t.shape[-2:]) != self.model_hw:
            raise ValueError(f"model output must be [..., {self.resolution}, {self.resolution}], got {tuple(t.shape)}")
        f = self.factor
        (top, left), (h, w) = self.offset, self.fitted_hw
        crop = t[..., top * f : (top + h) * f, left * f : (left + w) * f]
        lead = crop.shape[:-2]
        flat = crop.reshape(-1, 1, *crop.shape[-2:])
        out = _resize(flat, self.output_hw, kind="result")
        return out.reshape(*lead, *self.output_hw).cpu().numpy()


def plan_fit(input_hw: tuple[int, int], resolution: int, factor: int = 1, mode: str = "auto",
             model: str = "the prior's") -> FitPlan:
    """Plan how an input of size `input_hw` meets a prior of resolution R (see the module docstring).

    factor 1 = inpainting/denoising, 2–32 = super-resolution (R must be divisible by it).
    mode: "auto" pads inputs that fit and reduces larger ones; "pad" refuses inputs that do not
    fit; "resize" always scales the longer side to the model-domain size (enlarging small inputs
    too, which helps a prior trained on full-field images). Raises ValueError for invalid sizes,
    factors the prior does not allow, and inputs more than MAX_OVERSIZE× the model-domain size.
    `model` names the model-domain size's owner in those messages.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode must be one of {FIT_MODES}, got {mode!r}")
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"the prior's resolution must be a power of two >= 4, got {resolution!r}")
    resolution = int(resolution)
    factor = 1 if factor == 1 else check_factor(factor)
    if resolution % factor:
        allowed = [f for f in range(MIN_FACTOR, MAX_FACTOR + 1) if resolution % f == 0]
        raise ValueError(
            f"a {resolution}x{resolution} prior cannot super-resolve by {factor}: the factor must divide "
            f"{resolution}; allowed factors for this prior: {allowed}"
        )
    if len(input_hw) != 2 or any(int(s) != s or s < 1 for s in input_hw):
        raise ValueError(f"input size must be two positive integers (H, W), got {input_hw!r}")
    h, w = (int(s) for s in input_hw)
    target = resolution // factor
    what = f"measurement size {target}x{target} for x{factor}" if factor > 1 else f"resolution {target}x{target}"
    fits = h <= target and w <= target
    if max(h, w) > MAX_OVERSIZE * target:
        raise ValueError(
            f"input {h}x{w} is far larger than {model} {what} (at most {MAX_OVERSIZE * target} on a side): "
            "crop a region of interest" + (" or use a smaller factor" if factor > 1 else "")
        )
    if mode == "pad" and not fits:
        raise ValueError(f"input {h}x{w} does not fit {model} {what}; use fit mode 'auto' or 'resize'")
    if mode == "resize" or not fits:
        s = target / max(h, w)
        fitted = (min(target, max(1, _round(h * s))), min(target, max(1, _round(w * s))))
    else:
        fitted = (h, w)
    offset = ((target - fitted[0]) // 2, (target - fitted[1]) // 2)
    return FitPlan((h, w), resolution, factor, mode, fitted, offset)


def detail_lost(fit: dict | None) -> str | None:
    """The fit's note when the input was reduced to fit the prior (a recorded `FitPlan.describe()`), else None.

    Such a result has at most the prior's resolution: e.g. ×4 super-resolution of a 54×45 slice with a
    64 px prior works from a 16×13 measurement, and plain interpolation of the input can be sharper.
    """
    if not fit or not fit.get("resized") or fit.get("scale", 1) >= 1:
        return None
    return next((note for note in fit.get("notes", []) if "detail is lost" in note), None)
