"""DICOM output (io/dicom_out.py): geometry, pixels, identity and conformance of the derived series.

Sources: a 3-slice MR series built from pydicom's MR_small.dcm, CT_small.dcm, the project's CR
chest X-ray (MONOCHROME1), a NIfTI slab of the brain sample and a PNG. Outputs are made with
numpy (no generator): the expected numbers are known exactly.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
)

from napari_brgm.io import load_image, resampled_affine
from napari_brgm.io.dicom_out import CAUTION, write_dicom
from napari_brgm.io.geometry import output_affine
from napari_brgm.io.napari_writer import write_dicom_series
from tests.io.conftest import BRAIN_SAMPLE, XRAY_SAMPLE, make_mr_series, pydicom_file

RUN = {"method": "vi", "prior": "brain-t1", "task": "superres", "factor": 2, "steps": 30, "samples": 4,
       "interval": 0.9, "calibrated": False, "version": "0.1.0"}
DCIODVFY, DCENTVFY = shutil.which("dciodvfy"), shutil.which("dcentvfy")


def upsample(array: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(array, factor, axis=-2), factor, axis=-1)


def assert_within_half_step(read: np.ndarray, expected: np.ndarray, slope: float) -> None:
    """Stored integers times the slope give the floats back to half a step (plus float32 rounding of the reader)."""
    error = np.abs(np.asarray(read, dtype=float) - expected).max()
    assert error <= slope / 2 + 1e-6 * np.abs(expected).max(), (error, slope)


def read_series(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.iterdir())]


def errors(path: Path) -> set[str]:
    """dciodvfy's `Error -` lines for one file."""
    run = subprocess.run([DCIODVFY, "-new", str(path)], capture_output=True, text=True, check=False)
    return {line.strip() for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")}


def centre(ds: pydicom.Dataset, row: float, col: float) -> np.ndarray:
    """Patient (LPS) position of pixel (row, col) of a single-frame image."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return np.asarray(ds.ImagePositionPatient, dtype=float) + col * dc * iop[:3] + row * dr * iop[3:]


@pytest.fixture(scope="module")
def mr_folder(tmp_path_factory) -> Path:
    return make_mr_series(tmp_path_factory.mktemp("mr") / "mr_series")


@pytest.fixture(scope="module")
def mr(mr_folder):
    return load_image(mr_folder)


@pytest.fixture(scope="module")
def mr_outputs(mr):
    """SR x2 outputs of the MR series: a non-integer mean, a std with fine values, the interval ends."""
    rng = np.random.default_rng(0)
    mean = upsample(mr.data, 2) + rng.uniform(-0.49, 0.49, size=(3, 128, 128))
    std = rng.uniform(0.0, 7.5, size=mean.shape)
    return {"mean": mean, "std": std, "lower": mean - 1.645 * std, "upper": mean + 1.645 * std}


@pytest.fixture(scope="module")
def mr_written(tmp_path_factory, mr, mr_outputs):
    out = tmp_path_factory.mktemp("mr_out")
    return out, write_dicom(out, mr, mr_outputs, factor=2, description=RUN, run_id="run-1")


@pytest.fixture(scope="module")
def ct():
    return load_image(pydicom_file("CT_small.dcm"))


@pytest.fixture(scope="module")
def ct_written(tmp_path_factory, ct):
    rng = np.random.default_rng(1)
    outputs = {"mean": upsample(ct.data, 2) + rng.uniform(-0.5, 0.5, (256, 256)),
               "std": rng.uniform(0, 40, (256, 256))}
    out = tmp_path_factory.mktemp("ct_out")
    return out, outputs, write_dicom(out, ct, outputs, factor=2, description=RUN, run_id="run-ct")


@pytest.fixture(scope="module")
def cr():
    return load_image(XRAY_SAMPLE)


@pytest.fixture(scope="module")
def cr_written(tmp_path_factory, cr):
    rng = np.random.default_rng(2)
    outputs = {"mean": cr.data + rng.uniform(-0.4, 0.4, cr.data.shape), "std": rng.uniform(0, 90, cr.data.shape)}
    out = tmp_path_factory.mktemp("cr_out")
    description = {**RUN, "task": "denoise", "factor": 1, "method": "dip"}
    return out, outputs, write_dicom(out, cr, outputs, description=description, run_id="run-cr")


@pytest.fixture(scope="module")
def nifti(tmp_path_factory):
    slab = nib.load(BRAIN_SAMPLE).slicer[:, :, 10:14]
    path = tmp_path_factory.mktemp("nifti") / "slab.nii.gz"
    nib.save(slab, path)
    return load_image(path)


@pytest.fixture(scope="module")
def nifti_written(tmp_path_factory, nifti):
    outputs = {"mean": upsample(nifti.data, 2), "std": np.full((4, 434, 362), 0.25)}
    out = tmp_path_factory.mktemp("nifti_out")
    return out, outputs, write_dicom(out, nifti, outputs, factor=2, description=RUN, run_id="run-nii")


# --- geometry -------------------------------------------------------------------------------------


def test_sr_series_has_half_the_spacing_and_the_same_field_of_view(mr_folder, mr_written, mr):
    out, _ = mr_written
    volume = hd.get_volume_from_series(read_series(out / "mean"))
    assert volume.spacing == pytest.approx((0.8, 0.3125 / 2, 0.3125 / 2))
    sources = {round(float(ds.ImagePositionPatient[2]), 4): ds for ds in read_series(mr_folder)}
    for ds in read_series(out / "mean"):
        assert (ds.Rows, ds.Columns) == (128, 128)
        assert [float(v) for v in ds.PixelSpacing] == [0.15625, 0.15625]
        src = sources[round(float(ds.ImagePositionPatient[2]), 4)]
        for row, col in ((0, 0), (10, 37), (63, 63)):
            hr = np.mean([centre(ds, 2 * row + i, 2 * col + j) for i in (0, 1) for j in (0, 1)], axis=0)
            assert np.abs(hr - centre(src, row, col)).max() < 1e-6


def test_sr_series_round_trips_through_our_reader(mr_written, mr, mr_outputs):
    out, _ = mr_written
    back = load_image(out / "mean")
    assert back.spacing == pytest.approx((mr.spacing[0], mr.spacing[1] / 2, mr.spacing[2] / 2))
    np.testing.assert_allclose(back.affine, resampled_affine(mr.affine, 2), atol=1e-6)
    np.testing.assert_array_equal(back.data, np.rint(mr_outputs["mean"]))
    assert back.metadata["dicom"]["files"] == [str(p) for p in sorted((out / "mean").iterdir())]


CORONAL = [10, 11, 12, 13]


@pytest.fixture(scope="module")
def coronal_written(tmp_path_factory, mr):
    """Coronal planes (axis 1) of the axial MR series, SR x2."""
    mean = upsample(mr.data.transpose(1, 0, 2)[CORONAL], 2) + 0.25
    out = tmp_path_factory.mktemp("coronal")
    return out, mean, write_dicom(out, mr, {"mean": mean, "std": np.full(mean.shape, 2.5)}, factor=2, axis=1,
                                  slices=CORONAL, description=RUN, run_id="coronal")


def test_reformatted_planes_carry_their_own_geometry(coronal_written, mr, mr_folder):
    """Same study and frame of reference as the source, geometry from the affine, all slices referenced."""
    out, mean, written = coronal_written
    slices = CORONAL
    source = read_series(mr_folder)
    datasets = read_series(out / "mean")
    assert len(written["mean"]) == 4
    for ds in datasets:
        assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID) == (source[0].StudyInstanceUID,
                                                               source[0].FrameOfReferenceUID)
        assert np.allclose([float(v) for v in ds.ImageOrientationPatient], [1, 0, 0, 0, 0, 1])
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "REFORMATTED"] and "SliceLocation" not in ds
        assert {item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence} == {s.SOPInstanceUID for s in source}
    back = load_image(out / "mean")
    expected = output_affine(mr.affine, axis=1, slices=slices, factor=2)
    # The reader stacks planes along their normal (row x column direction), here against the axis.
    flipped = expected.copy()
    flipped[:3, 0] *= -1
    flipped[:3, 3] = expected[:3, 3] + expected[:3, 0] * (len(slices) - 1)
    np.testing.assert_allclose(back.affine, flipped, atol=1e-6)
    np.testing.assert_array_equal(back.data, np.rint(mean)[::-1])
    assert back.spacing == pytest.approx((mr.spacing[1], mr.spacing[0] / 2, mr.spacing[2] / 2))
    pm = hd.imread(written["std_pm"][0]).get_volume()
    np.testing.assert_allclose(pm.affine, hd.get_volume_from_series(datasets).affine, atol=1e-6)


def test_output_affine_of_planes_along_each_axis():
    affine = np.array([[0, 0, -0.5, 90], [0, -0.7, 0, 91], [2.0, 0, 0, -5], [0, 0, 0, 1]])
    stack = output_affine(affine, axis=2, slices=[4, 6, 8], factor=1)
    index = np.array([2, 3, 5, 1])  # plane 2 (x = 8), row 3 (z = 3), column 5 (y = 5)
    np.testing.assert_allclose(stack @ index, affine @ [3, 5, 8, 1])
    fine = output_affine(affine, axis=0, slices=[2], factor=4)
    np.testing.assert_allclose(fine, resampled_affine(affine @ np.array(
        [[1, 0, 0, 2], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), 4))
    with pytest.raises(ValueError, match="not evenly spaced"):
        output_affine(affine, axis=0, slices=[0, 1, 3])


# --- pixels ---------------------------------------------------------------------------------------


def test_mr_mean_is_stored_rounded_without_a_rescale(mr_written, mr_outputs, mr):
    out, _ = mr_written
    for ds in read_series(out / "mean"):
        assert "RescaleSlope" not in ds and ds.PixelRepresentation == 1 and ds.BitsStored == 16
        k = round((float(ds.ImagePositionPatient[2]) - float(mr.affine[2, 3])) / 0.8)
        np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds), np.rint(mr_outputs["mean"][k]))


def test_std_and_interval_images_keep_their_fine_values(mr_written, mr_outputs):
    out, _ = mr_written
    for kind in ("std", "lower", "upper"):
        back = load_image(out / kind)
        slope = back.metadata["rescale"][0] if back.metadata["rescale"] else 1.0
        assert_within_half_step(back.data, mr_outputs[kind], slope)
    std = read_series(out / "std")[0]
    assert float(std.RescaleSlope) < 1e-3 and std.PixelRepresentation == 0
    assert float(std.WindowWidth) == pytest.approx(np.percentile(mr_outputs["std"], 99))
    assert "standard deviation" in std.ImageComments and std.SeriesDescription.endswith("std [research]")


def test_slices_with_different_rescales_get_one_for_the_series(tmp_path, mr_folder):
    folder = tmp_path / "rescaled"
    folder.mkdir()
    for k, path in enumerate(sorted(mr_folder.iterdir())):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = [1, 0.5, 0.25][k], [0, -10, -20][k], "US"
        ds.save_as(folder / path.name)
    source = load_image(folder)
    mean = source.data + 0.1
    write_dicom(tmp_path / "out", source, {"mean": mean}, description={"task": "denoise"}, run_id="r")
    datasets = read_series(tmp_path / "out" / "mean")
    assert {(float(ds.RescaleSlope), float(ds.RescaleIntercept)) for ds in datasets} == {(0.25, -20.0)}
    assert_within_half_step(load_image(tmp_path / "out" / "mean").data, mean, 0.25)


def test_ct_mean_in_hounsfield_units_within_half_a_step(ct_written):
    out, outputs, _ = ct_written
    [ds] = read_series(out / "mean")
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    hu = apply_modality_lut(ds.pixel_array, ds)
    assert_within_half_step(hu, outputs["mean"], float(ds.RescaleSlope))
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert "PixelPaddingValue" not in ds and not any(elem.tag.is_private for elem in ds)


def test_cr_keeps_monochrome1_in_the_sources_sense(cr_written, cr):
    out, outputs, written = cr_written
    assert set(written) == {"mean", "std"}  # no Parametric Map for a radiograph
    [ds] = read_series(out / "mean")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 15
    assert ds.DerivationCodeSequence[0].CodeValue == "113087"  # smoothing (denoising)
    back = load_image(out / "mean")
    np.testing.assert_array_equal(back.data, np.rint(outputs["mean"]))
    assert back.window == cr.window
    [std] = read_series(out / "std")
    assert std.PhotometricInterpretation == "MONOCHROME2"
    assert_within_half_step(load_image(out / "std").data, outputs["std"], float(std.RescaleSlope))


def test_imager_pixel_spacing_shrinks_with_the_factor(tmp_path):
    ds = pydicom.dcmread(XRAY_SAMPLE)
    ds.PixelData = ds.pixel_array[:32, :40].copy().tobytes()
    ds.Rows, ds.Columns = 32, 40
    ds.ImagerPixelSpacing = [0.2, 0.3]
    ds.add_new(0x00280107, "US", 32767)  # LargestImagePixelValue: stale after any change
    ds.add_new(0x60000010, "US", 32)  # an overlay plane (rows), stale on a finer grid
    ds.private_block(0x0029, "VENDOR SCALE", create=True).add_new(0x01, "DS", "0.5")
    ds.save_as(tmp_path / "small_cr.dcm")
    small = load_image(tmp_path / "small_cr.dcm")
    write_dicom(tmp_path / "out", small, {"mean": upsample(small.data, 2)}, factor=2, description=RUN, run_id="r")
    [out] = read_series(tmp_path / "out" / "mean")
    assert [float(v) for v in out.ImagerPixelSpacing] == [0.1, 0.15]
    assert [float(v) for v in out.PixelSpacing] == [0.0, 0.0]  # unknown (0) stays unknown
    assert (out.Rows, out.Columns) == (64, 80)
    assert "LargestImagePixelValue" not in out and not any(e.tag.group in (0x0029, 0x6000) for e in out)


def test_lossy_source_gives_uncompressed_output_marked_lossy(tmp_path):
    ds = pydicom.dcmread(pydicom_file("JPEG2000.dcm"))
    del ds.LossyImageCompression
    ds.save_as(tmp_path / "j2k.dcm")
    source = load_image(tmp_path / "j2k.dcm")
    write_dicom(tmp_path / "out", source, {"mean": source.data}, description={**RUN, "task": "denoise"}, run_id="r")
    [out] = read_series(tmp_path / "out" / "mean")
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.LossyImageCompression == "01"


# --- identity -------------------------------------------------------------------------------------


def test_each_kind_is_a_new_series_in_the_source_study(mr_folder, mr_written):
    out, written = mr_written
    source = read_series(mr_folder)
    series, sops = set(), set()
    for kind, number in (("mean", 1001), ("std", 2001), ("lower", 3001), ("upper", 4001)):
        datasets = read_series(out / kind)
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
        series.add(datasets[0].SeriesInstanceUID)
        sops.update(ds.SOPInstanceUID for ds in datasets)
        for ds in datasets:
            assert ds.SeriesNumber == number and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.PatientID) == (
                source[0].StudyInstanceUID, source[0].FrameOfReferenceUID, source[0].PatientID)
            assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
            assert ds.ImageComments.startswith(CAUTION)
            assert ds.DerivationCodeSequence[0].CodeValue == "113085"  # spatial resampling
            assert "method=vi" in ds.DerivationDescription and "steps=30" in ds.DerivationDescription
            [ref] = ds.SourceImageSequence
            assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
            match = [s for s in source if s.SOPInstanceUID == ref.ReferencedSOPInstanceUID]
            assert len(match) == 1 and match[0].ImagePositionPatient[2] == ds.ImagePositionPatient[2]
            assert ds.InstanceNumber == match[0].InstanceNumber
            assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
            assert [item.Manufacturer for item in ds.ContributingEquipmentSequence] == ["TOSHIBA_MEC", "napari-brgm"]
    pm = pydicom.dcmread(written["std_pm"][0])
    series.add(pm.SeriesInstanceUID)
    sops.add(pm.SOPInstanceUID)
    assert len(series) == 5 and source[0].SeriesInstanceUID not in series
    assert len(sops) == 13 and not sops & {s.SOPInstanceUID for s in source}


def test_rerun_gives_the_same_uids_and_another_run_new_ones(tmp_path, mr, mr_outputs, mr_written):
    out, _ = mr_written
    outputs = {"mean": mr_outputs["mean"]}
    write_dicom(tmp_path / "again", mr, outputs, factor=2, description=RUN, run_id="run-1")
    write_dicom(tmp_path / "other", mr, outputs, factor=2, description=RUN, run_id="run-2")

    def uids(folder):
        return [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in read_series(folder / "mean")]

    assert uids(tmp_path / "again") == uids(out)
    assert not set(uids(tmp_path / "other")) & set(uids(out))


def test_long_descriptions_are_cut_to_their_vr_under_raise(tmp_path, monkeypatch):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.SeriesDescription = "Abdomen helical with contrast, portal venous phase 5 mm standard"  # 64 characters
    ds.save_as(tmp_path / "ct.dcm")
    source = load_image(tmp_path / "ct.dcm")
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.RAISE)
    description = {**RUN, "prior": "p" * 3000, "method": "m" * 80}
    written = write_dicom(tmp_path / "out", source, {"mean": upsample(source.data, 2), "std": np.ones((256, 256))},
                          factor=2, description=description, run_id="r")
    for path in (written["mean"][0], written["std_pm"][0]):
        out = pydicom.dcmread(path)
        assert len(out.SeriesDescription) <= 64 and out.SeriesDescription.endswith("[research]")
    out = pydicom.dcmread(written["mean"][0])
    assert out.SeriesDescription.startswith("Abdomen helical")
    assert len(out.DerivationDescription) <= 1024 and len(out.ManufacturerModelName) == 64


# --- Parametric Map -------------------------------------------------------------------------------


def test_std_parametric_map_round_trips_floats_on_the_mean_grid(mr_written, mr_outputs):
    out, written = mr_written
    [path] = written["std_pm"]
    pm = pydicom.dcmread(path)
    assert pm.SOPClassUID == ParametricMapStorage and "Laterality" in pm
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeValue == "386136009"
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "[arb'U]"
    mean = {tuple(np.round(np.asarray(ds.ImagePositionPatient, dtype=float), 5)): ds
            for ds in read_series(out / "mean")}
    frames = pm.pixel_array
    assert frames.dtype == np.float32
    for frame, item in zip(frames, pm.PerFrameFunctionalGroupsSequence, strict=True):
        ipp = tuple(np.round(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float), 5))
        k = sorted(mean).index(ipp)  # the series' slices run along +z
        np.testing.assert_array_equal(frame, mr_outputs["std"][k].astype(np.float32))
    volume = hd.imread(path).get_volume()
    np.testing.assert_allclose(volume.affine, hd.get_volume_from_series(read_series(out / "mean")).affine, atol=1e-6)


def test_ct_parametric_map_is_in_hounsfield_units(ct_written):
    _, outputs, written = ct_written
    pm = pydicom.dcmread(written["std_pm"][0])
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "[hnsf'U]"
    np.testing.assert_array_equal(pm.pixel_array, outputs["std"].astype(np.float32))


# --- sources without DICOM ------------------------------------------------------------------------


def test_nifti_gives_a_fresh_research_study_with_the_nifti_geometry(nifti_written, nifti, tmp_path):
    out, outputs, written = nifti_written
    datasets = read_series(out / "mean")
    first = datasets[0]
    assert first.SOPClassUID == MRImageStorage and first.Modality == "MR"
    assert str(first.PatientName) == "Anonymous^" and first.PatientID.startswith("BRGM-")
    assert first.Laterality == "" and first.StudyInstanceUID.startswith(pydicom.uid.PYDICOM_ROOT_UID)
    assert len({(ds.StudyInstanceUID, ds.FrameOfReferenceUID) for ds in datasets}) == 1
    assert "SourceImageSequence" not in first
    back = load_image(out / "mean")
    np.testing.assert_allclose(back.affine, resampled_affine(nifti.affine, 2), atol=1e-6)
    np.testing.assert_array_equal(back.data, outputs["mean"])
    assert hd.get_volume_from_series(datasets).spacing == pytest.approx((1.0, 0.5, 0.5))
    pm = pydicom.dcmread(written["std_pm"][0])
    assert pm.StudyInstanceUID == first.StudyInstanceUID
    np.testing.assert_allclose(load_image(out / "std").data, 0.25, atol=float(read_series(out / "std")[0].RescaleSlope))
    # Another run on the same image lands in the same study, as another series.
    again = write_dicom(tmp_path, nifti, {"mean": outputs["mean"]}, factor=2, description=RUN, run_id="run-b")
    other = pydicom.dcmread(again["mean"][0])
    assert other.StudyInstanceUID == first.StudyInstanceUID and other.SeriesInstanceUID != first.SeriesInstanceUID


def test_nifti_with_fractional_values_gets_a_real_rescale(tmp_path):
    volume = np.linspace(0, 1, 3 * 8 * 9, dtype=np.float32).reshape(9, 8, 3)
    nib.save(nib.Nifti1Image(volume, np.diag([0.9, 0.9, 3.0, 1.0])), tmp_path / "frac.nii")
    source = load_image(tmp_path / "frac.nii")
    write_dicom(tmp_path / "out", source, {"mean": source.data}, description={"task": "denoise"}, run_id="r")
    back = load_image(tmp_path / "out" / "mean")
    slope = back.metadata["rescale"][0]
    assert slope < 1e-4
    assert_within_half_step(back.data, source.data, slope)
    np.testing.assert_allclose(back.affine, source.affine, atol=1e-6)


def test_png_gives_a_secondary_capture_image(tmp_path):
    pixels = (np.arange(24 * 30).reshape(24, 30) % 256).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    source = load_image(tmp_path / "a.png")
    mean = upsample(source.data, 2) + 0.3
    written = write_dicom(tmp_path / "out", source, {"mean": mean, "std": np.full((48, 60), 0.2)}, factor=2,
                          description=RUN, run_id="r")
    assert set(written) == {"mean", "std"}
    ds = pydicom.dcmread(written["mean"][0])
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
    assert list(ds.PatientOrientation) == ["L", "F"] and "ImagePositionPatient" not in ds
    np.testing.assert_array_equal(ds.pixel_array, np.rint(mean))
    std = pydicom.dcmread(written["std"][0])
    np.testing.assert_allclose(apply_modality_lut(std.pixel_array, std), 0.2, atol=float(std.RescaleSlope))


# --- conformance ----------------------------------------------------------------------------------


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dciodvfy_finds_no_errors_beyond_the_sources(mr_folder, mr_written, ct_written, cr_written, nifti_written,
                                                    coronal_written):
    clean = [*(p for paths in mr_written[1].values() for p in paths[:1]),
             *(p for paths in ct_written[2].values() for p in paths),
             *(p for paths in nifti_written[2].values() for p in paths[:1]),
             *(p for paths in coronal_written[2].values() for p in paths[:1])]
    assert not errors(next(mr_folder.iterdir())) and not errors(pydicom_file("CT_small.dcm"))
    found = {str(p): errors(p) for p in clean}
    assert not any(found.values()), found
    inherited = errors(XRAY_SAMPLE)
    assert inherited  # the CR sample's own errors (zero PixelSpacing, empty StudyID) are tolerated
    for paths in cr_written[2].values():
        assert errors(paths[0]) <= inherited


@pytest.mark.skipif(DCENTVFY is None, reason="dcentvfy (Debian package dicom3tools) is not installed")
def test_dcentvfy_finds_the_series_consistent(mr_written, nifti_written):
    for folder in (mr_written[0] / "mean", nifti_written[0] / "std"):
        run = subprocess.run([DCENTVFY, *map(str, sorted(folder.iterdir()))], capture_output=True, text=True,
                             check=False)
        assert run.returncode == 0 and "Error" not in run.stdout + run.stderr, run.stdout + run.stderr


# --- refusals -------------------------------------------------------------------------------------


def test_bad_requests_are_refused_with_the_reason(tmp_path, mr, cr):
    mean = upsample(mr.data, 2)
    cases = [
        ({"mean": mean}, {"factor": 4}, "expected \\(3, 256, 256\\)"),
        ({"mean": mean[:2]}, {"factor": 2}, "expected \\(3, 128, 128\\)"),
        ({"mean": mean[:2]}, {"factor": 2, "slices": [0, 3]}, "outside 0..2"),
        ({"samples": mean}, {"factor": 2}, "unknown output kind"),
        ({"mean": mean * np.nan}, {"factor": 2}, "NaN"),
        ({"std": -mean}, {"factor": 2}, "negative"),
        ({"mean": mean}, {"factor": 2, "uncertainty": "maybe"}, "uncertainty must be"),
    ]
    for outputs, options, message in cases:
        with pytest.raises(ValueError, match=message):
            write_dicom(tmp_path, mr, outputs, description=RUN, run_id="r", **options)
    with pytest.raises(ValueError, match="needs an MR or CT source"):
        write_dicom(tmp_path, cr, {"std": np.ones(cr.data.shape)}, description=RUN, run_id="r", uncertainty="pm")
    enhanced = load_image(pydicom_file("emri_small.dcm"))
    with pytest.raises(ValueError, match="not supported yet"):
        write_dicom(tmp_path, enhanced, {"mean": enhanced.data}, description=RUN, run_id="r")
    assert list(tmp_path.iterdir()) == []


def test_existing_series_is_kept_unless_overwrite(tmp_path, ct):
    outputs = {"mean": ct.data}
    write_dicom(tmp_path, ct, outputs, description=RUN, run_id="a")
    before = pydicom.dcmread(tmp_path / "mean" / "IM_0001.dcm").SeriesInstanceUID
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_dicom(tmp_path, ct, outputs, description=RUN, run_id="b")
    assert pydicom.dcmread(tmp_path / "mean" / "IM_0001.dcm").SeriesInstanceUID == before
    write_dicom(tmp_path, ct, outputs, description=RUN, run_id="b", overwrite=True)
    assert pydicom.dcmread(tmp_path / "mean" / "IM_0001.dcm").SeriesInstanceUID != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mean"]  # no temporary folders left behind


# --- napari writer --------------------------------------------------------------------------------


def result_layer_meta(image, kind: str, slice_index: int, factor: int) -> dict:
    """What widgets/layers.py gives a result layer: the input's metadata plus the run record."""
    metadata = copy.deepcopy(image.metadata)
    metadata["brgm"] = {"key": f"{image.name}|{slice_index}|superres|{factor}|vi", "kind": kind,
                        "slice": slice_index, "task": "superres", "factor": factor, "prior": "brain-t1",
                        "method": "vi", "seed": 0, "partial": False, "interval": {"level": 0.9, "calibrated": True},
                        "settings": {"task": "superres", "factor": factor, "method": "vi", "steps": 30, "samples": 4}}
    return {"name": f"{image.name} z{slice_index} SRx{factor} VI {kind}", "metadata": metadata}


def test_napari_writer_saves_a_result_layer_as_a_derived_series(tmp_path, mr, mr_folder):
    std = np.random.default_rng(3).uniform(0, 5, (1, 128, 128))
    paths = write_dicom_series(str(tmp_path / "saved"), std, result_layer_meta(mr, "uncertainty", 1, 2))
    assert [Path(p).parent.name for p in paths] == ["std", "std_pm"]
    ds = pydicom.dcmread(paths[0])
    source = {s.SOPInstanceUID: s for s in read_series(mr_folder)}
    src = source[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
    assert float(src.ImagePositionPatient[2]) == pytest.approx(mr.affine[2, 3] + 0.8)  # slice 1 of the series
    assert "calibrated=True" in ds.DerivationDescription and "interval=0.9" in ds.DerivationDescription
    back = load_image(Path(paths[0]).parent)
    assert_within_half_step(back.data, std[0], float(ds.RescaleSlope))
    again = write_dicom_series(str(tmp_path / "saved"), std, result_layer_meta(mr, "uncertainty", 1, 2))
    assert pydicom.dcmread(again[0]).SOPInstanceUID == ds.SOPInstanceUID  # same result, same UIDs


def test_napari_writer_saves_a_plain_dicom_layer_as_mean(tmp_path, ct):
    [path] = write_dicom_series(str(tmp_path / "ct"), ct.data, {"name": "ct", "metadata": ct.metadata})
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == CTImageStorage and ds.SeriesNumber == 1001
    assert np.abs(apply_modality_lut(ds.pixel_array, ds) - ct.data).max() == 0


def test_napari_writer_saves_a_slab_in_volume_order(tmp_path, mr, coronal_written):
    """A layer holding coronal planes 10..13 in the volume's (z, y, x) order, as MedicalImage.slab records it."""
    _, mean, _ = coronal_written
    metadata = {**copy.deepcopy(mr.metadata), "slab_of": {"shape": [3, 64, 64], "axis": 1, "slices": CORONAL,
                                                          "factor": 2}}
    slab = np.moveaxis(mean, 0, 1)  # (z 6, planes 4, x 128)
    paths = write_dicom_series(str(tmp_path / "slab"), slab, {"name": "slab", "metadata": metadata})
    back = load_image(Path(paths[0]).parent)
    np.testing.assert_array_equal(back.data, np.rint(mean)[::-1])
    assert back.spacing == pytest.approx((0.3125, 0.4, 0.15625))


def test_napari_writer_refuses_layers_it_cannot_place(tmp_path, nifti, mr):
    with pytest.raises(ValueError, match="did not come from a DICOM series or file.*save it as NIfTI"):
        write_dicom_series(str(tmp_path / "x"), nifti.data, {"name": "slab", "metadata": nifti.metadata})
    with pytest.raises(ValueError, match="'samples' images"):
        write_dicom_series(str(tmp_path / "x"), np.zeros((4, 1, 128, 128)), result_layer_meta(mr, "samples", 0, 2))
    with pytest.raises(ValueError, match="expected \\(1, 128, 128\\)"):
        write_dicom_series(str(tmp_path / "x"), np.zeros((1, 64, 64)), result_layer_meta(mr, "mean", 0, 2))


def test_manifest_offers_the_dicom_writer_for_folders():
    from npe2 import PluginManifest

    from tests.conftest import REPO

    manifest = PluginManifest.from_file(REPO / "src" / "napari_brgm" / "napari.yaml")
    writers = {w.command: w for w in manifest.contributions.writers}
    assert writers["napari-brgm.write_dicom_series"].filename_extensions == []
    assert writers["napari-brgm.write_nifti"].filename_extensions == [".nii", ".nii.gz"]
