"""Measure dvheval's DVH accuracy on the analytic phantoms of the test suite.

Usage::

    python tools/accuracy.py

Writes each phantom (sphere 14 cc and 0.1 cc, cylinder, cone, hollow shell,
two islands) with a linear dose gradient of 0.6 Gy/mm along x, y and z,
computes its DVH, and prints the error of D98%, D50%, D2%, D0.03cc, Dmax,
Dmin, Dmean and the volume against the closed-form values.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dvheval import compute_dvhs  # noqa: E402
from tests.phantoms import (  # noqa: E402
    LinearDose,
    cone,
    cylinder,
    dose_at_volume,
    islands,
    shell,
    sphere,
    volume_at_least,
    write_phantom,
)

SHAPES = [
    sphere("Sphere 14cc", 15.0, 3.0),
    sphere("Sphere 0.1cc", 3.0, 1.0),
    cylinder("Cylinder", 10.0, -15.0, 15.0, 3.0),
    cone("Cone", 12.0, -12.0, 24.0, 2.0),
    shell("Shell", 15.0, 9.0, -12.0, 12.0, 3.0),
    islands("Islands", 6.0, 4.0, 24.0, -9.0, 9.0, 3.0),
]
DOSES = {"x": LinearDose(30.0, 0.6, 0), "y": LinearDose(30.0, -0.6, 1),
         "z": LinearDose(30.0, 0.6, 2)}


def truths(shape, dose):
    v = volume_at_least(shape, dose, -1e9)
    out = {name: dose_at_volume(shape, dose, f * v, -1e3, 1e3)
           for name, f in (("D98%", 0.98), ("D50%", 0.5), ("D2%", 0.02))}
    out["D0.03cc"] = dose_at_volume(shape, dose, 30.0, -1e3, 1e3) if v > 30 else None
    out["Dmax"] = dose_at_volume(shape, dose, 1e-9, -1e3, 1e3)
    out["Dmin"] = dose_at_volume(shape, dose, v * (1 - 1e-12), -1e3, 1e3)
    return out, shape.volume_mm3() / 1000


def main() -> None:
    worst_abs = worst_rel = worst_vol = 0.0
    print(f"{'phantom':14s} {'axis':4s} {'vol cc':>8s} {'vol err':>8s}  "
          "max |dD| Gy (metric)")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            for axis, dose in DOSES.items():
                folder = write_phantom(Path(tmp) / f"{shape.name}-{axis}", [shape], dose)
                res = compute_dvhs([folder]).structures[0]
                truth, vol = truths(shape, dose)
                verr = res.volume_cc / vol - 1
                worst_vol = max(worst_vol, abs(verr))
                errs = {k: res.metrics[k] - t for k, t in truth.items() if t is not None}
                k_worst = max(errs, key=lambda k: abs(errs[k]))
                worst_abs = max(worst_abs, abs(errs[k_worst]))
                worst_rel = max(worst_rel, max(abs(e) / abs(truth[k]) for k, e in errs.items()))
                print(f"{shape.name:14s} {axis:4s} {vol:8.3f} {100 * verr:7.3f}%  "
                      f"{abs(errs[k_worst]):.3f} ({k_worst})")
    print(f"worst D error {worst_abs:.3f} Gy ({100 * worst_rel:.2f} %), "
          f"worst volume error {100 * worst_vol:.3f} %")


if __name__ == "__main__":
    main()
