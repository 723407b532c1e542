"""Out-of-distribution scores of brain and non-brain slices against the built-in brain priors.

    python benchmarks/ood_scores.py                      # flow scores, all views (about 4 min on one core)
    python benchmarks/ood_scores.py --views image,sr4 --gan 6   # + StyleGAN2 MAP latent energy (≈ 10 min)

Sets: the reference planes (coronal + sagittal of the two training heads; the odd usable slices,
which tools/ood_reference.py leaves out), the training heads' axial slices (what the priors were
trained on), the held-out ITK head's axial, coronal and sagittal slices (a subject never seen), and
real non-brain images that ship offline: the chest X-ray sample, a head CT (pydicom-data
693_UNCR), a shoulder MR (MR2_UNCR), plus a hand radiograph (RG3_UNCR), an abdominal MR
(MR-SIEMENS-DICOM-WithOverlays), a small CT (CT_small) and a 64-px head MR of another contrast
(emri_small). Brain slices come from `load_slices` (64 px, percentile-mapped, ≥ 25 % tissue);
the other images are area-reduced to at most 256 px and handed to the scorer like a user's input
(the engine's intensity map and fit). Views: the slice ("image"), SR ×4/×8 measurements (box
average), inpainting with each calibration mask of each missing-fraction bin, denoising at σ = 0.05
and 0.1 (model units; the noisy slice is smoothed by non-local means at σ before it is scored).

Candidates (higher = less like the prior's images), per view:
  flow bpd     the built-in flow's exact bits/dim of the prepared slice
  flow − J2K   flow bits/dim minus the lossless JPEG 2000 bits/dim (engine/ood.py: the shipped score)
  flow − PNG   the same with PNG (Pillow, optimize) as the generic coder
  (--gan N) w energy / misfit: BRGM MAP (SR ×4, 501 steps) on N slices per set, mean(((w − w̄)/σ)²)
               and the data misfit / σ_y² of the estimate (the engine's former score)
Each cell: median, AUROC against the reference planes (1 = every slice of the set scores above
every reference slice; 0.5 = no separation), and the fraction flagged at the shipped threshold
(flow − J2K; denoising, which ships none, and the others: the 99th percentile of the rows' reference set).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from brain_t1_data import HELD_OUT  # noqa: E402

DATA = ROOT / "runs" / "brain-t1-data"
TRAIN = ("mni152_2009a_t1.nii.gz", "colin27_t1.nii.gz")
OTHER = {"chest X-ray": None, "head CT": "693_UNCR.dcm", "shoulder MR": "MR2_UNCR.dcm", "hand CR*": "RG3_UNCR.dcm",
         "abdomen MR*": "MR-SIEMENS-DICOM-WithOverlays.dcm", "small CT*": "CT_small.dcm",
         "head MR 64 px*": "emri_small.dcm"}
VIEWS = ("image", "sr4", "sr8", "inpaint <=25%", "inpaint 25-50%", "inpaint >50%", "denoise 0.05", "denoise 0.1")


def brain_sets(data: Path) -> dict[str, np.ndarray]:
    """Usable 64-px brain slices (model units) per set; of the reference planes the odd half (the even half is
    tools/ood_reference.py's)."""
    from napari_brgm.cli.calibrate import MIN_FOREGROUND
    from napari_brgm.training.data import load_slices

    def usable(paths, plane):
        d = load_slices(paths, 64, plane=plane)
        lo = d.images.amin(dim=(1, 2, 3), keepdim=True)
        keep = ((d.images - lo) > 0.2).float().mean(dim=(1, 2, 3)).numpy() >= MIN_FOREGROUND
        return d.images[keep, 0].numpy()

    train = [data / "train" / name for name in TRAIN]
    ordered = sorted(train)  # tools/ood_reference.py's order: it keeps every second slice of each plane
    return {"reference planes (odd half)": np.concatenate([usable(ordered, p)[1::2] for p in ("coronal", "sagittal")]),
            "all reference planes": np.concatenate([usable(train, p) for p in ("coronal", "sagittal")]),
            "training axial": usable(train, "axial"),
            **{f"held-out {p}": usable([HELD_OUT], p) for p in ("axial", "coronal", "sagittal")}}


def other_images() -> dict[str, np.ndarray]:
    """The non-brain images in their own units, area-reduced to at most 256 px on a side."""
    from pydicom.data import get_testdata_file

    from napari_brgm.engine.geometry import area_matrix
    from napari_brgm.io import load_image
    from napari_brgm.io.samples import sample_path

    out = {}
    for name, file in OTHER.items():
        img = np.asarray(load_image(sample_path("chest_xray_rg1.dcm") if file is None
                                    else get_testdata_file(file)).data, np.float64)
        img = img[img.shape[0] // 2] if img.ndim == 3 else img
        h, w = img.shape
        s = min(1.0, 256 / max(h, w))
        out[name] = area_matrix(h, max(1, round(h * s))) @ img @ area_matrix(w, max(1, round(w * s))).T
    return out


def view_inputs(image: np.ndarray, view: str, brain: bool) -> list[dict]:
    """The runs of one image seen as `view` (engine/ood.view_images; non-brain images are first fitted to 64 px)."""
    from napari_brgm.engine import ood

    if not brain and view != "image":  # a 64-px version first, as a user would give SR or inpainting
        image = ood.harmonic_fill(*ood.prepare(image, 64))
    return ood.view_images(image[None], view)


def png_bits_per_dim(x: np.ndarray) -> float:
    from PIL import Image

    from napari_brgm.engine.ood import _grey

    buffer = io.BytesIO()
    Image.fromarray(_grey(x)).save(buffer, format="PNG", optimize=True)
    return 8 * len(buffer.getvalue()) / x.size


def flow_candidates(flow, items) -> dict[str, np.ndarray]:
    from napari_brgm.engine import ood

    filled = np.stack([ood.seen(resolution=64, **kw) for kw in items])
    s = ood.scores(flow, filled)
    return {"flow bpd": s["flow_bpd"], "flow − J2K": s["score"],
            "flow − PNG": s["flow_bpd"] - np.array([png_bits_per_dim(x) for x in filled])}


def gan_candidates(slices: np.ndarray) -> dict[str, np.ndarray]:
    """BRGM MAP (SR ×4 of the box-averaged slice, 501 steps): latent energy and misfit per slice."""
    from napari_brgm import reconstruct
    from napari_brgm.engine.calibrate import box_downsample

    energy, misfit = [], []
    for x in slices:
        r = reconstruct(box_downsample(x, 4), task="superres", factor=4, method="map", steps=501)
        energy.append(r.losses["map/w_prior"][-1] / 100.0)  # MapConfig.lambda_w
        misfit.append(r.settings["in_distribution"].get("misfit", r.settings["in_distribution"]["score"]))
    return {"w energy": np.array(energy), "misfit": np.array(misfit)}


def auroc(reference: np.ndarray, values: np.ndarray) -> float:
    """P(a set's score > a reference score), ties counted half."""
    r = np.asarray(reference)[None, :]
    v = np.asarray(values)[:, None]
    return float(((v > r).mean(axis=1) + 0.5 * (v == r).mean(axis=1)).mean())


def print_table(title: str, results: dict, reference_set: str, thresholds: dict[str, float]) -> None:
    names = list(next(iter(results.values())))
    print(f"\n{title}; thresholds: " + ", ".join(f"{k} {v:.3g}" for k, v in thresholds.items()))
    print("| set | n | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
    for set_name, cands in results.items():
        cells = []
        for k in names:
            v = cands[k]
            cells.append(f"{np.median(v):.3g} · {auroc(results[reference_set][k], v):.2f} · "
                         f"{(v > thresholds[k]).mean():.0%}")
        print(f"| {set_name} | {len(next(iter(cands.values())))} | " + " | ".join(cells) + " |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA,
                   help="tools/brain_t1_data.py's folder (default runs/brain-t1-data)")
    p.add_argument("--views", default=",".join(VIEWS), help=f"comma-separated (default {','.join(VIEWS)}; none: skip)")
    p.add_argument("--gan", type=int, default=0, help="slices per brain set for the StyleGAN2 MAP candidates (0: skip)")
    args = p.parse_args(argv)

    import torch

    from napari_brgm.engine import ood
    from napari_brgm.priors import builtin_priors
    from napari_brgm.priors.glow import load_flow

    torch.set_num_threads(1)
    flow = load_flow("brain-t1-64-glow")
    shipped = ood.load_reference(ood.reference_path(builtin_priors()["brain-t1-64"]))["views"]
    brains, others = brain_sets(args.data), other_images()
    ref_name = "reference planes (odd half)"
    for view in [v for v in args.views.split(",") if v and v != "none"]:
        results, started = {}, time.perf_counter()
        for name, slices in brains.items():
            if name == "all reference planes":
                continue
            results[name] = flow_candidates(flow, [it for x in slices for it in view_inputs(x, view, True)])
        for name, image in others.items():
            results[name] = flow_candidates(flow, view_inputs(image, view, False))
        print(f"({view}: {time.perf_counter() - started:.0f} s)", file=sys.stderr)
        thresholds = {k: ood.threshold_of(results[ref_name][k]) for k in results[ref_name]}
        if view in shipped:  # denoising has no shipped threshold: the odd half's own 99th percentile
            thresholds["flow − J2K"] = shipped[view]["threshold"]
        print_table(f"view {view} (median · AUROC vs {ref_name} · flagged)", results, ref_name, thresholds)
    if args.gan:
        pick = lambda v: v[np.unique(np.linspace(0, len(v) - 1, args.gan).round().astype(int))]  # noqa: E731
        results = {name: gan_candidates(pick(s)) for name, s in brains.items() if name != ref_name}
        for name, image in list(others.items())[:5]:
            results[name] = gan_candidates([ood.harmonic_fill(*ood.prepare(image, 64))])
        ref = "all reference planes"
        thresholds = {k: ood.threshold_of(results[ref][k]) for k in results[ref]}
        print_table(f"StyleGAN2 MAP, SR x4 ({args.gan} slices per brain set; median · AUROC vs {ref} · flagged)",
                    results, ref, thresholds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
