"""Checking the cumulative dose of treatment courses, and plan sums that EQD2 cannot use.

Courses of different fractionation are evaluated on their cumulative EQD2
(or BED) grids, one per alpha/beta a constraint asks for (see
:mod:`dvheval.engine.combine`). A protocol limit written in EQD2/BED
(``Dmax[EQD2, a/b=2] <= 60 Gy``) is read directly on the grid of its model
and alpha/beta, without a further conversion. A physical-dose limit, and a
limit relative to a (physical) prescription, have no meaning for a sum of
courses of different fractionation: they are NOT_EVALUATED, with the reason.

A physical plan sum of plans with different fraction counts has no dose per
fraction: its EQD2/BED limits are NOT_EVALUATED and the integrity check
``plan-sum-fractions`` closes the gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dvheval.check.evaluate import Evaluator
from dvheval.check.results import ConstraintResult, PrescriptionUsed
from dvheval.dicom.plan_sum import fraction_count_problem
from dvheval.engine.combine import DEFAULT_ALPHA_BETA, Course
from dvheval.engine.results import PlanDVHs
from dvheval.protocol import UNIT_PCT_RX, Constraint, Protocol, StructureMatch, StructureSpec
from dvheval.vocab import Verdict

if TYPE_CHECKING:
    from dvheval.check.results import CheckResult

#: The key of a cumulative dose: model (``"EQD2"`` or ``"BED"``) and alpha/beta in Gy.
ModelKey = tuple[str, float]


def course_models(protocol: Protocol) -> list[ModelKey]:
    """The (model, alpha/beta) pairs the protocol's constraints and reports ask for.

    One cumulative grid is computed per pair. A protocol without any
    EQD2/BED metric still needs one grid to match and measure structures:
    EQD2 at :data:`~dvheval.engine.combine.DEFAULT_ALPHA_BETA`.
    """
    keys: dict[ModelKey, None] = {}
    for c in protocol.constraints():
        m = c.metric
        if m is not None and m.model is not None and m.alpha_beta is not None:
            keys[(m.model, float(m.alpha_beta))] = None
    return list(keys) or [("EQD2", DEFAULT_ALPHA_BETA)]


def summed_plan_fraction_problem(plan: PlanDVHs) -> str | None:
    """Why a physical plan sum has no fraction count for EQD2/BED, or None.

    A sum of plans whose fraction counts differ (or are unknown) has no
    dose per fraction.
    """
    parts = plan.dose.components
    if not parts or plan.dose.quantity != "physical":
        return None
    return fraction_count_problem(
        [(str(p.get("label") or p.get("file")), p.get("fractions")) for p in parts],
        "limits in EQD2/BED cannot be evaluated on it")


class CourseEvaluator(Evaluator):
    """Evaluates each EQD2/BED constraint on the cumulative grid of its model and alpha/beta."""

    def __init__(self, plans: Mapping[ModelKey, PlanDVHs], match: StructureMatch,
                 rx: dict[str, PrescriptionUsed], fractions: int, optional: set[str],
                 protocol_fractions: int) -> None:
        self.plans = dict(plans)
        primary = next(iter(self.plans.values()))
        super().__init__(primary, match, rx, fractions, optional, protocol_fractions)

    def run(self, c: Constraint, spec: StructureSpec) -> ConstraintResult:
        m = c.metric
        if self.match.status(spec.name) != "matched" or m is None:
            return super().run(c, spec)
        why = ""
        if m.model is None:
            why = ("a physical-dose limit cannot be judged on the cumulative dose of courses "
                   "of different fractionation (it is in Gy EQD2/BED); write the limit in "
                   "EQD2 or BED")
        elif m.needs_prescription or (c.limit is not None and c.limit.unit == UNIT_PCT_RX):
            why = ("a limit relative to a physical prescription cannot be judged on the "
                   "cumulative EQD2/BED of courses; write it in Gy")
        if why:
            verdict = Verdict.REPORT if c.is_report else Verdict.NOT_EVALUATED
            return ConstraintResult(c, verdict, why, self.match.matched[spec.name].roi)
        assert m.model is not None and m.alpha_beta is not None
        plan = self.plans.get((m.model, float(m.alpha_beta)))
        if plan is None:  # every pair of course_models() is computed
            return ConstraintResult(c, Verdict.NOT_EVALUATED,
                                    f"no cumulative {m.model} grid at a/b={m.alpha_beta:g}")
        plain = replace(c, metric=replace(m, model=None, alpha_beta=None))
        sub = Evaluator(plan, self.match, self.rx, self.fractions, self.optional,
                        self.protocol_fractions)
        return replace(sub.run(plain, spec), constraint=c)


class SumEvaluator(Evaluator):
    """A physical plan sum without a common fraction count: EQD2/BED limits NOT_EVALUATED."""

    def __init__(self, reason: str, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.reason = reason

    def run(self, c: Constraint, spec: StructureSpec) -> ConstraintResult:
        if (c.metric is not None and c.metric.model is not None
                and self.match.status(spec.name) == "matched"):
            verdict = Verdict.REPORT if c.is_report else Verdict.NOT_EVALUATED
            return ConstraintResult(c, verdict, self.reason, self.match.matched[spec.name].roi)
        return super().run(c, spec)


def check_courses(
    courses: Sequence[Course | str | Path],
    protocol: Protocol,
    *,
    end_caps: bool = True,
    derive: Sequence[str] | None = None,
    **kwargs: Any,
) -> CheckResult:
    """Check the cumulative EQD2/BED of treatment courses against a protocol.

    Computes the courses' cumulative grid at every (model, alpha/beta) the
    protocol's limits use (:func:`course_models`) and evaluates each limit
    on its own grid (see the module docstring).

    Parameters
    ----------
    courses : sequence of Course, str or Path
        One plan each; ``"PATH:RECOVERY"`` sets a recovery factor.
    protocol : Protocol
    end_caps, derive
        As for :func:`dvheval.compute_dvhs`.
    **kwargs
        Passed to :func:`dvheval.check.check_plan` (``rx_overrides``,
        ``conditions``, ``strict``, ``acceptable_fails_gate``).

    Returns
    -------
    CheckResult

    Examples
    --------
    >>> import dvheval  # doctest: +SKIP
    >>> result = dvheval.check_courses(["first/:0.5", "second/"],
    ...                                dvheval.load_protocol("reirr.yaml"))  # doctest: +SKIP
    """
    from dvheval.check.plan import check_plan
    from dvheval.engine.courses import compute_course_dvhs

    plans = compute_course_dvhs(courses, course_models(protocol), end_caps=end_caps,
                                derive=derive)
    return check_plan(next(iter(plans.values())), protocol, cumulative=plans, **kwargs)
