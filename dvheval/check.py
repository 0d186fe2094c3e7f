"""Check a plan's DVHs against a protocol.

Verdicts of one constraint
--------------------------
``PASS``            the value lies within the limit.
``ACCEPTABLE``      outside the limit but within its ``acceptable`` limit.
``FAIL``            outside both.
``NOT_EVALUATED``   could not be evaluated; the reason says why: a required
                    structure is missing, several ROIs match it, its status is
                    not ``ok`` (partly or wholly outside the dose grid, no
                    contours, no volume, unusable contours), a prescription
                    dose is unknown, or the metric cannot be computed.
``NOT_APPLICABLE``  does not apply: an optional structure is absent, the
                    constraint is replaced by an active alternative, or it
                    belongs to an alternative whose condition does not hold.
``REPORT``          a report-only metric (its value may be null, with a reason).

Plan verdict and exit code
--------------------------
Only ``hard`` constraints and required structures gate a plan:

1. ``FAIL`` if a hard constraint fails;
2. else ``NOT_EVALUATED`` if a hard constraint could not be evaluated or a
   required structure is missing or ambiguous;
3. else ``ACCEPTABLE`` if a hard constraint is ACCEPTABLE or an objective
   is not met (ACCEPTABLE, FAIL or NOT_EVALUATED);
4. else ``PASS``.

``exit_code`` is 0 for PASS, 0 for ACCEPTABLE (1 when
``acceptable_fails_gate``), and 1 for FAIL and NOT_EVALUATED. A failed
objective thus shows in the verdict (ACCEPTABLE) but does not stop a plan
unless the gate is strict.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dvheval.engine.metrics import NotComputable, evaluate_metric
from dvheval.engine.results import PlanDVHs, Prescription, StructureResult, _num
from dvheval.errors import DvhevalError
from dvheval.integrity import CHECKS, Finding, finding, regrade
from dvheval.protocol import (
    UNIT_PCT_RX,
    Alternative,
    Constraint,
    Limit,
    Protocol,
    StructureMatch,
    StructureSpec,
    match_structures,
)
from dvheval.vocab import Verdict

#: Relative tolerance of limit comparisons (a value equal to the limit up
#: to rounding counts as equal).
REL_TOL = 1e-9


class CheckError(DvhevalError, ValueError):
    """The caller's options do not fit the protocol (unknown level, bad fractions...)."""


class _Unevaluable(Exception):
    """A constraint cannot be evaluated; the text says why."""


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
            "schema_version": "1.0",
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


# ------------------------------------------------------------- resolution
def _resolve_fractions(
    plan: PlanDVHs, protocol: Protocol, override: int | None, warnings: list[str],
    findings: list[Finding],
) -> FractionsUsed:
    """The fraction count used: the caller's, else the RTPLAN's, else the protocol's.

    An RTPLAN that plans another number of fractions than the protocol is
    written for closes the gate (``fractions-mismatch``) unless the caller
    gives the count explicitly.
    """
    if override is not None and (
        isinstance(override, bool) or not isinstance(override, int) or not 1 <= override <= 1000
    ):
        raise CheckError(f"fractions must be a whole number from 1 to 1000, got {override!r}")
    rtplan = plan.plan.fractions if plan.plan is not None else None
    if override is not None:
        used, source = override, "override"
    elif rtplan is not None and rtplan != protocol.fractions:
        used, source = rtplan, "rtplan"
    else:
        used, source = protocol.fractions, "protocol"
    if override is None and plan.plan is not None and rtplan is None:
        findings.append(finding(
            "fractions-mismatch",
            f"the RTPLAN gives no Number of Fractions Planned, so the protocol's "
            f"{protocol.fractions} fractions cannot be verified (give --fractions explicitly)",
            plan.plan.file))
    elif override is None and rtplan is not None and rtplan != protocol.fractions:
        findings.append(finding(
            "fractions-mismatch",
            f"the RTPLAN plans {rtplan} fractions, protocol {protocol.name} is written for "
            f"{protocol.fractions}: its limits do not hold for this plan (give --fractions "
            "explicitly to evaluate limits written in EQD2/BED)",
            plan.plan.file if plan.plan is not None else None))
    elif override is not None and override != (rtplan or protocol.fractions):
        warnings.append(
            f"fractions: using {override} (given explicitly); the RTPLAN plans "
            f"{rtplan if rtplan is not None else 'no count'}, the protocol {protocol.fractions}"
        )
    return FractionsUsed(used, source, protocol.fractions, rtplan, override)


