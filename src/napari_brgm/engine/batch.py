"""`batch`: many inputs (DICOM series, NIfTI files) reconstructed on a Dask cluster, restartable.

The unit of work is one item: one input reconstructed exactly as `napari-brgm reconstruct INPUT
--out DIR/<item id>` would (same files, same seed: identical results). Tasks are top-level
functions (`run_item`) that write their own outputs atomically (a hidden temporary folder renamed
onto `DIR/<item id>/`) and return a small dict; only the client appends to `DIR/manifest.jsonl`
(one JSON line per finished item, flushed and fsynced). A `WorkerPlugin` sets torch's threads and
loads the prior once per worker process (by path, sha256 checked), so no model travels with tasks.

Rerun rule: an item whose last manifest line is `done` with the same settings hash and whose folder
exists is skipped; failed items are run again. A `DIR` made with other settings is refused.
A worker that dies is replaced by its nanny and distributed reschedules its task; a task that ends
`KilledWorker` (several deaths) is resubmitted by the client up to `retries` times.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from napari_brgm.engine.uncertainty import file_sha256
from napari_brgm.io.slice_store import differing, params_hash

MANIFEST = "manifest.jsonl"
BATCH_FILE = "batch.json"
SUMMARY = "summary.csv"
LIST_SUFFIXES = (".txt", ".csv", ".lst", ".list")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Settings that do not change an item's result (left out of the settings hash)
_NOT_HASHED = ("input", "out", "func", "command", "overwrite")
PLUGIN_NAME = "napari-brgm"
FAULT_ENV = "NAPARI_BRGM_BATCH_FAULT"  # tests: "kill:<item id substring>:<marker file>" ends the worker once


class BatchError(ValueError):
    """A batch request that cannot start (inputs, settings, cluster); the CLI prints it on one line."""


def _require_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise BatchError("napari-brgm batch needs dask.distributed: pip install 'napari-brgm[batch]' "
                         "(or pip install 'distributed>=2026.8,<2027')") from exc
    return distributed


# --------------------------------------------------------------------------- items

@dataclass(frozen=True)
class Item:
    input: str  # resolved path
    id: str  # readable name + short hash of the resolved path


def item_id(path: Path) -> str:
    """`<name>-<8 hex of sha256(resolved path)>`: readable, unique, the same on every run."""
    path = Path(path).resolve()
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".png"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "item"
    return f"{name[:48]}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _list_file(path: Path) -> list[Path]:
    """Paths in a text list (one a line, # comments) or a CSV (column 'input'/'path', else the first)."""
    text = path.read_text()
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    column = 0
    for name in ("input", "path", "file"):
        if name in header:
            column, rows = header.index(name), rows[1:]
            break
    found = []
    for row in rows:
        if not row or not row[column].strip() or row[column].lstrip().startswith("#"):
            continue
        entry = Path(row[column].strip()).expanduser()
        found.append(entry if entry.is_absolute() else path.parent / entry)
    return found


def _folder_items(folder: Path) -> list[Path]:
    """Below a folder: each folder holding DICOM files is one series item, each NIfTI file an item."""
    from napari_brgm.io.sniff import is_dicom_file

    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        root_path = Path(root)
        visible = sorted(f for f in files if not f.startswith("."))
        found += [root_path / f for f in visible if _is_nifti(root_path / f)]
        if any(is_dicom_file(root_path / f) for f in visible if not _is_nifti(root_path / f)):
            found.append(root_path)
    return found


def find_items(inputs: Iterable[str | Path]) -> list[Item]:
    """The items of `inputs` (files, folders, text/CSV lists of paths), in order, without duplicates."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    for entry in inputs:
        path = Path(entry).expanduser()
        if not path.exists():
            raise BatchError(f"{path}: no such file or folder")
        if path.is_dir():
            below = _folder_items(path)
            if not below:
                raise BatchError(f"{path}: no DICOM series or NIfTI file found below this folder")
            paths += below
        elif path.suffix.lower() in LIST_SUFFIXES:
            paths += _list_file(path)  # entries of a list that do not exist fail as items, with the reader's message
        else:
            paths.append(path)
    items, seen = [], set()
    for path in paths:
        item = Item(str(path.resolve()), item_id(path))
        if item.id not in seen:
            seen.add(item.id)
            items.append(item)
    if not items:
        raise BatchError("no inputs to reconstruct")
    return items


# --------------------------------------------------------------------------- settings

def request_settings(options: dict) -> dict:
    """The reconstruct request for every item (defaults filled in as on the command line), JSON-ready."""
    from napari_brgm.cli.reconstruct import request_args

    try:
        args = request_args("ITEM", "OUT", **options)
    except ValueError as exc:
        raise BatchError(str(exc)) from exc
    settings = {k: v for k, v in vars(args).items() if k not in _NOT_HASHED}
    if settings.get("mask") is not None:
        settings["mask"] = str(Path(settings["mask"]).resolve())
    prior = settings.get("prior")
    if prior is not None and Path(prior).expanduser().exists():
        settings["prior"] = str(Path(prior).expanduser().resolve())
    return json.loads(json.dumps(settings, default=str))


def _prior_of(settings: dict) -> tuple[str | None, str | None]:
    """(prior file, kind) the request loads, or (None, None) for a method without a prior."""
    from napari_brgm.engine.reconstruction import _resolve_prior
    from napari_brgm.engine.settings import PRIOR_KINDS

    kind = PRIOR_KINDS.get(settings["method"])
    if kind is None:
        return None, None
    try:
        return str(_resolve_prior(settings.get("prior"), kind)), kind
    except (ValueError, FileNotFoundError) as exc:
        raise BatchError(str(exc)) from exc


# --------------------------------------------------------------------------- workers

try:  # distributed is an optional dependency (extra [batch]); the plugin must subclass its WorkerPlugin
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - batch() refuses to start without distributed
    _WorkerPlugin = object


class PriorPlugin(_WorkerPlugin):
    """Worker setup (also after a nanny restart): torch threads, and the prior loaded once per process.

    The prior is loaded from its path on the worker (shared file system) and its sha256 checked
    against the client's, so a worker never reconstructs with another file of the same name. The
    loaded model lives in the engine's per-process cache (`reconstruction._load`), which every
    item's `reconstruct` then hits.
    """

    idempotent = False

    def __init__(self, threads: int, prior: str | None, kind: str | None, sha256: str | None, device: str):
        self.threads, self.prior, self.kind, self.sha256, self.device = threads, prior, kind, sha256, device
        self.name = f"{PLUGIN_NAME}-{(sha256 or 'noprior')[:12]}-t{threads}-{device}"

    def setup(self, worker=None):
        import torch

        torch.set_num_threads(int(self.threads))
        info = {"threads": int(self.threads), "prior_loaded": False, "pid": os.getpid()}
        if self.prior is not None:
            found = file_sha256(self.prior)
            if found != self.sha256:
                raise RuntimeError(f"prior {self.prior} on worker {getattr(worker, 'address', '?')} has sha256 "
                                   f"{found[:12]}…, the client's has {self.sha256[:12]}…")
            from napari_brgm.engine.devices import resolve_device
            from napari_brgm.engine.reconstruction import _load

            _load(self.prior, self.kind, resolve_device(self.device))
            info["prior_loaded"] = True
        if worker is not None:
            setattr(worker, "napari_brgm", info)

    def teardown(self, worker=None):
        pass


def prior_cache_info() -> dict:
    """Run on a worker (`client.run`): the engine's prior cache counters in this process."""
    from napari_brgm.engine.reconstruction import _load

    info = _load.cache_info()
    return {"pid": os.getpid(), "misses": info.misses, "hits": info.hits, "size": info.currsize}


def _fault(item: str) -> None:
    """Test hook, from the environment of the worker processes (never set in normal use).

    "kill:<pattern>:<marker>": the first item whose id contains the pattern ends its worker process
    (SIGKILL, like the OOM killer); "hold:<pattern>:<marker>": it writes its pid to the marker and
    waits up to 60 s, for the test to end the process from outside. The marker makes it happen once.
    """
    spec = os.environ.get(FAULT_ENV, "")
    mode, _, rest = spec.partition(":")
    if mode not in ("kill", "hold"):
        return
    pattern, _, marker = rest.partition(":")
    if pattern not in item or os.path.exists(marker):
        return
    Path(marker).write_text(str(os.getpid()))
    if mode == "kill":
        os.kill(os.getpid(), 9)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.05)


