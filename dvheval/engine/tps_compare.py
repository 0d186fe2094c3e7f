"""dvheval's DVHs against those the planning system stored in the RTDOSE.

The check a physicist runs when commissioning dvheval: for every ROI with a
DVH in the RTDOSE's DVH Sequence, the volume, Dmean, D98%, D50% and D2% of
the planning system's DVH (evaluated with the same interpolation as
dvheval's own DVHs) are set beside dvheval's, together with the largest
difference between the two cumulative curves, and judged against
:class:`Tolerances`. Fail closed: a stored DVH that cannot be compared, or
an RTDOSE without DVHs, never counts as agreement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dvheval.dicom import find_inputs
from dvheval.engine.compute import compute_dvhs
from dvheval.engine.dvh import DVH
from dvheval.engine.metrics import evaluate_metric
from dvheval.engine.results import PlanDVHs, StructureResult
from dvheval.engine.stored import read_stored_dvh_set
from dvheval.errors import InputError

#: Dose metrics compared, in this order.
DOSE_METRICS = ("Dmean", "D98%", "D50%", "D2%")

AGREE = "AGREE"
DISAGREE = "DISAGREE"
NOT_COMPARED = "NOT_COMPARED"


@dataclass(frozen=True)
class Tolerances:
    """When a quantity agrees.

    Attributes
    ----------
    dose_gy : float
        Largest difference of Dmean, D98%, D50% and D2% (Gy).
    dose_pct : float or None
        Alternatively, in % of the reference dose (the RTPLAN's highest
        prescription, else the ROI's maximum dose in the stored DVH); a dose
        agrees when it is within either tolerance.
    volume_pct : float
        Largest volume difference in % of the stored volume.
    curve_pct : float
        Largest difference between the two cumulative DVHs, each in % of its
        own volume (percentage points), at any dose, once each point may move
        by the dose tolerance.
    small_cc : float
        ROIs whose stored volume is below this (cm^3) have their volume
        reported but not judged: a few contour planes make their volume
        depend on each system's end-plane handling more than on anything
        else. Their doses and curve are judged.
    """

    dose_gy: float = 0.5
    dose_pct: float | None = None
    volume_pct: float = 3.0
    curve_pct: float = 5.0
    small_cc: float = 1.0

    def __post_init__(self) -> None:
        for name in ("dose_gy", "dose_pct", "volume_pct", "curve_pct", "small_cc"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"tolerance {name} must be a finite number >= 0, is {value}")


@dataclass(frozen=True)
class Quantity:
    """One compared quantity of one ROI.

    ``difference`` is dvheval minus the planning system: in Gy for doses, in
    % of the stored volume for ``volume``, in percentage points (signed, at
    ``at_gy``) for ``curve``. The curve is judged by ``beyond``: its largest
    difference once each point may move by the ROI's dose tolerance (a
    one-dimensional distance to agreement), so that a steep curve is not
    failed for a dose difference within tolerance. ``agrees`` is None when
    the quantity is not judged (``tolerance`` None).
    """

    name: str
    unit: str
    tps: float | None
    dvheval: float | None
    difference: float | None
    tolerance: float | None
    agrees: bool | None
    at_gy: float | None = None
    beyond: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out = {"name": self.name, "unit": self.unit, "tps": self.tps, "dvheval": self.dvheval,
               "difference": self.difference, "tolerance": self.tolerance,
               "agrees": self.agrees}
        if self.at_gy is not None:
            out["at_gy"] = self.at_gy
        if self.beyond is not None:
            out["beyond_dose_tolerance"] = self.beyond
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class ROIComparison:
    """The comparison of one ROI: every quantity, its verdict and notes."""

    number: int | None
    name: str
    verdict: str
    quantities: list[Quantity] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def disagreeing(self) -> list[Quantity]:
        """The quantities outside their tolerance (or not computable)."""
        return [q for q in self.quantities if q.agrees is False]

    def quantity(self, name: str) -> Quantity | None:
        """The quantity of this name (``volume``, ``Dmean``, ``D98%``, ... ``curve``)."""
        return next((q for q in self.quantities if q.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"roi_number": self.number, "name": self.name, "verdict": self.verdict,
                "quantities": [q.to_dict() for q in self.quantities],
                "notes": list(self.notes)}


@dataclass
class TPSComparison:
    """The comparison of a whole plan with the DVHs stored in its RTDOSE."""

    dose_file: str
    patient_id: str
    patient_name: str
    end_caps: bool
    tolerances: Tolerances
    reference_gy: float | None
    reference_source: str
    has_dvh_sequence: bool
    rois: list[ROIComparison]
    without_tps_dvh: list[str]

    @property
    def verdict(self) -> str:
        """``AGREE`` only when at least one ROI was compared and every stored DVH agrees."""
        if not any(r.verdict != NOT_COMPARED for r in self.rois):
            return NOT_COMPARED
        if all(r.verdict == AGREE for r in self.rois):
            return AGREE
        return DISAGREE

    @property
    def message(self) -> str:
        """One line saying the outcome and why."""
        n = len(self.rois)
        if not self.has_dvh_sequence:
            return (f"{self.dose_file} has no DVH Sequence: nothing to compare, "
                    f"so no agreement (exit 1)")
        bad = [r for r in self.rois if r.verdict == DISAGREE]
        skipped = [r for r in self.rois if r.verdict == NOT_COMPARED]
        if self.verdict == AGREE:
            return f"AGREE: all {n} stored DVHs agree within the tolerances (exit 0)"
        parts = []
        if bad:
            parts.append(f"{len(bad)} of {n} disagree ("
                         + "; ".join(f"{r.name}: "
                                     + ", ".join(q.name for q in r.disagreeing)
                                     for r in bad) + ")")
        if skipped:
            parts.append(f"{len(skipped)} of {n} could not be compared ("
                         + ", ".join(r.name for r in skipped) + ")")
        return f"{self.verdict}: " + "; ".join(parts) + " (exit 1)"

    @property
    def exit_code(self) -> int:
        """0 when every stored DVH was compared and agrees, else 1."""
        return 0 if self.verdict == AGREE else 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (doses Gy, volumes cm^3, differences as in :class:`Quantity`)."""
        t = self.tolerances
        return {
            "dose_file": self.dose_file,
            "patient": {"id": self.patient_id, "name": self.patient_name},
            "end_caps": self.end_caps,
            "tolerances": {"dose_gy": t.dose_gy, "dose_pct": t.dose_pct,
                           "volume_pct": t.volume_pct, "curve_pct": t.curve_pct,
                           "small_cc": t.small_cc},
            "reference_dose": {"gy": self.reference_gy, "source": self.reference_source},
            "has_dvh_sequence": self.has_dvh_sequence,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "message": self.message,
            "rois": [r.to_dict() for r in self.rois],
            "without_tps_dvh": list(self.without_tps_dvh),
        }


