"""The widget's newer tasks and inputs: MRI k-space, deblurring, NaN pixels as the inpainting mask."""

from __future__ import annotations

import numpy as np

from napari_brgm.operators.fourier import fft2c_np, ifft2c_np

from .test_widget import choose_checkpoint, run_and_wait


def phantom() -> np.ndarray:
    """32×32 (the tiny prior's grid, so the fit is the identity): a bright ellipse with a dark spot, in HU-like units."""
    yy, xx = np.mgrid[:32, :32] - 15.5
    image = np.where((yy / 12) ** 2 + (xx / 9) ** 2 < 1, 300.0, -100.0)
    image[(yy - 3) ** 2 + (xx + 2) ** 2 < 9] = 50.0
    return image.astype(np.float32)


def test_kspace_run_shows_zero_filled_consistent_and_the_sampling_mask(docked, qtbot, tiny_prior):
    viewer, widget = docked
    image = phantom()
    viewer.add_image(image, name="t1", scale=(0.5, 0.5))
    choose_checkpoint(widget)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("kspace"))
    assert widget.advanced.toggle.isChecked() and not widget.factor_combo.isEnabled()
    assert not widget.mask_combo.isEnabled()
    widget.advanced.set_value("acceleration", 4.0)
    widget.advanced.set_value("mask_type", "equispaced")
    widget.advanced.controls["center_fraction"].setText("0.125")
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    widget.steps_spin.setValue(3)
    previews = []
    viewer.layers.events.inserted.connect(lambda e: previews.append(e.value.name))

    run = run_and_wait(widget, qtbot)

    assert run.result is not None and not run.result.partial
    assert "t1 k-space R4 MAP preview" in previews and "t1 k-space R4 MAP sampling mask" in previews
    names = [layer.name for layer in viewer.layers]
    assert names == ["t1", "t1 k-space R4 MAP sampling mask", "t1 k-space R4 MAP mean",
                     "t1 k-space R4 MAP consistent", "t1 k-space R4 MAP zero-filled"]
    mask = viewer.layers["t1 k-space R4 MAP sampling mask"]
    np.testing.assert_array_equal(mask.data != 0, run.result.sampling_mask)
    assert mask.metadata["brgm"]["lines"] == run.result.settings["kspace"]["lines"]
    assert mask.extent.world[0][1] > viewer.layers["t1"].extent.world[1][1]  # beside the input, not over it
    zf = viewer.layers["t1 k-space R4 MAP zero-filled"].data
    np.testing.assert_allclose(zf, np.abs(ifft2c_np(fft2c_np(image) * run.result.sampling_mask)), atol=1e-2)
    assert run.result.settings["task_options"]["mask_type"] == "equispaced"
    assert viewer.layers["t1 k-space R4 MAP mean"].metadata["brgm"]["task"] == "kspace"


def test_deblur_run_uses_the_psf_from_advanced(docked, qtbot, tiny_prior):
    viewer, widget = docked
    viewer.add_image(phantom(), name="blurred")
    choose_checkpoint(widget)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("deblur"))
    widget.advanced.set_value("psf", "box")
    widget.advanced.controls["psf_width"].setText("2")
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    widget.steps_spin.setValue(2)
    run = run_and_wait(widget, qtbot)
    assert run.result.settings["task_options"] == {"psf": "box", "psf_sigma": 1.5, "psf_width": 2.0}
    assert [layer.name for layer in viewer.layers] == ["blurred", "blurred deblur MAP mean"]


def test_nan_pixels_can_be_the_inpainting_mask(docked, qtbot, tiny_prior):
    viewer, widget = docked
    image = phantom()
    image[4:10, 20:28] = np.nan
    viewer.add_image(image, name="holes")
    choose_checkpoint(widget)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("inpaint"))
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("map"))
    widget.steps_spin.setValue(2)
    widget.nonfinite_check.setChecked(True)
    run = run_and_wait(widget, qtbot)
    assert run.result is not None and np.isfinite(run.result.mean).all()
    assert run.result.settings["nonfinite"] == "missing"
    consistent = viewer.layers["holes inpaint MAP consistent"].data
    np.testing.assert_array_equal(consistent[~np.isnan(image)], image[~np.isnan(image)])