def _item_summary(folder: Path) -> dict:
    """What the manifest and summary.csv keep of an item's summary.json: misfit, flag, timings, outputs."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    settings = summary.get("settings") or {}
    per_slice = summary.get("slice_settings") or ({str(summary.get("slice")): settings} if settings else {})
    misfits = [s.get("in_distribution", {}).get("score") for s in per_slice.values()]
    misfits = [m for m in misfits if m is not None]
    flags = [s.get("in_distribution", {}).get("ok") for s in per_slice.values()]
    flags = [f for f in flags if f is not None]
    timings = [s.get("timings") or {} for s in per_slice.values()]
    return {"misfit": max(misfits) if misfits else None,
            "in_distribution": (all(flags) if flags else None),
            "slices": summary.get("done", [summary.get("slice")]),
            "engine_seconds": round(sum(t.get("total_s", 0.0) for t in timings), 3),
            "outputs": sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))}


def run_item(item: dict, out: str, settings: dict) -> dict:
    """One item on a worker: reconstruct into a hidden temporary folder, then rename it to `out/<id>`.

    Errors of the request (a corrupt input, a bad mask...) are returned as a failed item with the
    reader's message, never raised: the batch goes on. Returns a small JSON-ready dict.
    """
    from napari_brgm.cli.reconstruct import _run, request_args

    started = time.time()
    out = Path(out)
    final = out / item["id"]
    tmp = out / f".{item['id']}.tmp-{uuid.uuid4().hex[:8]}"
    row = {"item": item["id"], "input": item["input"], "worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        _fault(item["id"])
        options = {k: v for k, v in settings.items() if k not in _NOT_HASHED}
        args = request_args(item["input"], tmp, **options)
        tmp.mkdir(parents=True)
        code = _run(args, interactive=False)
        if code != 0:
            raise RuntimeError(f"reconstruct ended with exit code {code}")
        _fsync_tree(tmp)  # the files are on disk before the rename makes the item visible
        if final.exists():  # a done item whose manifest line was lost (client killed), or an old failed run
            shutil.rmtree(final)
        os.replace(tmp, final)
        row |= {"status": "done", "error": None, **_item_summary(final)}
    except Exception as exc:  # noqa: BLE001 - one item's failure never stops the batch
        shutil.rmtree(tmp, ignore_errors=True)
        row |= {"status": "failed", "error": str(exc) or type(exc).__name__, "error_type": type(exc).__name__,
                "traceback": "".join(traceback.format_exception(exc)[-20:])}
    row["seconds"] = round(time.time() - started, 3)
    row["prior_loads"] = prior_cache_info()["misses"]  # priors loaded by this worker process so far
    return row


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


# --------------------------------------------------------------------------- manifest

def read_manifest(out: Path) -> list[dict]:
    """The manifest's lines (a truncated last line, from a client killed mid-write, is ignored)."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


