"""`napari-brgm train [--kind stylegan2|diffusion|flow] DATA... --out PRIOR.safetensors`: train a prior.

Training resumes from `--checkpoint` (default: OUT with `.ckpt.pt`) when it exists, exactly where
it stopped; Ctrl-C or SIGTERM finishes the current step, writes the checkpoint and the prior, and
exits. Every snapshot also writes a preview grid (OUT with `.preview.png`) to look at.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

RESOLUTIONS = (64, 128, 256)
KINDS = ("stylegan2", "diffusion", "flow")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a StyleGAN2, diffusion or flow prior on DICOM/NIfTI/PNG data "
                                     "(CPU: hours, resumable)")
    p.add_argument("data", nargs="+", help="DICOM files/series folders, NIfTI volumes or PNG folders")
    p.add_argument("--out", type=Path, required=True, help="the prior to write (.safetensors), updated at each snapshot")
    p.add_argument("--kind", choices=KINDS, default="stylegan2",
                   help="stylegan2 (BRGM, CSGM, IAGAN), diffusion (RED-Diff) or flow (Glow) (default stylegan2)")
    p.add_argument("--resolution", type=int, choices=RESOLUTIONS, default=64, help="image size (default 64)")
    p.add_argument("--plane", choices=("axial", "coronal", "sagittal"), default="axial",
                   help="slicing plane of 3-D volumes (default axial)")
    p.add_argument("--kimg", type=float, default=300, help="thousands of images to show in total (default 300)")
    p.add_argument("--batch", type=int, default=16, help="images per step (default 16)")
    p.add_argument("--channel-base", type=int, default=1024, help="stylegan2: widths min(base/r, max) (default 1024)")
    p.add_argument("--channel-max", type=int, default=128, help="stylegan2: maximum width (default 128)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="stylegan2: generator convolutions")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--snapshot-kimg", type=float, default=10, help="checkpoint every this many kimg (default 10)")
    p.add_argument("--checkpoint", type=Path, help="resumable state (default: OUT.ckpt.pt)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start afresh")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=run)


def _write_preview(trainer, path: Path) -> None:
    import numpy as np
    from PIL import Image

    imgs = trainer.preview(16).clamp(-1, 1)[:, 0].numpy()
    r = imgs.shape[-1]
    grid = imgs.reshape(4, 4, r, r).transpose(0, 2, 1, 3).reshape(4 * r, 4 * r)
    Image.fromarray(np.rint((grid + 1) * 127.5).astype(np.uint8)).save(path)


def _trainer_class(kind: str):
    """(trainer class, config class) of a prior kind; imported only when asked for."""
    if kind == "diffusion":
        from napari_brgm.training.diffusion import DiffusionTrainConfig, DiffusionTrainer

        return DiffusionTrainer, DiffusionTrainConfig
    if kind == "flow":
        from napari_brgm.training.flow import FlowTrainConfig, FlowTrainer

        return FlowTrainer, FlowTrainConfig
    from napari_brgm.training.stylegan2 import Trainer, TrainConfig

    return Trainer, TrainConfig


def _config(args, config_cls):
    common = dict(resolution=args.resolution, batch=args.batch, seed=args.seed)
    if args.kind == "stylegan2":
        common |= dict(channel_base=args.channel_base, channel_max=args.channel_max, precision=args.precision)
    return config_cls(**common)


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from napari_brgm.io import ReadError
    from napari_brgm.training.data import load_slices
    from napari_brgm.training.loop import train

    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    if out.suffix != ".safetensors":
        print(f"napari-brgm train: --out must end in .safetensors, got {out}", file=sys.stderr)
        return 2
    checkpoint = args.checkpoint or out.with_suffix(".ckpt.pt")
    preview = out.with_suffix(".preview.png")
    try:
        data = load_slices(args.data, args.resolution, plane=args.plane)
    except (ReadError, FileNotFoundError, ValueError) as err:
        print(f"napari-brgm train: {err}", file=sys.stderr)
        return 2
    print(f"{len(data)} slices of {args.resolution}×{args.resolution} from {len(args.data)} input(s)")
    trainer_cls, config_cls = _trainer_class(args.kind)
    if checkpoint.exists() and not args.restart:
        try:
            trainer = trainer_cls.resume(checkpoint, data)
        except ValueError as err:
            print(f"napari-brgm train: {err} (use --restart to start afresh)", file=sys.stderr)
            return 2
        print(f"resuming {checkpoint} at {trainer.state.nimg / 1000:.1f} kimg")
    else:
        try:
            config = _config(args, config_cls)
        except ValueError as err:
            print(f"napari-brgm train: {err}", file=sys.stderr)
            return 2
        trainer = trainer_cls(data, config)

    stop = {"flag": False}

    def request_stop(signum, frame):
        stop["flag"] = True

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    total = int(args.kimg * 1000)
    bar = tqdm(total=total, initial=min(trainer.state.nimg, total), unit="img", unit_scale=True, dynamic_ncols=True,
               smoothing=0.05, mininterval=2.0)

    def progress(state, losses, rate):
        bar.update(min(state.nimg, total) - bar.n)
        bar.set_postfix_str(" ".join(f"{k} {v:.3g}" for k, v in losses.items()), refresh=False)

    try:
        train(trainer, args.kimg, checkpoint=checkpoint, export=out, snapshot_kimg=args.snapshot_kimg,
              progress=progress, should_stop=lambda: stop["flag"],
              on_snapshot=lambda t: _write_preview(t, preview))
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
    st = trainer.state
    word = "stopped" if stop["flag"] else "finished"
    print(f"{word} at {st.nimg / 1000:.1f} kimg ({st.step} steps, {st.seconds / 3600:.2f} h); "
          f"prior: {out}; checkpoint: {checkpoint}; preview: {preview}")
    return 0
