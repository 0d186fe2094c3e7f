"""DVH calculation for a plan: from input paths to :class:`PlanDVHs`.

This is the library entry point::

    from dvheval import compute_dvhs
    plan = compute_dvhs(["sample_dicom/sample_plan"], metrics=["D98%", "V20Gy[%]"])
    cord = plan.structure("SpinalCord")
    print(cord.metrics["D98%"], cord.dvh.max_gy)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import shapely

from dvheval.dicom import (
    ROI,
    DoseGrid,
    InputSet,
    StructureSet,
    find_inputs,
    load_dose,
    read_plan,
    read_structure_set,
    sha256_of,
)
from dvheval.dicom.identity import Header, read_identity
from dvheval.engine.derive import derivations_from, derive_structures
from dvheval.engine.dvh import DVH
from dvheval.engine.external import external_of, fill_indices
from dvheval.engine.metrics import (
    DEFAULT_METRICS,
    DEFAULT_TARGET_METRICS,
    Metric,
    NotComputable,
    evaluate_metric,
    parse_metric,
)
from dvheval.engine.quality import External, boundary_max, find_external
from dvheval.engine.results import PlanDVHs, PlanInfo, StructureResult
from dvheval.engine.sampling import sample_structure
from dvheval.errors import InputError
from dvheval.integrity import (
    TARGET_TYPES,
    Finding,
    finding,
    header_findings,
    location_findings,
    roi_findings,
)

#: Tolerance (mm) for the points of one contour to count as one axial plane.
PLANE_TOLERANCE_MM = 0.05


def compute_dvhs(
    paths: str | Path | Iterable[str | Path],
    structures: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    end_caps: bool = True,
    prescription_gy: float | None = None,
    fractions: int | None = None,
    derive: Mapping[str, str] | Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> PlanDVHs:
    """Compute DVHs and metrics for every structure of a plan.

    Parameters
    ----------
    paths : str, Path or iterable of them
        Files and/or folders holding one RTSTRUCT, one or more RTDOSE and
        optionally one RTPLAN.
    structures : str or sequence of str, optional
        ROI names to compute (exact names, else case-insensitive); default
        all.
    metrics : str or sequence of str, optional
        Metric names (see :mod:`dvheval.engine.metrics`); default
        :data:`~dvheval.engine.metrics.DEFAULT_METRICS`, plus gEUD(a=-10) for
        targets.
    end_caps : bool
        Extend each structure half a slice beyond its first and last contour.
    prescription_gy : float, optional
        Prescription for relative metrics and RELATIVE dose files; default
        the RTPLAN's prescription when it has exactly one dose level.
    fractions : int, optional
        Number of fractions for EQD2/BED metrics; default from the RTPLAN.
    derive : mapping or sequence of str, optional
        Derived structures to add to the structure set before the DVHs are
        computed: ``{"Kidneys": "Kidney_L | Kidney_R"}`` or
        ``["PTV30_eval=PTV30 - (PTV40 + 2mm)"]`` (see :mod:`dvheval.engine.derive`).
        They get ROI numbers above the existing ones and are computed like
        any other ROI; a derived structure with a missing or empty operand is
        an empty ROI with a warning. ``structures`` may name them.
    progress : callable, optional
        Called as ``progress(done, total, name)`` before each structure is
        computed (``name`` the ROI about to be computed) and once at the end
        with ``done == total``; for progress displays.

    Returns
    -------
    PlanDVHs

    Raises
    ------
    InputError
        When the inputs cannot be used (missing/ambiguous objects, unreadable
        files, Frame of Reference mismatch, oblique grid, ...).
    MetricError
        When a metric name is malformed.
    DerivationError
        When a derived-structure expression does not parse, or its name is
        already an ROI name.
    """
    paths = _checked_paths(paths)
    if paths and not isinstance(paths[0], str | os.PathLike):
        return _compute_from_datasets(paths, structures, metrics, end_caps, prescription_gy,
                                      fractions, derive, progress)
    metrics = [metrics] if isinstance(metrics, str) else metrics
    structures = [structures] if isinstance(structures, str) else structures
    requested = [parse_metric(m) for m in metrics] if metrics else None
    derivations = derivations_from(derive)
    inputs = find_inputs(paths)
    headers = _read_headers(inputs)
    findings = header_findings(*headers)
    plan = read_plan(inputs.plan.path) if inputs.plan else None
    rx = prescription_gy
    if rx is None and plan and len(plan.prescriptions) == 1:
        rx = plan.prescriptions[0].dose_gy
    nfx = fractions if fractions is not None else (plan.fractions if plan else None)
    dose, sset = _read_dose_and_structures(inputs, plan, findings, prescription_gy)

    warnings = [f"{p}: {why}" for p, why in inputs.ignored if "not an RT object" not in why]
    thickness = _slice_thickness(sset, dose, warnings)
    derived_notes: dict[str, list[str]] = {}
    if derivations:
        built = derive_structures(sset, derivations, thickness, end_caps)
        sset, derived_notes = built.structure_set, built.warnings
    rois = _select(sset, structures)
    findings += roi_findings(sset.rois)
    isocenters = headers[2].isocenters_mm if headers[2] is not None else ()
    findings += location_findings(sset.rois, isocenters, dose.info.max_gy,
                                  dose.info.max_position_mm, thickness)
    results = _structure_results(rois, dose, thickness, end_caps, requested, rx, nfx, progress)
    external = _external(sset, results, dose, thickness, end_caps, requested)
    levels = {p.name: p.dose_gy for p in plan.prescriptions} if plan else {}
    fill_indices(results, external, rx, nfx, levels)
    if any(m.needs_external for m in requested or ()):
        warnings.append(external.describe())
    for res in results:
        res.warnings[:0] = derived_notes.get(res.name, [])
    findings += [finding("contour-defect", f"ROI {r.name!r}: " + "; ".join(r.defects),
                         str(sset.path)) for r in results if r.defects]
    return PlanDVHs(
        patient_id=sset.patient_id,
        patient_name=sset.patient_name,
        dose=dose.info,
        structure_set_file=str(sset.path),
        structure_set_label=sset.label,
        frame_of_reference_uid=sset.frame_of_reference_uid,
        plan=plan,
        structures=results,
        settings={
            "end_caps": end_caps,
            "slice_thickness_mm": thickness,
            "prescription_gy": rx,
            "fractions": nfx,
        },
        warnings=warnings,
        findings=findings,
        external=external,
    )


def _external(sset: StructureSet, results: list[StructureResult], dose: DoseGrid,
              thickness: float, end_caps: bool, requested: list[Metric] | None) -> External:
    """The external contour for the quality indices (computed here if it was not selected)."""
    name, problem = find_external([(r.name, r.interpreted_type) for r in sset.rois])
    sr = next((r for r in results if name is not None and r.name == name), None)
    if sr is None and name is not None and any(m.needs_external for m in requested or ()):
        roi = next(r for r in sset.rois if r.name == name)
        sr = _structure_result(roi, dose, thickness, end_caps, [], None, None)
    return external_of(name, problem, sr, boundary_max(dose.dose_gy))


def _read_dose_and_structures(
    inputs: InputSet, plan: PlanInfo | None, findings: list[Finding],
    prescription_gy: float | None,
) -> tuple[DoseGrid, StructureSet]:
    """The dose (summed or resampled as needed) and the structure set, with their hashes."""
    # a dose of another plan is an integrity finding (the gate closes); its beams
    # are then not checked against this RTPLAN
    foreign = any(f.check == "dose-plan-reference" for f in findings)
    dose = load_dose([d.path for d in inputs.doses], relative_reference_gy=prescription_gy,
                     plan=None if foreign else plan)
    sset = read_structure_set(inputs.structure_set.path)
    _check_frame_of_reference(sset, dose)
    if plan:
        dose.info.sha256[plan.file] = sha256_of(plan.file)
    dose.info.sha256[str(sset.path)] = sha256_of(sset.path)
    return dose, sset


def _checked_paths(paths: object) -> list[Any]:
    """``paths`` as a list of paths, or of pydicom Datasets; anything else raises TypeError."""
    from pydicom import Dataset

    if isinstance(paths, str | os.PathLike):
        return [paths]
    if isinstance(paths, Dataset):
        raise TypeError("compute_dvhs: give a list of Datasets (RTSTRUCT, RTDOSE...), "
                        "not a single one")
    if not isinstance(paths, Iterable):
        raise TypeError("compute_dvhs: paths must be a file or folder (str or Path), a list "
                        f"of them, or a list of pydicom Datasets; got {type(paths).__name__}")
    items = list(paths)
    kinds = {isinstance(p, Dataset) for p in items}
    bad = [p for p in items if not isinstance(p, str | os.PathLike | Dataset)]
    if bad or len(kinds) > 1:
        what = type(bad[0]).__name__ if bad else "a mix of paths and Datasets"
        raise TypeError("compute_dvhs: paths must be files or folders (str or Path), or "
                        f"pydicom Datasets, not {what}")
    return items


def _compute_from_datasets(datasets: Iterable[Any], *args: Any) -> PlanDVHs:
    """:func:`compute_dvhs` on in-memory Datasets: written to a private folder, then read.

    The caller's Datasets are not changed (copies are written).
    """
    import copy
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dvheval-") as tmp:
        for i, ds in enumerate(datasets):
            mine = copy.deepcopy(ds)
            mine.save_as(Path(tmp) / f"dataset{i}.dcm", enforce_file_format=False)
        return compute_dvhs(Path(tmp), *args)


def _structure_results(
    rois: Sequence[ROI], dose: DoseGrid, thickness: float, end_caps: bool,
    requested: list[Metric] | None, rx: float | None, nfx: int | None,
    progress: Callable[[int, int, str], None] | None,
) -> list[StructureResult]:
    """The DVH and metrics of each ROI, reporting progress before each one."""
    results = []
    for i, roi in enumerate(rois):
        if progress is not None:
            progress(i, len(rois), roi.name)
        results.append(_structure_result(roi, dose, thickness, end_caps,
                                         _metrics_for(roi, requested), rx, nfx))
    if progress is not None:
        progress(len(rois), len(rois), "")
    return results


def _slice_thickness(sset: StructureSet, dose: DoseGrid, warnings: list[str]) -> float:
    """Plane spacing of the contours; the dose grid's slice spacing (with a warning) if unknown."""
    thickness = sset.slice_thickness()
    if thickness is None:
        thickness = float(dose.grid.spacing[0])
        warnings.append(
            f"slice thickness could not be derived from the contours; using the dose grid's "
            f"{thickness:g} mm"
        )
    return thickness