class Manifest:
    """Append-only `manifest.jsonl`, written by the client alone: flush + fsync per line."""

    def __init__(self, out: Path):
        self.path = Path(out) / MANIFEST
        self.fh = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self.fh.write(json.dumps(row, default=str) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _check_out(out: Path, settings: dict, digest: str) -> None:
    """Create `out` with batch.json, or check that the batch already there used the same settings."""
    from napari_brgm import __version__
    from napari_brgm.io.atomic import write_atomically

    path = out / BATCH_FILE
    if path.exists():
        found = json.loads(path.read_text())
        if found.get("settings_hash") != digest:
            changed = differing(found.get("settings", {}), settings)
            raise BatchError(f"{out} holds a batch made with other settings ({', '.join(changed)}; hash "
                             f"{found.get('settings_hash')} vs {digest}); choose another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(
        {"settings": settings, "settings_hash": digest, "version": __version__}, indent=2)))


def _done_before(out: Path, digest: str) -> dict[str, dict]:
    """Items whose last manifest line is done with these settings and whose folder is still there."""
    last: dict[str, dict] = {}
    for row in read_manifest(out):
        if row.get("item"):
            last[row["item"]] = row
    return {k: r for k, r in last.items()
            if r.get("status") == "done" and r.get("settings_hash") == digest and (out / k).is_dir()}