# ------------------------------------------------------------------ curves
def cumulative_at(dvh: DVH, doses_gy: np.ndarray) -> np.ndarray:
    """Volume (cm^3) receiving at least each dose, linear within every bin.

    The same model as :meth:`DVH.volume_at_dose`, vectorised; a zero-width
    bin (a point mass) counts for doses up to and including its edge.
    """
    d = np.asarray(doses_gy, dtype=np.float64)
    if dvh.is_empty:
        return np.zeros_like(d)
    e, v = dvh.edges_gy, dvh.volumes_cc
    cum = np.concatenate([np.cumsum(v[::-1])[::-1], [0.0]])
    i = np.clip(np.searchsorted(e, d, side="left") - 1, 0, v.size - 1)
    span = e[i + 1] - e[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(span > 0, np.clip((e[i + 1] - d) / span, 0.0, 1.0), 0.0)
    out = cum[i + 1] + v[i] * frac
    out[d <= e[0]] = cum[0]
    out[d > e[-1]] = 0.0
    return np.asarray(out, dtype=np.float64)


def max_curve_difference(a: DVH, b: DVH, shift_gy: float = 0.0) -> tuple[float, float, float]:
    """Largest difference of two cumulative DVHs, each in % of its own volume.

    Both curves are piecewise linear between their bin edges, so the
    largest difference lies at an edge of one of them (or an edge moved by
    ``shift_gy``); each is taken together with a point just below it, for
    the steps of point masses.

    Parameters
    ----------
    a, b : DVH
        The reference (planning system) and the compared DVH.
    shift_gy : float
        Dose shift allowed for the third value, as a one-dimensional
        distance to agreement.

    Returns
    -------
    difference, at_gy, beyond_shift : float
        ``b - a`` in percentage points where ``|b - a|`` is largest, and that
        dose; and the largest distance of ``b(d)`` from the range that ``a``
        takes within ``d +/- shift_gy`` (0 when every point of ``b`` is
        within the shift of ``a``).
    """
    edges = np.union1d(a.edges_gy, b.edges_gy)
    edges = np.union1d(edges, np.concatenate([edges - shift_gy, edges + shift_gy]))
    doses = np.union1d(edges, edges - 1e-9 * np.maximum(1.0, np.abs(edges)))
    pa = 100.0 * cumulative_at(a, doses) / a.covered_cc
    pb = 100.0 * cumulative_at(b, doses) / b.covered_cc
    diff = pb - pa
    k = int(np.argmax(np.abs(diff)))
    upper = 100.0 * cumulative_at(a, doses - shift_gy) / a.covered_cc
    lower = 100.0 * cumulative_at(a, doses + shift_gy) / a.covered_cc
    beyond = np.maximum(0.0, np.maximum(pb - upper, lower - pb))
    return float(diff[k]), float(doses[k]), float(beyond.max())


# -------------------------------------------------------------- comparison
def _dose_quantities(ref: DVH, s: StructureResult, dose_tol: float) -> list[Quantity]:
    """Dmean, D98%, D50%, D2%: stored DVH against dvheval's, within ``dose_tol`` Gy."""
    out = []
    for name in DOSE_METRICS:
        tps = evaluate_metric(name, ref)
        mine = s.metrics.get(name)
        if mine is None:
            note = "dvheval: " + s.metric_errors.get(name, "not computable")
            out.append(Quantity(name, "Gy", tps, None, None, dose_tol, False, note=note))
            continue
        diff = mine - tps
        out.append(Quantity(name, "Gy", tps, mine, diff, dose_tol,
                            abs(diff) <= dose_tol + 1e-9))
    return out


def _volume_quantity(ref: DVH, s: StructureResult, tol: Tolerances) -> Quantity:
    """The volume: dvheval's covered volume against the stored one, in % of the stored one."""
    assert s.dvh is not None
    mine = s.dvh.covered_cc
    diff = 100.0 * (mine / ref.covered_cc - 1.0)
    if ref.covered_cc < tol.small_cc:
        return Quantity("volume", "cc", ref.covered_cc, mine, diff, None, None,
                        note=f"below {tol.small_cc:g} cc: volume not judged")
    return Quantity("volume", "cc", ref.covered_cc, mine, diff, tol.volume_pct,
                    abs(diff) <= tol.volume_pct + 1e-9)


def compare_roi(number: int, ref: DVH, s: StructureResult, tol: Tolerances,
                reference_gy: float | None) -> ROIComparison:
    """Compare one ROI's stored DVH with dvheval's.

    Parameters
    ----------
    number : int
        The ROI number.
    ref : DVH
        The planning system's DVH.
    s : StructureResult
        dvheval's result for the ROI, computed with the metrics of
        :data:`DOSE_METRICS`.
    tol : Tolerances
    reference_gy : float or None
        Reference dose of ``tol.dose_pct``; None to use the stored DVH's maximum.

    Returns
    -------
    ROIComparison
        ``NOT_COMPARED`` when dvheval has no DVH of the ROI (no contours, no
        volume, outside the dose grid, unusable contours).
    """
    if s.dvh is None or s.dvh.is_empty or s.status not in ("ok", "partial"):
        why = "; ".join(s.warnings) or f"status {s.status}"
        return ROIComparison(number, s.name, NOT_COMPARED,
                             notes=[f"dvheval has no DVH of this ROI ({s.status}): {why}"])
    dose_tol = tol.dose_gy
    if tol.dose_pct is not None:
        base = reference_gy if reference_gy is not None else ref.max_gy
        dose_tol = max(dose_tol, tol.dose_pct / 100.0 * base)
    quantities = [_volume_quantity(ref, s, tol), *_dose_quantities(ref, s, dose_tol)]
    diff, at, beyond = max_curve_difference(ref, s.dvh, dose_tol)
    quantities.append(Quantity("curve", "%", None, None, diff, tol.curve_pct,
                               beyond <= tol.curve_pct + 1e-9, at_gy=at, beyond=beyond))
    notes = []
    if s.status == "partial":
        notes.append(f"dvheval: {s.dvh.covered_cc:.3f} of {s.dvh.total_cc:.3f} cc of the ROI "
                     f"are inside the dose grid; the covered part is compared")
    notes += [f"dvheval: {d}" for d in s.defects]
    verdict = DISAGREE if any(q.agrees is False for q in quantities) else AGREE
    return ROIComparison(number, s.name, verdict, quantities, notes)


def _reference_dose(plan: PlanDVHs) -> tuple[float | None, str]:
    """The reference of percentage dose tolerances: the highest prescription, if any."""
    if plan.plan is not None and plan.plan.prescriptions:
        top = max(plan.plan.prescriptions, key=lambda p: p.dose_gy)
        return top.dose_gy, f"RTPLAN prescription {top.name}"
    return None, "each ROI's maximum dose in the stored DVH"


def compare_with_tps(paths: str | Path | Iterable[str | Path], *, end_caps: bool = True,
                     tolerances: Tolerances | None = None, workers: int = 1) -> TPSComparison:
    """Compare dvheval's DVHs of a plan with the DVHs stored in its RTDOSE.

    Parameters
    ----------
    paths : str, Path or iterable of them
        One plan: an RTSTRUCT, exactly one RTDOSE (whose DVH Sequence is
        compared with its own dose) and optionally an RTPLAN.
    end_caps : bool
        dvheval's end-cap convention for this comparison (many planning
        systems end structures at their outermost contours: ``False``).
    tolerances : Tolerances, optional
        Defaults of :class:`Tolerances`.
    workers : int
        Processes sharing the structures (see :func:`dvheval.compute_dvhs`).

    Returns
    -------
    TPSComparison
        One :class:`ROIComparison` per stored DVH item, in ROI number order,
        including those that cannot be compared.

    Raises
    ------
    InputError
        Unusable input, or more than one RTDOSE file (a stored DVH describes
        the dose of its own file only).
    """
    tol = tolerances or Tolerances()
    inputs = find_inputs(paths)
    if len(inputs.doses) != 1:
        names = ", ".join(str(d.path) for d in inputs.doses)
        raise InputError(f"compare-tps compares one RTDOSE with the DVHs stored in it, but "
                         f"{len(inputs.doses)} RTDOSE files were given ({names}); give the "
                         f"structure set and one dose file")
    stored = read_stored_dvh_set(inputs.doses[0].path)
    plan = compute_dvhs(paths, metrics=list(DOSE_METRICS), end_caps=end_caps, workers=workers)
    reference_gy, source = _reference_dose(plan)
    if tol.dose_pct is None:
        source = "not used"
    by_number = {s.number: s for s in plan.structures}
    rois: list[ROIComparison] = []
    for number, ref in stored.dvhs.items():
        s = by_number.get(number)
        if s is None:
            rois.append(ROIComparison(number, f"ROI {number}", NOT_COMPARED, notes=[
                f"the structure set has no ROI number {number}"]))
        else:
            rois.append(compare_roi(number, ref, s, tol, reference_gy))
    for skipped_number, reason in stored.skipped:
        found = by_number.get(skipped_number) if skipped_number is not None else None
        name = found.name if found is not None else f"ROI {skipped_number}"
        rois.append(ROIComparison(skipped_number, name, NOT_COMPARED,
                                  notes=[f"stored DVH not compared: {reason}"]))
    rois.sort(key=lambda r: (r.number is None, r.number or 0))
    seen = {r.number for r in rois}
    return TPSComparison(
        dose_file=str(stored.path), patient_id=plan.patient_id,
        patient_name=plan.patient_name, end_caps=end_caps, tolerances=tol,
        reference_gy=reference_gy if tol.dose_pct is not None else None,
        reference_source=source, has_dvh_sequence=stored.has_sequence, rois=rois,
        without_tps_dvh=[s.name for s in plan.structures if s.number not in seen])
