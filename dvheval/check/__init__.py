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
Hard constraints, objectives, required structures and integrity findings
gate a plan:

1. ``FAIL`` if a hard constraint fails;
   (or any constraint's value lies beyond its ``unacceptable`` floor);
2. else ``NOT_EVALUATED`` if a hard constraint or an objective could not be
   evaluated, a required structure is missing or ambiguous, or an integrity
   finding closes the gate;
3. else ``ACCEPTABLE`` if a hard constraint is ACCEPTABLE or an objective
   is not met (ACCEPTABLE or FAIL);
4. else ``PASS``.

``exit_code`` is 0 for PASS, 0 for ACCEPTABLE (1 when
``acceptable_fails_gate``), and 1 for FAIL and NOT_EVALUATED. A failed
objective thus shows in the verdict (ACCEPTABLE) but does not stop a plan
unless the gate is strict.

Modules: :mod:`~dvheval.check.plan` (:func:`check_plan`),
:mod:`~dvheval.check.prescriptions` (doses and fractions used),
:mod:`~dvheval.check.evaluate` (one constraint, the plan verdict),
:mod:`~dvheval.check.gate` (gate-closing findings), :mod:`~dvheval.check.results`
and :mod:`~dvheval.check.review` (``--integrity-only``).
"""

from __future__ import annotations

from dvheval.check.gate import DOSE_MAX_RANGE
from dvheval.check.plan import check_plan
from dvheval.check.prescriptions import RX_TOLERANCE, parse_rx
from dvheval.check.results import (
    AlternativeState,
    CheckError,
    CheckResult,
    ConstraintResult,
    FractionsUsed,
    PrescriptionUsed,
    StructureOutcome,
)
from dvheval.check.review import review_integrity
from dvheval.vocab import Verdict

__all__ = [
    "DOSE_MAX_RANGE",
    "RX_TOLERANCE",
    "AlternativeState",
    "CheckError",
    "CheckResult",
    "ConstraintResult",
    "FractionsUsed",
    "PrescriptionUsed",
    "StructureOutcome",
    "Verdict",
    "check_plan",
    "parse_rx",
    "review_integrity",
]
