"""Gather the real T1 heads that ship offline into one folder, for training the built-in brain prior.

    python tools/brain_t1_data.py DIR

Training (docs/model-card-brain-t1.md): MNI152 2009a template (nilearn, brain-extracted average)
and Colin27 (`mricron-data`, whole head). Held out for evaluation: the ITK examples' T1 head
(`insighttoolkit5-examples`), a different subject never seen in training.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
HELD_OUT = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz")


def gather(folder: Path) -> dict[str, list[Path]]:
    import nibabel as nib
    from nilearn.datasets import load_mni152_template

    train, test = folder / "train", folder / "heldout"
    train.mkdir(parents=True, exist_ok=True)
    test.mkdir(parents=True, exist_ok=True)
    mni = train / "mni152_2009a_t1.nii.gz"
    if not mni.exists():
        nib.save(load_mni152_template(resolution=1), mni)
    colin = train / "colin27_t1.nii.gz"
    shutil.copyfile(COLIN27, colin)
    itk = test / "itk_kmeans_t1.nii.gz"
    shutil.copyfile(HELD_OUT, itk)
    return {"train": [mni, colin], "heldout": [itk]}


if __name__ == "__main__":
    out = gather(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/brain-t1-data"))
    for split, files in out.items():
        print(split, *files)
