"""Out-of-distribution score of an input slice against a prior, cheap enough to run before the reconstruction.

Score ("flow bits/dim - JPEG 2000 bits/dim"): the complexity-corrected likelihood of Serrà et al.
(ICLR 2020). A normalizing flow's exact bits/dim of the slice as the engine prepares it (intensity
map to model units, fit to the prior's size) minus the bits/dim a generic lossless coder (JPEG 2000,
reversible wavelet) needs for the same 8-bit image: a log-likelihood ratio between the prior's
flow and a generic image model, in bits per pixel. A flow alone ranks simple, smooth images as
likely whatever they show (Nalisnick et al., ICLR 2019); the ratio removes that. Higher = less
like the prior's images.

What the flow sees per task ("view"): the slice itself; for super-resolution ×f the measurement
nearest-upsampled ×f (bicubic upsampling puts brain slices far outside the flow's typical set:
docs/evaluation.md); for inpainting the slice with the missing pixels (user mask and padding) set
to the harmonic continuation of the observed ones, so values under the mask never count (a flow
has no exact marginal of the observed pixels; the fill is the same for the coder, whose cheapness
on the smooth fill mostly cancels); for denoising the noisy slice smoothed by non-local means at σ_y
(unsmoothed, the noise hides what the flow scores), judged against the calibration slices with the
nearest of `NOISE_LEVELS` added and smoothed alike. Each view has its own threshold: the 99th percentile of
the scores of the prior's calibration slices seen the same way, stored in `<prior>.ood.json`
beside the prior (tools/ood_reference.py for the built-in priors, `napari-brgm calibrate` for a
flow prior of your own). A flow prior scores itself; the built-in StyleGAN2 and diffusion priors
are scored by the built-in flow, trained on the same slices (the sidecar names the scorer).
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from napari_brgm.engine.calibration import missing_fraction_bin
from napari_brgm.engine.geometry import plan_fit
from napari_brgm.engine.intensity import IntensityMap

SCHEMA = 1
SUFFIX = ".ood.json"
SCORE_KIND = "flow bits/dim - JPEG 2000 bits/dim"
QUANTILE = 0.99  # the threshold: this quantile of the calibration slices' scores
BINS = 256  # 8-bit: the flow's dequantisation bins and the coder's grey levels over [-1, 1]
SEED = 0  # the fixed one-bin dequantisation noise
CHUNK = 64  # images per flow pass
NOISE_LEVELS = (0.02, 0.05, 0.1, 0.2)  # σ_y (model units) of the denoising views references are made for
NOISE_TOLERANCE = 1.5  # a run's σ_y uses the nearest level within this ratio, else it is not judged
NOT_JUDGED = "none: the method has no trained prior"


def reference_path(prior_path) -> Path:
    """Where a prior's OOD reference lives: `<prior stem>.ood.json` beside it."""
    p = Path(prior_path)
    return p.with_name(p.name.split(".")[0] + SUFFIX)


def view_name(task: str, factor: int = 1, missing_fraction: float = 0.0, sigma_y_model: float | None = None) -> str:
    """The reference a run is judged against: "image", "sr4", "inpaint 25-50%", "denoise 0.05", or "" (none)."""
    if task == "superres":
        return f"sr{int(factor)}"
    if task == "denoise":
        if sigma_y_model is None or not sigma_y_model > 0:
            return ""
        level = min(NOISE_LEVELS, key=lambda s: abs(math.log(s / sigma_y_model)))
        return f"denoise {level:g}" if abs(math.log(level / sigma_y_model)) <= math.log(NOISE_TOLERANCE) else ""
    if task == "inpaint" and missing_fraction > 0:
        return f"inpaint {missing_fraction_bin(missing_fraction)}"
    return "image"


