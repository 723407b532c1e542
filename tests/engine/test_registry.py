"""The registry of tasks and methods: flat options sorted by owner, nested records, re-running from a record."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest

from napari_brgm.engine import reconstruct
from napari_brgm.engine.methods import METHOD_SPECS, DipOptions, IaganOptions
from napari_brgm.engine.options import describe
from napari_brgm.engine.settings import OptionError, Settings
from napari_brgm.engine.tasks import TASK_SPECS


@pytest.fixture(scope="module")
def hu_image(truth):
    _, x = truth
    return (400.0 * x[0, 0].numpy() - 200.0).astype(np.float32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="map", iagan_vi=True), "iagan_vi is an option of method 'iagan', not of method 'map'"),
        (dict(method="vi", restarts=2), "restarts is an option of methods 'csgm', 'iagan', 'dip', not of method 'vi'"),
        (dict(method="dip", flow_gamma=0.5), "flow_gamma is an option of method 'flow', not of method 'dip'"),
        (dict(task="inpaint", sr_kind="bicubic"), "sr_kind is an option of task 'superres', not of task 'inpaint'"),
    ],
)
def test_an_option_of_another_method_or_task_is_a_type_error_naming_its_owner(hu_image, tiny_prior, kwargs, message,
                                                                             monkeypatch):
    import napari_brgm.engine.reconstruction as rec

    monkeypatch.setattr(rec, "_load", lambda *a: pytest.fail("a prior was loaded"))
    with pytest.raises(TypeError, match=message) as caught:
        reconstruct(hu_image, prior=tiny_prior, device="cpu", **kwargs)
    assert isinstance(caught.value, OptionError)


def test_flat_options_land_in_the_chosen_task_and_method_options():
    s = Settings.from_flat(task="superres", method="dip", restarts=3, dip_lr=0.02, sr_kind="bicubic", seed=7)
    assert s.method_options == DipOptions(restarts=3, dip_lr=0.02) and s.task_options.sr_kind == "bicubic"
    assert s.seed == 7 and s.as_dict()["method_options"]["restarts"] == 3
    assert Settings(method="csgm").method_options.restarts == 4  # constructed directly: the method's defaults
    assert Settings.from_flat(method="csgm", restarts=None).method_options.restarts == 4  # None: the default
    with pytest.raises(ValueError, match="mc_samples must be at least 1"):
        Settings.from_flat(method="vi", mc_samples=0).validate()
    with pytest.raises(TypeError, match="method_options must be a DipOptions, got IaganOptions"):
        Settings(method="dip", method_options=IaganOptions()).validate()


def test_a_recorded_run_is_re_created_from_its_settings_even_through_json(tiny_prior, hu_image):
    low = hu_image.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    first = reconstruct(low, task="superres", factor=4, prior=tiny_prior, method="iagan", steps=2, samples=2,
                        device="cpu", window=(0.0, 500.0), restarts=2, iagan_lr=1e-3, iagan_vi=True, mc_samples=2,
                        vi_mode="brgm", sr_kind="bicubic", back_project=True)
    recorded = first.settings
    assert recorded["method_options"]["iagan_lr"] == 1e-3 and recorded["task_options"] == {"sr_kind": "bicubic"}
    assert "restarts" not in recorded and "prior_path" in recorded and "timings" in recorded

    again = reconstruct(low, **Settings.from_dict(json.loads(json.dumps(recorded, default=str))).as_kwargs())

    drop = {"timings"}
    assert {k: v for k, v in again.settings.items() if k not in drop} == {
        k: v for k, v in recorded.items() if k not in drop}
    np.testing.assert_array_equal(again.samples, first.samples)


def test_every_method_has_a_solver_and_the_tasks_are_the_operators():
    from napari_brgm.engine.reconstruction import _SOLVERS
    from napari_brgm.operators import TASKS

    assert set(_SOLVERS) == set(METHOD_SPECS) and tuple(TASK_SPECS) == TASKS


def test_an_option_shared_by_several_dataclasses_has_one_type_and_every_option_has_help():
    seen: dict[str, tuple] = {}
    for spec in [*METHOD_SPECS.values(), *TASK_SPECS.values()]:
        spec.options().validate()  # the defaults are valid
        for info in describe(spec.options):
            assert info.help and info.type in (bool, int, float, str), info
            assert seen.setdefault(info.name, (info.type, info.optional)) == (info.type, info.optional), info.name
    assert typing.get_type_hints(DipOptions)["dip_resolution"] == int | None
