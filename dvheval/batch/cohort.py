"""Cohort analytics from the DVH curves a batch run stored.

Every plan a ``dvheval batch`` run evaluates leaves the cumulative DVH of
each of its ROIs in table ``dvh_curves`` (:mod:`dvheval.batch.curves`). From
them, without reading any DICOM file again:

* any metric of the grammar (``D1cc``, ``V20Gy[%]``, ``Dmax[EQD2, a/b=2]``)
  for every plan and protocol structure (:func:`metric_rows`), as a tidy
  table (:func:`write_table`);
* population DVHs: the median and inter-quartile range of the plans' curves
  at each dose (:func:`population`, :func:`population_panels`);
* box plots of the protocol's limited metrics and of any metric asked for
  (:func:`box_groups`).

Doses read from a stored curve are within 0.01 Gy of the full DVH's (Dmax,
Dmin and Dmean exactly); ``%`` of prescription uses the dose of the ROI's
protocol level stored with the curve, EQD2/BED the plan's fractions.

Structures are the protocol's (as matched in each plan). A plan without a
ROI for a structure, or whose ROI has no DVH, still has its rows in the
table, with the reason in ``error``; population DVHs use the ROIs fully
inside the dose grid (``status`` ok) and say how many plans they left out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dvheval.batch.curves import CURVE_STEP_GY, curve_dvh, curve_points
from dvheval.batch.export import ExportError, write_csv, write_parquet
from dvheval.batch.plots import BoxGroup, PopulationPanel, axis_unit
from dvheval.batch.queries import plan_folder
from dvheval.batch.records import metric_unit
from dvheval.batch.store import ResultStore, StoreError
from dvheval.engine.dvh import DVH
from dvheval.errors import DvhevalError

#: Columns of the cohort table (:func:`metric_rows`), in order.
COHORT_COLUMNS = ("run_id", "plan_id", "plan_key", "patient_id", "rtplan_label", "rtplan_uid",
                  "plan_folder", "rtstruct_file", "rtplan_file", "rtdose_files",
                  "evaluated_at", "plan_verdict", "structure", "roi_name", "roi_number",
                  "structure_status", "metric", "value", "unit", "error")
#: Metrics of the table when none are asked for.
DEFAULT_COHORT_METRICS = ("Dmax", "Dmean", "D98%", "D2%", "D0.03cc")
#: Most points of a population DVH's dose grid.
MAX_POPULATION_POINTS = 2000


class CohortError(DvhevalError):
    """The cohort cannot be analysed: no such run, no curves, unknown structure or metric."""


@dataclass(frozen=True)
class PlanInfo:
    """A plan of the run: identity, files and when it was evaluated."""

    plan_id: int
    plan_key: str
    patient_id: str
    rtplan_label: str
    rtplan_uid: str
    verdict: str
    fractions: int | None
    evaluated_at: str
    folder: str
    rtstruct_file: str
    rtplan_file: str
    rtdose_files: str
    has_curves: bool


@dataclass(frozen=True)
class StoredCurve:
    """One ROI's stored cumulative DVH (``blob`` None when the ROI has no DVH)."""

    plan_id: int
    structure: str
    roi_name: str
    roi_number: int | None
    status: str | None
    total_cc: float | None
    covered_cc: float | None
    min_gy: float | None
    max_gy: float | None
    mean_gy: float | None
    prescription_gy: float | None
    start_gy: float | None
    step_gy: float | None
    blob: bytes | None

    def dvh(self) -> DVH | None:
        """The DVH rebuilt from the curve, or None without one."""
        if self.blob is None or self.covered_cc is None:
            return None
        return curve_dvh(self.total_cc or 0.0, self.covered_cc, self.min_gy or 0.0,
                         self.max_gy or 0.0, self.mean_gy or 0.0, self.start_gy or 0.0,
                         self.step_gy or CURVE_STEP_GY, self.blob)

    def volume_at(self, doses: np.ndarray, relative: bool) -> np.ndarray:
        """Volume receiving at least each dose: cm³, or % of the whole structure."""
        if self.blob is None or self.covered_cc is None:
            return np.full(doses.shape, np.nan)
        dose, cum = curve_points(self.covered_cc, self.min_gy or 0.0, self.max_gy or 0.0,
                                 self.start_gy or 0.0, self.step_gy or CURVE_STEP_GY,
                                 self.blob)
        vol = np.asarray(np.interp(doses, dose, cum, left=self.covered_cc, right=0.0))
        vol[doses > (self.max_gy or 0.0)] = 0.0
        if relative:
            total = self.total_cc or 0.0
            return 100.0 * vol / total if total > 0 else np.full(doses.shape, np.nan)
        return vol


