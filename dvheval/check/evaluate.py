"""Evaluating one constraint: measuring its metric, judging it against its limits."""

from __future__ import annotations

import math
from dataclasses import replace

from dvheval.check.results import AlternativeState, ConstraintResult, PrescriptionUsed
from dvheval.engine.metrics import NotComputable, evaluate_metric
from dvheval.engine.quality import External
from dvheval.engine.results import PlanDVHs, StructureResult
from dvheval.integrity import Finding
from dvheval.protocol import (
    UNIT_INDEX,
    UNIT_PCT_RX,
    Alternative,
    Constraint,
    Limit,
    Protocol,
    StructureMatch,
    StructureSpec,
)
from dvheval.vocab import Verdict

#: Relative tolerance of limit comparisons (a value equal to the limit up
#: to rounding counts as equal).
REL_TOL = 1e-9


class Unevaluable(Exception):
    """A constraint cannot be evaluated; the text says why."""


# -------------------------------------------------------------- evaluation
_STATUS_TEXT = {
    "partial": "only part of the structure lies inside the dose grid",
    "outside": "the structure lies outside the dose grid",
    "empty": "the structure has no contours",
    "no_dvh": "the structure has only point or open contours (no volume)",
    "error": "the structure's contours could not be used",
}


def status_reason(sr: StructureResult) -> str:
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
    external: External | None = None,
) -> tuple[float, str, float | None]:
    """Value of the constraint's metric, its unit and the prescription dose used."""
    if c.metric is None:  # the Volume report
        if sr.volume_cc is None or not math.isfinite(sr.volume_cc):
            raise Unevaluable(f"ROI {sr.name!r}: volume unknown")
        return float(sr.volume_cc), "cc", None
    if sr.status != "ok":
        raise Unevaluable(status_reason(sr))
    if sr.defects:
        raise Unevaluable(f"ROI {sr.name!r}: contours that change its volume: "
                           + "; ".join(sr.defects))
    if sr.dvh is None:
        raise Unevaluable(f"ROI {sr.name!r}: no DVH was computed")
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
            raise Unevaluable(
                f"no dose for prescription {c.prescription}: give it (rx override) or a plan "
                "whose RTPLAN names it"
            )
        rx_gy = used.dose_gy
    try:
        value = evaluate_metric(metric, sr.dvh, rx_gy, fractions, external)
    except NotComputable as exc:
        raise Unevaluable(str(exc)) from None
    if not math.isfinite(value):
        raise Unevaluable(f"{c.metric_name} could not be computed")
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


def _with_unit(value: float, unit: str) -> str:
    """``value`` with four significant digits and its unit (none for an index)."""
    return f"{value:.4g}" if unit == UNIT_INDEX else f"{value:.4g} {unit}"


def _judge(
    c: Constraint, value: float, unit: str, rx_gy: float | None
) -> tuple[Verdict, float, float | None, float, str, float | None, bool]:
    assert c.limit is not None and c.operator is not None
    limit = _limit_in(c.limit, unit, rx_gy)
    acc = _limit_in(c.acceptable, unit, rx_gy) if c.acceptable is not None else None
    floor, floor_op = c.unacceptable, c.unacceptable_operator
    unacc = _limit_in(floor, unit, rx_gy) if floor is not None and floor_op else None
    margin = limit - value if c.operator in ("<", "<=") else value - limit
    val, lim = _with_unit(value, unit), _with_unit(limit, unit)
    if unacc is not None and floor_op is not None and _beyond(value, floor_op, unacc):
        return Verdict.FAIL, limit, acc, margin, (
            f"{val} is unacceptable ({floor_op} {_with_unit(unacc, unit)}; limit {c.operator} "
            f"{lim}): the gate closes whatever the priority"), unacc, True
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
            f"{_with_unit(acc, unit)}"
        )
    return Verdict.FAIL, f"{val} violates {c.operator} {lim}"


class Evaluator:
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
            value, unit, rx_gy = _measure(c, sr, self.rx, self.fractions, self.plan.external)
        except Unevaluable as exc:
            verdict = Verdict.REPORT if c.is_report else Verdict.NOT_EVALUATED
            return ConstraintResult(c, verdict, str(exc), m.roi, how)
        if c.is_report:
            return ConstraintResult(c, Verdict.REPORT, "", m.roi, how, value, unit,
                                    prescription_gy=rx_gy)
        if (c.metric is not None and c.metric.model is None
                and self.fractions != self.protocol_fractions):
            return ConstraintResult(
                c, Verdict.NOT_EVALUATED,
                f"{_with_unit(value, unit)}: a physical-dose limit holds for the protocol's "
                f"{self.protocol_fractions} fractions, not for the {self.fractions} used",
                m.roi, how, value, unit, prescription_gy=rx_gy)
        verdict, limit, acc, margin, reason, unacc, bad = _judge(c, value, unit, rx_gy)
        return ConstraintResult(c, verdict, reason, m.roi, how, value, unit, limit, acc, margin,
                                rx_gy, unacc, bad)


def alternative_state(
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


def replacements(
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


def plan_verdict(results: list[ConstraintResult], unresolved_required: list[str],
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
