"""Bits/dim of a flow prior on its training slices, the held-out head and out-of-distribution images.

    python benchmarks/flow_bits_per_dim.py                       # the built-in brain-t1-64-glow
    python benchmarks/flow_bits_per_dim.py --prior runs/brain-t1-64-glow/brain-t1-64-glow.safetensors

Slices are prepared like the training data (load_slices: 64×64, per-slice percentile mapping);
bits/dim uses one-bin dequantisation noise with a fixed seed (`training.flow.evaluate_bpd`).
Lower is more likely under the prior. Flows are known to give some out-of-distribution images
HIGHER likelihood than their training data (Nalisnick et al.), so bits/dim alone is not used as an
anomaly score: engine/ood.py subtracts a JPEG 2000 coder's bits/dim (benchmarks/ood_scores.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from brain_t1_data import HELD_OUT  # noqa: E402


def ood_images() -> dict[str, Path]:
    """Real non-brain-T1 images that ship offline (pydicom-data): a head CT slice and a shoulder MR."""
    from pydicom.data import get_testdata_file

    return {"head CT (CQ500 slice)": Path(get_testdata_file("693_UNCR.dcm")),
            "shoulder MR T1": Path(get_testdata_file("MR2_UNCR.dcm"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="brain-t1-64-glow", help="flow prior (default: built-in brain-t1-64-glow)")
    p.add_argument("--train", nargs="*", type=Path,
                   default=[ROOT / "runs/brain-t1-data/train/mni152_2009a_t1.nii.gz",
                            ROOT / "runs/brain-t1-data/train/colin27_t1.nii.gz"],
                   help="training volumes (default: tools/brain_t1_data.py's output in runs/)")
    args = p.parse_args(argv)

    import torch

    from napari_brgm.priors.glow import load_flow
    from napari_brgm.training.data import load_slices
    from napari_brgm.training.flow import evaluate_bpd

    torch.set_num_threads(1)
    flow = load_flow(args.prior)
    r = flow.img_resolution
    sets = {"training slices": [q for q in args.train if q.exists()], "held-out head (ITK T1)": [HELD_OUT]}
    sets |= {name: [path] for name, path in ood_images().items()}
    print(f"| data | slices | bits/dim |\n|---|---|---|")
    for name, paths in sets.items():
        if not paths:
            print(f"| {name} | – | (not found) |")
            continue
        slices = load_slices(paths, r)
        print(f"| {name} | {len(slices)} | {evaluate_bpd(flow, slices):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