def prepare(image, resolution: int, *, factor: int = 1, mask=None, window=None,
            fit: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(x [R, R] model units, unseen [R, R] bool): the slice as the engine fits it; unseen = masked or padded.

    Masked input pixels never reach x: they are zeroed before the fit and every model pixel that
    overlaps one is unseen. Super-resolution: the measurement nearest-upsampled ×factor.
    """
    image = np.asarray(image, np.float64)
    missing = None if mask is None else np.asarray(mask) != 0
    imap = IntensityMap.from_window(*window) if window else IntensityMap.from_percentiles(image, mask=missing)
    plan = plan_fit(image.shape, resolution, factor=factor, mode=fit)
    values = image if missing is None else np.where(missing, 0.0, image)
    x = plan.to_model(imap.to_model(values)).double().numpy()
    unseen = plan.model_mask(missing)
    if factor > 1:
        block = np.ones((factor, factor))
        x, unseen = np.kron(x, block), np.kron(unseen, block).astype(bool)
    return x, unseen


def seen(image, resolution: int, *, task: str = "inpaint", factor: int = 1, mask=None, window=None,
         fit: str = "auto", sigma_y: float | None = None) -> np.ndarray:
    """The [R, R] image the flow and the coder score: `prepare`d, unseen pixels filled (`harmonic_fill`); for
    denoising then smoothed by non-local means at the run's σ_y (input units; None: the engine's default)."""
    x = harmonic_fill(*prepare(image, resolution, factor=factor, mask=mask, window=window, fit=fit))
    if task != "denoise":
        return x
    from napari_brgm.solvers.classical import nlm_denoise

    return nlm_denoise(x, sigma_model(image, sigma_y, mask, window)).astype(np.float64)


def sigma_model(image, sigma_y: float | None, mask=None, window=None) -> float:
    """σ_y in model units, as the engine maps it (the default when None)."""
    from napari_brgm.engine.reconstruction import DEFAULT_SIGMA_Y

    if sigma_y is None:
        return DEFAULT_SIGMA_Y
    missing = None if mask is None else np.asarray(mask) != 0
    imap = IntensityMap.from_window(*window) if window else IntensityMap.from_percentiles(image, mask=missing)
    return float(imap.scale_sigma(sigma_y))


def harmonic_fill(x: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """x with the unseen pixels replaced by the harmonic continuation of the others (discrete Laplace, 4-neighbours)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    unseen = np.asarray(unseen, bool)
    if not unseen.any():
        return np.asarray(x, np.float64)
    if unseen.all():
        raise ValueError("every pixel is unseen: nothing to score")
    h, w = x.shape
    index = np.full(x.shape, -1)
    index[unseen] = np.arange(int(unseen.sum()))
    rows, cols, rhs = [], [], np.zeros(int(unseen.sum()))
    degree = np.zeros(x.shape)
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        src = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
        dst = (slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx)))
        degree[src] += 1
        here, there = index[src], index[dst]
        pair = unseen[src] & unseen[dst]
        rows.append(here[pair])
        cols.append(there[pair])
        known = unseen[src] & ~unseen[dst]
        np.add.at(rhs, here[known], x[dst][known])
    r = np.concatenate([index[unseen], *rows])
    c = np.concatenate([index[unseen], *cols])
    v = np.concatenate([degree[unseen], -np.ones(sum(len(a) for a in rows))])
    n = int(unseen.sum())
    out = np.array(x, np.float64)
    out[unseen] = spsolve(coo_matrix((v, (r, c)), shape=(n, n)).tocsc(), rhs)
    return out


def _grey(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round((np.asarray(x) + 1) / 2 * (BINS - 1)), 0, BINS - 1).astype(np.uint8)


def coder_bits_per_dim(x: np.ndarray) -> float:
    """Bits per pixel of the lossless JPEG 2000 code stream (Pillow/OpenJPEG) of x's 8-bit image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_grey(x)).save(buffer, format="JPEG2000", irreversible=False, no_jp2=True)
    return 8 * len(buffer.getvalue()) / x.size


@contextmanager
def _one_thread():
    """Torch on one thread meanwhile: a 64-px flow pass gains nothing from more, and on a busy 2-core machine
    OpenMP oversubscription made it 50x slower (3 s instead of 20-60 ms, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def flow_bits_per_dim(flow, images: np.ndarray, seed: int = SEED) -> np.ndarray:
    """Exact bits/dim [N] of images [N, R, R] (model units) under the flow, with one fixed dequantisation noise."""
    with _one_thread():
        return _flow_bits_per_dim(flow, images, seed)


def _flow_bits_per_dim(flow, images: np.ndarray, seed: int) -> np.ndarray:
    from napari_brgm.priors.glow import bits_per_dim

    device = next(flow.parameters()).device
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)[:, None]
    x = x.expand(-1, flow.img_channels, -1, -1)
    noise = (torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(seed)) - 0.5) * (2 / BINS)
    x = x + noise  # the same noise for every image: a slice's score does not depend on its batch
    return torch.cat([bits_per_dim(flow, x[i: i + CHUNK].to(device), bins=BINS).double().cpu()
                      for i in range(0, len(x), CHUNK)]).numpy()


