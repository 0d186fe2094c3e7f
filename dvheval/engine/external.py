"""The external contour of a computed plan, and the quality indices that read it.

:func:`dvheval.engine.compute.compute_dvhs` computes every ROI's DVH first;
then :func:`resolve_external` picks the external contour among them (see
:func:`dvheval.engine.quality.find_external`) and :func:`fill_indices`
evaluates the metrics that need it (PaddickCI, RTOGCI, GI, IsodoseVolume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dvheval.engine.metrics import NotComputable, evaluate_metric, parse_metric
from dvheval.engine.quality import External, name_key
from dvheval.engine.results import StructureResult
from dvheval.errors import MetricError

_UNUSABLE = {
    "outside": "lies outside the dose grid",
    "empty": "has no contours",
    "no_dvh": "has only point or open contours",
    "error": "has unusable contours",
}


def external_of(name: str | None, problem: str | None, sr: StructureResult | None,
                boundary_max_gy: float) -> External:
    """The :class:`External` of a found ROI (``sr`` its computed result).

    Parameters
    ----------
    name, problem : str or None
        From :func:`~dvheval.engine.quality.find_external`.
    sr : StructureResult or None
        The external's result; None when it was not computed.
    boundary_max_gy : float
        Highest dose on the outer faces of the dose grid.
    """
    if problem is not None or name is None:
        return External(None, None, 0.0, boundary_max_gy, problem or "no external contour")
    if sr is None:
        return External(name, None, 0.0, boundary_max_gy,
                        f"the external {name!r} was not computed")
    if sr.status in _UNUSABLE or sr.dvh is None:
        why = _UNUSABLE.get(sr.status, "has no DVH")
        return External(name, None, 0.0, boundary_max_gy, f"the external {name!r} {why}")
    if sr.defects:
        return External(name, sr.dvh, 0.0, boundary_max_gy,
                        f"the external {name!r} has contours that change its volume: "
                        + "; ".join(sr.defects))
    coverage = 1.0 if sr.status == "ok" else float(sr.coverage or 0.0)
    return External(name, sr.dvh, coverage, boundary_max_gy)


def fill_indices(results: Sequence[StructureResult], external: External,
                 prescription_gy: float | None, fractions: int | None,
                 levels: Mapping[str, float] | None = None) -> None:
    """Evaluate, in place, each result's metrics that read the external contour.

    Parameters
    ----------
    results : sequence of StructureResult
        The computed structures; metrics of one without a DVH keep the
        reason they already have.
    external : External
    prescription_gy : float or None
        The prescription every structure's default level is (``--rx`` or the
        RTPLAN's single prescription).
    fractions : int or None
    levels : mapping, optional
        Without ``prescription_gy``: the prescription dose of each level by
        name (the RTPLAN's); a structure named like a level (ignoring case,
        spaces, ``_`` and ``-``) takes its dose as the default level.
    """
    by_key = {name_key(k): v for k, v in (levels or {}).items()}
    for res in results:
        rx = prescription_gy if prescription_gy is not None else by_key.get(name_key(res.name))
        for name in list(res.metrics):
            try:
                metric = parse_metric(name)
            except MetricError:
                continue
            if not metric.needs_external or res.dvh is None or name not in res.metric_errors:
                continue
            if res.status not in ("ok", "partial"):
                continue
            try:
                res.metrics[name] = evaluate_metric(metric, res.dvh, rx, fractions,
                                                    external)
                del res.metric_errors[name]
            except NotComputable as exc:
                res.metric_errors[name] = str(exc)
