"""Plan integrity: every check that can close the gate, in one place.

A physicist's plan review starts before any DVH: is this the right patient,
the right plan, the right structure set, the right prescription and
fractionation, and can the dose belong to the plan at all? This module holds
those checks. Each has a stable id (listed in :data:`CHECKS`), a default
severity, and produces :class:`Finding` objects that every report format,
the exit code and the batch database carry.

Two stages feed it:

* :func:`header_findings`: DICOM headers of the files of one plan (patient
  identity, references between objects, approval, dose type), read before
  the DVH engine runs;
* :func:`plan_findings`: the plan as computed (dose sanity, fractions and
  prescriptions against the protocol, structures a protocol needs that
  cannot be measured, isocenter and hot-spot location).

A finding of severity ``close`` makes the plan verdict NOT_EVALUATED (exit
1); a ``warn`` finding is shown in every report. ``strict`` turns chosen
warning ids into gate-closers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dvheval.dicom.identity import Header


class Severity(str, Enum):
    """What a finding does to the gate."""

    CLOSE = "close"
    WARN = "warn"


@dataclass(frozen=True)
class CheckSpec:
    """One integrity check: its id, default severity, what it compares, its source."""

    id: str
    severity: Severity
    compares: str
    source: str


@dataclass(frozen=True)
class Finding:
    """One problem found by an integrity check.

    Attributes
    ----------
    check : str
        Stable id of the check (a key of :data:`CHECKS`).
    severity : Severity
        ``close`` (the gate closes) or ``warn``.
    message : str
        What was found, naming the files, values and structures concerned.
    file : str or None
        The file the finding is about, when there is one.
    """

    check: str
    severity: Severity
    message: str
    file: str | None = None

    @property
    def closes(self) -> bool:
        return self.severity is Severity.CLOSE

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity.value,
            "message": self.message,
            "file": self.file,
        }


_C, _W = Severity.CLOSE, Severity.WARN
_TG275 = "TG-275"
_MPPG = "MPPG 11.a"

#: Every integrity check, by id. README's integrity table is this table.
CHECKS: dict[str, CheckSpec] = {
    s.id: s
    for s in (
        CheckSpec("patient-id-mismatch", _C,
                  "Patient ID of RTSTRUCT, RTDOSE and RTPLAN",
                  f"{_TG275} patient identity; {_MPPG} Table 8 patient/plan identity"),
        CheckSpec("patient-name-mismatch", _C,
                  "Patient Name where two files both carry one",
                  f"{_TG275} patient identity; {_MPPG} Table 8"),
        CheckSpec("birth-date-mismatch", _C,
                  "Patient Birth Date where two files both carry one",
                  f"{_TG275} patient identity; {_MPPG} Table 8"),
        CheckSpec("study-mismatch", _C,
                  "Study Instance UID of RTSTRUCT, RTDOSE and RTPLAN",
                  f"{_TG275} correct plan and images; {_MPPG} Table 8"),
        CheckSpec("dose-plan-reference", _C,
                  "RTDOSE Referenced RT Plan against the RTPLAN's SOP Instance UID "
                  "(a reference naming no UID, or none where DICOM requires one, closes too)",
                  f"{_TG275} dose calculated for this plan; {_MPPG} Table 8"),
        CheckSpec("plan-structure-set-reference", _C,
                  "RTPLAN Referenced Structure Set against the RTSTRUCT's SOP Instance UID "
                  "(a reference naming no UID, or none in a plan on patient geometry, closes "
                  "too)",
                  f"{_TG275} correct structure set; {_MPPG} Table 8"),
        CheckSpec("plan-frame-of-reference", _C,
                  "RTPLAN Frame of Reference UID against the RTDOSE's",
                  f"{_TG275} correct plan and images"),
        CheckSpec("fraction-groups", _C,
                  "the RTPLAN has more than one fraction group: its fractions and the "
                  "protocol's cannot be compared",
                  f"{_TG275} prescription and fractionation; {_MPPG} Table 8"),
        CheckSpec("fractions-mismatch", _C,
                  "RTPLAN Number of Fractions Planned against the protocol's fractions",
                  f"{_TG275} prescription and fractionation; {_MPPG} Table 8"),
        CheckSpec("plan-sum-fractions", _C,
                  "the plans of a plan sum have different (or unknown) fraction counts, so "
                  "EQD2/BED limits cannot be evaluated on their physical sum",
                  f"{_TG275} prescription and fractionation; {_MPPG} Table 8"),
        CheckSpec("prescription-mismatch", _C,
                  "RTPLAN Target Prescription Dose of a level against the protocol's (> 1 %)",
                  f"{_TG275} prescription matches the written directive; {_MPPG} Table 8"),
        CheckSpec("dose-implausible", _C,
                  "dose maximum against the highest prescription (50-150 %), all-zero dose",
                  f"{_TG275} dose distribution review; {_MPPG} Table 8"),
        CheckSpec("structure-not-covered", _C,
                  "a structure a constraint needs lies partly or wholly outside the dose grid",
                  f"{_TG275} dose grid covers critical structures; {_MPPG} Table 8"),
        CheckSpec("structure-unmeasurable", _C,
                  "a structure a constraint needs has no, degenerate, lost or duplicated "
                  "contours",
                  f"{_TG275} contour review; {_MPPG} Table 8 contours"),
        CheckSpec("structure-missing", _C,
                  "a structure the protocol requires is not in the structure set, or is "
                  "ambiguous",
                  f"{_TG275} contour review; {_MPPG} Table 8 contours"),
        CheckSpec("plan-rejected", _C,
                  "RTPLAN Approval Status is REJECTED",
                  f"{_TG275} plan approval; {_MPPG} Table 8"),
        CheckSpec("plan-not-approved", _W,
                  "RTPLAN Approval Status is not APPROVED",
                  f"{_TG275} plan approval; {_MPPG} Table 8"),
        CheckSpec("dose-type-error", _C,
                  "RTDOSE Dose Type is ERROR: the grid holds a dose uncertainty, not a dose",
                  f"{_TG275} dose calculation settings"),
        CheckSpec("dose-type", _W,
                  "RTDOSE Dose Type is not PHYSICAL",
                  f"{_TG275} dose calculation settings"),
        CheckSpec("dose-summation", _C,
                  "RTDOSE Dose Summation Type is absent, or is not PLAN and no RTPLAN lets the "
                  "beams be checked, or is RECORD, or MULTI_PLAN without naming the other plans "
                  "or with plans other than the RTPLAN given",
                  f"{_TG275} dose calculation settings"),
        CheckSpec("no-rtplan", _W,
                  "no RTPLAN: fractions and prescriptions cannot be checked against the plan",
                  f"{_TG275} prescription; {_MPPG} Table 8"),
        CheckSpec("no-external", _W,
                  "the structure set has no EXTERNAL (BODY) contour",
                  f"{_TG275} contour review"),
        CheckSpec("isocenter-outside-body", _W,
                  "a treatment isocenter lies outside the external contour",
                  f"{_TG275} isocenter placement; {_MPPG} Table 8"),
        CheckSpec("isocenter-far-from-target", _W,
                  "a treatment isocenter is more than 50 mm from every target",
                  f"{_TG275} isocenter placement; {_MPPG} Table 8"),
        CheckSpec("hot-spot-outside-target", _W,
                  "the dose maximum lies more than 5 mm outside every target (PTV, CTV, GTV)",
                  f"{_TG275} dose distribution review (hot spots); {_MPPG} Table 8"),
        CheckSpec("duplicate-roi-name", _W,
                  "two ROIs of the structure set have the same name",
                  f"{_TG275} contour review"),
        CheckSpec("contour-defect", _W,
                  "an ROI has dropped, duplicated or self-intersecting contours",
                  f"{_TG275} contour review"),
    )
}


def finding(check: str, message: str, file: str | None = None,
            strict: Collection[str] = ()) -> Finding:
    """A finding of ``check`` with its default severity, raised to ``close`` when strict.

    ``strict`` holds check ids (or ``"all"``) whose warnings close the gate.
    """
    spec = CHECKS[check]
    severity = spec.severity
    if severity is Severity.WARN and (check in strict or "all" in strict):
        severity = Severity.CLOSE
    return Finding(check, severity, message, file)


def closing(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that close the gate."""
    return [f for f in findings if f.closes]


