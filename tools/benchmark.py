"""Time dvheval on a plan (all ROIs, default metrics) and compare with dicompyler-core.

Usage::

    python tools/benchmark.py [PLAN_FOLDER] [--repeat 5] [--dicompyler-python PYTHON]

PLAN_FOLDER defaults to ../shared/testdata/dicompyler-core. dicompyler-core is
run in this interpreter when importable, else with ``--dicompyler-python``
(an interpreter that has it, e.g. a separate virtual environment with
pydicom 2.x, which dicompyler-core 0.5 needs), in the same run on the same
plan, with its default options: one ``get_dvh`` call per ROI.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PLAN = ROOT.parent / "shared" / "testdata" / "dicompyler-core"

DCC_SCRIPT = r"""
import json, sys, time, glob
import pydicom
from dicompylercore import dicomparser, dvhcalc
folder = sys.argv[1]
repeat = int(sys.argv[2])
files = {}
for f in sorted(glob.glob(folder + "/*")):
    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
    except Exception:
        continue
    files.setdefault(ds.Modality, f)
times = []
for _ in range(repeat):
    t = time.perf_counter()
    rt = dicomparser.DicomParser(files["RTSTRUCT"])
    out = {}
    for k, s in rt.GetStructures().items():
        h = dvhcalc.get_dvh(files["RTSTRUCT"], files["RTDOSE"], k)
        out[s["name"]] = h.volume
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "rois": len(out)}))
"""


def run_dvheval(folder: Path, repeat: int) -> dict:
    from dvheval import compute_dvhs

    compute_dvhs([folder])  # warm-up: imports and first-touch allocations
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        plan = compute_dvhs([folder])
        times.append(time.perf_counter() - t)
    tracemalloc.start()
    compute_dvhs([folder])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"times": times, "rois": len(plan.structures), "peak_traced_mb": peak / 2**20,
            "peak_rss_mb": rss}


def run_dicompyler(folder: Path, repeat: int, python: str | None) -> dict | None:
    try:
        import dicompylercore  # noqa: F401

        python = sys.executable
    except ImportError:
        if not python:
            return None
    res = subprocess.run([python, "-c", DCC_SCRIPT, str(folder), str(repeat)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print("dicompyler-core failed:\n" + res.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("plan", nargs="?", type=Path, default=DEFAULT_PLAN)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dicompyler-python", default=None)
    args = ap.parse_args()
    if not args.plan.exists():
        sys.exit(f"plan folder not found: {args.plan}")
    ours = run_dvheval(args.plan, args.repeat)
    med = statistics.median(ours["times"])
    print(f"dvheval: {ours['rois']} ROIs, default metrics: median {med:.3f} s over "
          f"{args.repeat} runs (min {min(ours['times']):.3f} s); peak traced memory "
          f"{ours['peak_traced_mb']:.0f} MB, peak RSS {ours['peak_rss_mb']:.0f} MB")
    dcc = run_dicompyler(args.plan, args.repeat, args.dicompyler_python)
    if dcc is None:
        print("dicompyler-core: not available (install it or pass --dicompyler-python)")
        return
    dmed = statistics.median(dcc["times"])
    print(f"dicompyler-core: {dcc['rois']} ROIs, default options: median {dmed:.3f} s over "
          f"{args.repeat} runs")
    print(f"ratio dvheval / dicompyler-core: {med / dmed:.3f}")


if __name__ == "__main__":
    main()
