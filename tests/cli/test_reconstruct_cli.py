"""`napari-brgm reconstruct` end to end on real data: NIfTI brain slab and a PNG, with the tiny prior."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_brgm.cli.main import main
from napari_brgm.io import load_image, save_nifti


@pytest.fixture
def small_brain(tmp_path):
    """A 3-slice, 8 mm in-plane version of the sample brain slab (fits the 32 px prior at ×4)."""
    from tests.io.conftest import BRAIN_SAMPLE

    src = load_image(BRAIN_SAMPLE)
    k = src.data.shape[0] // 2
    vol = src.data[k - 1 : k + 2, :216, :176].reshape(3, 27, 8, 22, 8).mean(axis=(2, 4))
    affine = src.affine.copy()
    affine[:3, 1:3] *= 8
    path = save_nifti(tmp_path / "brain8mm.nii.gz", vol, affine)
    return path, vol


def test_superres_writes_mean_samples_panel_and_summary_in_the_input_geometry(small_brain, tmp_path, tiny_fixture_dir):
    path, vol = small_brain
    out = tmp_path / "out"
    code = main(["reconstruct", str(path), "--task", "superres", "--factor", "4", "--prior",
                 str(tiny_fixture_dir / "network-snapshot.pkl"), "--method", "vi", "--steps", "3", "--samples", "3",
                 "--slice", "1", "--device", "cpu", "--out", str(out)])
    assert code == 0
    mean = nib.load(out / "mean.nii.gz")
    assert mean.shape == (22 * 4, 27 * 4, 1)  # NIfTI (x, y, z): 4× finer in-plane, one slice
    source = nib.load(path)
    np.testing.assert_allclose(np.diag(mean.affine)[:2], np.diag(source.affine)[:2] / 4, rtol=1e-6)
    # slice 1 sits one slice step away from the volume origin
    centre_src = source.affine @ np.array([(22 - 1) / 2, (27 - 1) / 2, 1, 1])
    centre_out = mean.affine @ np.array([(88 - 1) / 2, (108 - 1) / 2, 0, 1])
    np.testing.assert_allclose(centre_out[:3], centre_src[:3], atol=1e-4)
    assert nib.load(out / "samples.nii.gz").shape == (88, 108, 1, 3)
    assert nib.load(out / "std.nii.gz").shape == (88, 108, 1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["slice"] == 1 and summary["partial"] is False
    assert summary["settings"]["factor"] == 4 and "vi/total" in summary["final_losses"]
    import imageio.v3 as iio

    panel = iio.imread(out / "panel.png")
    assert panel.shape[0] == 108 and panel.shape[1] > 4 * 88  # input, mean, std, samples side by side


def test_inpaint_needs_a_mask_and_bad_input_is_one_line_on_stderr(small_brain, tmp_path, capsys, tiny_fixture_dir):
    path, _ = small_brain
    prior = str(tiny_fixture_dir / "network-snapshot.pkl")
    assert main(["reconstruct", str(path), "--task", "inpaint", "--prior", prior, "--out", str(tmp_path)]) == 2
    assert "needs --mask" in capsys.readouterr().err
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    assert main(["reconstruct", str(bogus), "--prior", prior, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "Traceback" not in err


def test_inpaint_from_a_png_mask_keeps_observed_pixels(tmp_path, tiny_fixture_dir):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    image = (rng.random((20, 24)) * 60000).astype(np.uint16)
    mask = np.zeros((20, 24), np.uint8)
    mask[5:12, 6:15] = 255
    iio.imwrite(tmp_path / "img.png", image)
    iio.imwrite(tmp_path / "mask.png", mask)
    out = tmp_path / "out"
    assert main(["reconstruct", str(tmp_path / "img.png"), "--task", "inpaint", "--mask", str(tmp_path / "mask.png"),
                 "--prior", str(tiny_fixture_dir / "network-snapshot.pkl"), "--steps", "2", "--device", "cpu",
                 "--out", str(out)]) == 0
    merged = nib.load(out / "consistent.nii.gz").get_fdata()[:, :, 0].T  # back to (y, x)
    observed = mask == 0
    np.testing.assert_allclose(merged[observed], image[observed], rtol=1e-6)


def test_dip_needs_no_prior_and_writes_mean_std_samples(tmp_path):
    import imageio.v3 as iio

    from napari_brgm.cli.reconstruct import METHODS
    from napari_brgm.engine.settings import METHODS as ENGINE_METHODS

    assert METHODS == ENGINE_METHODS
    image = (np.random.default_rng(1).random((16, 16)) * 4000).astype(np.uint16)
    iio.imwrite(tmp_path / "img.png", image)
    out = tmp_path / "out"
    assert main(["reconstruct", str(tmp_path / "img.png"), "--task", "superres", "--factor", "2", "--method", "dip",
                 "--steps", "10", "--samples", "2", "--restarts", "2", "--back-project", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert nib.load(out / "mean.nii.gz").shape == (32, 32, 1)
    assert nib.load(out / "std.nii.gz").shape == (32, 32, 1)
    assert nib.load(out / "samples.nii.gz").shape == (32, 32, 1, 2)  # the last iterate of each restart
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["method"] == "dip" and summary["settings"]["back_project"] is True
    assert summary["settings"]["method_options"]["restarts"] == summary["settings"]["restarts_done"] == 2
    assert summary["settings"]["prior_path"] is None and "dip/data" in summary["final_losses"]


@pytest.mark.parametrize("method", ["reddiff", "flow"])
def test_builtin_diffusion_and_flow_priors_run_offline_from_the_cli(small_brain, tmp_path, method):
    path, _ = small_brain
    out = tmp_path / method
    assert main(["reconstruct", str(path), "--task", "denoise", "--method", method, "--steps", "3", "--samples", "2",
                 "--slice", "1", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["prior_kind"] == {"reddiff": "diffusion", "flow": "flow"}[method]
    assert summary["settings"]["prior"] is None and summary["settings"]["prior_path"].endswith(
        {"reddiff": "brain-t1-64-ddpm.safetensors", "flow": "brain-t1-64-glow.safetensors"}[method])
    assert nib.load(out / "std.nii.gz").shape == (22, 27, 1)


def test_help_lists_every_task_and_method_option_from_its_dataclass_without_importing_torch():
    from napari_brgm.cli.reconstruct import OPTIONS
    from tests.cli.help import subcommand_help

    imported_torch, help_text = subcommand_help("reconstruct")
    assert not imported_torch
    flat = " ".join(help_text.split())
    assert "--dip-input-noise" in flat and "dip: std of the noise added to the fixed input each step" in flat
    assert "csgm, iagan: random z starts" in flat and "(default 4); dip: networks fitted" in flat
    for name, found in OPTIONS.items():
        assert "--" + name.replace("_", "-") in flat
        assert all(" ".join(info.help.split()) in flat for _, info in found), name


def test_a_method_option_reaches_the_run_and_one_of_another_method_is_refused(tmp_path, capsys):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "img.png", (np.random.default_rng(2).random((16, 16)) * 4000).astype(np.uint16))
    common = [str(tmp_path / "img.png"), "--task", "denoise", "--steps", "2", "--device", "cpu"]
    assert main(["reconstruct", *common, "--method", "dip", "--dip-ema", "0.5", "--no-early-stop",
                 "--out", str(tmp_path / "dip")]) == 0
    options = json.loads((tmp_path / "dip" / "summary.json").read_text())["settings"]["method_options"]
    assert options["dip_ema"] == 0.5 and options["early_stop"] is False and options["dip_lr"] == 0.01
    assert main(["reconstruct", *common, "--method", "map", "--restarts", "3", "--out", str(tmp_path / "map")]) == 2
    err = capsys.readouterr().err
    assert "restarts is an option of methods 'csgm', 'iagan', 'dip', not of method 'map'" in err
    assert "Traceback" not in err and not (tmp_path / "map").exists()


def test_slices_all_writes_a_volume_on_the_input_grid_and_a_rerun_resumes(small_brain, tmp_path, tiny_fixture_dir,
                                                                         capsys, one_thread):
    path, vol = small_brain
    out = tmp_path / "vol"
    args = ["reconstruct", str(path), "--task", "superres", "--factor", "4", "--prior",
            str(tiny_fixture_dir / "network-snapshot.pkl"), "--method", "map", "--steps", "4", "--slices", "all",
            "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    mean, source = nib.load(out / "mean.nii.gz"), nib.load(path)
    assert mean.shape == (88, 108, 3) and np.isfinite(mean.get_fdata()).all()
    # low-res voxel (0, 0, z) is the mean of the 4×4 high-res voxels over it, in world mm
    for z in range(3):
        hr = np.mean([mean.affine @ [i, j, z, 1] for i in range(4) for j in range(4)], axis=0)
        np.testing.assert_allclose(hr, source.affine @ [0, 0, z, 1], atol=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == [0, 1, 2] and summary["partial"] is False
    (out / "slices" / "z0001.json").unlink()  # as if the run had stopped before slice 1 was recorded
    before = nib.load(out / "mean.nii.gz").get_fdata()
    capsys.readouterr()
    assert main(args) == 0
    assert "2 of 3 slices already done" in capsys.readouterr().out
    after = nib.load(out / "mean.nii.gz").get_fdata()
    np.testing.assert_array_equal(after[..., [0, 2]], before[..., [0, 2]])  # read back, not recomputed
    np.testing.assert_allclose(after[..., 1], before[..., 1], atol=1e-4 * np.ptp(before))  # alone, not batched
    assert main(args[:-6] + ["--steps", "5", "--slices", "all", "--device", "cpu", "--out", str(out)]) == 2
    assert "other parameters (steps)" in capsys.readouterr().err


def test_slices_range_along_y_and_errors_before_work(small_brain, tmp_path, tiny_fixture_dir, capsys, one_thread):
    path, vol = small_brain
    prior = str(tiny_fixture_dir / "network-snapshot.pkl")
    base = ["reconstruct", str(path), "--prior", prior, "--method", "map", "--steps", "3", "--device", "cpu"]
    mask = np.zeros(vol.shape, np.uint8)
    mask[0, 5:15, 5:15] = 1  # slice 2's mask is empty: copied through
    mask_path = save_nifti(tmp_path / "mask.nii.gz", mask, load_image(path).affine)
    out = tmp_path / "inp"
    assert main(base + ["--task", "inpaint", "--mask", str(mask_path), "--slices", "0:3:", "--out", str(out)]) == 2
    assert "slices '0:3:'" in capsys.readouterr().err
    assert main(base + ["--task", "inpaint", "--mask", str(mask_path), "--slices", "1:9", "--out", str(out)]) == 2
    assert "outside the volume" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--task", "inpaint", "--mask", str(mask_path), "--slices", "0:", "--out", str(out)]) == 0
    consistent = load_image(out / "consistent.nii.gz").data
    np.testing.assert_array_equal(consistent[1:], vol[1:])  # slices with empty masks come back unchanged
    assert json.loads((out / "summary.json").read_text())["copied"] == {"1": "empty mask: nothing to inpaint",
                                                                         "2": "empty mask: nothing to inpaint"}
    assert main(base + ["--task", "denoise", "--slices", "0:2", "--axis", "x", "--out", str(tmp_path / "x")]) == 0
    assert load_image(tmp_path / "x" / "mean.nii.gz").data.shape == (3, 27, 2)


def test_a_dicom_series_comes_back_as_a_derived_dicom_series_of_its_study(tmp_path, tiny_fixture_dir, one_thread):
    import pydicom

    from tests.io.conftest import make_mr_series

    folder = make_mr_series(tmp_path / "mr")
    out = tmp_path / "out"
    args = ["reconstruct", str(folder), "--task", "denoise", "--prior", str(tiny_fixture_dir / "network-snapshot.pkl"),
            "--method", "vi", "--steps", "3", "--samples", "3", "--mc-samples", "2", "--slices", "all",
            "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    assert not (out / "mean.nii.gz").exists()  # DICOM in: DICOM out by default
    source, mean = load_image(folder), load_image(out / "dicom" / "mean")
    assert mean.data.shape == source.data.shape == (3, 64, 64)
    np.testing.assert_allclose(mean.affine, source.affine, atol=1e-4)  # it overlays the input
    stored = np.load(out / "slices" / "z0001.npz")["mean"]
    assert np.abs(mean.data[1] - stored).max() <= 0.5 + 1e-3  # MR: stored rounded in the source's units
    src = pydicom.dcmread(sorted(folder.iterdir())[0])
    files = sorted((out / "dicom" / "mean").iterdir())
    ds = pydicom.dcmread(files[0])
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"] and "vi" in ds.DerivationDescription.lower()
    std = sorted((out / "dicom" / "std").iterdir())
    assert len(files) == len(std) == 3 and (out / "dicom" / "std_pm").is_dir()
    assert main(args + ["--format", "both"]) == 2  # the series exist: refused, not overwritten
    assert main(args + ["--format", "both", "--overwrite"]) == 0 and (out / "mean.nii.gz").exists()


def test_a_chest_xray_with_the_brain_prior_is_warned_about_once_before_the_run(tmp_path, capsys):
    from napari_brgm.engine.geometry import area_matrix
    from napari_brgm.io.samples import sample_path

    xray = np.asarray(load_image(sample_path("chest_xray_rg1.dcm")).data, np.float64)
    xray = xray[0] if xray.ndim == 3 else xray
    small = area_matrix(xray.shape[0], 16) @ xray @ area_matrix(xray.shape[1], 15).T
    path = save_nifti(tmp_path / "xray16.nii.gz", small[None].astype(np.float32), np.eye(4))
    capsys.readouterr()
    assert main(["reconstruct", str(path), "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: the input looks unlike the prior's training images (OOD score") == 1
    record = json.loads((tmp_path / "o" / "summary.json").read_text())["settings"]["in_distribution"]
    assert record["ok"] is False and record["view"] == "sr4"