def regrade(findings: Iterable[Finding], strict: Collection[str] = ()) -> list[Finding]:
    """The findings with warnings named in ``strict`` (or ``"all"``) raised to ``close``."""
    return [finding(f.check, f.message, f.file, strict) if not f.closes else f
            for f in findings]


# ------------------------------------------------------------------ headers
def _norm_name(name: str) -> str:
    """A person name compared without case, spaces or trailing empty components."""
    return "^".join(part.strip().upper() for part in name.split("^")).rstrip("^")


def _compare(headers: list[Header], attr: str, check: str, label: str,
             normalise: Any = None, both_present: bool = True) -> list[Finding]:
    values = []
    for h in headers:
        v = getattr(h, attr)
        v = normalise(v) if normalise else v
        if v or not both_present:
            values.append((h, v))
    distinct = {v for _, v in values}
    if len(distinct) <= 1:
        return []
    listing = "; ".join(f"{h.kind} {h.path}: {getattr(h, attr)!r}" for h, _ in values)
    return [finding(check, f"{label} differs between the files of the plan ({listing})")]


def header_findings(structure_set: Header, doses: list[Header],
                    plan: Header | None) -> list[Finding]:
    """Integrity findings from the headers of one plan's files.

    Compares patient identity (ID always; name and birth date where two
    files both carry them), Study Instance UIDs, the RTDOSE -> RTPLAN and
    RTPLAN -> RTSTRUCT references (where the referring file carries one),
    and reports approval status, dose type and summation type. (About 60
    lines: one short comparison per identity attribute, in the order of
    README's integrity table, reads better in one place than split.)
    """
    files = [structure_set, *doses, *([plan] if plan else [])]
    out: list[Finding] = []
    out += _compare(files, "patient_id", "patient-id-mismatch", "Patient ID",
                    both_present=False)
    out += _compare(files, "patient_name", "patient-name-mismatch", "Patient Name",
                    normalise=_norm_name)
    out += _compare(files, "birth_date", "birth-date-mismatch", "Patient Birth Date")
    out += _compare(files, "study_uid", "study-mismatch", "Study Instance UID",
                    both_present=False)
    for d in doses:
        if "ReferencedRTPlanSequence" in d.blank_references:
            out.append(finding(
                "dose-plan-reference",
                "the RTDOSE's Referenced RT Plan Sequence has an item without a Referenced SOP "
                "Instance UID: the plan the dose was calculated for is unknown", d.path))
    if plan is not None and "ReferencedStructureSetSequence" in plan.blank_references:
        out.append(finding(
            "plan-structure-set-reference",
            "the RTPLAN's Referenced Structure Set Sequence has an item without a Referenced "
            "SOP Instance UID: the structure set the plan was made on is unknown", plan.path))
    for d in doses:
        if not d.dose_summation:
            out.append(finding("dose-summation", "the RTDOSE has no Dose Summation Type (a "
                               "required attribute): whether it is the dose of the plan, a "
                               "fraction or a beam is unknown", d.path))
    if plan is not None:
        out += _plan_findings(plan, structure_set, doses)
    else:
        out.append(finding("no-rtplan", "no RTPLAN was given: the plan's fractions and "
                           "prescriptions cannot be checked against the protocol"))
        for d in doses:
            if d.dose_summation and d.dose_summation not in ("PLAN", "MULTI_PLAN"):
                out.append(finding(
                    "dose-summation",
                    f"Dose Summation Type is {d.dose_summation} and no RTPLAN "
                    "lets dvheval check that the dose of every beam and fraction is there",
                    d.path))
    for d in doses:
        if d.dose_type == "ERROR":
            out.append(finding("dose-type-error", "Dose Type is ERROR: the grid holds the "
                               "uncertainty of a dose, not a dose", d.path))
        elif d.dose_type and d.dose_type != "PHYSICAL":
            out.append(finding("dose-type", f"Dose Type is {d.dose_type}, not PHYSICAL: "
                               "limits are written for physical dose", d.path))
    return out


