"""The words dvheval's results are written in.

Every verdict, priority, structure status and match state is a member of
one of these enumerations. They subclass :class:`str`, so a member compares
equal to its value (``Verdict.PASS == "PASS"``), serialises to JSON and SQL
as that value, and the plain strings of stored results keep working.

The order of severity of the verdicts is defined here once
(:data:`VERDICT_SEVERITY`); reports, the results database and exports take
it from here, including the SQL ``CASE`` expressions that rank verdicts in
queries (:func:`verdict_rank_sql`).
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    """A string enumeration whose ``str()`` is its value."""

    def __str__(self) -> str:
        return str(self.value)


class Verdict(_Word):
    """Verdict of a constraint or of a whole plan."""

    PASS = "PASS"
    ACCEPTABLE = "ACCEPTABLE"
    FAIL = "FAIL"
    NOT_EVALUATED = "NOT_EVALUATED"
    NOT_APPLICABLE = "NOT_APPLICABLE"
    REPORT = "REPORT"

    @property
    def severity(self) -> int:
        """Rank of the verdict, 0 the worst (see :data:`VERDICT_SEVERITY`)."""
        return VERDICT_SEVERITY.index(self)

    @property
    def opens_gate(self) -> bool:
        """Whether a plan with this verdict passes (exit code 0)."""
        return self in (Verdict.PASS, Verdict.ACCEPTABLE)


#: Verdicts from the worst to the most benign. A plan verdict is the first of
#: these its gating constraints have: one failed hard limit outranks a
#: constraint that could not be evaluated, which outranks an objective met
#: only within its acceptable variation.
VERDICT_SEVERITY: tuple[Verdict, ...] = (
    Verdict.FAIL,
    Verdict.NOT_EVALUATED,
    Verdict.ACCEPTABLE,
    Verdict.PASS,
    Verdict.NOT_APPLICABLE,
    Verdict.REPORT,
)

#: The verdicts a plan as a whole can have, in the order reports count them.
PLAN_VERDICTS: tuple[Verdict, ...] = (
    Verdict.PASS,
    Verdict.ACCEPTABLE,
    Verdict.FAIL,
    Verdict.NOT_EVALUATED,
)

#: Constraint verdicts that judge the plan (as opposed to not applicable or
#: report-only rows).
JUDGED_VERDICTS: tuple[Verdict, ...] = (
    Verdict.PASS,
    Verdict.ACCEPTABLE,
    Verdict.FAIL,
    Verdict.NOT_EVALUATED,
)


def worst_verdict(verdicts: list[Verdict] | tuple[Verdict, ...] | set[Verdict]) -> Verdict:
    """The most severe of ``verdicts`` (PASS for none).

    Examples
    --------
    >>> worst_verdict([Verdict.PASS, Verdict.FAIL, Verdict.NOT_EVALUATED]).value
    'FAIL'
    >>> worst_verdict([]).value
    'PASS'
    """
    if not verdicts:
        return Verdict.PASS
    return min((Verdict(v) for v in verdicts), key=lambda v: v.severity)


def verdict_rank_sql(column: str) -> str:
    """SQL expression ranking ``column`` by severity, 0 for the worst verdict.

    Values that are not verdicts rank after every verdict.

    Examples
    --------
    >>> verdict_rank_sql("v")[:40]
    "CASE v WHEN 'FAIL' THEN 0 WHEN 'NOT_EVAL"
    """
    whens = " ".join(f"WHEN '{v.value}' THEN {i}" for i, v in enumerate(VERDICT_SEVERITY))
    return f"CASE {column} {whens} ELSE {len(VERDICT_SEVERITY)} END"


def verdict_from_rank_sql(expr: str) -> str:
    """SQL expression turning a rank of :func:`verdict_rank_sql` back into a verdict."""
    whens = " ".join(f"WHEN {i} THEN '{v.value}'" for i, v in enumerate(VERDICT_SEVERITY))
    return f"CASE {expr} {whens} END"


def sql_in(values: tuple[_Word, ...]) -> str:
    """SQL tuple literal of enumeration values, e.g. ``('PASS', 'FAIL')``."""
    return "(" + ", ".join(f"'{v.value}'" for v in values) + ")"


class Priority(_Word):
    """How a protocol constraint counts towards the plan verdict."""

    HARD = "hard"
    OBJECTIVE = "objective"
    REPORT = "report"


class StructureStatus(_Word):
    """What the engine could make of one ROI.

    ``PARTIAL``: part of the structure lies outside the dose grid (metrics
    refer to the covered part); ``OUTSIDE``: no part inside the dose grid;
    ``EMPTY``: no contours; ``NO_DVH``: only POINT or OPEN contours;
    ``ERROR``: contours unusable.
    """

    OK = "ok"
    PARTIAL = "partial"
    OUTSIDE = "outside"
    EMPTY = "empty"
    NO_DVH = "no_dvh"
    ERROR = "error"


class MatchState(_Word):
    """How a protocol structure was found among the plan's ROIs."""

    MATCHED = "matched"
    MISSING = "missing"
    AMBIGUOUS = "ambiguous"


class MetricKind(_Word):
    """The family of a DVH metric (see :func:`dvheval.engine.metrics.parse_metric`)."""

    MAX = "max"
    MIN = "min"
    MEAN = "mean"
    DOSE_AT_VOLUME = "dose_at_volume"
    VOLUME_AT_DOSE = "volume_at_dose"
    VOLUME_BELOW_DOSE = "volume_below_dose"
    GEUD = "geud"
    PADDICK_CI = "paddick_ci"
    RTOG_CI = "rtog_ci"
    GRADIENT_INDEX = "gradient_index"
    HOMOGENEITY_INDEX = "homogeneity_index"
    ISODOSE_VOLUME = "isodose_volume"


#: The unit of a dimensionless value (a quality index), as written in the
#: JSON ``limit_unit`` and the results database; reports print no unit.
UNIT_INDEX = "1"
