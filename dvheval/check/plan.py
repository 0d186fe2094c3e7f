"""check_plan: a plan's DVHs against a protocol."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from dvheval.check.courses import CourseEvaluator, SumEvaluator, summed_plan_fraction_problem
from dvheval.check.evaluate import (
    Evaluator,
    alternative_state,
    plan_verdict,
    replacements,
    status_reason,
)
from dvheval.check.gate import dose_findings, structure_findings
from dvheval.check.prescriptions import resolve_fractions, resolve_prescriptions
from dvheval.check.results import (
    AlternativeState,
    CheckError,
    CheckResult,
    ConstraintResult,
    FractionsUsed,
    PrescriptionUsed,
    StructureOutcome,
)
from dvheval.engine.results import PlanDVHs
from dvheval.integrity import Finding, regrade
from dvheval.protocol import (
    Protocol,
    StructureMatch,
    match_structures,
)
from dvheval.vocab import Verdict


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
    ev: Evaluator,
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
    ev: Evaluator,
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
            reason = "" if sr.status == "ok" else status_reason(sr)
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


def _with_all_quantities(plan: PlanDVHs, cumulative: Mapping[tuple[str, float], PlanDVHs]
                         ) -> PlanDVHs:
    """The plan with its dose's quantity naming every cumulative grid the check reads."""
    quantity = "; ".join(f"{m}, a/b={ab:g} Gy" for m, ab in cumulative)
    return replace(plan, dose=replace(plan.dose, quantity=quantity))


def _evaluator(plan: PlanDVHs, cumulative: Mapping[tuple[str, float], PlanDVHs] | None,
               args: tuple[StructureMatch, dict[str, PrescriptionUsed], int, set[str], int]
               ) -> Evaluator:
    """The evaluator of a plan, of a plan sum without common fractions, or of courses."""
    if cumulative:
        return CourseEvaluator(cumulative, *args)
    reason = summed_plan_fraction_problem(plan)
    if reason:
        return SumEvaluator(reason, plan, *args)
    return Evaluator(plan, *args)


def check_plan(
    plan: PlanDVHs,
    protocol: Protocol,
    *,
    rx_overrides: dict[str, float] | None = None,
    fractions: int | None = None,
    acceptable_fails_gate: bool = False,
    conditions: Collection[str] | None = None,
    strict: Collection[str] = (),
    cumulative: Mapping[tuple[str, float], PlanDVHs] | None = None,
) -> CheckResult:
    """Evaluate a protocol on a plan's DVHs.

    (About 70 lines: the steps of a check in order (fractions,
    prescriptions, matching, constraints, integrity, gate), each a call
    into this package; kept together so the order is visible.)

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
    cumulative : mapping, optional
        For treatment courses: ``(model, alpha_beta)`` -> the DVHs of the
        courses' cumulative EQD2/BED (:func:`dvheval.engine.courses.compute_course_dvhs`
        for every pair of :func:`dvheval.check.courses.course_models`); ``plan``
        is one of them. Limits in EQD2/BED are read on the grid of their
        model and alpha/beta; physical and prescription-relative limits are
        NOT_EVALUATED (see :mod:`dvheval.check.courses`).

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
    if cumulative:
        plan = _with_all_quantities(plan, cumulative)
        if fractions is not None:
            raise CheckError("fractions cannot be given for courses: each course's RTPLAN "
                             "gives its own")
        frac = FractionsUsed(protocol.fractions, "courses", protocol.fractions)
    else:
        frac = resolve_fractions(plan, protocol, fractions, warnings, findings)
    rx = resolve_prescriptions(plan, protocol, rx_overrides, warnings, findings)
    if not cumulative:  # an EQD2/BED maximum is not comparable with a physical prescription
        findings += dose_findings(plan, rx)

    match = match_structures(protocol, [s.name for s in plan.structures])
    warnings.extend(match.notes)
    if plan.external is not None and any(c.metric is not None and c.metric.needs_external
                                         for c in protocol.constraints()):
        warnings.append(plan.external.describe())
    states = [alternative_state(a, match, asserted) for a in protocol.alternatives]
    replaced, optional = replacements(protocol, states, match, warnings)
    ev = _evaluator(plan, cumulative, (match, rx, frac.fractions, optional, protocol.fractions))
    ordered = _evaluate_constraints(protocol, ev, states, replaced)
    outcomes, unresolved = _structure_outcomes(protocol, plan, match, ev, warnings)

    needed = {r.constraint.structure for r in ordered
              if not r.constraint.is_report and r.verdict is not Verdict.NOT_APPLICABLE}
    required = {spec.name for spec in protocol.structures if ev.required(spec)}
    findings += structure_findings(plan, match, needed, required)
    findings = regrade(findings, strict)
    for name in sorted(required):
        if match.status(name) == "matched" and name not in unresolved:
            sr = plan.structures[match.matched[name].index]
            if sr.status != "ok" or sr.defects:
                unresolved.append(name)
    verdict = plan_verdict(ordered, unresolved, findings)
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