#: Relative difference above which an RTPLAN prescription contradicts the protocol.
RX_TOLERANCE = 0.01


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.005  # half a cGy


def _resolve_prescriptions(
    plan: PlanDVHs,
    protocol: Protocol,
    overrides: dict[str, float] | None,
    warnings: list[str],
    findings: list[Finding],
) -> dict[str, PrescriptionUsed]:
    """The dose of every prescription level, and where it comes from.

    An override wins, then the protocol's dose, then the RTPLAN's (for
    levels the protocol leaves open). An RTPLAN dose more than
    :data:`RX_TOLERANCE` from the protocol's closes the gate
    (``prescription-mismatch``) unless overridden.
    """
    given = _checked_overrides(protocol, overrides)
    from_plan = _plan_prescriptions(plan, protocol, warnings)
    out: dict[str, PrescriptionUsed] = {}
    if plan.plan is not None and not plan.plan.prescriptions:
        warnings.append(f"the RTPLAN {plan.plan.file} gives no Target Prescription Dose: the "
                        "protocol's prescriptions cannot be compared with the plan's")
    plan_file = plan.plan.file if plan.plan is not None else None
    for name, level in protocol.prescriptions.items():
        out[name] = _prescription_used(name, level.dose_gy, from_plan.get(name), given.get(name),
                                       protocol.name, plan_file, warnings, findings)
    return out


def _checked_overrides(protocol: Protocol, overrides: dict[str, float] | None
                       ) -> dict[str, float]:
    """``--rx`` overrides keyed by level name; unknown levels and bad doses raise."""
    given: dict[str, float] = {}
    for key, dose in (overrides or {}).items():
        level = protocol.find_level(key)
        if level is None:
            raise CheckError(
                f"prescription {key!r} is not a level of protocol {protocol.name} "
                f"(levels: {', '.join(protocol.prescriptions)})"
            )
        if isinstance(dose, bool) or not isinstance(dose, int | float) or not (
            math.isfinite(dose) and 0 < dose <= 1000
        ):
            raise CheckError(f"prescription {key!r}: the dose must be positive and at most "
                             f"1000 Gy, got {dose!r}")
        given[level] = float(dose)
    return given


def _plan_prescriptions(plan: PlanDVHs, protocol: Protocol, warnings: list[str]
                        ) -> dict[str, Prescription]:
    """RTPLAN dose references matched to protocol levels by name (or as the only pair)."""
    plan_rx = plan.plan.prescriptions if plan.plan is not None else []
    by_level: dict[str, list[Prescription]] = {}
    unmatched = []
    for p in plan_rx:
        level = protocol.find_level(p.name)
        if level is None:
            unmatched.append(p)
        else:
            by_level.setdefault(level, []).append(p)
    if len(protocol.prescriptions) == 1 and len(plan_rx) == 1 and unmatched:
        by_level[next(iter(protocol.prescriptions))] = unmatched
        unmatched = []
    for p in unmatched:
        warnings.append(
            f"the RTPLAN prescription {p.name!r} ({p.dose_gy:g} Gy) matches no prescription "
            f"level of the protocol ({', '.join(protocol.prescriptions)})"
        )
    from_plan: dict[str, Prescription] = {}
    for level, found in by_level.items():
        if len(found) == 1:
            from_plan[level] = found[0]
        else:
            names = ", ".join(repr(p.name) for p in found)
            warnings.append(
                f"prescription {level}: the RTPLAN has several dose references for it "
                f"({names}); none used"
            )
    return from_plan


