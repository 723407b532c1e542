"""`reconstruct(task="kspace")` and `task="deblur"`: every method, in input units, with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.engine import reconstruct
from napari_brgm.operators import Blur, KSpace, MaskError, sampling_mask
from napari_brgm.operators.fourier import fft2c_np, ifft2c_np
from tests.tiny_priors import tiny_diffusion_file, tiny_flow_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hu_image(truth):
    """The generator's own image in HU-like units (32×32 = the tiny prior's size: the fit is the identity)."""
    return (400.0 * truth[1][0, 0].numpy() - 200.0).astype(np.float32)


@pytest.fixture(scope="module")
def priors(tiny_prior, tmp_path_factory, truth):
    folder = tmp_path_factory.mktemp("priors")
    return {"stylegan2": tiny_prior, "flow": str(tiny_flow_file(folder, truth[1])),
            "diffusion": str(tiny_diffusion_file(folder))}


FAST = {"map": ("stylegan2", {}), "vi": ("stylegan2", dict(samples=3, mc_samples=2)),
        "csgm": ("stylegan2", dict(restarts=2)), "iagan": ("stylegan2", dict(restarts=2)),
        "dip": (None, {}), "reddiff": ("diffusion", dict(samples=2)), "flow": ("flow", dict(samples=2))}


def zero_filled_input(image, sampled):
    return np.abs(ifft2c_np(fft2c_np(image) * sampled))


@pytest.mark.parametrize("method", list(FAST))
def test_every_method_reconstructs_kspace_with_the_measured_lines_reinserted(priors, hu_image, method):
    kind, kw = FAST[method]
    r = reconstruct(hu_image, task="kspace", acceleration=4, center_fraction=0.125, method=method,
                    prior=None if kind is None else priors[kind], steps=4, device="cpu", **kw)
    assert r.mean.shape == r.zero_filled.shape == r.consistent.shape == hu_image.shape
    assert np.isfinite(r.mean).all() and r.settings["task"] == "kspace" and r.settings["factor"] == 1
    info = r.settings["kspace"]
    grid = tuple(info["grid"])
    assert r.sampling_mask.shape == grid and info["lines"] == int(r.sampling_mask[0].sum())
    assert info["effective_acceleration"] == pytest.approx(grid[1] / info["lines"])
    if grid == hu_image.shape:  # the prior's grid is the image's: the zero-filled image is the input's own
        np.testing.assert_allclose(r.zero_filled, zero_filled_input(hu_image, r.sampling_mask), atol=1e-3)
        # back-projection re-inserts the measured lines: the sampled k-space of `consistent` is the input's
        k_in, k_out = fft2c_np(hu_image), fft2c_np(r.consistent)
        m = r.sampling_mask | r.sampling_mask[::-1, ::-1]  # real image: sampled entries and their mirrors
        np.testing.assert_allclose(k_out[r.sampling_mask], k_in[r.sampling_mask], atol=1e-2 * np.abs(k_in).max())
        assert m.any()
    if method in ("vi", "reddiff", "flow"):
        assert r.std is not None and (r.upper >= r.lower).all()


def test_a_prior_beats_zero_filling_on_an_image_it_can_make(tiny_prior, truth):
    """In-prior: the generator's own image at R = 4; MAP in W+ gets far closer to it than the zero-filled image."""
    x = truth[1][0, 0].numpy()
    r = reconstruct(x, task="kspace", acceleration=4, center_fraction=0.125, prior=tiny_prior, method="map",
                    steps=150, window=(0, 2), seed=1)
    err_zf = np.sqrt(np.mean((r.zero_filled - x) ** 2))
    err_map = np.sqrt(np.mean((r.mean - x) ** 2))
    assert err_map < 0.5 * err_zf, (err_map, err_zf)