# --------------------------------------------------------------------------- cluster

def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def local_sizing(workers: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads each) for this machine: workers × threads ≤ cores by default.

    Neither given: 2 threads per worker when there are ≥ 4 cores, else one single-thread worker per
    core (on 2 cores 2 × 1 ran 1.9× the items of 1 × 2 with the built-in prior: benchmarks/bench_batch.py).
    """
    cores = cores or cpu_cores()
    if workers is None and threads is None:
        threads = 2 if cores >= 4 else 1
    if threads is None:
        threads = max(1, cores // workers)
    if workers is None:
        workers = max(1, cores // threads)
    if workers < 1 or threads < 1:
        raise BatchError("--workers and --threads-per-worker must be at least 1")
    return int(workers), int(threads)


def start_local_cluster(workers: int, dashboard: bool = False, processes: bool = True):
    distributed = _require_distributed()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                       host="127.0.0.1", dashboard_address=":8787" if dashboard else None,
                                       memory_limit="auto" if processes else 0)
    return cluster, distributed.Client(cluster, set_as_default=False)


def connect(address: str, timeout: float = 60):
    distributed = _require_distributed()
    try:
        client = distributed.Client(address, timeout="10s", set_as_default=False)
        client.wait_for_workers(1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, a bad address: all mean "not there"
        raise BatchError(f"cannot reach a Dask scheduler with workers at {address}: {exc}") from exc
    return client


def _gpu_workers(client) -> int:
    workers = client.scheduler_info(n_workers=-1)["workers"] if _accepts_n_workers(client) else \
        client.scheduler_info()["workers"]
    return sum(1 for w in workers.values() if (w.get("resources") or {}).get("GPU", 0) >= 1)


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _worker_threads(client) -> int:
    workers = client.scheduler_info(n_workers=-1)["workers"] if _accepts_n_workers(client) else \
        client.scheduler_info()["workers"]
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


# --------------------------------------------------------------------------- the batch

def batch(inputs, out, client=None, *, workers: int | None = None, threads_per_worker: int | None = None,
          scheduler: str | None = None, retries: int = 1, max_in_flight: int | None = None,
          dashboard: bool = False, on_event: Callable[[str, dict], None] | None = None, **options) -> list[dict]:
    """Reconstruct every item of `inputs` into `out/<item id>/`; returns this run's manifest rows.

    `options` are `reconstruct`'s (task, factor, prior, method, steps, samples, seed, slices, axis,
    format, mask, device, method options...). `client`: a `distributed.Client` to run on (kept
    open); else `scheduler` (an address) or a `LocalCluster` of `workers` processes started here and
    closed at the end. `threads_per_worker` sets torch's threads in each worker (default: cores /
    workers locally, 1 on a given cluster). Items already done with the same settings are skipped
    (rows with status "skipped"). `on_event(kind, info)` sees "start", "submitted", "finished", "end".
    """
    distributed = _require_distributed()
    out = Path(out)
    items = find_items(inputs)
    settings = request_settings(options)
    if settings["task"] == "inpaint" and settings.get("mask") is None and settings.get("nonfinite") != "missing":
        raise BatchError("--task inpaint needs --mask MASK (nonzero = missing), used for every item, or "
                         "--nonfinite missing")
    digest = params_hash(settings)
    prior, kind = _prior_of(settings)
    _check_out(out, settings, digest)
    done = _done_before(out, digest)
    todo = [it for it in items if it.id not in done]
    notify = on_event or (lambda *_: None)
    rows: list[dict] = [done[it.id] | {"status": "skipped"} for it in items if it.id in done]
    notify("start", {"items": len(items), "skipped": len(rows), "todo": len(todo), "out": str(out),
                     "settings_hash": digest})
    if not todo:
        write_summary(out, read_manifest(out), [it.id for it in items])
        notify("end", {"rows": rows})
        return rows

    own_cluster = None
    if client is None:
        if scheduler:
            client = connect(scheduler)
            threads = threads_per_worker or 1
        else:
            n, threads = local_sizing(workers, threads_per_worker)
            own_cluster, client = start_local_cluster(n, dashboard=dashboard)
    else:
        threads = threads_per_worker or 1
    try:
        gpus = _gpu_workers(client)
        device = settings.get("device", "auto")
        plugin = PriorPlugin(threads, prior, kind, file_sha256(prior) if prior else None, device)
        client.register_plugin(plugin, name=plugin.name)
        resources = {"GPU": 1} if gpus else None
        window = max_in_flight or 2 * _worker_threads(client)
        try:
            rows += _run_items(client, distributed, todo, out, settings, digest, retries, window, resources, notify)
        finally:
            if own_cluster is None:  # a shared cluster: later restarts need not load this prior again
                try:
                    client.unregister_worker_plugin(plugin.name)
                except Exception:  # noqa: BLE001 - best effort on a cluster that is going away
                    pass
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()
    write_summary(out, read_manifest(out), [it.id for it in items])
    notify("end", {"rows": rows})
    return rows


def _run_items(client, distributed, todo: list[Item], out: Path, settings: dict, digest: str, retries: int,
               window: int, resources, notify) -> list[dict]:
    manifest = Manifest(out)
    rows: list[dict] = []
    queue = list(todo)
    attempts: dict[str, int] = {}
    running: dict = {}  # future -> item

    def submit(item: Item):
        attempts[item.id] = attempts.get(item.id, 0) + 1
        fut = client.submit(run_item, {"input": item.input, "id": item.id}, str(out.resolve()), settings,
                            key=f"brgm-{item.id}-{digest}-a{attempts[item.id]}-{uuid.uuid4().hex[:6]}",
                            pure=False, resources=resources)
        running[fut] = item
        notify("submitted", {"item": item.id, "attempt": attempts[item.id], "running": len(running)})
        return fut

    first = [submit(queue.pop(0)) for _ in range(min(window, len(queue)))]
    ac = distributed.as_completed(first, loop=client.loop)
    try:
        for fut in ac:
            item = running.pop(fut)
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost connection, a task that raised
                if attempts[item.id] <= retries:
                    ac.add(submit(item))
                    fut.release()
                    continue
                row = {"item": item.id, "input": item.input, "status": "failed",
                       "error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__}
            fut.release()
            row |= {"attempt": attempts[item.id], "settings_hash": digest, "t": time.strftime("%Y-%m-%dT%H:%M:%S")}
            manifest.append(row)
            rows.append(row)
            notify("finished", row | {"running": len(running)})
            if queue:
                ac.add(submit(queue.pop(0)))
    except KeyboardInterrupt:
        client.cancel(list(running))
        raise
    finally:
        manifest.close()
    return rows


SUMMARY_COLUMNS = ("item", "status", "input", "misfit", "in_distribution", "seconds", "engine_seconds", "attempt",
                   "worker", "error")


def latest_rows(rows: list[dict], ids: list[str] | None = None) -> list[dict]:
    """The last manifest line of each item (in `ids` order when given)."""
    last: dict[str, dict] = {}
    for row in rows:
        if row.get("item"):
            last[row["item"]] = row
    if ids is None:
        return list(last.values())
    return [last[i] for i in ids if i in last]


def write_summary(out: Path, rows: list[dict], ids: list[str] | None = None) -> Path:
    """`out/summary.csv`: one line per item (its latest manifest line). No PSNR: there is no truth."""
    from napari_brgm.io.atomic import write_atomically

    latest = latest_rows(rows, ids)

    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for row in latest:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in SUMMARY_COLUMNS})

    return write_atomically(Path(out) / SUMMARY, write)


def summary_table(rows: list[dict]) -> str:
    """A plain-text table of items: status, misfit, in-distribution flag, seconds, error."""
    lines = [f"{'item':<40} {'status':<8} {'misfit':>8} {'in-dist':>7} {'seconds':>8}  error"]
    for r in rows:
        misfit = "" if r.get("misfit") is None else f"{r['misfit']:.2f}"
        flag = {True: "yes", False: "NO", None: ""}[r.get("in_distribution")]
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        error = (r.get("error") or "").splitlines()[0][:80] if r.get("error") else ""
        lines.append(f"{r['item'][:40]:<40} {r['status']:<8} {misfit:>8} {flag:>7} {seconds:>8}  {error}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use napari-brgm batch")