#: Dose Summation Types for which DICOM requires the RTDOSE to reference its RTPLAN.
PLAN_REFERENCE_REQUIRED = frozenset({
    "PLAN", "MULTI_PLAN", "FRACTION", "BEAM", "BRACHY", "FRACTION_SESSION", "BEAM_SESSION",
    "BRACHY_SESSION", "CONTROL_POINT"})


def _plan_findings(plan: Header, structure_set: Header, doses: list[Header]) -> list[Finding]:
    """The references, Frame of Reference, fraction groups and approval of the RTPLAN."""
    out: list[Finding] = []
    uid = plan.sop_instance_uid
    for d in doses:
        others = [u for u in d.referenced_plan_uids if u != uid]
        if d.referenced_plan_uids and uid and uid not in d.referenced_plan_uids:
            out.append(finding(
                "dose-plan-reference",
                f"the RTDOSE references RTPLAN {', '.join(d.referenced_plan_uids)}, but the "
                f"RTPLAN given ({plan.path}) is {uid}: the dose was not "
                "calculated for this plan", d.path))
        elif d.dose_summation == "MULTI_PLAN" and others:
            out.append(finding(
                "dose-summation",
                f"the RTDOSE is a MULTI_PLAN dose that also holds the dose of RTPLAN "
                f"{', '.join(others)}, which was not given: it is not the dose of {plan.path} "
                "alone (give every plan with --sum)", d.path))
        elif d.dose_summation == "MULTI_PLAN":
            out.append(finding(
                "dose-summation",
                "the RTDOSE is a MULTI_PLAN dose (the dose of two or more plans) but references "
                f"only the RTPLAN given ({plan.path}): which other plans it holds is unknown",
                d.path))
        elif d.dose_summation == "RECORD":
            out.append(finding(
                "dose-summation",
                "the RTDOSE is a RECORD dose (of treatment delivered so far, per a treatment "
                f"record), not the dose planned by {plan.path}", d.path))
        elif ("ReferencedRTPlanSequence" in d.absent_references
              and d.dose_summation in PLAN_REFERENCE_REQUIRED):
            out.append(finding(
                "dose-plan-reference",
                f"the RTDOSE ({d.dose_summation} dose) has no Referenced RT Plan Sequence, which "
                "DICOM requires: it cannot be told that the dose was calculated for the RTPLAN "
                f"given ({plan.path})", d.path))
        if (plan.frame_of_reference_uid and d.frame_of_reference_uid
                and plan.frame_of_reference_uid != d.frame_of_reference_uid):
            out.append(finding(
                "plan-frame-of-reference",
                f"the RTPLAN's Frame of Reference {plan.frame_of_reference_uid} differs from "
                f"{d.frame_of_reference_uid} of the RTDOSE {d.path}: the plan (its isocenters) "
                "is not in the dose's coordinate system", plan.path))
    if (plan.referenced_structure_set_uids and structure_set.sop_instance_uid
            and structure_set.sop_instance_uid not in plan.referenced_structure_set_uids):
        out.append(finding(
            "plan-structure-set-reference",
            f"the RTPLAN references structure set "
            f"{', '.join(plan.referenced_structure_set_uids)}, but the RTSTRUCT given "
            f"({structure_set.path}) is {structure_set.sop_instance_uid}", plan.path))
    elif ("ReferencedStructureSetSequence" in plan.absent_references
          and plan.plan_geometry in ("PATIENT", "")):
        out.append(finding(
            "plan-structure-set-reference",
            "the RTPLAN has no Referenced Structure Set Sequence (required for a plan on "
            f"patient geometry): it cannot be told that it was made on {structure_set.path}",
            plan.path))
    if len(plan.fraction_groups) > 1:
        out.append(finding(
            "fraction-groups",
            f"the RTPLAN has {len(plan.fraction_groups)} fraction groups (fractions "
            f"{' + '.join(f or '?' for f in plan.fraction_groups)}); dvheval compares one "
            "fraction scheme with the protocol: export the plan with one fraction group, or "
            "each group as its own plan (--sum or --course)", plan.path))
    if plan.approval_status == "REJECTED":
        out.append(finding("plan-rejected", "RTPLAN Approval Status is REJECTED", plan.path))
    elif plan.approval_status != "APPROVED":
        status = plan.approval_status or "absent"
        out.append(finding("plan-not-approved",
                           f"RTPLAN Approval Status is {status}, not APPROVED", plan.path))
    return out


