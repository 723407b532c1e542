"""Affine helpers: resampling keeps pixel centres right; napari scale/translate agree with the affine."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brgm.io import (
    affine_from_layer,
    layer_scale_translate,
    load_image,
    resampled_affine,
    resampled_scale_translate,
)
from napari_brgm.io.geometry import default_affine, nifti_to_zyx, zyx_to_nifti
from tests.io.conftest import BRAIN_SAMPLE

# An oblique, anisotropic affine (rotation about two axes, 3 x 0.7 x 0.5 mm voxels).
_C, _S = np.cos(0.3), np.sin(0.3)
_ROT = np.array([[1, 0, 0], [0, _C, -_S], [0, _S, _C]]) @ np.array([[_C, 0, _S], [0, 1, 0], [-_S, 0, _C]])
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = _ROT * [3.0, 0.7, 0.5]
OBLIQUE[:3, 3] = [12.0, -40.0, 7.5]


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_each_old_pixel_is_the_mean_of_its_new_subpixel_centres(factor):
    new = resampled_affine(OBLIQUE, factor)
    for z, y, x in [(0, 0, 0), (2, 5, 9)]:
        sub = [new @ [z, factor * y + a, factor * x + b, 1] for a in range(factor) for b in range(factor)]
        np.testing.assert_allclose(np.mean(sub, axis=0), OBLIQUE @ [z, y, x, 1], atol=1e-9)
    # z untouched, in-plane voxel size divided by the factor.
    np.testing.assert_allclose(new[:3, 0], OBLIQUE[:3, 0])
    np.testing.assert_allclose(np.linalg.norm(new[:3, 1:3], axis=0), [0.7 / factor, 0.5 / factor])


def test_resampled_origin_shift_formula():
    factor = 4
    new = resampled_affine(OBLIQUE, factor, axes=(2,))
    np.testing.assert_allclose(new[:3, 3], OBLIQUE[:3, 3] - (factor - 1) / (2 * factor) * OBLIQUE[:3, 2])
    np.testing.assert_allclose(new[:3, 1], OBLIQUE[:3, 1])


def test_napari_scale_translate_follow_the_resampled_affine():
    scale, translate = layer_scale_translate(OBLIQUE, 3)
    assert scale == pytest.approx((3.0, 0.7, 0.5))
    expected = layer_scale_translate(resampled_affine(OBLIQUE, 3), 3)
    got = resampled_scale_translate(scale, translate, 3)
    np.testing.assert_allclose(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1])
    assert got[1][1] == pytest.approx(translate[1] - (3 - 1) / (2 * 3) * 0.7)


def test_affine_from_layer_inverts_layer_scale_translate():
    for ndim in (2, 3):
        scale, translate = layer_scale_translate(OBLIQUE, ndim)
        np.testing.assert_allclose(affine_from_layer(scale, translate, OBLIQUE), OBLIQUE, atol=1e-9)
    rebuilt = affine_from_layer((0.8, 0.8), (5.0, -3.0))
    assert layer_scale_translate(rebuilt, 2) == (pytest.approx((0.8, 0.8)), pytest.approx((5.0, -3.0)))


def test_default_affine_is_dicom_identity_orientation_in_ras():
    affine = default_affine((0.5, 0.2))
    # column index -> patient left (RAS -x), row index -> posterior (RAS -y)
    np.testing.assert_allclose(affine @ [0, 1, 0, 1], [0, -0.5, 0, 1])
    np.testing.assert_allclose(affine @ [0, 0, 1, 1], [-0.2, 0, 0, 1])


def test_nifti_index_order_swap_is_its_own_inverse():
    np.testing.assert_allclose(zyx_to_nifti(nifti_to_zyx(OBLIQUE)), OBLIQUE)


def test_medical_image_resampled_updates_geometry_and_metadata():
    image = load_image(BRAIN_SAMPLE)
    finer = image.resampled(np.zeros((36, 434, 362), np.float32), 2)
    assert finer.spacing == pytest.approx((1.0, 0.5, 0.5))
    assert finer.metadata["shape"] == [36, 434, 362]
    np.testing.assert_allclose(finer.metadata["affine"], resampled_affine(image.affine, 2))
    assert image.metadata["shape"] == [36, 217, 181]  # the source is untouched
    with pytest.raises(ValueError, match=r"not 2x \(36, 217, 181\) in y and x \(\(36, 434, 362\)\)"):
        image.resampled(np.zeros((36, 434, 360)), 2)