def _prescription_used(
    name: str,
    protocol_gy: float | None,
    rt: Prescription | None,
    override: float | None,
    protocol_name: str,
    plan_file: str | None,
    warnings: list[str],
    findings: list[Finding],
) -> PrescriptionUsed:
    """The dose used for one level; a contradicting RTPLAN dose closes the gate."""
    rt_name, rt_gy = (rt.name, float(rt.dose_gy)) if rt else (None, None)
    used: float | None
    if override is not None:
        used, source = override, "override"
    elif protocol_gy is not None:
        used, source = protocol_gy, "protocol"
    elif rt_gy is not None:
        used, source = rt_gy, "rtplan"
    else:
        used, source = None, "none"
        warnings.append(
            f"prescription {name}: the protocol leaves the dose to the plan and neither "
            "the RTPLAN nor the caller gives it; constraints relative to it are not evaluated"
        )
    if (rt_gy is not None and protocol_gy is not None and override is None
            and abs(rt_gy - protocol_gy) > RX_TOLERANCE * protocol_gy):
        findings.append(finding(
            "prescription-mismatch",
            f"prescription {name}: the RTPLAN gives {rt_gy:g} Gy ({rt_name!r}), protocol "
            f"{protocol_name} {protocol_gy:g} Gy (more than {100 * RX_TOLERANCE:g} % "
            f"apart); give --rx {name}=GY explicitly to evaluate with a chosen dose",
            plan_file))
    elif rt_gy is not None and used is not None and not _close(rt_gy, used):
        warnings.append(
            f"prescription {name}: the RTPLAN gives {rt_gy:g} Gy ({rt_name!r}), the "
            f"protocol {_gy(protocol_gy)}; using {used:g} Gy ({source})"
        )
    return PrescriptionUsed(name, used, source, protocol_gy, rt_gy, rt_name, override)


def _gy(v: float | None) -> str:
    return "none" if v is None else f"{v:g} Gy"


# -------------------------------------------------------------- evaluation
_STATUS_TEXT = {
    "partial": "only part of the structure lies inside the dose grid",
    "outside": "the structure lies outside the dose grid",
    "empty": "the structure has no contours",
    "no_dvh": "the structure has only point or open contours (no volume)",
    "error": "the structure's contours could not be used",
}


def _status_reason(sr: StructureResult) -> str:
    text = _STATUS_TEXT.get(sr.status, f"structure status {sr.status!r}")
    if sr.status == "partial" and sr.coverage is not None:
        text += f" ({100 * sr.coverage:.1f} % covered)"
    if sr.warnings:
        text += f": {sr.warnings[0]}"
    return f"ROI {sr.name!r}: {text}"


def _measure(
    c: Constraint,
    sr: StructureResult,
    rx: dict[str, PrescriptionUsed],
    fractions: int,
) -> tuple[float, str, float | None]:
    """Value of the constraint's metric, its unit and the prescription dose used."""
    if c.metric is None:  # the Volume report
        if sr.volume_cc is None or not math.isfinite(sr.volume_cc):
            raise _Unevaluable(f"ROI {sr.name!r}: volume unknown")
        return float(sr.volume_cc), "cc", None
    if sr.status != "ok":
        raise _Unevaluable(_status_reason(sr))
    if sr.defects:
        raise _Unevaluable(f"ROI {sr.name!r}: contours that change its volume: "
                           + "; ".join(sr.defects))
    if sr.dvh is None:
        raise _Unevaluable(f"ROI {sr.name!r}: no DVH was computed")
    metric = c.metric
    if metric.is_dose:
        if metric.output_unit == "%":
            unit = UNIT_PCT_RX
        else:
            metric, unit = replace(metric, output_unit="Gy"), "Gy"
    else:
        unit = metric.output_unit
    rx_gy = None
    if metric.needs_prescription or (c.limit is not None and c.limit.unit == UNIT_PCT_RX):
        used = rx.get(c.prescription) if c.prescription else None
        if used is None or used.dose_gy is None:
            raise _Unevaluable(
                f"no dose for prescription {c.prescription}: give it (rx override) or a plan "
                "whose RTPLAN names it"
            )
        rx_gy = used.dose_gy
    try:
        value = evaluate_metric(metric, sr.dvh, rx_gy, fractions)
    except NotComputable as exc:
        raise _Unevaluable(str(exc)) from None
    if not math.isfinite(value):
        raise _Unevaluable(f"{c.metric_name} could not be computed")
    return value, unit, rx_gy


def _limit_in(limit: Limit, unit: str, rx_gy: float | None) -> float:
    if limit.unit == UNIT_PCT_RX and unit == "Gy":
        assert rx_gy is not None
        return limit.value / 100.0 * rx_gy
    return limit.value


def _within(value: float, op: str, limit: float) -> bool:
    tol = REL_TOL * max(1.0, abs(limit))
    if op == "<=":
        return value <= limit + tol
    if op == "<":
        return value < limit - tol
    if op == ">=":
        return value >= limit - tol
    return value > limit + tol