@dataclass
class Cohort:
    """The plans and stored curves of one run, for the chosen protocol structures.

    Attributes
    ----------
    db : Path
    run_id : int
    protocol : tuple of (str, str or None)
        Name and version of the run's protocol.
    plans : list of PlanInfo
    structures : list of str
        The protocol structures analysed, in the protocol's order.
    curves : dict
        structure -> {plan_id: StoredCurve}.
    limits : list of tuple
        (structure, metric, operator, limit, unit, prescription_gy, priority).
    """

    db: Path
    run_id: int
    protocol: tuple[str, str | None]
    plans: list[PlanInfo]
    structures: list[str]
    curves: dict[str, dict[int, StoredCurve]]
    limits: list[tuple[Any, ...]]

    @property
    def title(self) -> str:
        """``protocol version, run N: n plans``."""
        name, version = self.protocol
        return f"{name} {version or ''}, run {self.run_id}: {len(self.plans)} plans"

    @property
    def without_curves(self) -> list[PlanInfo]:
        """Plans evaluated by a dvheval that stored no curves."""
        return [p for p in self.plans if not p.has_curves]


def load_cohort(db: str | Path, run: int | None = None,
                structures: Sequence[str] | None = None) -> Cohort:
    """Read a run's plans and stored DVH curves.

    Parameters
    ----------
    db : str or Path
        The batch results database (opened read-only).
    run : int, optional
        The run; default the latest.
    structures : sequence of str, optional
        Protocol structure names (case-insensitive); default every protocol
        structure some plan of the run has a ROI for.

    Returns
    -------
    Cohort

    Raises
    ------
    CohortError
        Unusable database, no such run, a run with no plans or no stored
        curves (a database of an earlier dvheval), an unknown structure.
    """
    try:
        with closing(ResultStore(db, writable=False)) as store:
            run_id = store.latest_run() if run is None else run
            if run_id is None or not store.has_run(run_id):
                raise CohortError(f"{db}: " + ("no runs" if run_id is None else
                                                f"no run {run_id}"))
            if not store.has_curve_table():
                raise CohortError(
                    f"{db}: holds no DVH curves (written by a dvheval that did not store "
                    "them); run the same dvheval batch command again with this --db: the "
                    "plans without curves are evaluated again and their curves stored")
            return _read(store, Path(db), run_id, structures)
    except StoreError as exc:
        raise CohortError(str(exc)) from exc


def _read(store: ResultStore, db: Path, run_id: int,
          structures: Sequence[str] | None) -> Cohort:
    with_curves = store.plans_with_curves(run_id)
    plans = _plans(store, run_id, with_curves)
    if not plans:
        raise CohortError(f"{db}: run {run_id} has no evaluated plans")
    if not with_curves:
        raise CohortError(
            f"{db}: run {run_id} has no DVH curves: its {len(plans)} plans were evaluated by "
            "a dvheval that did not store them; run the same dvheval batch command again "
            "with this --db to store them")
    curves: dict[str, dict[int, StoredCurve]] = {}
    for row in store.run_curves(run_id):
        c = StoredCurve(*row)
        curves.setdefault(c.structure, {})[c.plan_id] = c
    order = [s for s in store.run_structure_order(run_id) if s in curves]
    chosen = _choose(db, order, structures)
    proto = store.run_protocol(run_id) or ("", None)
    return Cohort(db, run_id, proto, plans, chosen, {s: curves[s] for s in chosen},
                  [lim for lim in store.run_limits(run_id) if lim[0] in chosen])


def _plans(store: ResultStore, run_id: int, with_curves: set[int]) -> list[PlanInfo]:
    files: dict[int, list[tuple[str, str]]] = {}
    for plan_id, role, path in store.run_plan_files(run_id):
        files.setdefault(plan_id, []).append((role, path))
    roots = store.run_roots(run_id)
    out = []
    for plan_id, key, patient, label, uid, verdict, fractions, when in store.run_plans(run_id):
        f = files.get(plan_id, [])
        by_role = {r: ";".join(p for rr, p in f if rr == r) for r in ("RTSTRUCT", "RTPLAN",
                                                                      "RTDOSE")}
        out.append(PlanInfo(plan_id, key, patient or "", label or "", uid or "", verdict,
                            fractions, when, plan_folder([p for _, p in f], roots),
                            by_role["RTSTRUCT"], by_role["RTPLAN"], by_role["RTDOSE"],
                            plan_id in with_curves))
    return out


