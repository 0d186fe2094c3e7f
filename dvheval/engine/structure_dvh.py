"""One ROI's DVH: its contour planes checked and cleaned, sampled, reduced to metrics.

:func:`structure_results` computes every ROI of a plan; :func:`group_planes` turns an ROI's contours
into axial planes, refusing or flagging defective ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import shapely

from dvheval.dicom import ROI, DoseGrid
from dvheval.engine.dvh import DVH
from dvheval.engine.forked import forked_map
from dvheval.engine.metrics import (
    DEFAULT_METRICS,
    DEFAULT_TARGET_METRICS,
    Metric,
    NotComputable,
    evaluate_metric,
    parse_metric,
)
from dvheval.engine.results import StructureResult
from dvheval.engine.sampling import sample_structure
from dvheval.integrity import TARGET_TYPES

#: Tolerance (mm) for the points of one contour to count as one axial plane.
PLANE_TOLERANCE_MM = 0.05


def structure_results(
    rois: Sequence[ROI], dose: DoseGrid, thickness: float, end_caps: bool,
    requested: list[Metric] | None, rx: float | None, nfx: int | None,
    progress: Callable[[int, int, str], None] | None, workers: int = 1,
    also: Callable[[ROI, StructureResult], None] | None = None,
) -> list[StructureResult]:
    """The DVH and metrics of each ROI, reporting progress as they finish.

    With ``workers`` above 1 the ROIs are shared with forked copies of this
    process (:func:`dvheval.engine.forked.forked_map`); the results are the
    same, in the same order. ``also`` is called with each ROI and its result
    where the result is computed (it may add to the result).
    """
    count = [0]

    def done(i: int) -> None:
        count[0] += 1
        if progress is not None and count[0] < len(rois):
            progress(count[0], len(rois), rois[count[0]].name)

    if progress is not None and rois:
        progress(0, len(rois), rois[0].name)
    pixel_mm2 = float(dose.grid.spacing[1] * dose.grid.spacing[2]) or 1.0

    def result(roi: ROI) -> StructureResult:
        res = structure_result(roi, dose, thickness, end_caps, _metrics_for(roi, requested),
                               rx, nfx)
        if also is not None:
            also(roi, res)
        return res

    results = forked_map(result, rois, [estimated_cost(roi, pixel_mm2) for roi in rois],
                         workers, done)
    if progress is not None:
        progress(len(rois), len(rois), "")
    return results


def estimated_cost(roi: ROI, pixel_mm2: float) -> float:
    """Rough time (ms) :func:`structure_result` takes on an ROI, to share ROIs evenly.

    Fitted on a 25-ROI plan: a fixed part, a part per contour, and one per
    dose pixel of the ROI's bounding box on each contour plane.
    """
    points = [c.points for c in roi.contours if len(c.points)]
    if not points:
        return 1.0
    every = np.concatenate(points)
    x, y = every[:, 0], every[:, 1]  # (a column at a time: numpy reduces an (N, 3) array
    # along its first axis slowly)
    planes = len({round(z, 2) for z in every[np.cumsum([len(p) for p in points]) - 1, 2].tolist()})
    box = (x.max() - x.min()) * (y.max() - y.min()) / pixel_mm2
    return 5.0 + 0.08 * len(points) + 1e-4 * planes * float(box)


def _metrics_for(roi: ROI, requested: list[Metric] | None) -> list[Metric]:
    """The metrics asked for, else the defaults (plus gEUD for targets)."""
    if requested is not None:
        return requested
    extra = DEFAULT_TARGET_METRICS if roi.interpreted_type.upper() in TARGET_TYPES else ()
    return [parse_metric(m) for m in (*DEFAULT_METRICS, *extra)]


def group_planes(
    roi: ROI,
) -> tuple[list[tuple[float, list[np.ndarray]]], list[str], bool, list[str]]:
    """Closed contours of an ROI grouped by axial plane.

    Contours that cannot stand for an area are dropped: fewer than 3
    points, zero area, or an exact or near-exact copy of another contour of
    the same plane (an export or merge artifact that the even-odd rule would
    otherwise turn into a hole). Each drop, and each self-intersecting
    contour, is a *defect*: it can change any value computed from the ROI.

    Returns
    -------
    planes : list of (z, [polygon (N, 2), ...]) sorted by z
    warnings : list of str
    usable : bool
        False when a closed contour is not axial (the ROI cannot be computed).
    defects : list of str
        The contour problems that can change a computed value.
    """
    warnings: list[str] = []
    defects: list[str] = []
    other: dict[str, int] = {}
    by_z: dict[float, list[np.ndarray]] = {}
    usable = True
    closed: list[np.ndarray] = []
    for c in roi.contours:
        if not c.geometric_type.startswith("CLOSED"):
            other[c.geometric_type or "untyped"] = other.get(c.geometric_type or "untyped", 0) + 1
            continue
        p = c.points
        if len(p) < 3:
            where = f" at z = {p[0, 2]:g} mm" if len(p) else ""
            defects.append(f"a closed contour with {len(p)} point(s){where} has no area and "
                           "was dropped")
            continue
        closed.append(p)
    for p, z_lo, z_hi, z in zip(closed, *_z_extents(closed), strict=True):
        if z_hi - z_lo > PLANE_TOLERANCE_MM:
            warnings.append(f"a contour is not in an axial plane (z from {z_lo:g} to "
                            f"{z_hi:g} mm); only axial contours are supported")
            usable = False
            continue
        by_z.setdefault(z, []).append(p[:, :2])
    planes = []
    flat = [p for _, polys in sorted(by_z.items()) for p in polys]
    areas, geoms, valid = _contour_checks(flat)
    i = 0
    for z, polys in sorted(by_z.items()):
        n = len(polys)
        kept = _clean_plane(z, polys, (areas[i:i + n], geoms[i:i + n], valid[i:i + n]),
                            defects, warnings)
        i += n
        if kept:
            planes.append((z, kept))
    for t, n in other.items():
        warnings.append(f"{n} {t} contour(s) have no volume and are not part of the DVH")
    return planes, warnings + defects, usable, defects


def _z_extents(contours: list[np.ndarray]) -> tuple[list[float], list[float], list[float]]:
    """Lowest and highest z of each contour, and its mean z rounded to ``PLANE_TOLERANCE_MM``.

    Computed for all contours at once (one numpy pass instead of a few
    calls per contour).
    """
    if not contours:
        return [], [], []
    counts = np.array([len(p) for p in contours])
    z = np.concatenate([p[:, 2] for p in contours])
    starts = np.cumsum(counts) - counts
    mean = np.add.reduceat(z, starts) / counts
    plane = np.round(mean / PLANE_TOLERANCE_MM) * PLANE_TOLERANCE_MM
    return (np.minimum.reduceat(z, starts).tolist(), np.maximum.reduceat(z, starts).tolist(),
            plane.tolist())


#: A contour whose area is below this (mm^2) encloses nothing.
MIN_CONTOUR_AREA_MM2 = 1e-3
#: Two contours of a plane whose symmetric difference is below this fraction
#: of their area are copies of each other.
DUPLICATE_TOLERANCE = 1e-3


#: A self-intersecting contour whose area changes by more than this fraction
#: when made valid is a defect; below it a warning.
SELF_INTERSECTION_TOLERANCE = 0.01


def _contour_checks(polys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area, polygon and validity of every contour, computed for all contours at once.

    Parameters
    ----------
    polys : list of (N, 2) arrays
        Closed contours of at least 3 points.

    Returns
    -------
    areas : ndarray of float
        Enclosed area (shoelace formula, absolute value).
    geoms : ndarray of shapely.Polygon
    valid : ndarray of bool
        Whether each polygon is valid (no self-intersection).
    """
    import shapely

    if not polys:
        return np.zeros(0), np.zeros(0, dtype=object), np.zeros(0, bool)
    counts = np.array([len(p) for p in polys])
    pts = np.concatenate(polys)
    starts = np.cumsum(counts) - counts
    nxt = np.arange(1, len(pts) + 1)
    nxt[starts + counts - 1] = starts
    x, y = pts[:, 0], pts[:, 1]
    cross = x * y[nxt] - y * x[nxt]
    areas = np.abs(0.5 * np.add.reduceat(cross, starts))
    rings = shapely.linearrings(pts, indices=np.repeat(np.arange(len(polys)), counts))
    geoms = shapely.polygons(rings)
    return areas, geoms, shapely.is_valid(geoms)


