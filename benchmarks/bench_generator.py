"""Speed and memory of the StyleGAN2 generator on this CPU (prints tables; nothing is asserted).

1. ms per MAP step (synthesis forward + backward w.r.t. W+ + one Adam step, batch 1, MSE loss) at
   64/128/256 px for official widths (channel_base 16384, channel_max 512) and 128-wide generators
   (channel_max 128), 1 channel, random weights. Four variants run interleaved, step by step, so a
   busy machine slows them alike: the literal implementation of the format doc
   (tests/priors/plain_stylegan2.py: per-sample weights, grouped conv, separate FIR pass) in fp32
   and under bf16 autocast, and ours in fp32 and bf16.
2. Batch of K latents in one call vs K single calls (VI renders K samples per step), with glibc's
   default allocator and after `napari_brgm.priors.cpu.retain_freed_memory()`.
3. Peak RSS of loading a 1024 px FFHQ config-f StyleGAN2-ADA pickle (30,370,060 parameters,
   G + D + G_ema as in a real snapshot), measured in a fresh subprocess.

Run: .venv/bin/python benchmarks/bench_generator.py [--steps 10] [--warmup 3] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.priors.plain_stylegan2 / tests.priors.pickles

import torch  # noqa: E402

from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig  # noqa: E402
from tests.priors.plain_stylegan2 import plain_synthesis  # noqa: E402

WIDTHS = {"official (base 16384, max 512)": 512, "128-wide (base 16384, max 128)": 128}
VARIANTS = ("plain fp32", "plain bf16", "ours fp32", "ours bf16")
BATCH_CONFIGS = [("official", 512, 128), ("128-wide", 128, 256)]


def make_generator(res: int, cmax: int, channels: int = 1) -> Generator:
    torch.manual_seed(0)
    cfg = GeneratorConfig(z_dim=512, w_dim=512, img_resolution=res, img_channels=channels, mapping_layers=8,
                          channel_base=16384, channel_max=cmax)
    g = Generator(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        for name, t in g.state_dict().items():
            if name.endswith(("bias", "noise_strength")):
                t.add_(torch.randn_like(t) * 0.1)
    return g


def render(g: Generator, sd: dict, variant: str, ws: torch.Tensor) -> torch.Tensor:
    if variant == "plain fp32":
        return plain_synthesis(sd, g.config, ws, "const")
    if variant == "plain bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain_synthesis(sd, g.config, ws, "const").float()
    return g.synthesis(ws, noise_mode="const", precision="bf16" if variant == "ours bf16" else "fp32")


def map_steps(g: Generator, variants, batch: int, warmup: int, steps: int) -> dict[str, float]:
    """Median ms per MAP step of each variant, interleaved round by round."""
    sd = dict(g.state_dict())
    target = torch.randn(batch, g.img_channels, g.img_resolution, g.img_resolution)
    state = {}
    for v in variants:
        ws = (g.mapping.w_avg.reshape(1, 1, -1) + 0.1 * torch.randn(batch, g.num_ws, g.w_dim)).requires_grad_(True)
        state[v] = (ws, torch.optim.Adam([ws], lr=0.1))
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(warmup + steps):
        for v in variants:
            ws, opt = state[v]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = (render(g, sd, v, ws) - target).square().mean()
            loss.backward()
            opt.step()
            if r >= warmup:
                times[v].append(1000 * (time.perf_counter() - t0))
    return {v: statistics.median(t) for v, t in times.items()}


@torch.no_grad()
def accuracy(g: Generator) -> tuple[float, float]:
    """(max |ours fp32 − plain fp32| / max |plain|, PSNR of ours bf16 against ours fp32 over the image range)."""
    ws = g.mapping(torch.randn(2, g.z_dim))
    plain = plain_synthesis(dict(g.state_dict()), g.config, ws, "const")
    ours = g.synthesis(ws)
    low = g.synthesis(ws, precision="bf16")
    rng = float(ours.max() - ours.min())
    psnr = 10 * torch.log10(torch.tensor(rng ** 2) / (low - ours).square().mean())
    return float((ours - plain).abs().max() / plain.abs().max()), float(psnr)


def section_map(args) -> None:
    print("\n## ms per MAP step (batch 1; forward + backward w.r.t. W+ + Adam), medians of interleaved steps\n")
    from napari_brgm.solvers import MapConfig

    warm = MapConfig.fp32_warmup  # a bf16 MAP run starts with this fraction of its steps in fp32
    print("| generator | px | params | " + " | ".join(VARIANTS) + " | ours fp32 speed-up | ours bf16 speed-up "
          f"| bf16 MAP run speed-up ({warm:g} in fp32) | fp32 max rel. diff | bf16 vs fp32 PSNR |")
    print("|---|---|---|" + "---|" * (len(VARIANTS) + 5))
    for wname, cmax in WIDTHS.items():
        for res in args.resolutions:
            g = make_generator(res, cmax)
            ms = map_steps(g, VARIANTS, 1, args.warmup, args.steps)
            rel, psnr = accuracy(g)
            base = ms["plain fp32"]
            print(f"| {wname} | {res} | {g.config.num_parameters() / 1e6:.1f} M | "
                  + " | ".join(f"{ms[v]:.0f}" for v in VARIANTS)
                  + f" | {base / ms['ours fp32']:.2f}x | {base / ms['ours bf16']:.2f}x"
                  + f" | {base / (warm * ms['ours fp32'] + (1 - warm) * ms['ours bf16']):.2f}x"
                  + f" | {rel:.1e} | {psnr:.1f} dB |",
                  flush=True)


def batch_rows(args) -> list[str]:
    rows = []
    for wname, cmax, res in BATCH_CONFIGS:
        g = make_generator(res, cmax)
        for variant in ("ours fp32", "ours bf16"):
            steps = max(3, args.steps // 2)
            ms = {k: map_steps(g, [variant], k, min(args.warmup, 2), steps)[variant] for k in (1, 4, 8)}
            alloc = "retained" if args.retain else "default"
            rows.append(f"| {wname} | {res} | {variant.split()[1]} | {alloc} | {ms[1]:.0f} | {ms[4]:.0f} | "
                        f"{ms[8]:.0f} | {ms[4] / (4 * ms[1]):.2f} | {ms[8] / (8 * ms[1]):.2f} |")
    return rows


def section_batch(args) -> None:
    print("\n## batch of K latents in one call: time(K) / (K · time(1)); below 1 means batching pays\n")
    print("malloc 'default': glibc returns blocks > 32 MB to the OS, so big batches fault their memory in at "
          "every step;\n'retained': after napari_brgm.priors.cpu.retain_freed_memory(). Each in a fresh process.\n")
    print("| generator | px | precision | malloc | ms K=1 | ms K=4 | ms K=8 | ratio K=4 | ratio K=8 |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for retain in (False, True):
        cmd = [sys.executable, __file__, "--batch-worker", "--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--threads", str(torch.get_num_threads())] + (["--retain"] if retain else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(out.strip(), flush=True)


_WRITE = """
import sys, numpy as np, torch
sys.path.insert(0, {repo!r})
from napari_brgm.priors.stylegan2 import Generator, GeneratorConfig
from tests.priors.pickles import ada_pickle
cfg = GeneratorConfig(z_dim=512, w_dim=512, img_resolution=1024, img_channels=3, mapping_layers=8,
                      channel_base=32768, channel_max=512, conv_clamp=256.0, num_fp16_res=4)
