"""`napari-brgm batch`: reconstruct many DICOM series / NIfTI files on a Dask cluster, restartable.

Each item is reconstructed as `napari-brgm reconstruct ITEM --out DIR/<item id>` would (same files,
same seed); DIR/manifest.jsonl gets one line per finished item and DIR/summary.csv one row per
item. A rerun with the same settings skips done items and reruns failed ones. Exit 0: all done,
2: the batch could not start, 3: some items failed. Details: docs/batch.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def register(sub) -> None:
    from napari_brgm.cli.reconstruct import _add_option_flags, add_request_arguments

    p = sub.add_parser("batch", help="reconstruct many series/files on a Dask cluster (restartable)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", type=Path,
                   help="files, folders (every DICOM series folder and NIfTI file below is an item) or a "
                   ".txt/.csv list of paths")
    p.add_argument("--out", type=Path, required=True, help="output folder: DIR/<item id>/, manifest.jsonl, "
                   "summary.csv")
    add_request_arguments(p)
    _add_option_flags(p)
    g = p.add_argument_group("cluster")
    g.add_argument("--workers", type=int, help="local worker processes (default: cores / threads per worker)")
    g.add_argument("--threads-per-worker", type=int,
                   help="torch threads in each worker (default locally: 2 with >= 4 cores, else 1 with a "
                   "worker per core; with --scheduler: 1)")
    g.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://HOST:PORT) to run on instead "
                   "of a local cluster")
    g.add_argument("--retries", type=int, default=1,
                   help="resubmissions of an item whose worker kept dying (KilledWorker; default 1)")
    g.add_argument("--max-in-flight", type=int, help="items submitted at once (default: 2 × worker threads)")
    g.add_argument("--dashboard", action="store_true", help="serve the Dask dashboard on :8787 (local cluster)")
    p.set_defaults(func=run)


_CLUSTER = ("inputs", "out", "workers", "threads_per_worker", "scheduler", "retries", "max_in_flight",
            "dashboard", "func", "command")


class _Progress:
    """A bar over items: done / failed / running and the time left (tqdm's estimate)."""

    def __init__(self):
        self.bar = None
        self.counts = {"done": 0, "failed": 0}
        self.running = 0
        self.started = time.time()

    def __call__(self, kind: str, info: dict) -> None:
        from tqdm import tqdm

        if kind == "start":
            if info["skipped"]:
                print(f"{info['out']}: {info['skipped']} of {info['items']} items already done with these settings "
                      f"(hash {info['settings_hash']})" + ("; running the rest" if info["todo"] else ""))
            if info["todo"]:
                self.bar = tqdm(total=info["todo"], desc="ITEMS", unit="item", file=sys.stderr,
                                mininterval=1.0 if sys.stderr.isatty() else 30.0)
        elif kind == "submitted":
            self.running = info["running"]
        elif kind == "finished":
            self.counts[info["status"]] = self.counts.get(info["status"], 0) + 1
            self.running = info["running"]
            if self.bar is not None:
                self.bar.set_postfix_str(f"done {self.counts['done']} failed {self.counts['failed']} "
                                         f"running {self.running}", refresh=False)
                self.bar.update(1)
        elif kind == "end" and self.bar is not None:
            self.bar.close()


def run(args) -> int:
    from napari_brgm.engine.batch import BatchError, batch, summary_table

    options = {k: v for k, v in vars(args).items() if k not in _CLUSTER}
    if not args.scheduler and args.workers and args.threads_per_worker:
        from napari_brgm.engine.batch import cpu_cores

        if args.workers * args.threads_per_worker > cpu_cores():
            print(f"warning: {args.workers} workers × {args.threads_per_worker} threads exceed the {cpu_cores()} "
                  "cores of this machine: the workers will slow each other down", file=sys.stderr)
    progress = _Progress()
    try:
        rows = batch(args.inputs, args.out, workers=args.workers, threads_per_worker=args.threads_per_worker,
                     scheduler=args.scheduler, retries=args.retries, max_in_flight=args.max_in_flight,
                     dashboard=args.dashboard, on_event=progress, **options)
    except (BatchError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"napari-brgm batch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-brgm batch: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    print(summary_table(rows))
    failed = [r for r in rows if r["status"] == "failed"]
    done = sum(r["status"] in ("done", "skipped") for r in rows)
    print(f"{done} done, {len(failed)} failed: {args.out / 'manifest.jsonl'}, {args.out / 'summary.csv'}")
    return 3 if failed else 0