def test_masks_follow_the_seed_and_noise_goes_on_the_sampled_lines_only(tiny_prior, hu_image):
    a = reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, seed=3)
    b = reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, seed=3, mask_seed=3)
    c = reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, seed=3, mask_seed=4)
    assert np.array_equal(a.sampling_mask, b.sampling_mask) and not np.array_equal(a.sampling_mask, c.sampling_mask)
    assert a.settings["kspace"]["seed"] == 3 and a.settings["kspace"]["center_fraction"] == 0.08
    noisy = reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, kspace_noise=10.0)
    window = noisy.settings["intensity"]
    assert noisy.settings["sigma_y_model"] == pytest.approx(10.0 * 2 / (window["hi"] - window["lo"]))  # its default
    assert not np.allclose(noisy.zero_filled, a.zero_filled)
    rows = reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, phase_axis="rows", seed=3)
    assert (rows.sampling_mask == rows.sampling_mask[:, :1]).all()


def test_on_prepared_hands_over_the_problem_before_the_solver_with_the_results_views(tiny_prior, hu_image):
    from napari_brgm.engine.reconstruction import Prepared, kspace_views

    events = []
    r = reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=3, seed=3,
                    progress=lambda p: events.append("step"),
                    on_prepared=lambda prep: events.append(kspace_views(prep) if isinstance(prep, Prepared) else None))
    assert len(events) == 4 and all(e == "step" for e in events[1:])  # once, before the first step
    zero_filled, sampled = events[0]
    np.testing.assert_array_equal(zero_filled, r.zero_filled)
    np.testing.assert_array_equal(sampled, r.sampling_mask)


def test_user_masks_from_an_array_and_a_file(tiny_prior, hu_image, tmp_path):
    sampled = np.zeros((32, 32), np.uint8)
    sampled[:, 12:20] = 1
    sampled[:, ::5] = 1
    r = reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, kspace_mask=sampled)
    assert np.array_equal(r.sampling_mask, sampled != 0)
    assert r.settings["kspace"]["kind"] == "user" and r.settings["task_options"]["kspace_mask"].startswith("array:")
    np.save(tmp_path / "m.npy", sampled)
    f = reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, kspace_mask=str(tmp_path / "m.npy"))
    np.testing.assert_array_equal(f.mean, r.mean)
    with pytest.raises(ValueError, match="pass the array again"):
        reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, kspace_mask=r.settings["task_options"]["kspace_mask"])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(acceleration=0.5), ValueError, "at least 1"),
    (dict(acceleration=17), ValueError, "at most 16"),
    (dict(acceleration=4, center_fraction=0.3), MaskError, "nothing is left to undersample"),
    (dict(kspace_mask=np.ones((16, 16))), MaskError, "the image is 32x32"),
    (dict(kspace_mask=np.zeros((32, 32))), MaskError, "samples nothing"),
    (dict(mask=np.ones((32, 32))), ValueError, "only used for inpainting"),
    (dict(perceptual_weights="vgg.safetensors"), ValueError, "perceptual"),
    (dict(psf_sigma=2.0), TypeError, "option of task 'deblur'"),
])
def test_kspace_requests_that_cannot_work_are_refused_before_any_work(tiny_prior, hu_image, kwargs, error, match):
    with pytest.raises(error, match=match):
        reconstruct(hu_image, task="kspace", prior=tiny_prior, steps=1, **kwargs)


def test_a_complex_input_is_refused_for_every_task(tiny_prior, hu_image):
    for task in ("kspace", "denoise", "superres"):
        with pytest.raises(ValueError, match="complex"):
            reconstruct(hu_image.astype(np.complex64), task=task, prior=tiny_prior, steps=1)


