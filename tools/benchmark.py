"""Whole-process speed and memory of ``dvheval dvh`` against dicompyler-core.

Usage::

    python tools/benchmark.py [--scales small,clinical,large] [--runs 3]
                              [--dicompyler-python PYTHON] [--dcc-runs N]
                              [--breast FOLDER | --no-breast] [--no-sample] [--keep DIR]

The synthetic plans are generated (deterministically) into a temporary
folder with ``make_plan.py`` of the shared benchmark kit
(../shared/bench); the real breast plan is ../shared/testdata/dicompyler-core,
and the shipped sample plan sample_dicom/sample_plan is timed last.
dvheval's modules are compiled to bytecode first, as an installation has
them. Each command runs ``--runs`` times as a fresh process (``bench_cmd.py``),
dvheval and dicompyler-core in turn so that a drift of the machine's speed
affects both; printed are the median wall time and the largest peak RSS of each, the
dvheval / dicompyler-core ratio, and the load average when the run started
and ended (the figures are only comparable on a quiet machine).

dicompyler-core 0.5.6 (default options, every ROI: ``bench_dcc.py``) runs in
this interpreter when importable, else with ``--dicompyler-python`` (e.g. a
separate virtual environment); without either only dvheval's figures are
printed.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "bench"
BREAST = ROOT.parent / "shared" / "testdata" / "dicompyler-core"
#: RTSTRUCT and RTDOSE file names of the breast plan (the kit's plans use RS.dcm, RD.dcm).
BREAST_FILES = ("rtss.dcm", "rtdose.dcm")
SAMPLE = ROOT / "sample_dicom" / "sample_plan"
SAMPLE_FILES = ("RTSTRUCT.dcm", "RTDOSE.dcm")


def _load_kit(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", KIT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dcc_python(option: str | None) -> str | None:
    if option:
        return option
    if importlib.util.find_spec("dicompylercore") is not None:
        return sys.executable
    return None


def _dvheval_command() -> list[str]:
    script = Path(sys.executable).with_name("dvheval")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from dvheval.cli import run; run()"]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def _quiet(*_args) -> None:
    return None


def measure(name: str, folder: Path, files: tuple[str, str], runs: int, dcc_runs: int,
            dcc_python: str | None, bench_cmd) -> dict:
    """Median wall time and peak RSS of dvheval and dicompyler-core on one plan."""
    row: dict = {"plan": name}
    cmd = [*_dvheval_command(), "dvh", "{DIR}", "--format", "json"]
    dcmd = [dcc_python, str(KIT / "bench_dcc.py"), "{DIR}", "--rs", files[0], "--rd", files[1]]
    ours: list[dict] = []
    theirs: list[dict] = []
    # one run of each in turn, so that a machine whose speed drifts during the
    # measurement slows both alike
    for i in range(max(runs, dcc_runs if dcc_python else 0)):
        if i < runs:
            ours += bench_cmd.time_command(cmd, folder, runs=1, log=_quiet)["runs"]
        if dcc_python and i < dcc_runs:
            theirs += bench_cmd.time_command(dcmd, folder, runs=1, log=_quiet)["runs"]
    row["dvheval_s"] = statistics.median(r["wall_s"] for r in ours)
    row["dvheval_mb"] = max(r["maxrss_kb"] for r in ours) / 1024
    row["dvheval_ok"] = all(r["rc"] == 0 for r in ours)
    row["dvheval_runs"] = [r["wall_s"] for r in ours]
    if theirs:
        row["dcc_s"] = statistics.median(r["wall_s"] for r in theirs)
        row["dcc_mb"] = max(r["maxrss_kb"] for r in theirs) / 1024
        row["dcc_ok"] = all(r["rc"] == 0 for r in theirs)
    print(_format(row), flush=True)
    return row


def _format(row: dict) -> str:
    text = (f"{row['plan']:10s} dvheval {row['dvheval_s']:8.2f} s {row['dvheval_mb']:7.0f} MB"
            + ("" if row["dvheval_ok"] else " (FAILED)"))
    if "dcc_s" in row:
        text += (f" | dicompyler-core {row['dcc_s']:8.2f} s {row['dcc_mb']:7.0f} MB"
                 + ("" if row["dcc_ok"] else " (FAILED)")
                 + f" | ratio {row['dvheval_s'] / row['dcc_s']:.3f}")
    else:
        text += " | dicompyler-core not run"
    spread = row["dvheval_runs"]
    if len(spread) > 1:
        text += f" | dvheval runs {min(spread):.2f}..{max(spread):.2f} s"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="small,clinical,large",
                    help="synthetic plans to generate and time (comma-separated, or empty)")
    ap.add_argument("--runs", type=int, default=3, help="runs of dvheval per plan (median)")
    ap.add_argument("--dcc-runs", type=int, default=None,
                    help="runs of dicompyler-core per plan (default: --runs)")
    ap.add_argument("--dicompyler-python", default=None,
                    help="interpreter that has dicompyler-core (if this one has not)")
    ap.add_argument("--breast", type=Path, default=BREAST, help="the real breast plan folder")
    ap.add_argument("--no-breast", action="store_true")
    ap.add_argument("--no-sample", action="store_true", help="skip the shipped sample plan")
    ap.add_argument("--keep", type=Path, default=None,
                    help="generate the plans here (reused when present) instead of a temp dir")
    args = ap.parse_args()
    if not (KIT / "make_plan.py").exists():
        sys.exit(f"benchmark kit not found at {KIT}")
    bench_cmd = _load_kit("bench_cmd")
    # time dvheval as installed, with its modules compiled to bytecode (pip does that
    # on install; an editable checkout run with PYTHONDONTWRITEBYTECODE never has them)
    compileall.compile_dir(str(ROOT / "dvheval"), quiet=1)
    dcc_python = _dcc_python(args.dicompyler_python)
    dcc_runs = args.runs if args.dcc_runs is None else args.dcc_runs
    print(f"load average at start: {_load()}")
    if dcc_python is None:
        print("dicompyler-core: not available here (install it into another environment and "
              "pass --dicompyler-python); dvheval's figures alone")
    print(f"median of {args.runs} dvheval run(s)"
          + (f", {dcc_runs} dicompyler-core run(s)" if dcc_python else "")
          + "; whole processes; peak RSS is the largest of the runs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dvheval-bench-") as tmp:
        base = args.keep or Path(tmp)
        for scale in [s for s in args.scales.split(",") if s]:
            folder = base / scale
            if not (folder / "RD.dcm").exists():
                subprocess.run([sys.executable, str(KIT / "make_plan.py"), str(folder),
                                "--scale", scale], check=True, stdout=subprocess.DEVNULL)
            rows.append(measure(scale, folder, ("RS.dcm", "RD.dcm"), args.runs, dcc_runs,
                                dcc_python, bench_cmd))
        if not args.no_breast:
            if (args.breast / BREAST_FILES[1]).exists():
                rows.append(measure("breast", args.breast, BREAST_FILES, args.runs, dcc_runs,
                                    dcc_python, bench_cmd))
            else:
                print(f"breast plan not found at {args.breast}")
        if not args.no_sample:
            rows.append(measure("sample", SAMPLE, SAMPLE_FILES, args.runs, dcc_runs, dcc_python,
                                bench_cmd))
    ratios = [r["dvheval_s"] / r["dcc_s"] for r in rows if "dcc_s" in r]
    if ratios:
        print(f"median ratio dvheval / dicompyler-core: {statistics.median(ratios):.3f}")
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
