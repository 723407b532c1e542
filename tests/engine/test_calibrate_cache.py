"""`calibrate(cache=DIR)`: runs kept and reused (resume, refit), and the nested slice order of more slices."""

from __future__ import annotations

import numpy as np
import pytest

import napari_brgm
from napari_brgm.engine.calibrate import calibrate, spread_order
from napari_brgm.engine.calibration import CalibrationError
from tests.engine.test_intervals import RUN, in_model_images

pytestmark = pytest.mark.usefixtures("one_thread")


def test_spread_order_is_nested_spread_and_complete():
    for count in (1, 7, 40, 113):
        full = spread_order(count, count)
        assert sorted(full) == list(range(count))
        for n in (1, 5, 20):
            assert list(spread_order(count, n)) == list(full[: min(n, count)])
    gaps = np.diff(sorted(spread_order(100, 10)))
    assert gaps.max() <= 3 * gaps.min() and gaps.max() <= 20  # spread, not clumped
    with pytest.raises(ValueError):
        spread_order(-1, 2)


def test_a_cache_resumes_and_refits_without_running_again(tiny_prior, tiny_generator, tmp_path, monkeypatch):
    images = in_model_images(tiny_generator, 12, seed=3)
    cache = tmp_path / "runs"
    checks = iter(range(100))
    with pytest.raises(CalibrationError, match="give more images"):  # interrupted after 6 runs: too few to fit
        calibrate(images[:11], prior=tiny_prior, task="superres", factor=2, levels=(0.9,), cache=cache,
                  data_kind="in-model", should_stop=lambda: next(checks) >= 6, **RUN)
    assert len(list(cache.glob("*.npz"))) == 6
    calls = []
    real = napari_brgm.reconstruct

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(napari_brgm, "reconstruct", counting)
    _, first = calibrate(images[:11], prior=tiny_prior, task="superres", factor=2, levels=(0.9,), cache=cache,
                         data_kind="in-model", **RUN)
    assert len(calls) == 5 and first[0].n_images["all"] == 11  # resumed: only the 5 runs not done
    calls.clear()
    _, again = calibrate(images[:11], prior=tiny_prior, task="superres", factor=2, levels=(0.9,), cache=cache,
                         data_kind="in-model", **RUN)
    assert calls == [] and again[0].lambdas == first[0].lambdas  # every run came from the cache
    _, flat = calibrate(images[:11], prior=tiny_prior, task="superres", factor=2, levels=(0.9,), cache=cache,
                        data_kind="in-model", strata=1, **RUN)
    assert calls == [] and sorted(flat[0].lambdas) == ["all"] and flat[0].lambdas["all"] == first[0].lambdas["all"]
    _, more = calibrate(images, prior=tiny_prior, task="superres", factor=2, levels=(0.9,), cache=cache,
                        data_kind="in-model", **RUN)
    assert len(calls) == 1 and more[0].n_images["all"] == 12  # only the new slice ran
    _, other = calibrate(images[:11], prior=tiny_prior, task="superres", factor=2, levels=(0.9,), cache=cache,
                         data_kind="in-model", **(RUN | {"steps": RUN["steps"] + 1}))
    assert len(calls) == 12  # other settings: nothing reused
    (next(cache.glob("*.npz"))).write_bytes(b"damaged")
    calibrate(images[:11], prior=tiny_prior, task="superres", factor=2, levels=(0.9,), cache=cache,
              data_kind="in-model", **RUN)
    assert len(calls) == 13  # a damaged file is run again
    _, generator = calibrate(images[:11], prior=tiny_prior, task="superres", factor=2, levels=(0.9,), cache=cache,
                             data_kind="in-model", **(RUN | {"vi_predictive": "generator"}))
    assert len(calls) == 24  # another VI predictive (e.g. an older default) is another run
    assert "predictive" not in generator[0].key and first[0].key["predictive"] == "linear"

