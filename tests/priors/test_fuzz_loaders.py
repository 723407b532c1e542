"""Fuzzed prior loaders: mutated StyleGAN2-ADA / TF network pickles and our .safetensors files.

Property, for every case (tests/fuzzing.py): `load_prior` either returns a module with finite
weights or raises `CheckpointError` whose message names the file; each case finishes within
its time limit, allocates less than `ALLOC_LIMIT` (tracemalloc), and nothing tries to run code:
no audit event of exec/compile outside imports, os.system, subprocess, pickle's own find_class
(our unpickler overrides it), and no marker file appears. Seeds: an 8 px generator as an ADA
pickle (protocol 4) and a TF pickle (protocol 3), our safetensors of it, of a tiny flow and of a
tiny diffusion prior; mutations: bit flips, truncation, zeroed runs, huge integers over opcode
arguments, allow-listed globals replaced by hostile ones, safetensors header edits (shapes,
dtypes, offsets, the length field, the config). The real tiny StyleGAN2-ADA pickle gets a few
cases of its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_brgm.priors import CheckpointError
from napari_brgm.priors.modelfile import load_prior
from tests import fuzzing as F

ALLOC_LIMIT = 32 * F.MB  # + 8 bytes per file byte: the stated bound for loading a checkpoint
FUZZ = settings(derandomize=True, max_examples=120, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


class _Seeds(dict):
    def __repr__(self) -> str:
        return f"<{len(self)} seeds>"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    found = F.loader_seeds(tmp_path_factory.mktemp("seeds"))
    for seed in found:  # every seed loads, and the lazy imports are done before the audit runs
        path = tmp_path_factory.mktemp("warm") / seed.name
        path.write_bytes(seed.data)
        F.check_prior_result(load_prior(path))
    return _Seeds({s.name: s for s in found})


def check_case(path: Path) -> None:
    marker = path.parent / "pwned"
    out = F.guarded(lambda: load_prior(path), timeout=20)
    assert not out.code_events, f"{path}: code execution attempted: {out.code_events}"
    assert not marker.exists()
    limit = ALLOC_LIMIT + 8 * path.stat().st_size
    assert out.peak < limit, f"{path}: peak allocation {out.peak / F.MB:.1f} MB (limit {limit / F.MB:.1f} MB)"
    assert out.rss_growth < limit, f"{path}: peak resident size grew by {out.rss_growth / F.MB:.1f} MB"
    if out.error is None:
        F.check_prior_result(out.value)
        return
    err = out.error
    assert isinstance(err, CheckpointError), f"{path}: {type(err).__name__}: {err}"
    assert str(path) in str(err), str(err)


def _run(tmp_path, seed, muts):
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = folder / seed.name
    path.write_bytes(F.apply_loader(seed, muts))
    try:
        check_case(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@FUZZ
@given(data=st.data())
def test_fuzzed_network_pickles(seeds, tmp_path, data):
    seed = seeds[data.draw(st.sampled_from(["ada8.pkl", "tf8.pkl"]), label="seed")]
    _run(tmp_path, seed, data.draw(F.loader_mutations(seed), label="mutations"))


@FUZZ
@given(data=st.data())
def test_fuzzed_safetensors(seeds, tmp_path, data):
    seed = seeds[data.draw(st.sampled_from(["g8.safetensors", "flow8.safetensors", "ddpm8.safetensors"]),
                           label="seed")]
    _run(tmp_path, seed, data.draw(F.loader_mutations(seed), label="mutations"))


@settings(FUZZ, max_examples=8, deadline=None)
@given(data=st.data())
def test_fuzzed_real_stylegan2_ada_pickle(tiny_fixture_dir, tmp_path, data):
    """The official tiny network pickle (2.3 MB): truncation, bit flips and zeroed runs."""
    raw = (tiny_fixture_dir / "network-snapshot.pkl").read_bytes()
    seed = F.LoaderSeed("network-snapshot.pkl", raw)
    _run(tmp_path, seed, data.draw(F.mutations(seed, max_mutations=2), label="mutations"))


# ------------------------------------------------------------- regression cases found by fuzzing


def test_no_unsafe_loading_calls_in_the_source():
    """The loading rules, checked on the source: no pickle/marshal loads, torch.load only with
    weights_only=True, numpy.load never with allow_pickle=True, no eval/exec, no yaml.load."""
    import ast

    src = Path(__file__).resolve().parents[2] / "src" / "napari_brgm"
    found = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}
            const = lambda key: isinstance(kw.get(key), ast.Constant) and kw[key].value  # noqa: E731
            where = f"{path.relative_to(src)}:{node.lineno}"
            if name in ("eval", "exec") and (isinstance(f, ast.Name) or owner == "builtins"):  # not Module.eval()
                found.append(f"{where} {name}()")
            elif owner in ("pickle", "marshal", "dill", "cloudpickle") and name in ("load", "loads"):
                found.append(f"{where} {owner}.{name}()")
            elif owner == "torch" and name == "load" and const("weights_only") is not True:
                found.append(f"{where} torch.load without weights_only=True")
            elif owner in ("np", "numpy") and name == "load" and const("allow_pickle"):
                found.append(f"{where} numpy.load(allow_pickle=True)")
            elif owner == "yaml" and name in ("load", "unsafe_load"):
                found.append(f"{where} yaml.{name}()")
    assert not found, found


# (seed, mutations, what the CheckpointError must say). Found by the fuzzing and fixed.
REGRESSIONS = {
    # the config was built into a model before its shapes were compared with the file: 28 s and 4.4 GB for
    # widths [2048, 2048] (1.1 G parameters); now built on the meta device first
    "diffusion-huge-widths": ("ddpm8.safetensors", [("st-config", "widths", [2048, 2048])], "do not match"),
    "flow-huge-couplings": ("flow8.safetensors", [("st-config", "hidden", 4096), ("st-config", "hidden_max", 4096),
                                                  ("st-config", "steps_per_level", 64)], "do not match"),
    # no upper bound on the resolution: a 65536 px diffusion prior loaded (GeneratorConfig has its own, 1024)
    "diffusion-resolution": ("ddpm8.safetensors", [("st-config", "resolution", 65536)], "above the 4096 px"),
    "stylegan2-resolution": ("g8.safetensors", [("st-config", "img_resolution", 8192)], "power of two in 4..1024"),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_fuzz_regressions(seeds, tmp_path, case):
    name, muts, reason = REGRESSIONS[case]
    path = tmp_path / name
    path.write_bytes(F.apply_loader(seeds[name], muts))
    out = F.guarded(lambda: load_prior(path), timeout=20)
    assert isinstance(out.error, CheckpointError) and reason in str(out.error), out.error
    assert out.seconds < 10 and out.rss_growth < ALLOC_LIMIT, (out.seconds, out.rss_growth)
