"""`napari_brgm.batch` / `napari-brgm batch` on small clusters started here, with the tiny prior."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from napari_brgm.cli.main import main  # noqa: E402
from napari_brgm.engine.batch import (MANIFEST, BatchError, batch, find_items, item_id,  # noqa: E402
                                      local_sizing, prior_cache_info, read_manifest)
from napari_brgm.io import ReadError, load_image, save_nifti  # noqa: E402

FAST = dict(method="map", steps=3, device="cpu", seed=0)


def _tiny_volume(path: Path, seed: int) -> Path:
    """A 1-slice 8×8 volume at 8 mm in-plane: ×4 super-resolution fits the 32 px prior."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:8, :8]
    vol = (100 + 50 * np.sin(yy / (2 + seed)) + 30 * np.cos(xx / 3) + rng.normal(0, 3, (8, 8)))[None]
    return save_nifti(path, vol.astype(np.float32), np.diag([8.0, 8.0, 3.0, 1.0]))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """6 inputs: 5 NIfTI volumes and one truncated DICOM file; also the list file naming them."""
    from tests.io.conftest import pydicom_file

    folder = tmp_path_factory.mktemp("cohort")
    paths = [_tiny_volume(folder / f"case{k}.nii.gz", k) for k in range(5)]
    broken = folder / "broken.dcm"
    broken.write_bytes(pydicom_file("MR_small.dcm").read_bytes()[:1500])
    paths.insert(3, broken)
    listing = folder / "inputs.csv"
    listing.write_text("input,comment\n" + "".join(f"{p.name},x\n" for p in paths))
    return paths, listing


