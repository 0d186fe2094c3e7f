"""The database rows of a checked plan.

:func:`build_record` turns a :class:`~dvheval.check.CheckResult` into a
:class:`~dvheval.batch.store.PlanRecord`: the plan's columns of table
``plans`` and its rows of the child tables, each row keyed by column name
(the row types of :mod:`dvheval.batch.store`). Workers build it; only plain
values go back to the parent process: each ROI's cumulative DVH travels as a
compact float32 BLOB on a 0.01 Gy grid (:mod:`dvheval.batch.curves`), never
as the DVH object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from dvheval.batch.curves import curve_row
from dvheval.batch.schema import CurveRow
from dvheval.batch.store import (
    FindingRow,
    MetricRow,
    PlanRecord,
    PlanResult,
    ProtocolStructureRow,
    StructureRow,
    VerdictRow,
)
from dvheval.errors import DvhevalError
from dvheval.vocab import Verdict

if TYPE_CHECKING:
    from dvheval.check import CheckResult, ConstraintResult

#: Metric rows of a plan, keyed by (index of the ROI in the plan, metric name).
MetricRows = dict[tuple[int, str], MetricRow]


def _float(v: Any) -> float | None:
    """``v`` as a finite float; None for None, NaN and infinities."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@lru_cache(maxsize=512)
def metric_unit(name: str) -> str | None:
    """Unit of a metric's value: ``cc``, ``Gy``, ``%``, ``%Rx`` (dose in % of Rx)..."""
    from dvheval.engine.metrics import parse_metric

    if name == "Volume":
        return "cc"
    try:
        m = parse_metric(name)
    except DvhevalError:
        return None
    if m.is_dose and m.output_unit == "%":
        return "%Rx"
    return m.output_unit


def _json_list(values: Sequence[str]) -> str | None:
    return json.dumps(list(values), ensure_ascii=False) if values else None


def build_record(result: CheckResult) -> PlanRecord:
    """The database rows of a checked plan.

    Parameters
    ----------
    result : dvheval.check.CheckResult

    Returns
    -------
    PlanRecord
        ``plan`` (:class:`~dvheval.batch.store.PlanResult`) and the rows of
        ``structures``, ``metrics``, ``verdicts``, ``protocol_structures``
        and ``findings`` (the integrity findings of ``result.findings``,
        when it has them).

    Notes
    -----
    ``metrics`` holds, for every ROI, its volume, the default DVH metrics and
    every metric the protocol reports or limits for it; a metric that is in
    both appears once with ``in_protocol`` 1 and the protocol's value.
    """
    structures, metrics = _structure_rows(result)
    verdicts = []
    for r in result.results:
        verdicts.append(_verdict_row(result, r))
        _note_protocol_metric(result, r, metrics)
    return {
        "plan": _plan_result(result),
        "structures": structures,
        "metrics": list(metrics.values()),
        "verdicts": verdicts,
        "protocol_structures": _protocol_structure_rows(result),
        "findings": _finding_rows(getattr(result, "findings", None) or ()),
        "dvh_curves": _curve_rows(result, structures),
    }


def _curve_rows(result: CheckResult, structures: list[StructureRow]) -> list[CurveRow]:
    """The cumulative DVH of every ROI (a row without curve for ROIs without a DVH).

    ``prescription_gy`` is the dose of the protocol level of the structure the
    ROI matched (what a bare ``%`` refers to), else the plan's only level.
    """
    levels = {name: p.dose_gy for name, p in result.prescriptions.items()}
    only = next(iter(levels.values())) if len(levels) == 1 else None
    rows = []
    for s, row in zip(result.plan.structures, structures, strict=True):
        ps = row["protocol_structure"]
        spec = result.protocol.structure(ps) if ps else None
        level = getattr(spec, "prescription", None) if spec else None
        rx = levels.get(level) if level else only
        rows.append(curve_row(s.dvh, roi_number=s.number, roi_name=s.name,
                              protocol_structure=ps, status=s.status,
                              total_cc=s.volume_cc, prescription_gy=rx))
    return rows