def test_deblurring_recovers_an_image_the_prior_can_make(tiny_prior, truth):
    x = truth[1]
    blurred = Blur.of("gaussian", 1.0)(x.double()).float()[0, 0].numpy()
    r = reconstruct(blurred, task="deblur", psf_sigma=1.0, prior=tiny_prior, method="map", steps=150, window=(0, 2),
                    seed=1)
    truth_np = x[0, 0].numpy()
    assert np.sqrt(np.mean((r.mean - truth_np) ** 2)) < 0.8 * np.sqrt(np.mean((blurred - truth_np) ** 2))  # 0.70 measured
    assert r.settings["task_options"] == {"psf": "gaussian", "psf_sigma": 1.0, "psf_width": 3.0}
    box = reconstruct(blurred, task="deblur", psf="box", psf_width=2, prior=tiny_prior, method="dip", steps=3)
    assert box.mean.shape == blurred.shape and np.isfinite(box.mean).all()


def test_deblurring_of_a_reduced_input_scales_the_psf(tiny_prior, hu_image):
    """An input twice the prior's size is halved to fit: a σ of 2 input pixels is σ 1 at the model's grid."""
    big = np.kron(hu_image, np.ones((2, 2), np.float32))
    r = reconstruct(big, task="deblur", psf_sigma=2.0, prior=tiny_prior, steps=2)
    assert r.mean.shape == big.shape and r.settings["fit"]["scale"] == 0.5


def test_the_kspace_operator_the_engine_builds_is_the_registered_one():
    op = KSpace(sampling_mask((32, 32), 4, seed=0))
    assert op.channel_stride == 2 and op(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_self_check_hides_a_tenth_of_the_outer_lines_and_reports_their_coverage(tiny_prior, hu_image):
    r = reconstruct(hu_image, task="kspace", acceleration=2, center_fraction=0.125, prior=tiny_prior, method="vi",
                    steps=4, samples=3, mc_samples=2, self_check=True)
    check = r.settings["interval"]["self_check"]
    lines = r.settings["kspace"]["lines"] - 4  # the 4 central lines of 32 are never hidden
    hidden_lines = max(1, round(0.1 * lines))
    assert check["space"] == "k-space" and check["entries"] == 2 * 32 * hidden_lines  # re and im of each entry
    assert check["hidden_fraction"] == pytest.approx(hidden_lines / r.settings["kspace"]["lines"])
    assert 0.0 <= check["coverage"] <= 1.0 and check["ok"] == (check["coverage"] >= 0.8)


@pytest.mark.filterwarnings("ignore:group")
@pytest.mark.parametrize("task,options", [("kspace", dict(acceleration=4, center_fraction=0.125)),
                                          ("deblur", dict(psf_sigma=1.0))])
def test_calibrating_kspace_and_deblurring_makes_their_intervals_calibrated(tiny_prior, tiny_generator, tmp_path, task,
                                                                           options):
    from napari_brgm.engine.calibrate import calibrate

    with torch.no_grad():
        z = torch.randn(11, tiny_generator.z_dim, generator=torch.Generator().manual_seed(9))
        images = tiny_generator.synthesis(tiny_generator.mapping(z), noise_mode="const")[:, 0].numpy()
    out = tmp_path / "cal.json"
    run = dict(prior=tiny_prior, method="vi", steps=3, samples=3, mc_samples=2, window=(0, 2))
    _, records = calibrate(list(images[:10]), task=task, out=out, levels=(0.9,), **run, **options)
    assert {r.key["task"] for r in records} == {task} and all(r.key.get("acceleration", 4.0) == 4.0 for r in records)
    truth = images[10]
    given = truth if task == "kspace" else Blur.of("gaussian", 1.0)(torch.from_numpy(truth)[None, None].double())[0, 0]
    r = reconstruct(np.asarray(given, np.float32), task=task, calibration=str(out), **run, **options)
    assert r.settings["interval"]["calibrated"] and r.settings["interval"]["match"] == "exact"
    other = reconstruct(truth, task="kspace", calibration=str(out), **run, acceleration=8) if task == "kspace" else None
    assert other is None or not other.settings["interval"]["calibrated"]  # another acceleration: no record