def scores(flow, images: np.ndarray) -> dict[str, np.ndarray]:
    """{"score", "flow_bpd", "coder_bpd"} [N] of filled images [N, R, R] in model units."""
    images = np.asarray(images, np.float64)
    flow_bpd = flow_bits_per_dim(flow, images)
    coder = np.array([coder_bits_per_dim(x) for x in images])
    return {"score": flow_bpd - coder, "flow_bpd": flow_bpd, "coder_bpd": coder}


def view_images(slices: np.ndarray, view: str, seed: int = SEED) -> list[dict]:
    """`seen` keyword arguments simulating `view` on clean slices [N, R, R] (model units), for references."""
    from napari_brgm.engine.calibrate import MASK_SHAPES, box_downsample, simulation_mask

    out = []
    for i, x in enumerate(np.asarray(slices, np.float64)):
        if view == "image":
            out.append({"image": x})
        elif view.startswith("sr"):
            f = int(view[2:])
            out.append({"image": box_downsample(x, f), "task": "superres", "factor": f})
        elif view.startswith("inpaint "):
            for kind in MASK_SHAPES[view.split(" ", 1)[1]]:
                m = simulation_mask(x.shape, kind)
                out.append({"image": np.where(m, 0.0, x), "mask": m})
        elif view.startswith("denoise "):
            sigma = float(view.split(" ", 1)[1])
            noisy = x + sigma * np.random.default_rng(seed + i).standard_normal(x.shape)
            out.append({"image": noisy, "task": "denoise", "sigma_y": sigma})
        else:
            raise ValueError(f"unknown OOD view {view!r}")
    return out


def reference_scores(flow, slices: np.ndarray, view: str) -> np.ndarray:
    """Scores of calibration slices [N, R, R] (model units, clean, the prior's size) seen as `view`."""
    images = [seen(resolution=flow.img_resolution, **kw) for kw in view_images(slices, view)]
    return scores(flow, np.stack(images))["score"]


def threshold_of(values) -> float:
    """The `QUANTILE` of a view's calibration scores (the largest when there are fewer than 100)."""
    return float(np.quantile(np.asarray(values, np.float64), QUANTILE, method="higher"))


def make_reference(prior_path, scorer_path, views: dict[str, np.ndarray], *, scorer_name: str | None = None,
                   data_kind: str = "real-heldout", sources=()) -> dict:
    """The `<prior>.ood.json` content: per view the threshold and a summary of the calibration scores."""
    from napari_brgm import __version__
    from napari_brgm.engine.uncertainty import file_sha256

    same = Path(scorer_path).resolve() == Path(prior_path).resolve()
    return {"schema": SCHEMA, "prior_sha256": file_sha256(prior_path), "score_kind": SCORE_KIND,
            "quantile": QUANTILE, "scorer": {"name": "self" if same else (scorer_name or Path(scorer_path).name),
                                             "sha256": file_sha256(scorer_path)},
            "data_kind": data_kind, "sources": list(sources), "created": datetime.date.today().isoformat(),
            "version": __version__,
            "views": {v: {"threshold": threshold_of(s), "n": len(s), "median": float(np.median(s)),
                          "max": float(np.max(s))} for v, s in views.items()}}


