"""Gate-closing findings of the check: implausible dose, unmeasurable structures."""

from __future__ import annotations

import math

from dvheval.check.evaluate import status_reason
from dvheval.check.results import PrescriptionUsed
from dvheval.engine.results import PlanDVHs
from dvheval.integrity import Finding, finding
from dvheval.protocol import (
    StructureMatch,
)

#: The dose maximum must lie within these fractions of the highest prescription.
DOSE_MAX_RANGE = (0.5, 1.5)


def dose_findings(plan: PlanDVHs, rx: dict[str, PrescriptionUsed]) -> list[Finding]:
    """The dose cannot belong to the plan: all zero, or its maximum far from the prescription."""
    files = ", ".join(plan.dose.files)
    dmax = plan.dose.max_gy
    if dmax is None:  # not known (DVHs built without a dose grid)
        return []
    if not math.isfinite(dmax) or dmax <= 0:
        return [finding("dose-implausible", f"the dose grid holds no dose above 0 Gy ({files})")]
    doses = [p.dose_gy for p in rx.values() if p.dose_gy is not None]
    if not doses:
        return []
    top = max(doses)
    lo, hi = DOSE_MAX_RANGE
    if not lo * top <= dmax <= hi * top:
        return [finding(
            "dose-implausible",
            f"the dose maximum {dmax:.2f} Gy is {100 * dmax / top:.0f} % of the highest "
            f"prescription ({top:g} Gy); a dose of this plan lies within "
            f"{100 * lo:.0f}-{100 * hi:.0f} % ({files})")]
    return []


def structure_findings(
    plan: PlanDVHs, match: StructureMatch, needed: set[str], required: set[str]
) -> list[Finding]:
    """Structures that constraints need but that cannot be measured, or are not covered."""
    out = []
    for name in sorted(needed | required):
        if match.status(name) != "matched":
            if name in required:
                why = match.ambiguous.get(name, "no ROI matched")
                out.append(finding("structure-missing", f"required structure {name}: {why}"))
            continue
        sr = plan.structures[match.matched[name].index]
        if sr.status in ("partial", "outside"):
            out.append(finding("structure-not-covered", f"{name}: {status_reason(sr)}"))
        elif sr.status != "ok":
            out.append(finding("structure-unmeasurable", f"{name}: {status_reason(sr)}"))
        elif sr.defects:
            out.append(finding("structure-unmeasurable",
                               f"{name}: ROI {sr.name!r} has contours that change its volume: "
                               + "; ".join(sr.defects)))
    return out