def _structure_rows(result: CheckResult) -> tuple[list[StructureRow], MetricRows]:
    """Rows of every ROI, and of its volume and DVH metrics, in plan order."""
    matched = {m.index: m for m in result.matching.matched.values()}
    structures: list[StructureRow] = []
    metrics: MetricRows = {}
    for i, s in enumerate(result.plan.structures):
        m = matched.get(i)
        ps, how = (m.structure, f"{m.how} {m.by!r}") if m else (None, None)
        structures.append({
            "roi_number": s.number, "roi_name": s.name, "roi_type": s.type,
            "status": s.status, "volume_cc": _float(s.volume_cc),
            "coverage": _float(s.coverage), "protocol_structure": ps, "matched_by": how,
            "warnings": _json_list(s.warnings)})
        metrics[(i, "Volume")] = {
            "roi_number": s.number, "roi_name": s.name, "protocol_structure": ps,
            "metric": "Volume", "value": _float(s.volume_cc), "unit": "cc", "in_protocol": 0,
            "error": None if s.volume_cc is not None else "volume unknown"}
        for name, value in s.metrics.items():
            metrics[(i, name)] = {
                "roi_number": s.number, "roi_name": s.name, "protocol_structure": ps,
                "metric": name, "value": _float(value), "unit": metric_unit(name),
                "in_protocol": 0, "error": s.metric_errors.get(name)}
    return structures, metrics


def _verdict_row(result: CheckResult, r: ConstraintResult) -> VerdictRow:
    """The row of one constraint result."""
    c = r.constraint
    m = result.matching.matched.get(c.structure) if r.roi is not None else None
    return {
        "constraint_id": c.id, "protocol_structure": c.structure,
        "roi_number": result.plan.structures[m.index].number if m else None,
        "roi_name": r.roi, "metric": c.metric_name, "priority": c.priority,
        "operator": c.operator, "limit_value": _float(r.limit),
        "limit_unit": r.unit if c.operator else None,
        "limit_text": c.limit.text if c.limit else None,
        "acceptable_limit": _float(r.acceptable_limit), "value": _float(r.value),
        "unit": r.unit, "margin": _float(r.margin), "verdict": r.verdict.value,
        "reason": r.reason, "prescription": c.prescription,
        "prescription_gy": _float(r.prescription_gy), "alternative": c.alternative,
        "citation": c.citation,
    }


def _note_protocol_metric(result: CheckResult, r: ConstraintResult, metrics: MetricRows) -> None:
    """Mark the metric a constraint judges as ``in_protocol``, with the constraint's value.

    A metric the default set lacks gets a row of its own; a value the
    constraint computed replaces the default one (and its error); when
    neither has a value, the constraint's reason becomes the row's error.
    """
    c = r.constraint
    m = result.matching.matched.get(c.structure) if r.roi is not None else None
    if m is None or r.verdict.value == Verdict.NOT_APPLICABLE.value:
        return
    row = metrics.get((m.index, c.metric_name))
    if row is None:
        sr = result.plan.structures[m.index]
        row = metrics[(m.index, c.metric_name)] = {
            "roi_number": sr.number, "roi_name": sr.name, "protocol_structure": c.structure,
            "metric": c.metric_name, "value": None, "unit": metric_unit(c.metric_name),
            "in_protocol": 1, "error": None}
    row["in_protocol"] = 1
    if r.value is not None:
        row["value"], row["unit"], row["error"] = _float(r.value), r.unit, None
    elif row["value"] is None:
        row["error"] = r.reason or row["error"]


def _protocol_structure_rows(result: CheckResult) -> list[ProtocolStructureRow]:
    """How each protocol structure was found in the plan."""
    rows: list[ProtocolStructureRow] = []
    for o in result.structures:
        spec = result.protocol.structure(o.structure)
        rows.append({
            "structure": o.structure, "type": spec.type if spec else None,
            "required": int(o.required), "match": o.status, "roi_name": o.roi,
            "matched_by": f"{o.how} {o.by!r}" if o.how else None,
            "roi_status": o.roi_status, "reason": o.reason})
    return rows


def _plan_result(result: CheckResult) -> PlanResult:
    """The evaluation's columns of the plan's row of table ``plans``."""
    plan = result.plan
    info = plan.plan
    return {
        "verdict": result.verdict.value,
        "exit_code": result.exit_code,
        "rtplan_uid": info.sop_instance_uid if info else None,
        "rtplan_label": info.label if info else None,
        "structure_set_label": plan.structure_set_label,
        "frame_of_reference_uid": plan.frame_of_reference_uid,
        "dose_summation": plan.dose.summation,
        "fractions": result.fractions.fractions,
        "fractions_source": result.fractions.source,
        "prescriptions": [p.to_dict() for p in result.prescriptions.values()],
        "summary": result.summary(),
        "warnings": [*plan.warnings, *result.warnings],
        "settings": dict(plan.settings),
        "unmatched_rois": list(result.matching.unmatched),
    }


def _finding_rows(findings: Iterable[Any]) -> list[FindingRow]:
    """(check id, severity, message, file) of integrity findings."""
    rows: list[FindingRow] = []
    for f in findings:
        severity = getattr(f, "severity", "")
        rows.append({"check_id": str(getattr(f, "check", "")),
                     "severity": str(getattr(severity, "value", severity)),
                     "message": str(getattr(f, "message", "")), "file": getattr(f, "file", None)})
    return rows