def save_reference(path, reference: dict, merge: bool = True) -> None:
    """Write a reference (atomically), keeping the views of an existing file for the same prior and scorer."""
    path = Path(path)
    if merge and path.is_file():
        old = load_reference(path)
        if old.get("prior_sha256") == reference["prior_sha256"] and old.get("scorer") == reference["scorer"]:
            reference = {**reference, "views": {**old.get("views", {}), **reference["views"]}}
    text = json.dumps(reference, indent=1, allow_nan=False, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the reference is shared like the prior
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_reference(path) -> dict:
    """Read a reference (plain JSON); ValueError for another schema."""
    d = json.loads(Path(path).read_text())
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise ValueError(f"{path}: OOD reference schema {d.get('schema') if isinstance(d, dict) else d!r}, "
                         f"this version reads schema {SCHEMA}")
    return d


def scorer_of(prior_path, kind: str, reference: dict | None) -> Path | None:
    """The flow that scores a prior: itself for a flow, else the built-in flow its reference names."""
    from napari_brgm.priors import builtin_priors

    if kind == "flow":
        return Path(prior_path)
    name = (reference or {}).get("scorer", {}).get("name")
    return builtin_priors().get(name) if name else None


def _load_flow(path: Path):
    """The flow, from the engine's cache of loaded priors (on the CPU: one small pass)."""
    from napari_brgm.engine.devices import resolve_device
    from napari_brgm.engine.reconstruction import _load

    return _load(str(path), "flow", resolve_device("cpu"))


def score_input(image, prior=None, *, method: str = "map", task: str = "superres", factor: int = 4, mask=None,
                window=None, fit: str = "auto", sigma_y: float | None = None, reference=None) -> dict:
    """Score a slice against a prior before a run: {"score", "threshold", "ok", "score_kind", "threshold_from",
    "view", "scorer", "reason", "seconds", ...}; ok None (with the reason) when it cannot be judged.

    Arguments as for `reconstruct` (image in its own units, mask NONZERO = MISSING, window
    (centre, width), sigma_y in input units); `prior` None: the method's built-in prior;
    `reference`: an OOD reference file instead of the one beside the prior. 20-120 ms on one CPU
    core once the flow is loaded (docs/engine.md).
    """
    from napari_brgm.engine.methods import PRIOR_KINDS
    from napari_brgm.engine.reconstruction import _resolve_prior
    from napari_brgm.engine.uncertainty import file_sha256

    started = time.perf_counter()
    kind = PRIOR_KINDS[method]
    if kind is None:
        return {"score": None, "threshold": None, "ok": None, "score_kind": NOT_JUDGED}
    prior_path = _resolve_prior(None if prior is None else str(prior), kind)
    ref_path = Path(reference) if reference is not None else reference_path(prior_path)
    ref = load_reference(ref_path) if ref_path.is_file() else None
    record = {"score": None, "threshold": None, "ok": None, "score_kind": SCORE_KIND, "threshold_from": None,
              "reference": str(ref_path) if ref else None}
    scorer = scorer_of(prior_path, kind, ref)
    if scorer is None:
        return record | {"score_kind": None, "reason": "no flow to score this prior (no OOD reference names one)"}
    flow = _load_flow(scorer)
    image = np.asarray(image, np.float64)
    missing = None if mask is None else np.asarray(mask) != 0
    factor = int(factor) if task == "superres" else 1
    view = view_name(task, factor, 0.0 if missing is None else float(missing.mean()),
                     sigma_model(image, sigma_y, missing, window))
    parts = scores(flow, seen(image, flow.img_resolution, task=task, factor=factor, mask=missing, window=window,
                              fit=fit, sigma_y=sigma_y)[None])
    record |= {"score": float(parts["score"][0]), "flow_bpd": float(parts["flow_bpd"][0]),
               "coder_bpd": float(parts["coder_bpd"][0]), "view": view, "scorer": scorer.name.split(".")[0]}
    reason = None
    if ref is None:
        reason = f"no OOD reference beside the prior ({ref_path.name}): make one with napari-brgm calibrate"
    elif ref.get("prior_sha256") != file_sha256(prior_path):
        reason = f"{ref_path.name} was made for another prior file"
    elif ref.get("scorer", {}).get("sha256") != file_sha256(scorer):
        reason = f"{ref_path.name} was made with another scoring flow"
    elif not view:
        reason = (f"no denoising reference near sigma_y {sigma_model(image, sigma_y, missing, window):.3g} "
                  f"(model units; references at {', '.join(map(str, NOISE_LEVELS))})")
    elif view not in ref.get("views", {}):
        reason = f"no reference for {view} in {ref_path.name} (it has: {', '.join(ref.get('views', {})) or 'none'})"
    if reason is None:
        entry = ref["views"][view]
        record |= {"threshold": float(entry["threshold"]), "ok": bool(record["score"] <= entry["threshold"]),
                   "threshold_from": f"{ref_path.name}: q{round(100 * ref.get('quantile', QUANTILE))} of "
                                     f"{entry['n']} {ref.get('data_kind', 'calibration')} slices ({view})"}
    else:
        record["reason"] = reason
    return record | {"seconds": time.perf_counter() - started}


def screen(image, prior=None, **kwargs) -> dict:
    """`score_input` that never raises: a failure is a record with ok None and the reason (for pre-run warnings)."""
    try:
        return score_input(image, prior, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a warning must never stop a run
        return {"score": None, "threshold": None, "ok": None, "score_kind": None, "reason": f"OOD score failed: {exc}"}


def warning_text(record: dict | None) -> str | None:
    """"the input looks unlike the prior's training images (…)" for a record with ok False, else None."""
    if not isinstance(record, dict) or record.get("ok") is not False:
        return None
    score, threshold = record.get("score"), record.get("threshold")
    detail = ""
    if score is not None and threshold is not None:
        if record.get("score_kind") == SCORE_KIND:
            detail = (f" (OOD score {score:.2f} > {threshold:.2f} bits/dim, the 99th percentile of the prior's "
                      "reference slices)")
        else:
            source = ", the calibration set's 99th percentile" if record.get("threshold_from") == "calibration" else ""
            detail = f" (misfit {_number(score)} σ_y² > {_number(threshold)}{source})"
    return f"the input looks unlike the prior's training images{detail}"


def _number(x: float) -> str:
    """12.3, 4.0, 0.042: one decimal from 1 up, two significant digits below."""
    return f"{x:.1f}" if abs(x) >= 1 or x == 0 else f"{x:.2g}"


def judge_run(image, missing, settings, prior_path, kind: str | None, misfit: float | None,
              misfit_q99: float | None) -> dict:
    """`Result.settings["in_distribution"]` of a run: the flow score when the prior has one, else the misfit rule.

    Deep Image Prior is never judged. A prior without a flow scorer (a StyleGAN2 or diffusion prior
    of your own) falls back to the data misfit against its calibration records' 99th percentile
    (`uncertainty.in_distribution`), which does not separate an X-ray from brain on the built-in prior.
    An explicit calibration file brings the OOD reference beside it (`<calibration stem>.ood.json`).
    """
    from napari_brgm.engine.uncertainty import in_distribution

    if kind is None:
        return in_distribution(None, None)
    given = None if settings.calibration in (None, "none") else reference_path(Path(settings.calibration).expanduser())
    record = screen(image, prior_path, method=settings.method, task=settings.task, factor=settings.factor,
                    mask=missing, window=settings.window, fit=settings.fit, sigma_y=settings.sigma_y,
                    reference=given if given is not None and given.is_file() else None)
    if record.get("score_kind") is None:
        fallback = in_distribution(misfit, misfit_q99)
        return fallback | {"reason": record.get("reason")} if fallback["ok"] is None else fallback
    return record | {"misfit": misfit}


def calibration_reference(images, prior_path, task: str, factor: int, bins, out, sources=(),
                          data_kind: str = "real-heldout") -> Path | None:
    """`napari-brgm calibrate` for a flow prior: the OOD reference of the calibrated task's views and of the
    plain slice, from the calibration slices (model units, clean), merged into `<out stem>.ood.json`."""
    from napari_brgm.priors import prior_kind

    if prior_path is None or prior_kind(prior_path) != "flow":
        return None
    flow = _load_flow(Path(prior_path))
    views = ["image"] + ([f"sr{int(factor)}"] if task == "superres" else [f"inpaint {b}" for b in bins]
                         if task == "inpaint" else [f"denoise {s:g}" for s in NOISE_LEVELS] if task == "denoise"
                         else [])
    slices = np.stack([np.asarray(x, np.float64) for x in images])
    scored = {v: reference_scores(flow, slices, v) for v in views}
    path = reference_path(out)
    save_reference(path, make_reference(prior_path, prior_path, scored, data_kind=data_kind, sources=sources))
    return path