def _metrics_for(roi: ROI, requested: list[Metric] | None) -> list[Metric]:
    """The metrics asked for, else the defaults (plus gEUD for targets)."""
    if requested is not None:
        return requested
    extra = DEFAULT_TARGET_METRICS if roi.interpreted_type.upper() in TARGET_TYPES else ()
    return [parse_metric(m) for m in (*DEFAULT_METRICS, *extra)]


def _read_headers(inputs: InputSet) -> tuple[Header, list[Header], Header | None]:
    sset = read_identity(str(inputs.structure_set.path), "RTSTRUCT")
    doses = [read_identity(str(d.path), "RTDOSE") for d in inputs.doses]
    plan = read_identity(str(inputs.plan.path), "RTPLAN") if inputs.plan else None
    return sset, doses, plan


def _check_frame_of_reference(sset: StructureSet, dose: DoseGrid) -> None:
    fors = {r.frame_of_reference_uid for r in sset.rois if r.frame_of_reference_uid}
    if sset.frame_of_reference_uid:
        fors.add(sset.frame_of_reference_uid)
    fors = {f.strip() for f in fors if f.strip()}
    if not fors:
        raise InputError(
            "the structure set names no Frame of Reference (every ROI's "
            "ReferencedFrameOfReferenceUID is empty): its contours cannot be tied to the "
            "coordinate system of the dose",
            sset.path,
            "ReferencedFrameOfReferenceUID",
        )
    if dose.frame_of_reference_uid.strip() not in fors:
        raise InputError(
            f"Frame of Reference {', '.join(sorted(fors))} of the structure set differs from "
            f"{dose.frame_of_reference_uid} of the dose ({', '.join(dose.info.files)}); "
            "contours and dose are not in the same coordinate system",
            sset.path,
            "FrameOfReferenceUID",
        )