def _clean_plane(z: float, polys: list[np.ndarray],
                 checks: tuple[np.ndarray, np.ndarray, np.ndarray], defects: list[str],
                 warnings: list[str]) -> list[np.ndarray]:
    """Drop zero-area and duplicate contours of one plane; note self-intersections.

    ``checks`` holds the contours' areas, polygons and validity (see
    :func:`_contour_checks`).
    """
    import shapely

    areas, rings, valid = checks
    kept: list[int] = []
    for i, (poly, area) in enumerate(zip(rings, areas.tolist(), strict=True)):
        if area < MIN_CONTOUR_AREA_MM2:
            defects.append(f"a closed contour at z = {z:g} mm encloses no area "
                           f"({len(polys[i])} points) and was dropped")
            continue
        if not valid[i]:
            # a self-intersection that changes the enclosed area (a bow tie) changes the
            # structure; a tiny loop of a planning system's contour does not
            fixed = float(shapely.make_valid(poly).area)
            text = (f"a contour at z = {z:g} mm intersects itself "
                    f"({shapely.is_valid_reason(poly)})")
            if abs(fixed - area) > SELF_INTERSECTION_TOLERANCE * max(fixed, area):
                defects.append(f"{text}; its area is ambiguous ({area:.1f} or "
                               f"{fixed:.1f} mm^2)")
            else:
                warnings.append(text)
        copy = next((j for j in kept
                     if _same_contour(poly, area, bool(valid[i]), rings[j], float(areas[j]),
                                      bool(valid[j]))), None)
        if copy is not None:
            defects.append(f"a contour at z = {z:g} mm duplicates another contour of the same "
                           "plane and was dropped (not taken as a hole)")
            continue
        kept.append(i)
    return [polys[i] for i in kept]