@pytest.fixture(scope="module")
def thread_cluster():
    """2 workers in this process (tasks still pickled), reachable over TCP for --scheduler."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                       host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster, set_as_default=False)
    yield cluster, client
    client.close()
    cluster.close()


def _latest(out: Path) -> dict[str, dict]:
    return {r["item"]: r for r in read_manifest(out)}


def test_items_from_folders_lists_and_files(tmp_path, cohort):
    from tests.io.conftest import make_mr_series

    paths, listing = cohort
    make_mr_series(tmp_path / "study" / "s1")
    make_mr_series(tmp_path / "study" / "s2", n=2)
    _tiny_volume(tmp_path / "study" / "extra.nii.gz", 7)
    found = find_items([tmp_path / "study", listing, paths[0]])
    names = [it.id.rsplit("-", 1)[0] for it in found]
    assert names == ["extra", "s1", "s2", "case0", "case1", "case2", "broken", "case3", "case4"]  # case0 once
    assert found[0].id == item_id(tmp_path / "study" / "extra.nii.gz")  # stable: name + hash of the path
    with pytest.raises(BatchError, match="no such file"):
        find_items([tmp_path / "missing"])
    assert local_sizing(None, None, cores=2) == (2, 1)
    assert local_sizing(None, None, cores=8) == (4, 2)
    assert local_sizing(2, None, cores=2) == (2, 1)


def test_batch_fails_only_the_corrupt_item_rerun_skips_and_results_equal_reconstruct(
        tmp_path, cohort, thread_cluster, tiny_prior, one_thread, capsys):
    paths, listing = cohort
    _, client = thread_cluster
    out = tmp_path / "out"
    loads_before = sum(v["misses"] for v in client.run(prior_cache_info).values())
    rows = batch([listing], out, client=client, prior=tiny_prior, threads_per_worker=1, **FAST)
    status = {r["item"]: r["status"] for r in rows}
    assert sorted(status.values()) == ["done"] * 5 + ["failed"]
    broken = item_id(paths[3])
    assert status[broken] == "failed"
    with pytest.raises(ReadError) as reader:
        load_image(paths[3])
    manifest = _latest(out)
    assert len(manifest) == 6 and manifest[broken]["error"] == str(reader.value)
    done = [r for r in manifest.values() if r["status"] == "done"]
    assert all({"mean.nii.gz", "summary.json", "panel.png"} <= set(r["outputs"]) for r in done)
    assert all(r["misfit"] is not None and r["seconds"] > 0 for r in done)
    assert len({r["settings_hash"] for r in manifest.values()}) == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left
    assert (out / "summary.csv").read_text().count("\n") == 7
    # the prior was loaded at most once in this (shared) worker process (once per worker), not once per item
    loads = sum(v["misses"] for v in client.run(prior_cache_info).values()) - loads_before
    assert loads <= 2  # both workers report the one process's cache: 1 load counted twice, or 0 if cached

    # a rerun with the same settings (through the CLI, on the same scheduler) does no work
    lines = (out / MANIFEST).read_text().count("\n")
    code = main(["batch", str(listing), "--out", str(out), "--prior", tiny_prior, "--method", "map", "--steps", "3",
                 "--device", "cpu", "--scheduler", client.scheduler.address, "--threads-per-worker", "1"])
    text = capsys.readouterr()
    assert code == 3  # the failed item was retried and failed again
    assert "5 of 6 items already done" in text.out
    after = read_manifest(out)
    assert len(after) == lines + 1 and after[-1]["item"] == broken and after[-1]["status"] == "failed"

    # identical to a serial `reconstruct` of the same item with the same seed
    ref = tmp_path / "ref"
    assert main(["reconstruct", str(paths[1]), "--prior", tiny_prior, "--method", "map", "--steps", "3",
                 "--device", "cpu", "--seed", "0", "--out", str(ref)]) == 0
    mine = out / item_id(paths[1])
    assert sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in ref.iterdir())
    for name in ("mean.nii.gz", "samples.nii.gz"):
        a, b = nib.load(mine / name), nib.load(ref / name)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)

    # other settings in the same folder are refused, on one line, exit 2
    capsys.readouterr()
    code = main(["batch", str(listing), "--out", str(out), "--prior", tiny_prior, "--steps", "4",
                 "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err
    assert code == 2 and "other settings (" in err and "steps" in err and len(err.strip().splitlines()) == 1


def test_volume_items_with_slices(tmp_path, thread_cluster, tiny_prior, one_thread):
    _, client = thread_cluster
    vol = np.random.default_rng(1).normal(100, 10, (3, 8, 8)).astype(np.float32)
    src = save_nifti(tmp_path / "vol.nii.gz", vol, np.diag([8.0, 8.0, 3.0, 1.0]))
    rows = batch([src], tmp_path / "out", client=client, prior=tiny_prior, slices="0:2", **FAST)
    assert [r["status"] for r in rows] == ["done"]
    item = tmp_path / "out" / rows[0]["item"]
    assert nib.load(item / "mean.nii.gz").shape == (32, 32, 2) and rows[0]["slices"] == [0, 1]
    summary = json.loads((item / "summary.json").read_text())
    assert summary["done"] == [0, 1]


def test_a_worker_killed_mid_run_loses_no_item(tmp_path, cohort, tiny_prior, monkeypatch, capsys):
    """The CLI's own LocalCluster (2 worker processes): the test ends a worker while it runs an item."""
    import signal
    import threading
    import time

    paths, _ = cohort
    good = [p for k, p in enumerate(paths) if k != 3][:4]
    victim = item_id(good[1])
    marker = tmp_path / "running"
    monkeypatch.setenv("NAPARI_BRGM_BATCH_FAULT", f"hold:{victim}:{marker}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                      os.environ.get("PYTHONPATH", "")]))
    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not marker.exists():
            time.sleep(0.05)
        time.sleep(0.2)
        if marker.exists():
            pid = int(marker.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = tmp_path / "out"
    code = main(["batch", *map(str, good), "--out", str(out), "--prior", tiny_prior, "--method", "map",
                 "--steps", "3", "--device", "cpu", "--workers", "2", "--threads-per-worker", "1"])
    thread.join(5)
    assert killed, "the held item never started"
    assert code == 0, capsys.readouterr().err
    rows = {r["item"]: r for r in read_manifest(out)}
    assert sorted(r["status"] for r in rows.values()) == ["done"] * 4
    assert int(rows[victim]["worker"].split(":")[1]) != killed[0]  # rerun on another (or the new) process
    assert {r["prior_loads"] for r in rows.values()} == {1}  # one prior load per worker process, restart included
    assert "4 done, 0 failed" in capsys.readouterr().out


def test_gpu_workers_declared_by_the_cluster_are_used(tmp_path, cohort, tiny_prior, one_thread):
    from napari_brgm.engine.batch import _gpu_workers

    paths, _ = cohort
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"GPU": 1},
                                       dashboard_address=None)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        assert _gpu_workers(client) == 1
        rows = batch(paths[:1], tmp_path / "out", client=client, prior=tiny_prior, **FAST)  # device cpu: no CUDA here
        assert [r["status"] for r in rows] == ["done"]
    finally:
        client.close()
        cluster.close()


def test_without_distributed_the_cli_says_how_to_install_it(tmp_path, cohort, monkeypatch, capsys):
    import sys

    import napari_brgm

    assert napari_brgm.batch is batch
    paths, _ = cohort
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed → ImportError
    assert main(["batch", str(paths[0]), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'napari-brgm[batch]'" in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, cohort, tiny_prior, capsys):
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    paths, _ = cohort
    code = main(["batch", str(paths[0]), "--out", str(tmp_path / "out"), "--prior", tiny_prior,
                 "--scheduler", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach a Dask scheduler" in err and len(err.strip().splitlines()) == 1