def _select(sset: StructureSet, names: Sequence[str] | None) -> list[ROI]:
    if not names:
        return list(sset.rois)
    chosen = []
    for name in names:
        exact = [r for r in sset.rois if r.name == name]
        loose = [r for r in sset.rois if r.name.strip().lower() == name.strip().lower()]
        hit = exact or loose
        if not hit:
            avail = ", ".join(r.name for r in sset.rois)
            raise InputError(f"no structure named {name!r}; the structure set has: {avail}",
                             sset.path, "ROIName")
        if len(hit) > 1:
            raise InputError(f"{len(hit)} structures are named {name!r}; names must be unique",
                             sset.path, "ROIName")
        if hit[0] not in chosen:
            chosen.append(hit[0])
    return chosen


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
        zr = float(p[:, 2].max() - p[:, 2].min())
        if zr > PLANE_TOLERANCE_MM:
            warnings.append(f"a contour is not in an axial plane (z from {p[:, 2].min():g} to "
                            f"{p[:, 2].max():g} mm); only axial contours are supported")
            usable = False
            continue
        z = float(np.round(p[:, 2].mean() / PLANE_TOLERANCE_MM) * PLANE_TOLERANCE_MM)
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


def _structure_result(roi: ROI, dose: DoseGrid, thickness: float, end_caps: bool,
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
