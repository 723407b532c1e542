"""`napari-brgm demo --screenshot`: the README's main job renders napari, runs SR ×4 and inpainting, saves a PNG."""

from __future__ import annotations

import subprocess
import sys

import imageio.v3 as iio


def _demo(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, object]:
    png = tmp_path / "demo.png"
    proc = subprocess.run([sys.executable, "-m", "napari_brgm.cli.main", "demo", "--screenshot", str(png), *extra],
                          timeout=300, capture_output=True, text=True)
    return proc, (iio.imread(png) if png.exists() else None)


def test_demo_runs_both_reconstructions_with_the_builtin_prior(tmp_path):
    proc, img = _demo(tmp_path, "--steps", "3")
    assert proc.returncode == 0, proc.stderr
    assert "×4 super-resolution of brain_t1_colin27_slab z18 coarse" in proc.stdout
    assert "inpainting of" in proc.stdout
    assert "did not finish" not in proc.stderr and "Inconsistent units" not in proc.stderr
    assert img.shape[0] > 500 and img.shape[1] > 800
    gray = img[..., :3].mean(axis=2)
    canvas = gray[img.shape[0] // 8: 7 * img.shape[0] // 8, img.shape[1] // 4: 3 * img.shape[1] // 4]
    assert canvas.std() > 20  # images are rendered (a black or blank canvas has no contrast)


def test_demo_without_runs_shows_the_sample_and_widget(tmp_path):
    proc, img = _demo(tmp_path, "--no-run")
    assert proc.returncode == 0, proc.stderr
    centre = img[img.shape[0] // 4: 3 * img.shape[0] // 4, img.shape[1] // 3: 2 * img.shape[1] // 3, :3].mean(axis=2)
    assert centre.std() > 20


def test_demo_reports_a_run_that_fails(tmp_path, tiny_prior):
    proc, _ = _demo(tmp_path, "--prior", str(tiny_prior), "--steps", "2")  # 32 px: the 217×181 slice is too large
    assert proc.returncode == 1
    assert "did not finish" in proc.stderr


def test_demo_with_an_unknown_prior_fails_with_a_message(tmp_path):
    proc, _ = _demo(tmp_path, "--prior", str(tmp_path / "missing.safetensors"))
    assert proc.returncode == 1
    assert "cannot use prior" in proc.stderr


def test_xray_demo_inpaints_a_lung_field_with_deep_image_prior(tmp_path):
    proc, img = _demo(tmp_path, "--sample", "chest_xray", "--steps", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Deep Image Prior inpainting of" in proc.stdout
    assert img.shape[0] > 500


def test_demo_runs_the_builtin_diffusion_and_flow_priors_through_the_widget(tmp_path):
    for method, prior in (("reddiff", "brain-t1-64-ddpm"), ("flow", "brain-t1-64-glow")):
        proc, img = _demo(tmp_path, "--method", method, "--steps", "3")
        assert proc.returncode == 0, proc.stderr
        assert f"{method}, prior {prior}" in proc.stdout and "inpainting of" in proc.stdout
        assert img[..., :3].mean(axis=2).std() > 20
    proc, _ = _demo(tmp_path, "--method", "flow", "--prior", "brain-t1-64-ddpm")
    assert proc.returncode == 1 and "method flow needs a flow prior" in proc.stderr