def _beyond(value: float, op: str, limit: float) -> bool:
    """Whether ``value op limit`` holds (the unacceptable condition)."""
    return {"<": value < limit, "<=": value <= limit, ">": value > limit,
            ">=": value >= limit}[op]


def _judge(
    c: Constraint, value: float, unit: str, rx_gy: float | None
) -> tuple[Verdict, float, float | None, float, str, float | None, bool]:
    assert c.limit is not None and c.operator is not None
    limit = _limit_in(c.limit, unit, rx_gy)
    acc = _limit_in(c.acceptable, unit, rx_gy) if c.acceptable is not None else None
    floor, floor_op = c.unacceptable, c.unacceptable_operator
    unacc = _limit_in(floor, unit, rx_gy) if floor is not None and floor_op else None
    margin = limit - value if c.operator in ("<", "<=") else value - limit
    val, lim = f"{value:.4g} {unit}", f"{limit:.4g} {unit}"
    if unacc is not None and floor_op is not None and _beyond(value, floor_op, unacc):
        return Verdict.FAIL, limit, acc, margin, (
            f"{val} is unacceptable ({floor_op} {unacc:.4g} {unit}; limit {c.operator} {lim}): "
            "the gate closes whatever the priority"), unacc, True
    verdict, reason = _grade(c, value, unit, limit, acc, val, lim)
    return verdict, limit, acc, margin, reason, unacc, False


def _grade(c: Constraint, value: float, unit: str, limit: float, acc: float | None,
           val: str, lim: str) -> tuple[Verdict, str]:
    assert c.operator is not None
    if _within(value, c.operator, limit):
        return Verdict.PASS, f"{val} {c.operator} {lim}: within the limit"
    if acc is not None and _within(value, c.operator, acc):
        return Verdict.ACCEPTABLE, (
            f"{val} is outside the limit {lim} but within the acceptable variation "
            f"{acc:.4g} {unit}"
        )
    return Verdict.FAIL, f"{val} violates {c.operator} {lim}"


class _Evaluator:
    def __init__(
        self,
        plan: PlanDVHs,
        match: StructureMatch,
        rx: dict[str, PrescriptionUsed],
        fractions: int,
        optional: set[str],
        protocol_fractions: int,
    ) -> None:
        self.plan = plan
        self.match = match
        self.rx = rx
        self.fractions = fractions
        self.optional = optional
        self.protocol_fractions = protocol_fractions

    def required(self, spec: StructureSpec) -> bool:
        return spec.required and spec.name not in self.optional

    def run(self, c: Constraint, spec: StructureSpec) -> ConstraintResult:
        state = self.match.status(spec.name)
        if state != "matched":
            if state == "ambiguous":
                reason = f"{spec.name} is ambiguous: {self.match.ambiguous[spec.name]}"
                verdict = Verdict.NOT_EVALUATED
            elif self.required(spec):
                reason = f"required structure {spec.name} not found in the plan"
                verdict = Verdict.NOT_EVALUATED
            else:
                reason = f"optional structure {spec.name} is not in the plan"
                verdict = Verdict.NOT_APPLICABLE
            return ConstraintResult(c, Verdict.REPORT if c.is_report else verdict, reason)
        m = self.match.matched[spec.name]
        sr = self.plan.structures[m.index]
        how = f"{m.how} {m.by!r}"
        try:
            value, unit, rx_gy = _measure(c, sr, self.rx, self.fractions)
        except _Unevaluable as exc:
            verdict = Verdict.REPORT if c.is_report else Verdict.NOT_EVALUATED
            return ConstraintResult(c, verdict, str(exc), m.roi, how)
        if c.is_report:
            return ConstraintResult(c, Verdict.REPORT, "", m.roi, how, value, unit,
                                    prescription_gy=rx_gy)
        if (c.metric is not None and c.metric.model is None
                and self.fractions != self.protocol_fractions):
            return ConstraintResult(
                c, Verdict.NOT_EVALUATED,
                f"{value:.4g} {unit}: a physical-dose limit holds for the protocol's "
                f"{self.protocol_fractions} fractions, not for the {self.fractions} used",
                m.roi, how, value, unit, prescription_gy=rx_gy)
        verdict, limit, acc, margin, reason, unacc, bad = _judge(c, value, unit, rx_gy)
        return ConstraintResult(c, verdict, reason, m.roi, how, value, unit, limit, acc, margin,
                                rx_gy, unacc, bad)