torch.manual_seed(0)
sd = {{k: v.numpy() for k, v in Generator(cfg).state_dict().items()}}
d_sd = {{f"b{{i}}.conv.weight": np.random.RandomState(i).randn(512, 512, 3, 3).astype(np.float32) for i in range(12)}}
d_sd["out.weight"] = np.zeros((1, 512 * 16), np.float32)
open({path!r}, "wb").write(ada_pickle(sd, cfg, d_state=d_sd))
"""

_LOAD = """
import json, resource, sys, time
import torch
from napari_brgm.priors import load_generator
torch.set_num_threads({threads})

def hwm_mb():  # VmHWM: peak RSS of this process image (ru_maxrss can include the parent's size at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

base, base_hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, hwm_mb()
t = time.perf_counter()
g = load_generator({path!r})
dt = time.perf_counter() - t
print(json.dumps({{"base_mb": base, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "base_hwm": base_hwm, "peak_hwm": hwm_mb(), "seconds": dt,
                   "params": sum(p.numel() for p in g.parameters())}}))
"""


def section_memory(args) -> None:
    print("\n## loading a 1024 px FFHQ config-f StyleGAN2-ADA pickle (G + D + G_ema), fresh subprocess\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ffhq-config-f.pkl")
        subprocess.run([sys.executable, "-c", _WRITE.format(repo=str(REPO), path=path)], check=True)
        size = os.path.getsize(path)
        out = subprocess.run([sys.executable, "-c", _LOAD.format(path=path, threads=torch.get_num_threads())], check=True, capture_output=True,
                             text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
    print("| file | G_ema parameters | load time | maxrss before load (torch imported) | peak maxrss | peak VmHWM |")
    print("|---|---|---|---|---|---|")
    print(f"| {size / 2 ** 20:.0f} MB | {r['params']:,} | {r['seconds']:.1f} s | {r['base_mb']:.0f} MB | "
          f"{r['peak_mb']:.0f} MB | {r['peak_hwm']:.0f} MB |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="64/128 px only, fewer steps, no memory test")
    p.add_argument("--skip", nargs="*", default=[], choices=["map", "batch", "memory"], help="sections to skip")
    p.add_argument("--batch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--retain", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_worker:
        if args.retain:
            from napari_brgm.priors.cpu import retain_freed_memory

            retain_freed_memory()
        print("\n".join(batch_rows(args)))
        return
    args.resolutions = (64, 128) if args.quick else (64, 128, 256)
    if args.quick:
        args.steps, args.warmup = min(args.steps, 4), min(args.warmup, 2)
        args.skip = [*args.skip, "memory"]
    load = os.getloadavg()
    print(f"# bench_generator: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, load average {load[0]:.2f} at start")
    t0 = time.time()
    if "memory" not in args.skip:  # first, while this process is small
        section_memory(args)
    if "map" not in args.skip:
        section_map(args)
    if "batch" not in args.skip:
        section_batch(args)
    print(f"\n# done in {time.time() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
