"""Compare dvheval with the DVHs a planning system stored in an RTDOSE.

Usage::

    python tools/compare_tps.py [PLAN_FOLDER] [--no-end-caps]

Prints a Markdown table per ROI: volume and Dmean, D98%, D50%, D2% from the
planning system's DVH Sequence (evaluated with the same interpolation as
dvheval's own DVHs) next to dvheval's values.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dvheval import compute_dvhs
from dvheval.dicom import find_inputs
from dvheval.engine.metrics import evaluate_metric
from dvheval.engine.stored import read_stored_dvhs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PLAN = ROOT.parent / "shared" / "testdata" / "dicompyler-core"
METRICS = ("Dmean", "D98%", "D50%", "D2%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("plan", nargs="?", type=Path, default=DEFAULT_PLAN)
    ap.add_argument("--no-end-caps", action="store_true")
    args = ap.parse_args()
    inputs = find_inputs([args.plan])
    stored = {}
    for d in inputs.doses:
        stored.update(read_stored_dvhs(d.path))
    plan = compute_dvhs([args.plan], end_caps=not args.no_end_caps)
    head = "| ROI | volume cc (TPS / dvheval) | " + " | ".join(
        f"{m} Gy (TPS / dvheval)" for m in METRICS) + " |"
    print(head)
    print("|---" * (2 + len(METRICS)) + "|")
    for s in plan.structures:
        ref = stored.get(s.number)
        if ref is None or s.dvh is None:
            continue
        diff = 100 * (s.volume_cc / ref.total_cc - 1)
        cells = [f"{ref.total_cc:.3f} / {s.volume_cc:.3f} ({diff:+.1f} %)"]
        for m in METRICS:
            cells.append(f"{evaluate_metric(m, ref):.3f} / {s.metrics[m]:.3f}")
        print(f"| {s.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