def _alternative_state(
    alt: Alternative, match: StructureMatch, asserted: set[str]
) -> AlternativeState:
    why = []
    for s in alt.present:
        if not match.present(s):
            return AlternativeState(alt, False, f"{s} is not in the plan")
        rois = ", ".join(repr(c.roi) for c in match.candidates[s])
        why.append(f"{s} is present (ROI {rois})")
    if alt.condition is not None:
        if alt.condition not in asserted:
            return AlternativeState(alt, False, f"condition {alt.condition!r} was not given")
        why.append(f"condition {alt.condition!r} was given")
    return AlternativeState(alt, True, "; ".join(why))


def _replacements(
    protocol: Protocol, states: list[AlternativeState], match: StructureMatch,
    warnings: list[str],
) -> tuple[dict[str, str], set[str]]:
    """Constraints replaced and structures made optional by the active alternatives.

    An alternative activated only by the presence of a structure adds its
    constraints; it never removes the limit of a structure that is itself
    contoured (the cord keeps its limit when a cauda equina is contoured
    too). Only a condition the caller asserts may replace such a limit.
    """
    by_id = {c.id: c for c in protocol.constraints()}
    replaced: dict[str, str] = {}
    optional: set[str] = set()
    for st in states:
        if not st.active:
            continue
        alt = st.alternative
        asserted = alt.condition is not None
        for cid in alt.replaces:
            c = by_id.get(cid)
            if c is not None and not asserted and match.present(c.structure):
                warnings.append(
                    f"alternative {alt.id!r} applies, but {c.structure} is contoured too: its "
                    f"limit {c.id!r} is kept (an alternative adds limits, it does not remove "
                    "the limit of a contoured structure)")
                continue
            replaced[cid] = alt.id
        optional.update(alt.makes_optional)
    return replaced, optional


def _plan_verdict(results: list[ConstraintResult], unresolved_required: list[str],
                  findings: list[Finding]) -> Verdict:
    gating = [r for r in results if r.constraint.priority in ("hard", "objective")]
    hard = {r.verdict for r in gating if r.constraint.priority == "hard"}
    objective = {r.verdict for r in gating if r.constraint.priority == "objective"}
    if Verdict.FAIL in hard or any(r.unacceptable for r in gating):
        return Verdict.FAIL
    if (Verdict.NOT_EVALUATED in hard | objective or unresolved_required
            or any(f.closes for f in findings)):
        return Verdict.NOT_EVALUATED
    if Verdict.ACCEPTABLE in hard or objective & {Verdict.ACCEPTABLE, Verdict.FAIL}:
        return Verdict.ACCEPTABLE
    return Verdict.PASS


#: The dose maximum must lie within these fractions of the highest prescription.
DOSE_MAX_RANGE = (0.5, 1.5)


def _dose_findings(plan: PlanDVHs, rx: dict[str, PrescriptionUsed]) -> list[Finding]:
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


