"""Results of a protocol check: per constraint, per structure, and for the plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dvheval.engine.results import PlanDVHs, _num
from dvheval.errors import DvhevalError
from dvheval.integrity import CHECKS, Finding
from dvheval.protocol import (
    Alternative,
    Constraint,
    Protocol,
    StructureMatch,
)
from dvheval.vocab import Verdict


class CheckError(DvhevalError, ValueError):
    """The caller's options do not fit the protocol (unknown level, bad fractions...)."""


@dataclass(frozen=True)
class PrescriptionUsed:
    """The dose of one prescription level and where it came from.

    ``source`` is ``"override"``, ``"protocol"``, ``"rtplan"`` or ``"none"``
    (no dose known: constraints relative to it are not evaluated).
    """

    name: str
    dose_gy: float | None
    source: str
    protocol_gy: float | None = None
    rtplan_gy: float | None = None
    rtplan_name: str | None = None
    override_gy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dose_gy": _num(self.dose_gy),
            "source": self.source,
            "protocol_gy": _num(self.protocol_gy),
            "rtplan_gy": _num(self.rtplan_gy),
            "rtplan_name": self.rtplan_name,
            "override_gy": _num(self.override_gy),
        }


@dataclass(frozen=True)
class FractionsUsed:
    """The number of fractions used for EQD2/BED and where it came from."""

    fractions: int
    source: str
    protocol: int
    rtplan: int | None = None
    override: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "used": self.fractions,
            "source": self.source,
            "protocol": self.protocol,
            "rtplan": self.rtplan,
            "override": self.override,
        }


@dataclass(frozen=True)
class ConstraintResult:
    """Outcome of one constraint (or report metric) on the plan.

    ``value``, ``limit``, ``acceptable_limit`` and ``margin`` are in ``unit``:
    ``"Gy"``, ``"cc"``, ``"%"`` (of the structure volume) or ``"%Rx"`` (of
    the prescription). ``margin`` is the signed distance to the limit,
    positive inside it.
    """

    constraint: Constraint
    verdict: Verdict
    reason: str = ""
    roi: str | None = None
    matched_by: str | None = None
    value: float | None = None
    unit: str | None = None
    limit: float | None = None
    acceptable_limit: float | None = None
    margin: float | None = None
    prescription_gy: float | None = None
    unacceptable_limit: float | None = None
    #: The value lies beyond the constraint's hard floor (``unacceptable``):
    #: the gate closes whatever the priority.
    unacceptable: bool = False

    def to_dict(self) -> dict[str, Any]:
        c = self.constraint
        return {
            "id": c.id,
            "structure": c.structure,
            "roi": self.roi,
            "matched_by": self.matched_by,
            "metric": c.metric_name,
            "operator": c.operator,
            "limit": _num(self.limit),
            "limit_unit": self.unit,
            "limit_text": c.limit.text if c.limit else None,
            "acceptable_limit": _num(self.acceptable_limit),
            "unacceptable_operator": getattr(c, "unacceptable_operator", None),
            "unacceptable_limit": _num(self.unacceptable_limit),
            "unacceptable": self.unacceptable,
            "value": _num(self.value),
            "margin": _num(self.margin),
            "verdict": self.verdict.value,
            "reason": self.reason,
            "priority": c.priority,
            "prescription": c.prescription,
            "prescription_gy": _num(self.prescription_gy),
            "citation": c.citation,
            "sources": list(c.sources),
            "checked_against": c.checked_against,
            "note": c.note,
            "alternative": c.alternative,
        }


@dataclass(frozen=True)
class AlternativeState:
    """Whether an alternative applies, and why."""

    alternative: Alternative
    active: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        a = self.alternative
        return {
            "id": a.id,
            "description": a.description,
            "active": self.active,
            "reason": self.reason,
            "replaces": list(a.replaces),
            "makes_optional": list(a.makes_optional),
            "citation": a.citation,
        }


@dataclass(frozen=True)
class StructureOutcome:
    """How a protocol structure was found in the plan."""

    structure: str
    required: bool
    status: str  # matched / missing / ambiguous
    roi: str | None = None
    how: str | None = None
    by: str | None = None
    roi_status: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "structure": self.structure,
            "required": self.required,
            "match": self.status,
            "roi": self.roi,
            "matched_by": f"{self.how} {self.by!r}" if self.how else None,
            "roi_status": self.roi_status,
            "reason": self.reason,
        }


@dataclass
class CheckResult:
    """Everything :func:`check_plan` found; :meth:`to_dict` is the stable JSON form."""

    plan: PlanDVHs
    protocol: Protocol
    results: list[ConstraintResult]
    structures: list[StructureOutcome]
    matching: StructureMatch
    alternatives: list[AlternativeState]
    prescriptions: dict[str, PrescriptionUsed]
    fractions: FractionsUsed
    conditions: list[str]
    warnings: list[str]
    verdict: Verdict
    acceptable_fails_gate: bool = False
    unresolved_required: list[str] = field(default_factory=list)
    #: Integrity findings (headers and plan); a ``close`` finding closes the gate.
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when the plan passes the gate, 1 otherwise (see the module docstring)."""
        if self.verdict == Verdict.PASS:
            return 0
        if self.verdict == Verdict.ACCEPTABLE and not self.acceptable_fails_gate:
            return 0
        return 1

    def summary(self) -> dict[str, dict[str, int]]:
        """Count of verdicts per priority (hard, objective, report)."""
        out: dict[str, dict[str, int]] = {"hard": {}, "objective": {}, "report": {}}
        for r in self.results:
            bucket = out.setdefault(r.constraint.priority, {})
            bucket[r.verdict.value] = bucket.get(r.verdict.value, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON-ready form; doses in Gy, volumes in cm^3.

        Its contract is ``dvheval/schemas/check.schema.json`` (with the
        ``integrity`` findings and the structures' ``defects`` and
        ``roi_warnings`` that :func:`dvheval.reports.json.report_dict` fills
        in); ``schema_version`` names the version of that schema (the minor
        number grows when fields are added, the major one when a field is
        removed or renamed).
        """
        plan = self.plan.to_dict(include_dvh=False)
        dose = plan["dose"]
        return {
            "tool": plan["tool"],
            "schema_version": "1.1",
            "protocol": {
                **self.protocol.identity(),
                "sources": {
                    k: {"short": s.short, "reference": s.reference, "doi": s.doi, "url": s.url}
                    for k, s in self.protocol.sources.items()
                },
            },
            "plan": {
                "patient": plan["patient"],
                "dose": {"files": dose["files"], "sha256": dose["sha256"]},
                "structure_set": plan["structure_set"],
                "rtplan": plan["plan"],
            },
            "fractions": self.fractions.to_dict(),
            "prescriptions": [p.to_dict() for p in self.prescriptions.values()],
            "conditions": list(self.conditions),
            "alternatives": [a.to_dict() for a in self.alternatives],
            "structures": [s.to_dict() for s in self.structures],
            "unmatched_rois": list(self.matching.unmatched),
            "constraints": [r.to_dict() for r in self.results],
            "summary": self.summary(),
            "warnings": list(self.warnings),
            "integrity": [f.to_dict() for f in self.findings],
            "integrity_checks": list(CHECKS),
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "gate": {
                "acceptable_fails_gate": self.acceptable_fails_gate,
                "unresolved_required_structures": list(self.unresolved_required),
                "closed_by": [f.check for f in self.findings if f.closes],
            },
        }
