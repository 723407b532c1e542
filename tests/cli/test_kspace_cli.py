"""`napari-brgm reconstruct --task kspace|deblur` on the sample brain slab, with the tiny prior."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from napari_brgm.cli.main import main

from .test_reconstruct_cli import small_brain  # noqa: F401  (fixture)


def test_kspace_with_a_user_mask_writes_zero_filled_and_the_mask(small_brain, tmp_path, tiny_fixture_dir):  # noqa: F811
    path, vol = small_brain
    sampled = np.zeros((32, 32), np.uint8)  # the prior's k-space grid (the slice 27×22 is padded to 32×32)
    sampled[:, 13:19] = 1
    sampled[:, ::4] = 1
    np.save(tmp_path / "lines.npy", sampled)
    out = tmp_path / "out"
    code = main(["reconstruct", str(path), "--task", "kspace", "--kspace-mask", str(tmp_path / "lines.npy"),
                 "--prior", str(tiny_fixture_dir / "network-snapshot.pkl"), "--method", "map", "--steps", "3",
                 "--slice", "1", "--device", "cpu", "--out", str(out)])
    assert code == 0
    for name in ("mean", "consistent", "zero_filled"):
        assert nib.load(out / f"{name}.nii.gz").shape == (22, 27, 1)  # NIfTI (x, y, z), the input's own grid
    np.testing.assert_array_equal(np.load(out / "sampling_mask.npy"), sampled != 0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["kspace"]["kind"] == "user" and summary["settings"]["kspace"]["grid"] == [32, 32]
    assert summary["settings"]["factor"] == 1


def test_kspace_flags_and_their_errors(small_brain, tmp_path, tiny_fixture_dir, capsys):  # noqa: F811
    path, _ = small_brain
    prior = str(tiny_fixture_dir / "network-snapshot.pkl")
    base = ["reconstruct", str(path), "--prior", prior, "--steps", "2", "--slice", "1", "--device", "cpu"]
    out = tmp_path / "r8"
    assert main(base + ["--task", "kspace", "--acceleration", "8", "--mask-type", "equispaced", "--center-fraction",
                        "0.07", "--out", str(out)]) == 0
    info = json.loads((out / "summary.json").read_text())["settings"]["kspace"]
    assert info["acceleration"] == 8 and info["kind"] == "equispaced" and info["effective_acceleration"] > 5
    assert main(base + ["--task", "kspace", "--acceleration", "40", "--out", str(tmp_path / "bad")]) == 2
    assert "acceleration must be at most 16" in capsys.readouterr().err
    assert main(base + ["--task", "kspace", "--center-fraction", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert "nothing is left to undersample" in capsys.readouterr().err
    np.save(tmp_path / "wrong.npy", np.ones((8, 8)))
    assert main(base + ["--task", "kspace", "--kspace-mask", str(tmp_path / "wrong.npy"), "--out",
                        str(tmp_path / "bad")]) == 2
    assert "the image is 32x32" in capsys.readouterr().err


def test_deblur_from_the_command_line(small_brain, tmp_path, tiny_fixture_dir):  # noqa: F811
    path, _ = small_brain
    out = tmp_path / "deblur"
    assert main(["reconstruct", str(path), "--task", "deblur", "--psf-sigma", "1.2", "--prior",
                 str(tiny_fixture_dir / "network-snapshot.pkl"), "--steps", "2", "--slice", "1", "--device", "cpu",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["task_options"]["psf_sigma"] == 1.2
    assert nib.load(out / "mean.nii.gz").shape == (22, 27, 1)