def _structure_findings(
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
            out.append(finding("structure-not-covered", f"{name}: {_status_reason(sr)}"))
        elif sr.status != "ok":
            out.append(finding("structure-unmeasurable", f"{name}: {_status_reason(sr)}"))
        elif sr.defects:
            out.append(finding("structure-unmeasurable",
                               f"{name}: ROI {sr.name!r} has contours that change its volume: "
                               + "; ".join(sr.defects)))
    return out


def _checked_conditions(protocol: Protocol, conditions: Collection[str] | None) -> set[str]:
    """The conditions the caller asserts; one the protocol does not declare raises."""
    asserted = set(conditions or ())
    unknown = sorted(asserted - set(protocol.conditions))
    if unknown:
        declared = ", ".join(protocol.conditions) or "none"
        raise CheckError(f"unknown condition(s) {', '.join(unknown)} for protocol "
                         f"{protocol.name} (declared: {declared})")
    return asserted


def _evaluate_constraints(
    protocol: Protocol,
    ev: _Evaluator,
    states: list[AlternativeState],
    replaced: dict[str, str],
) -> list[ConstraintResult]:
    """Every constraint's result (alternatives' included), in protocol structure order."""
    order = {s.name: i for i, s in enumerate(protocol.structures)}
    results: list[tuple[int, int, ConstraintResult]] = []
    for spec in protocol.structures:
        for c in spec.constraints:
            if c.id in replaced:
                r = ConstraintResult(c, Verdict.NOT_APPLICABLE,
                                     f"replaced by alternative {replaced[c.id]!r}")
            else:
                r = ev.run(c, spec)
            results.append((order[spec.name], len(results), r))
    for state in states:
        for c in state.alternative.constraints:
            target = protocol.structure(c.structure)
            assert target is not None
            if state.active:
                r = ev.run(c, target)
            else:
                r = ConstraintResult(c, Verdict.NOT_APPLICABLE,
                                     f"alternative {state.alternative.id!r} does not apply: "
                                     f"{state.reason}")
            results.append((order[target.name], len(results), r))
    return [r for _, _, r in sorted(results, key=lambda t: (t[0], t[1]))]


def _structure_outcomes(
    protocol: Protocol,
    plan: PlanDVHs,
    match: StructureMatch,
    ev: _Evaluator,
    warnings: list[str],
) -> tuple[list[StructureOutcome], list[str]]:
    """How each protocol structure was found, and the required ones that were not."""
    outcomes: list[StructureOutcome] = []
    unresolved: list[str] = []
    for spec in protocol.structures:
        required = ev.required(spec)
        state = match.status(spec.name)
        if state == "matched":
            m = match.matched[spec.name]
            sr = plan.structures[m.index]
            reason = "" if sr.status == "ok" else _status_reason(sr)
            if sr.status == "ok" and sr.defects:
                reason = f"ROI {sr.name!r}: " + "; ".join(sr.defects)
            outcomes.append(StructureOutcome(spec.name, required, state, m.roi, m.how, m.by,
                                             sr.status, reason))
            continue
        if state == "ambiguous":
            reason = match.ambiguous[spec.name]
        else:
            reason = "no ROI matched" + ("" if required else " (optional)")
        if required:
            unresolved.append(spec.name)
            warnings.append(f"required structure {spec.name}: {reason}")
        outcomes.append(StructureOutcome(spec.name, required, state, reason=reason))
    return outcomes, unresolved


def check_plan(
    plan: PlanDVHs,
    protocol: Protocol,
    *,
    rx_overrides: dict[str, float] | None = None,
    fractions: int | None = None,
    acceptable_fails_gate: bool = False,
    conditions: Collection[str] | None = None,
    strict: Collection[str] = (),
) -> CheckResult:
    """Evaluate a protocol on a plan's DVHs.

    Parameters
    ----------
    plan : PlanDVHs
        DVHs of the plan's structures (from the DVH engine).
    protocol : Protocol
        A loaded protocol.
    rx_overrides : dict, optional
        Prescription dose in Gy per level name (or alias), used instead of
        the protocol's and the RTPLAN's.
    fractions : int, optional
        Number of fractions used for EQD2/BED instead of the protocol's.
    acceptable_fails_gate : bool
        When true an ACCEPTABLE plan gets exit code 1.
    conditions : collection of str, optional
        Conditions the caller asserts (declared under the protocol's
        ``conditions``), which activate alternatives.
    strict : collection of str
        Ids of integrity checks (:data:`dvheval.integrity.CHECKS`) whose
        warnings close the gate; ``"all"`` for every one.

    Returns
    -------
    CheckResult
        Per-constraint verdicts, the plan verdict and ``exit_code``: 0 PASS,
        0 ACCEPTABLE (1 if ``acceptable_fails_gate``), 1 FAIL or NOT_EVALUATED.
        Only hard constraints and required structures can make a plan FAIL
        or NOT_EVALUATED; an unmet objective makes it ACCEPTABLE.

    Raises
    ------
    CheckError
        An override names no prescription level, a dose or fraction count is
        not positive, or a condition is not declared by the protocol.

    Notes
    -----
    Prescription doses come from ``rx_overrides``, else the protocol, else
    the RTPLAN (for levels the protocol leaves open). Fractions come from
    ``fractions``, else the protocol. Differences from the RTPLAN are listed
    in ``warnings``.
    """
    if not isinstance(plan, PlanDVHs) or not isinstance(protocol, Protocol):
        raise TypeError(
            "check_plan(plan, protocol): plan must be the PlanDVHs of compute_dvhs and "
            "protocol a Protocol of load_protocol; got "
            f"{type(plan).__name__} and {type(protocol).__name__}")
    warnings: list[str] = []
    findings: list[Finding] = regrade(plan.findings, strict)
    asserted = _checked_conditions(protocol, conditions)
    frac = _resolve_fractions(plan, protocol, fractions, warnings, findings)
    rx = _resolve_prescriptions(plan, protocol, rx_overrides, warnings, findings)
    findings += _dose_findings(plan, rx)

    match = match_structures(protocol, [s.name for s in plan.structures])
    warnings.extend(match.notes)
    states = [_alternative_state(a, match, asserted) for a in protocol.alternatives]
    replaced, optional = _replacements(protocol, states, match, warnings)
    ev = _Evaluator(plan, match, rx, frac.fractions, optional, protocol.fractions)
    ordered = _evaluate_constraints(protocol, ev, states, replaced)
    outcomes, unresolved = _structure_outcomes(protocol, plan, match, ev, warnings)

    needed = {r.constraint.structure for r in ordered
              if not r.constraint.is_report and r.verdict is not Verdict.NOT_APPLICABLE}
    required = {spec.name for spec in protocol.structures if ev.required(spec)}
    findings += _structure_findings(plan, match, needed, required)
    findings = regrade(findings, strict)
    for name in sorted(required):
        if match.status(name) == "matched" and name not in unresolved:
            sr = plan.structures[match.matched[name].index]
            if sr.status != "ok" or sr.defects:
                unresolved.append(name)
    verdict = _plan_verdict(ordered, unresolved, findings)
    return CheckResult(
        plan=plan,
        protocol=protocol,
        results=ordered,
        structures=outcomes,
        matching=match,
        alternatives=states,
        prescriptions=rx,
        fractions=frac,
        conditions=sorted(asserted),
        warnings=warnings,
        verdict=verdict,
        acceptable_fails_gate=acceptable_fails_gate,
        unresolved_required=unresolved,
        findings=findings,
    )



def review_integrity(
    paths: Collection[str | Path],
    protocol: Protocol,
    *,
    rx_overrides: dict[str, float] | None = None,
    fractions: int | None = None,
    strict: Collection[str] = (),
) -> list[Finding]:
    """The integrity stage alone: headers and contours, no dose grid and no DVH.

    Runs every check of :data:`dvheval.integrity.CHECKS` that does not need
    the dose values: identity and references between the files, approval,
    dose type, fractions and prescriptions against the protocol, isocenter
    position, and whether the structures the protocol needs exist and have
    usable contours. Fast enough to run on every plan before the DVHs.

    Returns
    -------
    list of Finding
        Findings of severity ``close`` close the gate.

    Raises
    ------
    InputError
        When the files cannot be read.
    """
    from dvheval.dicom import find_inputs, read_plan, read_structure_set
    from dvheval.engine.compute import _read_headers, group_planes
    from dvheval.engine.results import DoseInfo
    from dvheval.integrity import header_findings, location_findings, roi_findings

    inputs = find_inputs(paths)
    headers = _read_headers(inputs)
    findings = header_findings(*headers)
    plan_info = read_plan(inputs.plan.path) if inputs.plan else None
    sset = read_structure_set(inputs.structure_set.path)
    findings += roi_findings(sset.rois)
    thickness = sset.slice_thickness() or 3.0
    isocenters = headers[2].isocenters_mm if headers[2] is not None else ()
    findings += location_findings(sset.rois, isocenters, None, None, thickness)
    structures = []
    for roi in sset.rois:
        sr = StructureResult(roi.name, roi.number, roi.interpreted_type, "ok", None, None)
        if not roi.contours:
            sr.status = "empty"
        else:
            planes, warns, usable, defects = group_planes(roi)
            sr.warnings, sr.defects = warns, defects
            sr.status = "error" if not usable else ("ok" if planes else "no_dvh")
        structures.append(sr)
    dose = DoseInfo([str(d.path) for d in inputs.doses], "", "", [], "", (0, 0, 0),
                    (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    plan = PlanDVHs(sset.patient_id, sset.patient_name, dose, str(sset.path), sset.label,
                    sset.frame_of_reference_uid, plan_info, structures)
    warnings: list[str] = []
    _resolve_fractions(plan, protocol, fractions, warnings, findings)
    _resolve_prescriptions(plan, protocol, rx_overrides, warnings, findings)
    match = match_structures(protocol, [s.name for s in structures])
    needed = {c.structure for c in protocol.constraints()
              if not c.is_report and c.alternative is None}
    required = {s.name for s in protocol.structures if s.required}
    findings += _structure_findings(plan, match, needed & set(match.matched), required)
    return regrade(findings, strict)
