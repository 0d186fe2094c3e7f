"""The external contour of a computed plan, and the quality indices that read it.

:func:`dvheval.engine.compute.compute_dvhs` computes every ROI's DVH first;
then :func:`resolve_external` picks the external contour among them (see
:func:`dvheval.engine.quality.find_external`) and :func:`fill_indices`
evaluates the metrics that need it (PaddickCI, RTOGCI, GI, IsodoseVolume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from dvheval.engine.geometry import plane_regions
from dvheval.engine.metrics import NotComputable, evaluate_metric, parse_metric
from dvheval.engine.quality import External, name_key
from dvheval.engine.results import StructureResult
from dvheval.engine.structure_dvh import PLANE_TOLERANCE_MM
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


# ------------------------------------------------------- organs outside the body
#: Share of an organ's contoured area outside the external contour above which
#: the organ's contours are a defect (a contour moved off the patient).
MAX_OUTSIDE_FRACTION = 0.05
#: Interpreted types whose contours must lie inside the external contour
#: (targets only warn: an uncropped PTV may reach into the air at the skin).
ORGAN_TYPES = frozenset({"ORGAN"})
_TARGETS = frozenset({"PTV", "CTV", "GTV"})


def plane_regions_of(contours: Sequence[Any]) -> tuple[np.ndarray, list[shapely.Geometry]]:
    """The z of each axial plane of closed contours and its even-odd region."""
    by_z: dict[float, list[np.ndarray]] = {}
    for c in contours:
        p = np.asarray(c.points, dtype=float)
        if not c.geometric_type.startswith("CLOSED") or len(p) < 3:
            continue
        if float(np.ptp(p[:, 2])) > PLANE_TOLERANCE_MM:
            continue
        z = float(np.round(p[:, 2].mean() / PLANE_TOLERANCE_MM) * PLANE_TOLERANCE_MM)
        by_z.setdefault(z, []).append(p[:, :2])
    zs = sorted(by_z)
    return np.array(zs, dtype=float), plane_regions([by_z[z] for z in zs])


def _nearest(sorted_z: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Index of the value of ``sorted_z`` nearest to each ``z``."""
    k = np.clip(np.searchsorted(sorted_z, z), 1, max(len(sorted_z) - 1, 1))
    if len(sorted_z) == 1:
        return np.zeros(len(z), dtype=np.intp)
    below = np.abs(sorted_z[k - 1] - z) <= np.abs(sorted_z[k] - z)
    return np.where(below, k - 1, k)


def _vertices_inside(contours: Sequence[Any], body_z: np.ndarray,
                     body: np.ndarray, thickness: float) -> bool:
    """True when every vertex of the closed contours lies inside the body plane nearest to it
    (then the contours lie inside, up to an edge cutting a concavity: the fast path)."""
    closed = [np.asarray(c.points, dtype=float) for c in contours
              if c.geometric_type.startswith("CLOSED") and len(c.points)]
    if not closed or not len(body_z):
        return False
    pts = np.concatenate(closed)
    k = _nearest(body_z, pts[:, 2])
    if np.any(np.abs(body_z[k] - pts[:, 2]) > 0.5 * thickness + PLANE_TOLERANCE_MM):
        return False
    return bool(shapely.contains_xy(body[k], pts[:, 0], pts[:, 1]).all())


def outside_fraction(contours: Sequence[Any], body_z: np.ndarray,
                     body: np.ndarray, thickness: float) -> float | None:
    """Share of a structure's contoured area (summed over its planes) outside the body.

    Each plane is compared with the external contour's plane nearest in z
    (within half a slice); a plane with none there lies wholly outside.
    ``body_z`` and ``body`` are the external's planes (sorted z) and their
    regions (an object array, prepared by :func:`shapely.prepare` for
    speed). None when the structure has no area.
    """
    if _vertices_inside(contours, body_z, body, thickness):
        return 0.0
    zs, regions = plane_regions_of(contours)
    if not regions:
        return None
    geoms = np.array(regions, dtype=object)
    area = shapely.area(geoms)
    total = float(area.sum())
    if total <= 0:
        return None
    outside = area.copy()
    if len(body_z):
        k = _nearest(body_z, zs)
        near = np.abs(body_z[k] - zs) <= 0.5 * thickness + PLANE_TOLERANCE_MM
        outer = body[k]
        inside = near & shapely.covers(outer, geoms)
        outside[inside] = 0.0
        partly = near & ~inside
        if partly.any():
            outside[partly] = shapely.area(shapely.difference(geoms[partly], outer[partly]))
    return float(outside.sum()) / total


@dataclass(frozen=True)
class BodyOutline:
    """The external contour's axial planes, prepared for the outside-body check.

    Attributes
    ----------
    name : str
        The external ROI's name.
    number : int
        Its ROI number.
    z : ndarray
        Its planes' z (sorted).
    regions : ndarray of shapely geometries
        Each plane's even-odd region, prepared (:func:`shapely.prepare`).
    """

    name: str
    number: int
    z: np.ndarray
    regions: np.ndarray


def body_outline(body_roi: Any | None) -> BodyOutline | None:
    """The prepared planes of the external ROI; None without one or without axial area."""
    if body_roi is None:
        return None
    body_z, regions = plane_regions_of(body_roi.contours)
    body = np.array(regions, dtype=object)
    if not len(body_z) or not float(shapely.area(body).sum()) > 0:
        return None  # no axial area to compare with (the external's own checks report it)
    shapely.prepare(body)
    return BodyOutline(body_roi.name, body_roi.number, body_z, body)


def outside_notes(roi: Any, body: BodyOutline | None, thickness: float
                  ) -> tuple[list[str], list[str]] | None:
    """Warnings and defects of an organ (or target) contoured outside the external contour.

    An organ with more than :data:`MAX_OUTSIDE_FRACTION` of its contoured
    area outside the external contour gets a defect (its constraints cannot
    be trusted), a target a warning. None when ``roi`` is not concerned
    (another type, the external itself, within the limit).
    """
    kind = roi.interpreted_type.strip().upper()
    if (body is None or roi.number == body.number or kind not in ORGAN_TYPES | _TARGETS
            or not roi.contours):
        return None
    share = outside_fraction(roi.contours, body.z, body.regions, thickness)
    if share is None or share <= MAX_OUTSIDE_FRACTION:
        return None
    text = (f"{100 * share:.0f} % of its contoured area lies outside the external contour "
            f"{body.name!r}")
    notes: tuple[list[str], list[str]] = ([], [])
    (notes[0] if kind in _TARGETS else notes[1]).append(text)
    return notes

