"""`napari-brgm calibrate` on real slices (the sample brain), then `reconstruct` picks the file up."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from napari_brgm.cli.main import main
from napari_brgm.engine.calibration import CalibrationFile
from napari_brgm.engine.uncertainty import file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def prior(tiny_prior, tmp_path):
    return shutil.copy(tiny_prior, tmp_path / "tiny.pkl")


def test_calibrate_writes_records_beside_the_prior_that_reconstruct_then_uses(prior, tmp_path, capsys):
    from tests.io.conftest import BRAIN_SAMPLE

    args = ["calibrate", str(BRAIN_SAMPLE), "--prior", str(prior), "--method", "vi", "--task", "superres",
            "--factor", "4", "--plane", "axial", "--slices", "22", "--steps", "3", "--samples", "4",
            "--cache", str(tmp_path / "runs")]
    written = tmp_path / "tiny.calibration.json"
    assert main(args + ["--strata", "1"]) == 0
    assert all(r.strata == 1 and sorted(r.lambdas) == ["all"] for r in CalibrationFile.load(written).records)
    runs = sorted((tmp_path / "runs").glob("*.npz"))
    assert len(runs) >= 20
    assert main(args) == 0  # the default: quartile strata, refitted from the kept runs
    assert sorted((tmp_path / "runs").glob("*.npz")) == runs
    cal = CalibrationFile.load(written)
    assert cal.prior_sha256 == file_sha256(prior)
    assert sorted(r.key["level"] for r in cal.records) == [0.8, 0.9, 0.95]
    assert all(r.key["factor"] == 4 and r.n_images["all"] >= 20 and r.strata == 4 for r in cal.records)
    lams = {r.key["level"]: r.lambdas["all"] for r in cal.records}
    assert 0 < lams[0.8] < lams[0.9] < lams[0.95]
    assert all(r.lambdas["all|q1"] != r.lambdas["all|q4"] for r in cal.records)
    said = capsys.readouterr().out
    assert "wrote 3 records" in said and "leave-one-out coverage all 0." in said
    loo = cal.records[1].notes["leave_one_out"]
    assert loo["images"] == cal.records[1].n_images["all"] and list(loo["by_plane"]) == ["axial"]
    assert 0 < loo["groups"]["all"] <= 1

    low = np.asarray(nib.load(BRAIN_SAMPLE).dataobj, np.float32)
    slab = low[..., low.shape[2] // 2][:128, :128].reshape(8, 16, 8, 16).mean(axis=(1, 3))
    src = tmp_path / "low.nii.gz"
    nib.save(nib.Nifti1Image(slab[..., None], np.diag([16.0, 16.0, 1.0, 1.0])), src)
    out = tmp_path / "out"
    assert main(["reconstruct", str(src), "--prior", str(prior), "--method", "vi", "--steps", "3", "--samples", "4",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["interval"]["calibrated"] is True
    assert {"lower.nii.gz", "upper.nii.gz"} <= set(summary["outputs"])
    lower, upper = (nib.load(out / f"{n}.nii.gz").get_fdata() for n in ("lower", "upper"))
    assert (upper >= lower).all() and (upper > lower).any()
    said = capsys.readouterr().out
    assert "90% interval calibrated with tiny.calibration.json" in said and "per std quartile" in said


def test_calibrate_refuses_an_existing_file_of_another_prior(prior, tmp_path, capsys):
    from tests.io.conftest import BRAIN_SAMPLE

    other = tmp_path / "other.json"
    CalibrationFile("f" * 64, "other", []).save(other)
    code = main(["calibrate", str(BRAIN_SAMPLE), "--prior", str(prior), "--slices", "11", "--steps", "2",
                 "--samples", "3", "--out", str(other)])
    assert code == 2 and "another prior" in capsys.readouterr().err