def _same_contour(a: shapely.Polygon, area_a: float, valid_a: bool, b: shapely.Polygon,
                  area_b: float, valid_b: bool) -> bool:
    if abs(area_a - area_b) > DUPLICATE_TOLERANCE * max(area_a, area_b):
        return False
    if not valid_a or not valid_b:
        return bool(a.equals_exact(b, 1e-3)) or bool(a.normalize().equals_exact(
            b.normalize(), 1e-3))
    return float(a.symmetric_difference(b).area) <= DUPLICATE_TOLERANCE * max(area_a, area_b)


def structure_result(roi: ROI, dose: DoseGrid, thickness: float, end_caps: bool,
                      metrics: Sequence[Metric], rx: float | None, nfx: int | None
                      ) -> StructureResult:
    res = StructureResult(
        name=roi.name,
        number=roi.number,
        type=roi.interpreted_type,
        status="ok",
        volume_cc=None,
        coverage=None,
    )
    if not roi.contours:
        res.status = "empty"
        res.warnings.append("the ROI has no contours")
        return _fill_unavailable(res, metrics, "the ROI has no contours")
    planes, warns, usable, defects = group_planes(roi)
    res.warnings.extend(warns)
    res.defects.extend(defects)
    if not usable:
        res.status = "error"
        return _fill_unavailable(res, metrics, "contours unusable: " + "; ".join(warns))
    if not planes:
        res.status = "no_dvh"
        return _fill_unavailable(res, metrics, "no closed contours, so no volume")
    gap_warnings, gap_defects = plane_gaps([z for z, _ in planes], thickness,
                                           roi.interpreted_type.upper() in TARGET_TYPES)
    res.warnings.extend(gap_warnings)
    res.defects.extend(gap_defects)
    samples, swarn = sample_structure(planes, dose.dose_gy, dose.grid, thickness, end_caps,
                                      reduce=True)
    res.warnings.extend(swarn)
    res.volume_cc = samples.total_cc
    if samples.total_cc <= 0:
        res.status = "error"
        res.warnings.append("the contours enclose no volume")
        return _fill_unavailable(res, metrics, "the contours enclose no volume")
    dvh = samples.histogram if samples.histogram is not None else DVH.empty(samples.total_cc)
    res.dvh = dvh
    fully_covered = samples.n_covered == samples.n_samples
    res.coverage = 1.0 if fully_covered else dvh.coverage
    if dvh.is_empty:
        res.status = "outside"
        res.coverage = 0.0
        res.warnings.append("the structure lies entirely outside the dose grid")
        return _fill_unavailable(res, metrics, "the structure lies outside the dose grid")
    if not fully_covered:
        res.status = "partial"
        res.warnings.append(
            f"partly outside the dose grid: {_percent(dvh.coverage)} of the structure "
            f"({dvh.covered_cc:.3f} of {samples.total_cc:.3f} cc) is inside; metrics describe "
            "that part only"
        )
    for m in metrics:
        try:
            res.metrics[m.name] = evaluate_metric(m, dvh, rx, nfx)
        except NotComputable as exc:
            res.metrics[m.name] = None
            res.metric_errors[m.name] = str(exc)
    return res


