"""Benchmark ``dvheval batch``: discovery time, plans per minute, worker memory.

Usage::

    python tools/bench_batch.py [--dir DIR] [--plans 500] [--phantoms 4] [--workers 1 2]

Builds an archive of ``--plans`` copies of the sample plan, each with fresh
UIDs (so each is a distinct plan: new structure set, RTPLAN and RTDOSE
referencing each other; two plans per patient) plus a few phantom plans,
in DIR (default a temporary folder, removed afterwards unless ``--keep``).
It then times the discovery and one full batch run per worker count, each
into a fresh database, with the shipped ``bone-sib-30-40-10fx`` protocol,
and prints plans per minute, the speed-up over the first worker count and
the peak resident memory of each worker (``ru_maxrss`` reported by the
workers themselves).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402

from dvheval.batch import run_batch  # noqa: E402
from dvheval.dicom.discover import discover  # noqa: E402
from dvheval.protocol import load_protocol  # noqa: E402
from dvheval.testing.synthetic import new_uid  # noqa: E402

SAMPLE = ROOT / "sample_dicom" / "sample_plan"
PROTOCOL = "bone-sib-30-40-10fx"


def build_archive(dest: Path, n_plans: int, n_phantoms: int) -> dict[str, float]:
    """Write the archive; return its size (MB), file count and build time."""
    t0 = time.perf_counter()
    ss = pydicom.dcmread(SAMPLE / "RTSTRUCT.dcm")
    plan = pydicom.dcmread(SAMPLE / "RTPLAN.dcm")
    dose = pydicom.dcmread(SAMPLE / "RTDOSE.dcm")
    for i in range(n_plans):
        patient = f"BENCH-{i // 2:04d}"
        folder = dest / patient / f"course{i % 2 + 1}"
        uids = {role: new_uid() for role in ("ss", "plan", "dose")}
        if i % 2 == 0:
            for_uid = new_uid()
        for role, ds in (("ss", ss), ("plan", plan), ("dose", dose)):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uids[role]
            ds.PatientID = patient
        for ds in (plan, dose):
            ds.FrameOfReferenceUID = for_uid
        ss.FrameOfReferenceUID = for_uid
        ss.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = for_uid
        for roi in ss.StructureSetROISequence:
            roi.ReferencedFrameOfReferenceUID = for_uid
        plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = uids["ss"]
        dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = uids["plan"]
        folder.mkdir(parents=True, exist_ok=True)
        ss.save_as(folder / f"RS.{i}.dcm")
        plan.save_as(folder / f"RP.{i}.dcm")
        dose.save_as(folder / f"RD.{i}.dcm")
    if n_phantoms:
        from tests.phantoms import cylinder, sphere, write_phantom

        def dose_fn(x, y, z):
            return 40.0 * np.exp(-(x * x + y * y + z * z) / 800.0)

        for k in range(n_phantoms):
            write_phantom(dest / "phantoms" / f"ph{k}",
                          [sphere("PTV40", 8.0, 2.5), cylinder("SpinalCord", 5.0, -20, 20, 2.5,
                                                               cy=25.0)],
                          dose_fn, prescriptions=[("PTV40", 40.0)])
    files = [p for p in dest.rglob("*") if p.is_file()]
    return {"files": len(files), "size_mb": sum(p.stat().st_size for p in files) / 2**20,
            "build_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="archive folder (default: a temporary one)")
    ap.add_argument("--plans", type=int, default=500, help="sample-plan copies (default 500)")
    ap.add_argument("--phantoms", type=int, default=4, help="phantom plans (default 4)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", action="store_true", help="keep the archive and databases")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dvheval-bench-"))
    archive = args.dir or work / "archive"
    report: dict = {"plans_requested": args.plans + args.phantoms}
    try:
        if archive.exists() and any(archive.iterdir()):
            print(f"using the existing archive {archive}", flush=True)
            files = [p for p in archive.rglob("*") if p.is_file()]
            report["archive"] = {"files": len(files),
                                 "size_mb": sum(p.stat().st_size for p in files) / 2**20}
        else:
            report["archive"] = build_archive(archive, args.plans, args.phantoms)
        a = report["archive"]
        print(f"archive: {archive}  {a['files']} files, {a['size_mb']:.0f} MB", flush=True)

        t0 = time.perf_counter()
        found = discover(archive)
        report["discovery_s"] = time.perf_counter() - t0
        report["plans_found"] = len(found.groups)
        print(f"discovery: {len(found.groups)} plans, {found.counts['files']} files in "
              f"{report['discovery_s']:.2f} s", flush=True)

        protocol = load_protocol(PROTOCOL)
        runs = []
        for n in args.workers:
            db = work / f"bench_{n}.sqlite"
            t0 = time.perf_counter()
            s = run_batch(archive, protocol, db, jobs=n, discovery=found)
            wall = time.perf_counter() - t0
            peaks = sorted(s.worker_peak_kb.values())
            run = {
                "workers": n,
                "evaluated": s.evaluated,
                "errors": len(s.errors),
                "evaluation_s": s.evaluation_seconds,
                "wall_s": wall,
                "plans_per_min": 60.0 * s.evaluated / s.evaluation_seconds,
                "worker_peak_mb": [round(k / 1024, 1) for k in peaks],
                "verdicts": s.verdicts,
                "db_mb": db.stat().st_size / 2**20,
            }
            runs.append(run)
            print(f"{n} worker(s): {s.evaluated} plans in {s.evaluation_seconds:.1f} s "
                  f"({run['plans_per_min']:.1f} plans/min, wall {wall:.1f} s), errors "
                  f"{len(s.errors)}, peak memory per worker {run['worker_peak_mb']} MB",
                  flush=True)
        base = runs[0]["plans_per_min"]
        for r in runs:
            r["speedup"] = r["plans_per_min"] / base
        report["runs"] = runs
        print("speed-up: " + ", ".join(f"{r['workers']} -> {r['speedup']:.2f}x" for r in runs))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