# ------------------------------------------------------- structure geometry
#: Types of RT ROI Interpreted Type that are treatment targets.
TARGET_TYPES = frozenset({"PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME"})
#: An isocenter farther than this (mm) from every target is reported.
ISOCENTER_TARGET_DISTANCE_MM = 50.0
#: A dose maximum farther than this (mm) outside every target is reported.
HOT_SPOT_MARGIN_MM = 5.0


def distance_to_roi(point: tuple[float, float, float], contours: Iterable[Any],
                    slice_thickness: float) -> float | None:
    """Distance (mm) from a point to the volume of an ROI; 0 inside.

    Each closed axial contour stands for a slab of ``slice_thickness``
    around its plane; contours of one plane combine by the even-odd rule
    (holes). None when the ROI has no closed contour.
    """
    import numpy as np
    import shapely

    x, y, z = point
    by_plane: dict[float, list[Any]] = {}
    for c in contours:
        pts = np.asarray(c.points, dtype=float)
        if not c.geometric_type.upper().startswith("CLOSED") or len(pts) < 3:
            continue
        if not np.all(np.isfinite(pts)):
            continue
        by_plane.setdefault(round(float(pts[:, 2].mean()), 2), []).append(pts[:, :2])
    if not by_plane:
        return None
    here = shapely.Point(x, y)
    best = float("inf")
    for zp, polys in by_plane.items():
        dz = max(0.0, abs(z - zp) - slice_thickness / 2.0)
        if dz >= best:
            continue
        rings = [shapely.LinearRing(p) for p in polys]
        inside = sum(bool(shapely.Polygon(r).covers(here)) for r in rings) % 2 == 1
        d_in = 0.0 if inside else min(float(r.distance(here)) for r in rings)
        best = min(best, float(np.hypot(d_in, dz)))
    return best