def _choose(db: Path, order: list[str], wanted: Sequence[str] | None) -> list[str]:
    """The structures asked for, by the names the protocol gives them."""
    if not order:
        raise CohortError(f"{db}: no ROI of the run's plans matched a protocol structure")
    if not wanted:
        return order
    by_key = {s.casefold(): s for s in order}
    missing = [w for w in wanted if w.casefold() not in by_key]
    if missing:
        raise CohortError(f"no protocol structure {', '.join(map(repr, missing))} in the run's "
                          f"plans; they have {', '.join(order)}")
    return list(dict.fromkeys(by_key[w.casefold()] for w in wanted))


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """The metric names, each checked against the grammar (``Volume`` allowed too).

    Raises
    ------
    CohortError
        For a name that does not parse; the message lists what is allowed.
    """
    from dvheval.engine.metrics import parse_metric

    for m in metrics:
        if m != "Volume":
            try:
                parse_metric(m)
            except DvhevalError as exc:
                raise CohortError(str(exc)) from exc
    return list(dict.fromkeys(metrics))


def evaluate(curve: StoredCurve | None, metric: str, fractions: int | None
             ) -> tuple[float | None, str | None]:
    """A metric of one stored curve: (value, None) or (None, why not)."""
    from dvheval.engine.metrics import NotComputable

    if curve is None:
        return None, "no ROI matched this structure"
    if metric == "Volume":
        return curve.total_cc, None if curve.total_cc is not None else "volume unknown"
    dvh = curve.dvh()
    if dvh is None:
        return None, f"no DVH (structure {curve.status or 'without dose'})"
    try:
        value = dvh.metric(metric, prescription_gy=curve.prescription_gy, fractions=fractions)
    except NotComputable as exc:
        return None, str(exc)
    return (value, None) if math.isfinite(value) else (None, "not computable")


def metric_rows(cohort: Cohort, metrics: Sequence[str]) -> list[tuple[Any, ...]]:
    """The tidy table (:data:`COHORT_COLUMNS`): one row per plan x structure x metric.

    Every plan of the run has its rows; a value that cannot be had is empty
    with the reason in ``error``.
    """
    rows = []
    for p in cohort.plans:
        ident = (cohort.run_id, p.plan_id, p.plan_key, p.patient_id, p.rtplan_label,
                 p.rtplan_uid, p.folder, p.rtstruct_file, p.rtplan_file, p.rtdose_files,
                 p.evaluated_at, p.verdict)
        for s in cohort.structures:
            c = cohort.curves[s].get(p.plan_id)
            for m in metrics:
                value, error = evaluate(c, m, p.fractions)
                if not p.has_curves:
                    value, error = None, "no DVH curves stored for this plan"
                rows.append((*ident, s, c.roi_name if c else None,
                             c.roi_number if c else None, c.status if c else None, m,
                             value, "cc" if m == "Volume" else metric_unit(m), error))
    return rows


def write_table(path: str | Path, rows: Sequence[tuple[Any, ...]]) -> Path:
    """Write the cohort table as CSV or, for ``.parquet``, Parquet (needs pyarrow).

    Raises
    ------
    CohortError
        Another extension, pyarrow missing, or the file cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            write_csv(path, COHORT_COLUMNS, rows)
        elif suffix == ".parquet":
            write_parquet(path, COHORT_COLUMNS, rows,
                          {"run_id": "int", "plan_id": "int", "roi_number": "int",
                           "value": "float"})
        else:
            raise CohortError(f"{path}: the export must end in .csv or .parquet")
    except ExportError as exc:
        raise CohortError(str(exc)) from exc
    except OSError as exc:
        raise CohortError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    return path


def population(curves: Sequence[StoredCurve], doses: np.ndarray, relative: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Population DVH of stored curves on a dose grid.

    Parameters
    ----------
    curves : sequence of StoredCurve
    doses : ndarray
        Doses (Gy) at which to evaluate.
    relative : bool
        Volumes in % of each structure (True) or cm³.

    Returns
    -------
    matrix : ndarray, shape (len(curves), len(doses))
        Each plan's cumulative DVH.
    median, q25, q75 : ndarray
        Median, 25th and 75th percentile (numpy's linear interpolation)
        over the plans at each dose.
    """
    doses = np.asarray(doses, dtype=float)
    matrix = np.vstack([c.volume_at(doses, relative) for c in curves])
    q25, median, q75 = np.percentile(matrix, [25, 50, 75], axis=0)
    return matrix, median, q25, q75


