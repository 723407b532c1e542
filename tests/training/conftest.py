"""Small synthetic 'heads' (ellipsoids with an inner structure) written as NIfTI, and tiny training configs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_brgm.training.stylegan2 import TrainConfig


def head_volume(shape=(24, 40, 32), spacing=(2.0, 1.0, 1.0)) -> np.ndarray:
    """[x, y, z] voxels (RAS order): an ellipsoid 'skull' with a brighter off-centre 'ventricle' in +y (anterior)."""
    idx = np.indices(shape).astype(np.float64)
    c = (np.array(shape) - 1) / 2
    mm = [(idx[i] - c[i]) * spacing[i] for i in range(3)]
    r = np.sqrt((mm[0] / 20) ** 2 + (mm[1] / 16) ** 2 + (mm[2] / 12) ** 2)
    vol = np.where(r < 1, 100.0, 0.0)
    vol += np.where((mm[0] / 5) ** 2 + ((mm[1] - 8) / 4) ** 2 < 1, 80.0, 0.0) * (r < 1)
    return vol.astype(np.float32)


def write_nifti(path, data_xyz, spacing, axcodes=("R", "A", "S")):
    """Store RAS-order data in the voxel order given by `axcodes` (same anatomy, different file layout)."""
    affine = np.diag([*spacing, 1.0])
    img = nib.Nifti1Image(data_xyz, affine)
    target = nib.orientations.axcodes2ornt(axcodes)
    img = img.as_reoriented(nib.orientations.ornt_transform(nib.io_orientation(affine), target))
    nib.save(img, path)
    return path


@pytest.fixture
def head_nifti(tmp_path):
    spacing = (2.0, 1.0, 1.0)
    return write_nifti(tmp_path / "head.nii.gz", head_volume(spacing=spacing), spacing)


@pytest.fixture
def tiny_config():
    return TrainConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=16,
                       batch=4, r1_interval=2, seed=3)
