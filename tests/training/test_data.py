import numpy as np
import pytest
from PIL import Image

from napari_brgm.engine.intensity import IntensityMap
from napari_brgm.training.data import load_slices, reorient, square_slices
from tests.training.conftest import head_volume, write_nifti


def test_slices_do_not_depend_on_the_file_voxel_order(tmp_path):
    spacing = (2.0, 1.0, 1.0)
    data = head_volume(spacing=spacing)
    ras = write_nifti(tmp_path / "ras.nii.gz", data, spacing, ("R", "A", "S"))
    lps = write_nifti(tmp_path / "lsa.nii.gz", data, spacing, ("L", "S", "A"))
    a, b = load_slices([ras], 16), load_slices([lps], 16)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.images.numpy(), b.images.numpy(), atol=1e-5)


def test_axial_slices_show_anterior_up_and_skip_empty_planes(head_nifti):
    s = load_slices([head_nifti], 16)
    assert s.images.shape[1:] == (1, 16, 16)
    assert len(s) < 32  # planes outside the ellipsoid (z extent 24 of 32 voxels) and its thin caps are skipped
    middle = s.images[len(s) // 2, 0].numpy()
    # the bright 'ventricle' sits anterior (+y): napari rows grow posterior, so it is in the upper half
    assert middle[:8].max() > middle[8:].max()


def test_physical_square_keeps_round_things_round():
    # a disc of radius 10 mm sampled with 2 mm rows and 1 mm columns: 10×20 voxels
    yy, xx = np.mgrid[0:30, 0:40]
    disc = (((yy - 14.5) * 2) ** 2 + (xx - 19.5) ** 2 < 100).astype(np.float32)
    out, keep = square_slices(disc[None] * 50, (2.0, 1.0), 32)
    assert list(keep) == [0]
    rows, cols = np.flatnonzero(out[0].max(1) > 25), np.flatnonzero(out[0].max(0) > 25)
    assert abs(len(rows) - len(cols)) <= 1


def test_each_slice_uses_the_engines_intensity_rule(head_nifti):
    s = load_slices([head_nifti], 16)
    x = s.images[len(s) // 2, 0].numpy()
    lo, hi = np.percentile(x, [0.5, 99.5])
    assert lo == pytest.approx(-1, abs=1e-4) and hi == pytest.approx(1, abs=1e-4)
    assert IntensityMap.from_percentiles(x).lo == pytest.approx(-1, abs=1e-4)


def test_png_folder_gives_one_slice_per_file(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    yy, xx = np.mgrid[0:40, 0:30]
    for i in range(3):
        img = ((((yy - 20) / 15) ** 2 + ((xx - 15) / (8 + i)) ** 2) < 1) * (100 + 50 * i)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
    s = load_slices([folder], 16)
    assert len(s) == 3 and s.sources == ["0.png", "1.png", "2.png"]


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_slices([tmp_path / "missing.nii.gz"], 16)
    with pytest.raises(ValueError, match="plane must be one of"):
        reorient(np.zeros((2, 2, 2)), np.eye(4), (1, 1, 1), "oblique")


def test_fingerprint_changes_with_the_data(head_nifti):
    a = load_slices([head_nifti], 16)
    b = load_slices([head_nifti], 32)
    assert a.fingerprint() == load_slices([head_nifti], 16).fingerprint() != b.fingerprint()
