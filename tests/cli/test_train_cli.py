"""`napari-brgm train DATA... --out PRIOR.safetensors`: writes a loadable prior, resumes, refuses bad input."""

from __future__ import annotations

import pytest
from PIL import Image

from napari_brgm.cli.main import main
from napari_brgm.priors import load_generator
from tests.training.conftest import head_volume, write_nifti


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["--resolution", "64", "--batch", "4", "--channel-base", "128", "--channel-max", "16"]


def test_train_writes_prior_checkpoint_preview_and_resumes(tmp_path, capsys):
    head = write_nifti(tmp_path / "head.nii.gz", head_volume(shape=(40, 48, 36)), (1.0, 1.0, 1.0))
    out = tmp_path / "prior.safetensors"
    assert main(["train", str(head), "--out", str(out), "--kimg", "0.008", *SMALL]) == 0
    assert out.exists() and out.with_suffix(".ckpt.pt").exists()
    preview = Image.open(out.with_suffix(".preview.png"))
    assert preview.size == (4 * 64, 4 * 64)
    g = load_generator(out)
    assert (g.img_resolution, g.img_channels) == (64, 1)
    assert main(["train", str(head), "--out", str(out), "--kimg", "0.012", *SMALL]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "finished at 0.0 kimg (3 steps" in text


def test_train_refuses_bad_output_and_missing_data(tmp_path, capsys):
    head = write_nifti(tmp_path / "head.nii.gz", head_volume(), (2.0, 1.0, 1.0))
    assert main(["train", str(head), "--out", str(tmp_path / "prior.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nothing.nii.gz"), "--out", str(tmp_path / "p.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_resume_with_other_data_is_refused(tmp_path, capsys):
    a = write_nifti(tmp_path / "a.nii.gz", head_volume(shape=(40, 48, 36)), (1.0, 1.0, 1.0))
    b = write_nifti(tmp_path / "b.nii.gz", head_volume(shape=(40, 48, 36)) ** 1.5, (1.0, 1.0, 1.0))  # other contrast
    out = tmp_path / "p.safetensors"
    assert main(["train", str(a), "--out", str(out), "--kimg", "0.004", *SMALL]) == 0
    assert main(["train", str(b), "--out", str(out), "--kimg", "0.008", *SMALL]) == 2
    assert "different data" in capsys.readouterr().err


def test_train_diffusion_kind_writes_a_diffusion_prior_that_resumes(tmp_path, capsys):
    from napari_brgm.priors import prior_kind
    from napari_brgm.priors.diffusion import load_diffusion

    head = write_nifti(tmp_path / "head.nii.gz", head_volume(shape=(40, 48, 36)), (1.0, 1.0, 1.0))
    out = tmp_path / "ddpm.safetensors"
    args = ["train", "--kind", "diffusion", str(head), "--out", str(out), "--resolution", "64", "--batch", "2"]
    assert main([*args, "--kimg", "0.004"]) == 0
    assert prior_kind(out) == "diffusion" and load_diffusion(out).img_resolution == 64
    assert Image.open(out.with_suffix(".preview.png")).size == (4 * 64, 4 * 64)
    assert main([*args, "--kimg", "0.006"]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "finished at 0.0 kimg (3 steps" in text
    assert main(["train", "--kind", "stylegan2", str(head), "--out", str(out), "--resolution", "64", "--batch", "4",
                 "--kimg", "0.008"]) == 2
    assert "a diffusion checkpoint, not stylegan2" in capsys.readouterr().err
