"""The long fuzz run: the readers' and the prior loaders' fuzz property with a large example budget.

The suite runs the same property derandomized with a small budget (tests/io/test_fuzz_readers.py,
tests/priors/test_fuzz_loaders.py); this script draws many more cases from a random (or given)
seed, keeps going after a failure, and prints one line per distinct finding (what failed, how
often, the smallest case) with the mutated files saved under --out for a regression test:

    PYTHONPATH=src python tools/fuzz_readers.py --examples 20000 --out /tmp/fuzz-findings
    PYTHONPATH=src python tools/fuzz_readers.py --target loaders --examples 3000 --seed 7

Targets: dicom, nifti, png, series (the readers), loaders (ADA/TF pickles, safetensors), all.
Exit status 1 when something was found. A finding is any case where a reader raises anything but
ReadError (a loader anything but CheckpointError), the error does not name the file, a loaded
image is not float32 / not of the declared shape / non-finite where the file stores finite values,
a case takes longer than --timeout, allocates more than the stated bound, or tries to run code.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.fuzzing (the shared mutation engine)
sys.path.insert(0, str(REPO / "src"))

READER_GROUPS = {
    "dicom": ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "CT_small.dcm",
              "emri_small.dcm", "cr_mono1.dcm"],
    "nifti": ["vol.nii", "vol.nii.gz", "slice_f32.nii", "vol2.nii"],
    "png": ["gray8.png", "gray16.png", "rgb_gray.png"],
}


def _reader_finding(path: Path, size: int, timeout: float) -> str | None:
    from napari_brgm.io import ReadError, load_image
    from tests import fuzzing as F

    try:
        out = F.guarded(lambda: load_image(path), timeout=timeout)
    except F.Hang as err:
        return f"hang: {err}"
    if out.code_events:
        return f"code execution: {out.code_events[0]}"
    if out.peak >= F.memory_limit(size):
        return f"allocation: {out.peak / F.MB:.0f} MB traced"
    if out.rss_growth >= F.memory_limit(size):
        return f"allocation: resident size +{out.rss_growth / F.MB:.0f} MB"
    if out.error is not None:
        err = out.error
        if not isinstance(err, ReadError):
            return f"{type(err).__name__}: {str(err)[:100]}"
        if str(path) not in str(err):
            return "ReadError without the path"
        return None
    if path.is_file():
        try:
            F.check_image_result(path, out.value)
        except AssertionError as err:
            return f"bad image: {str(err).replace(str(path), '<file>')[:100]}"
        except Exception as err:  # noqa: BLE001 - the header check itself failed on a file we loaded
            return f"loaded a file its own library cannot parse: {type(err).__name__}: {str(err)[:80]}"
    return None


def _loader_finding(path: Path, timeout: float) -> str | None:
    from napari_brgm.priors import CheckpointError
    from napari_brgm.priors.modelfile import load_prior
    from tests import fuzzing as F

    try:
        out = F.guarded(lambda: load_prior(path), timeout=timeout)
    except F.Hang as err:
        return f"hang: {err}"
    limit = 32 * F.MB + 8 * path.stat().st_size
    if out.code_events:
        return f"code execution: {out.code_events[0]}"
    if out.peak >= limit or out.rss_growth >= limit:
        return f"allocation: {max(out.peak, out.rss_growth) / F.MB:.0f} MB"
    if out.error is not None:
        if not isinstance(out.error, CheckpointError):
            return f"{type(out.error).__name__}: {str(out.error)[:100]}"
        return None if str(path) in str(out.error) else "CheckpointError without the path"
    try:
        F.check_prior_result(out.value)
    except AssertionError as err:
        return f"bad prior: {err}"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=("dicom", "nifti", "png", "series", "readers", "loaders", "all"),
                   default="all")
    p.add_argument("--examples", type=int, default=5000, help="cases per target (default 5000)")
    p.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds one case may take")
    p.add_argument("--out", type=Path, help="save the mutated file of each finding's smallest case here")
    args = p.parse_args(argv)

    import numpy as np  # noqa: F401 - warm imports before the audit hook records anything
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from tests import fuzzing as F

    warnings.simplefilter("ignore")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(f"fuzz_readers: target {args.target}, {args.examples} cases per target, seed {seed}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="napari-brgm-fuzz-"))
    targets = {"readers": ["dicom", "nifti", "png", "series"], "all": ["dicom", "nifti", "png", "series", "loaders"]
               }.get(args.target, [args.target])
    findings: dict[str, list] = defaultdict(list)  # finding -> [(size, description, bytes or folder)]
    counts: dict[str, int] = defaultdict(int)
    rnd = random.Random(seed)

    def record(key: str | None, target: str, seed_name: str, muts, data) -> None:
        counts[target] += 1
        if key is None:
            return
        key = f"[{target}] {key}"
        if key not in findings:  # said at once, so that an interrupted run still reports it
            print(f"  new finding {key} (seed {seed_name}, mutations {muts})", flush=True)
        findings[key].append((len(data) if isinstance(data, bytes) else 0, seed_name, muts, data))

    reader_seeds = {s.name: s for s in F.reader_seeds(work / "seeds")} if set(targets) - {"loaders"} else {}
    for s in reader_seeds.values():  # warm the lazy imports
        path = work / "warm" / s.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s.data)
        _reader_finding(path, len(s.data), 60)

    budget = settings(max_examples=args.examples, deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), print_blob=False)
    started = time.perf_counter()
    for target in targets:
        t0 = time.perf_counter()
        if target in READER_GROUPS:
            names = READER_GROUPS[target]  # read by run() below, defined in this iteration

            @budget
            @given(data=st.data())
            def run(data):
                s = reader_seeds[data.draw(st.sampled_from(names))]
                muts = data.draw(F.mutations(s))
                folder = work / "case"
                shutil.rmtree(folder, ignore_errors=True)
                path = F.write_case(folder, s, muts)
                record(_reader_finding(path, path.stat().st_size, args.timeout), target, s.name, muts,
                       path.read_bytes())
        elif target == "series":
            from tests.io.conftest import make_mr_series

            series = make_mr_series(work / "series-seed" / "s", n=3)

            @budget
            @given(data=st.data())
            def run(data):
                folder = work / "series-case"
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(series, folder)
                victim = data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir())))
                raw = (folder / victim).read_bytes()
                s = F.Seed(victim, raw, tuple(F.dicom_fields(raw)))
                muts = data.draw(F.mutations(s))
                (folder / victim).write_bytes(F.apply(s, muts))
                size = sum(p.stat().st_size for p in folder.iterdir())
                record(_reader_finding(folder, size, args.timeout), "series", victim, muts, (folder / victim).read_bytes())
        else:
            loader_seeds = {s.name: s for s in F.loader_seeds(work / "loader-seeds")}
            for s in loader_seeds.values():
                path = work / "warm" / s.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(s.data)
                _loader_finding(path, 120)

            @budget
            @given(data=st.data())
            def run(data):
                s = loader_seeds[data.draw(st.sampled_from(sorted(loader_seeds)))]
                muts = data.draw(F.loader_mutations(s))
                folder = work / "case"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                path = folder / s.name
                path.write_bytes(F.apply_loader(s, muts))
                record(_loader_finding(path, args.timeout), "loaders", s.name, muts, path.read_bytes())

        hseed(rnd.randrange(2**31))(run)()  # reproducible from --seed
        print(f"  {target}: {counts[target]} cases in {time.perf_counter() - t0:.0f} s", flush=True)

    print(f"fuzz_readers: {sum(counts.values())} cases in {time.perf_counter() - started:.0f} s, "
          f"{len(findings)} distinct findings", flush=True)
    for key, cases in sorted(findings.items(), key=lambda kv: -len(kv[1])):
        _size, seed_name, muts, data = min(cases, key=lambda c: (len(c[2]), c[0]))
        print(f"- {key}: {len(cases)} cases; smallest: seed {seed_name}, mutations {muts}")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            name = f"finding{len(os.listdir(args.out)):03d}_{seed_name}"
            (args.out / name).write_bytes(data)
            print(f"    saved as {args.out / name}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
