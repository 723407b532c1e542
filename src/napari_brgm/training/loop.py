"""The training loop every prior kind shares: snapshots, resumable checkpoints, progress and clean stops.

A trainer (StyleGAN2, diffusion, flow) provides `config.batch`, `state` (a `TrainState`), `step()`
returning its losses as floats, `save_checkpoint(path)`, `export(path)` and `preview(n)`. Every
random choice of step k derives from `step_seed(seed, k, stream)`, so a resumed run continues
exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


def step_seed(seed: int, step: int, stream: int) -> int:
    """The seed of random stream `stream` at step `step` of a run seeded with `seed`."""
    return (seed * 1_000_003 + step * 7919 + stream * 104_729) % (2 ** 63)


@dataclass
class TrainState:
    step: int = 0
    nimg: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)  # [step, loss, ...] every few steps


def train(trainer, kimg: float, *, checkpoint=None, export=None, snapshot_kimg: float = 10.0,
          progress=None, should_stop=None, on_snapshot=None) -> Trainer:
    """Run until `kimg` thousand images have been shown (counting earlier, resumed ones).

    Every `snapshot_kimg` (and at the end or on stop) the checkpoint and the exported prior are
    written. `progress(state, losses, images_per_second)` is called after each step; `should_stop()`
    is polled between steps (the CLI sets it on Ctrl-C / SIGTERM, so a stop never cuts a step).
    """
    cfg, st = trainer.config, trainer.state
    target = int(math.ceil(kimg * 1000 / cfg.batch)) * cfg.batch
    next_snap = (st.nimg // int(snapshot_kimg * 1000) + 1) * int(snapshot_kimg * 1000)

    def snapshot() -> None:
        if checkpoint is not None:
            trainer.save_checkpoint(checkpoint)
        if export is not None:
            trainer.export(export)
        if on_snapshot is not None:
            on_snapshot(trainer)

    t_last = time.perf_counter()
    while st.nimg < target:
        if should_stop is not None and should_stop():
            break
        losses = trainer.step()
        now = time.perf_counter()
        st.seconds += now - t_last
        rate = cfg.batch / max(now - t_last, 1e-9)
        t_last = now
        if progress is not None:
            progress(st, losses, rate)
        if st.nimg >= next_snap:
            snapshot()
            next_snap += int(snapshot_kimg * 1000)
    snapshot()  # only between steps: an exception mid-step leaves the last good checkpoint in place
    return trainer


def save_checkpoint(path, *, kind: str, version: int, config, data, state: TrainState, parts: dict) -> Path:
    """Write a resumable checkpoint: tensors and plain values only (config and state as JSON strings).

    `parts` maps names to state dicts (networks, EMA copies, optimisers). `data` is the SliceSet
    trained on; its fingerprint is stored so that a resume on other data is refused.
    """
    import torch

    from napari_brgm.io.atomic import write_atomically

    payload = {"kind": kind, "version": version, "config": json.dumps(asdict(config)),
               "data_fingerprint": data.fingerprint(), "state": json.dumps(asdict(state))} | parts
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path, *, kind: str, version: int, data) -> tuple[dict, TrainState, dict]:
    """(config as a dict, TrainState, payload) of a checkpoint written by `save_checkpoint`.

    Read with `torch.load(weights_only=True)`; a checkpoint of another kind, version or data is
    refused with a ValueError that says which.
    """
    import torch

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    found = payload.get("kind", "stylegan2")
    if found != kind:
        raise ValueError(f"{path}: a {found} checkpoint, not {kind}")
    if payload.get("version") != version:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')}, expected {version}")
    if payload["data_fingerprint"] != data.fingerprint():
        raise ValueError(f"{path}: the checkpoint was trained on different data (fingerprint mismatch)")
    return json.loads(payload["config"]), TrainState(**json.loads(payload["state"])), payload