def roi_findings(rois: Iterable[Any]) -> list[Finding]:
    """Duplicate ROI names and a missing external contour."""
    rois = list(rois)
    out: list[Finding] = []
    seen: dict[str, int] = {}
    for r in rois:
        key = r.name.strip().lower()
        seen[key] = seen.get(key, 0) + 1
    for r in rois:
        key = r.name.strip().lower()
        if seen.get(key, 0) > 1:
            out.append(finding("duplicate-roi-name",
                               f"{seen[key]} ROIs are named {r.name!r} (matching by name is "
                               "ambiguous for them)"))
            seen[key] = 0
    if not any(r.interpreted_type.upper() == "EXTERNAL" and r.contours for r in rois):
        out.append(finding("no-external", "the structure set has no EXTERNAL (BODY) contour: "
                           "isocenter and isodose checks against the body cannot be made"))
    return out


def location_findings(rois: Iterable[Any], isocenters: Iterable[tuple[float, float, float]],
                      dose_max_gy: float | None,
                      dose_max_position: tuple[float, float, float] | None,
                      slice_thickness: float) -> list[Finding]:
    """Isocenters outside the body or far from every target; a hot spot outside the targets."""
    rois = list(rois)
    body = [r for r in rois if r.interpreted_type.upper() == "EXTERNAL" and r.contours]
    targets = [r for r in rois if r.interpreted_type.upper() in TARGET_TYPES and r.contours]
    out: list[Finding] = []

    def nearest_target(p: tuple[float, float, float]) -> tuple[float, str] | None:
        best = None
        for t in targets:
            d = distance_to_roi(p, t.contours, slice_thickness)
            if d is not None and (best is None or d < best[0]):
                best = (d, t.name)
        return best

    for iso in isocenters:
        where = "({:.1f}, {:.1f}, {:.1f}) mm".format(*iso)
        if body:
            d = distance_to_roi(iso, body[0].contours, slice_thickness)
            if d is not None and d > 0:
                out.append(finding("isocenter-outside-body",
                                   f"the isocenter at {where} lies {d:.1f} mm outside the "
                                   f"external contour {body[0].name!r}"))
        near = nearest_target(iso)
        if near is not None and near[0] > ISOCENTER_TARGET_DISTANCE_MM:
            out.append(finding("isocenter-far-from-target",
                               f"the isocenter at {where} is {near[0]:.1f} mm from the nearest "
                               f"target ({near[1]!r}; reported beyond "
                               f"{ISOCENTER_TARGET_DISTANCE_MM:g} mm)"))
    if dose_max_position is not None and targets:
        near = nearest_target(dose_max_position)
        if near is not None and near[0] > HOT_SPOT_MARGIN_MM:
            where = "({:.1f}, {:.1f}, {:.1f}) mm".format(*dose_max_position)
            out.append(finding("hot-spot-outside-target",
                               f"the dose maximum ({dose_max_gy:.2f} Gy at {where}) lies "
                               f"{near[0]:.1f} mm outside the nearest target ({near[1]!r})"))
    return out