def plane_gaps(z: Sequence[float], thickness: float, is_target: bool
               ) -> tuple[list[str], list[str]]:
    """Contour planes missing inside a structure's extent: warnings and defects.

    One missing plane is bridged (its neighbours' slabs meet halfway) and
    is a warning. A wider gap splits the structure into parts; that is how
    separate lesions of one target are drawn (sampling already warns of
    it), but in an organ it means contours are missing (e.g. a cord not
    drawn where the dose is highest), so there it is a defect.

    Examples
    --------
    >>> plane_gaps([0.0, 3.0, 9.0, 12.0], 3.0, False)[0]
    ['one contour plane missing between z = 3 and 9 mm, bridged by its neighbours']
    >>> plane_gaps([0.0, 3.0, 30.0], 3.0, False)[1]
    ['no contours between z = 3 and 30 mm (8 planes missing) inside the structure']
    >>> plane_gaps([0.0, 3.0, 30.0], 3.0, True)[1]
    []
    """
    warnings: list[str] = []
    defects: list[str] = []
    if thickness <= 0:
        return warnings, defects
    for a, b in zip(z[:-1], z[1:], strict=True):
        step = b - a
        if step <= 1.5 * thickness:
            continue
        if step <= 2.0 * thickness + 1e-6:
            warnings.append(f"one contour plane missing between z = {a:g} and {b:g} mm, "
                            "bridged by its neighbours")
            continue
        if not is_target:
            missing = int(round(step / thickness)) - 1
            defects.append(f"no contours between z = {a:g} and {b:g} mm ({missing} planes "
                           "missing) inside the structure")
    return warnings, defects


def _fill_unavailable(res: StructureResult, metrics: Sequence[Metric], reason: str
                      ) -> StructureResult:
    for m in metrics:
        res.metrics[m.name] = None
        res.metric_errors[m.name] = reason
    return res


def _percent(fraction: float) -> str:
    """A coverage fraction as text that never rounds a partial coverage up to 100 %."""
    pct = 100.0 * fraction
    text = f"{pct:.2f} %"
    if text.startswith("100.00") and fraction < 1.0:
        text = "> 99.99 %"
    return text
