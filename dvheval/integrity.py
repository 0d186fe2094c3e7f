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
                  "RTDOSE Referenced RT Plan against the RTPLAN's SOP Instance UID",
                  f"{_TG275} dose calculated for this plan; {_MPPG} Table 8"),
        CheckSpec("plan-structure-set-reference", _C,
                  "RTPLAN Referenced Structure Set against the RTSTRUCT's SOP Instance UID",
                  f"{_TG275} correct structure set; {_MPPG} Table 8"),
        CheckSpec("fractions-mismatch", _C,
                  "RTPLAN Number of Fractions Planned against the protocol's fractions",
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
        CheckSpec("plan-not-approved", _W,
                  "RTPLAN Approval Status is not APPROVED",
                  f"{_TG275} plan approval; {_MPPG} Table 8"),
        CheckSpec("dose-type", _W,
                  "RTDOSE Dose Type is not PHYSICAL",
                  f"{_TG275} dose calculation settings"),
        CheckSpec("dose-summation", _W,
                  "RTDOSE Dose Summation Type is not PLAN and no RTPLAN lets the beams be "
                  "checked",
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
                  "a treatment isocenter is farther than the set distance from every target",
                  f"{_TG275} isocenter placement; {_MPPG} Table 8"),
        CheckSpec("hot-spot-outside-target", _W,
                  "the dose maximum lies outside every target by more than the set margin",
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
