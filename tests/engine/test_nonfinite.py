"""Inputs with NaN/inf pixels: refused with how many and where, or inpainted as missing on request."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_brgm.engine import reconstruct
from napari_brgm.engine.nonfinite import describe
from napari_brgm.engine.settings import Settings, validate_inputs
from napari_brgm.engine.volume import reconstruct_volume

RUN = dict(method="map", steps=4, device="cpu", seed=0)


@pytest.fixture(scope="module")
def image(truth):
    _, x = truth
    return (400.0 * x[0, 0].numpy() - 200.0).astype(np.float32)


def _holed(image):
    bad = image.copy()
    bad[3:6, 10] = np.nan
    bad[20, 7] = np.inf
    bad[21, 7] = -np.inf
    return bad


def test_the_message_counts_the_pixels_and_says_where():
    values = np.zeros((20, 30), np.float32)
    values[3:5, 7] = np.nan
    values[10, 20] = np.inf
    text = describe(~np.isfinite(values), values)
    assert text == "3 non-finite pixels (2 NaN, 1 +inf) of 600, in rows 3-10 and columns 7-20"
    with pytest.raises(ValueError, match=r"the image has 3 non-finite pixels .* rows 3-10 and columns 7-20.*"
                                         r"--nonfinite missing"):
        validate_inputs(values, None, Settings())


def test_reconstruct_refuses_non_finite_input_before_loading_the_prior(image, tmp_path):
    missing_prior = tmp_path / "absent.safetensors"  # the check comes before the prior is even looked for
    with pytest.raises(ValueError, match=r"5 non-finite pixels \(3 NaN, 1 \+inf, 1 -inf\) of 1,024, in rows 3-21 "
                                         r"and columns 7-10"):
        reconstruct(_holed(image), task="denoise", prior=missing_prior, **RUN)
    with pytest.raises(ValueError, match="task 'superres' has no missing pixels"):
        reconstruct(image, task="superres", prior=missing_prior, nonfinite="missing", **RUN)


def test_inpainting_treats_non_finite_pixels_as_missing_on_request(image, tiny_prior, one_thread):
    holed = _holed(image)
    r = reconstruct(holed, task="inpaint", prior=tiny_prior, nonfinite="missing", **RUN)  # no mask needed
    bad = ~np.isfinite(holed)
    assert np.isfinite(r.mean).all() and np.isfinite(r.consistent).all()
    np.testing.assert_array_equal(r.consistent[~bad], holed[~bad])  # observed pixels kept
    np.testing.assert_array_equal(r.consistent[bad], r.mean[bad])  # the non-finite ones filled in
    assert r.settings["nonfinite"] == "missing"
    # with a painted mask too: both regions are missing
    mask = np.zeros_like(image)
    mask[:, :8] = 1
    r2 = reconstruct(holed, task="inpaint", mask=mask, prior=tiny_prior, nonfinite="missing", **RUN)
    missing = (mask != 0) | bad
    np.testing.assert_array_equal(r2.consistent[~missing], holed[~missing])
    assert np.isfinite(r2.consistent).all()


def test_volume_refusal_names_the_slices_and_the_bounding_box(image, tiny_prior):
    vol = np.stack([image, image, image, image]).astype(np.float32)[:, ::4, ::4]
    vol[1, 2, 3] = np.nan
    vol[3, 5:7, 1] = np.inf
    with pytest.raises(ValueError, match=r"the volume has 3 non-finite voxels \(1 NaN, 2 \+inf\) in 2 slices along z "
                                         r"\(1, 3\); bounding box z 1-3, y 2-6, x 1-3"):
        reconstruct_volume(vol, task="superres", factor=4, prior=tiny_prior, **RUN)
    with pytest.raises(ValueError, match=r"in 1 slice along x \(3\)"):  # slices along x: vol[:, :, 3] holds the NaN
        reconstruct_volume(vol[:2], axis="x", task="superres", factor=4, prior=tiny_prior, **RUN)
    # a range without them runs
    reconstruct_volume(vol, slices=[0, 2], task="superres", factor=4, prior=tiny_prior, **RUN)


def test_volume_inpainting_of_non_finite_voxels(image, tiny_prior, one_thread):
    vol = np.stack([image, image, image]).astype(np.float32)
    vol[0, 4:9, 4:9] = np.nan
    vol[2, 20, 20] = np.inf
    vr = reconstruct_volume(vol, task="inpaint", prior=tiny_prior, nonfinite="missing", **RUN)
    assert vr.copied == {1: "empty mask: nothing to inpaint"}  # no mask given, slice 1 is finite
    assert np.isfinite(vr.consistent).all()
    ok = np.isfinite(vol)
    np.testing.assert_array_equal(vr.consistent[ok], vol[ok])


def test_cli_refuses_with_the_count_and_inpaints_with_nonfinite_missing(image, tiny_prior, tmp_path, capsys):
    from napari_brgm.cli.main import main

    vol = np.stack([image, _holed(image)])  # (z, y, x); slice 1 has the holes
    path = tmp_path / "holed.nii"
    nib.save(nib.Nifti1Image(vol.T.copy(), np.eye(4)), path)
    common = ["--prior", tiny_prior, "--method", "map", "--steps", "3", "--device", "cpu", "--slice", "1"]
    assert main(["reconstruct", str(path), "--task", "denoise", "--out", str(tmp_path / "a"), *common]) == 2
    err = capsys.readouterr().err
    assert "slice 1 of" in err and "5 non-finite pixels (3 NaN, 1 +inf, 1 -inf)" in err and "rows 3-21" in err
    out = tmp_path / "b"
    assert main(["reconstruct", str(path), "--task", "inpaint", "--nonfinite", "missing", "--out", str(out),
                 "--format", "nifti", *common]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["nonfinite"] == "missing"
    consistent = nib.load(out / "consistent.nii.gz").get_fdata()
    assert np.isfinite(consistent).all()
    # a volume run: the refusal names the slice
    assert main(["reconstruct", str(path), "--task", "denoise", "--slices", "all", "--out", str(tmp_path / "c"),
                 *common[:-2]]) == 2
    assert "in 1 slice along z (1)" in capsys.readouterr().err