def dose_grid(curves: Sequence[StoredCurve]) -> np.ndarray:
    """0 Gy to the highest maximum, on multiples of the stored step (at most 2000 points)."""
    top = max((c.max_gy or 0.0) for c in curves)
    step = CURVE_STEP_GY * max(1, math.ceil(top / CURVE_STEP_GY / MAX_POPULATION_POINTS))
    return np.arange(math.ceil(top / step) + 1) * step


def population_panels(cohort: Cohort, relative: bool) -> list[PopulationPanel]:
    """One population DVH per structure, from the ROIs fully inside the dose grid."""
    panels = []
    for s in cohort.structures:
        by_plan = cohort.curves[s]
        used = [c for c in by_plan.values() if c.status == "ok" and c.blob is not None]
        left = Counter(c.status or "no DVH" for c in by_plan.values()
                       if c.status != "ok" or c.blob is None)
        left["no ROI"] = sum(1 for p in cohort.plans if p.plan_id not in by_plan)
        notes = [f"left out: {n} plan(s) {why}" for why, n in left.items() if n]
        if not used:
            continue
        doses = dose_grid(used)
        matrix, median, q25, q75 = population(used, doses, relative)
        markers, undrawn = limit_markers([lim for lim in cohort.limits if lim[0] == s],
                                         relative)
        panels.append(PopulationPanel(s, doses, matrix, median, q25, q75, markers,
                                      notes + undrawn))
    return panels


def limit_markers(limits: Sequence[tuple[Any, ...]], relative: bool
                  ) -> tuple[list[tuple[float, float, str]], list[str]]:
    """Protocol limits as points of the DVH plane, and those that are not.

    A dose limit on D<x>% (relative axis) or D<x>cc (absolute axis) is the
    point (limit, x); Dmax is (limit, 0); a limit on V<x>Gy in the axis's
    volume unit is (x, limit). Limits on other metrics, in EQD2/BED or in
    the other volume unit are listed as not drawn.
    """
    from dvheval.engine.metrics import parse_metric

    points, undrawn = [], []
    for _, metric, op, limit, unit, rx, _ in limits:
        label = f"{metric} {op} {limit:g} {'' if unit in (None, '1') else unit}".strip()
        try:
            m = parse_metric(metric)
        except DvhevalError:
            undrawn.append(f"not drawn: {label}")
            continue
        gy = limit * rx / 100.0 if unit == "%Rx" and rx else limit if unit == "Gy" else None
        vol_unit = "%" if relative else "cc"
        point = None
        if m.model is None and m.kind == "max" and gy is not None:
            point = (gy, 0.0)
        elif m.model is None and m.kind == "dose_at_volume" and gy is not None \
                and {"cm3": "cc"}.get(m.value_unit or "", m.value_unit) == vol_unit:
            point = (gy, float(m.value or 0.0))
        elif m.model is None and m.kind == "volume_at_dose" and unit == vol_unit:
            x = m.value if m.value_unit == "Gy" else (m.value or 0.0) / 100.0 \
                if m.value_unit == "cGy" else (m.value or 0.0) * (rx or math.nan) / 100.0
            point = (float(x or 0.0), float(limit)) if x is not None and math.isfinite(x) \
                else None
        if point is None:
            undrawn.append(f"not drawn: {label}")
        else:
            points.append((point[0], point[1], label))
    return points, undrawn


def box_groups(cohort: Cohort, metrics: Sequence[str]) -> list[BoxGroup]:
    """One box per limited metric of each structure, then one per metric asked for.

    Values come from the stored curves (fully covered ROIs only); the
    protocol's limits on the same metric are attached.
    """
    wanted: dict[tuple[str, str], list[tuple[str, float, str | None]]] = {}
    for s, metric, op, limit, unit, _, _ in cohort.limits:
        wanted.setdefault((s, metric), []).append((op, float(limit), unit))
    for s in cohort.structures:
        for m in metrics:
            wanted.setdefault((s, m), [])
    fractions = {p.plan_id: p.fractions for p in cohort.plans}
    groups = []
    for (s, metric), lims in wanted.items():
        values, missing = [], 0
        for p in cohort.plans:
            c = cohort.curves[s].get(p.plan_id)
            v, _ = evaluate(c, metric, fractions[p.plan_id]) if c and c.status == "ok" \
                else (None, None)
            if v is None:
                missing += 1
            else:
                values.append(v)
        unit = "cc" if metric == "Volume" else metric_unit(metric)
        same = [(op, v) for op, v, u in lims if u == unit]
        groups.append(BoxGroup(s, metric, axis_unit(metric, unit), np.asarray(values),
                               same, missing))
    return groups
