"""DVH calculation for a plan: from input paths to :class:`PlanDVHs`.

This is the library entry point::

    from dvheval import compute_dvhs
    plan = compute_dvhs(["sample_dicom/sample_plan"], metrics=["D98%", "V20Gy[%]"])
    cord = plan.structure("SpinalCord")
    print(cord.metrics["D98%"], cord.dvh.max_gy)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dvheval.dicom import (
    ROI,
    DoseGrid,
    InputSet,
    StructureSet,
    find_inputs,
    load_dose,
    read_structure_set,
)
from dvheval.dicom.identity import Header, read_identity
from dvheval.dicom.plan import read_plan_file
from dvheval.engine.external import body_outline, external_of, fill_indices, outside_notes
from dvheval.engine.metrics import Metric, parse_metric
from dvheval.engine.quality import External, boundary_max, find_external
from dvheval.engine.results import PlanDVHs, PlanInfo, StructureResult
from dvheval.engine.structure_dvh import structure_result, structure_results
from dvheval.errors import InputError
from dvheval.integrity import (
    Finding,
    finding,
    header_findings,
    location_findings,
    roi_findings,
)

if TYPE_CHECKING:
    from dvheval.engine.combine import Course


def compute_dvhs(
    paths: str | Path | Iterable[str | Path] = (),
    structures: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    end_caps: bool = True,
    prescription_gy: float | None = None,
    fractions: int | None = None,
    derive: Mapping[str, str] | Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    sum_plans: bool = False,
    courses: Sequence[Course | str | Path] | None = None,
    alpha_beta: float | None = None,
    dose_model: str = "EQD2",
    workers: int = 1,
) -> PlanDVHs:
    """Compute DVHs and metrics for every structure of a plan.

    Parameters
    ----------
    paths : str, Path or iterable of them
        Files and/or folders holding one RTSTRUCT, one or more RTDOSE and
        optionally one RTPLAN (several with ``sum_plans``).
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
    sum_plans : bool
        Several RTPLANs with their doses among ``paths`` are summed (physical
        dose, on the first plan's grid; see :mod:`dvheval.engine.combine`).
        Without it several RTPLANs are an error listing them.
    courses : sequence of Course or str, optional
        Treatment courses (``"PATH"`` or ``"PATH:RECOVERY"``, or
        :class:`~dvheval.engine.combine.Course`), one plan each, instead of
        ``paths``: the DVHs are of their cumulative EQD2 (or BED) at
        ``alpha_beta``, each course at its own fraction count.
    alpha_beta : float, optional
        alpha/beta (Gy) of the cumulative dose of ``courses``; default
        :data:`~dvheval.engine.combine.DEFAULT_ALPHA_BETA`.
    dose_model : str
        ``"EQD2"`` or ``"BED"``: the quantity of the cumulative dose of ``courses``.
    workers : int
        Processes to share the structures among (this one included): above
        1, on Linux and while no other thread runs, forked copies of this
        process compute some of them (:mod:`dvheval.engine.forked`; the
        command line uses :func:`~dvheval.engine.forked.available_workers`).
        The results do not depend on it.

    Returns
    -------
    PlanDVHs

    Raises
    ------
    InputError
        When the inputs cannot be used (missing/ambiguous objects, unreadable
        files, Frame of Reference mismatch, oblique grid, several plans
        without ``sum_plans``, ...).
    MetricError
        When a metric name is malformed.
    DerivationError
        When a derived-structure expression does not parse, or its name is
        already an ROI name.
    """
    if courses:
        from dvheval.engine.courses import course_call

        return course_call(_checked_paths(paths), courses, structures, metrics, end_caps,
                           prescription_gy, fractions, derive, progress, alpha_beta, dose_model)
    paths = _checked_paths(paths)
    if paths and not isinstance(paths[0], str | os.PathLike):
        return _compute_from_datasets(paths, structures, metrics, end_caps, prescription_gy,
                                      fractions, derive, progress, sum_plans=sum_plans)
    for m in [metrics] if isinstance(metrics, str) else metrics or []:
        parse_metric(m)  # a malformed name is refused before any file is read
    _derivations(derive)  # a malformed expression is refused before any file is read
    inputs = find_inputs(paths, several_plans=sum_plans)
    if sum_plans:
        _check_sum_inputs(inputs)
    repeated = _repeated_plans(inputs) if sum_plans else []
    if len(inputs.plans) > 1 or repeated:
        from dvheval.engine.combine import load_sum  # (plan sums only: not imported otherwise)

        combined = load_sum(inputs, prescription_gy)
        if fractions is not None and combined.no_fraction_models:
            raise InputError(f"--fractions {fractions}: {combined.no_fraction_models}")
        sset = read_structures(inputs.structure_set.path, combined.dose, combined.plan)
        loaded = Loaded(combined.dose, sset, combined.plan, combined.findings,
                        combined.isocenters, combined.no_fraction_models)
    else:
        plan, headers = read_headers(inputs)
        findings = header_findings(*headers)
        dose, sset = _read_dose_and_structures(inputs, plan, findings, prescription_gy)
        isocenters = headers[2].isocenters_mm if headers[2] is not None else ()
        loaded = Loaded(dose, sset, plan, findings, isocenters)
    rx = prescription_gy
    if rx is None and loaded.plan and len(loaded.plan.prescriptions) == 1:
        rx = loaded.plan.prescriptions[0].dose_gy
    nfx = fractions if fractions is not None else (loaded.plan.fractions if loaded.plan else None)
    warnings = [f"{p}: {why}" for p, why in inputs.ignored if "not an RT object" not in why]
    warnings += repeated
    return compute_on(loaded, Request(structures, metrics, end_caps, rx, nfx, derive,
                                      progress, workers), warnings)


def _check_sum_inputs(inputs: InputSet) -> None:
    """A plan sum needs two or more plans (one plan given twice counts twice)."""
    again = [c for c in inputs.copies if c.kind == "RTPLAN"]
    if len(inputs.plans) + len(again) < 2:
        found = ", ".join(str(f.path) for f in inputs.plans) or "none"
        raise InputError(f"--sum: it needs two or more RTPLANs, found: {found}")


def _repeated_plans(inputs: InputSet) -> list[str]:
    """Warnings naming each RTPLAN given more than once to a sum (it is added as often)."""
    again = Counter(c.sop_instance_uid for c in inputs.copies if c.kind == "RTPLAN")
    return [f"{f.path}: this RTPLAN is given {again[f.sop_instance_uid] + 1} times, so its "
            f"dose is added {again[f.sop_instance_uid] + 1} times"
            for f in inputs.plans if again[f.sop_instance_uid]]


@dataclass(frozen=True)
class Loaded:
    """The dose, structure set and plan of one evaluation, with their integrity findings."""

    dose: DoseGrid
    sset: StructureSet
    plan: PlanInfo | None
    findings: list[Finding]
    isocenters: tuple[tuple[float, float, float], ...]
    #: Why EQD2/BED metrics cannot be computed on this dose (None when they can).
    no_fraction_models: str | None = None


@dataclass(frozen=True)
class Request:
    """What the caller asked to compute."""

    structures: str | Sequence[str] | None
    metrics: str | Sequence[str] | None
    end_caps: bool
    rx: float | None
    nfx: int | None
    derive: Mapping[str, str] | Sequence[str] | None
    progress: Callable[[int, int, str], None] | None
    workers: int = 1


def compute_on(loaded: Loaded, req: Request, warnings: list[str]) -> PlanDVHs:
    """The DVHs and metrics of the requested structures on a loaded dose."""
    metrics = [req.metrics] if isinstance(req.metrics, str) else req.metrics
    structures = [req.structures] if isinstance(req.structures, str) else req.structures
    requested = [parse_metric(m) for m in metrics] if metrics else None
    derivations = _derivations(req.derive)
    dose, sset, findings = loaded.dose, loaded.sset, list(loaded.findings)
    warnings = list(warnings)
    thickness = _slice_thickness(sset, dose, warnings)
    derived_notes: dict[str, list[str]] = {}
    if derivations:
        from dvheval.engine.derive import derive_structures

        built = derive_structures(sset, derivations, thickness, req.end_caps)
        sset, derived_notes = built.structure_set, built.warnings
    rois = _select(sset, structures)
    findings += roi_findings(sset.rois)
    findings += location_findings(sset.rois, loaded.isocenters, dose.info.max_gy,
                                  dose.info.max_position_mm, thickness)
    found = find_external([(r.name, r.interpreted_type) for r in sset.rois])
    body = body_outline(_external_roi(sset, *found))

    def note_outside(roi: ROI, res: StructureResult) -> None:
        """An organ (target) contoured outside the external contour: a defect (warning)."""
        if res.status not in ("ok", "partial"):
            return
        notes = outside_notes(roi, body, thickness)
        if notes is not None:
            res.warnings += notes[0] + notes[1]
            res.defects += notes[1]

    results = structure_results(rois, dose, thickness, req.end_caps, requested, req.rx,
                                 req.nfx, req.progress, req.workers, also=note_outside)
    external = _external(found, sset, results, dose, thickness, req.end_caps, requested)
    if dose.info.quantity == "physical":
        plan = loaded.plan
        levels = {p.name: p.dose_gy for p in plan.prescriptions} if plan else {}
        fill_indices(results, external, req.rx, req.nfx, levels)
    else:
        for res in results:
            _withhold(res, lambda m: m.needs_external or m.is_index,
                      "quality indices are defined on a physical dose; this dose is "
                      + dose.info.quantity)
    if any(m.needs_external for m in requested or ()):
        warnings.append(external.describe())
    for res in results:
        res.warnings[:0] = derived_notes.get(res.name, [])
        if loaded.no_fraction_models:
            _withhold(res, lambda m: m.model is not None, loaded.no_fraction_models)
    findings += [finding("contour-defect", f"ROI {r.name!r}: " + "; ".join(r.defects),
                         str(sset.path)) for r in results if r.defects]
    return PlanDVHs(
        patient_id=sset.patient_id,
        patient_name=sset.patient_name,
        dose=dose.info,
        structure_set_file=str(sset.path),
        structure_set_label=sset.label,
        frame_of_reference_uid=sset.frame_of_reference_uid,
        plan=loaded.plan,
        structures=results,
        settings={
            "end_caps": req.end_caps,
            "slice_thickness_mm": thickness,
            "prescription_gy": req.rx,
            "fractions": req.nfx,
        },
        warnings=warnings,
        findings=findings,
        external=external,
    )


def _derivations(derive: Mapping[str, str] | Sequence[str] | None) -> list[Any]:
    """The parsed derived-structure expressions (the algebra is imported only when given)."""
    if derive is None:
        return []
    from dvheval.engine.derive import derivations_from

    return derivations_from(derive)


def _withhold(res: StructureResult, which: Callable[[Metric], bool], reason: str) -> None:
    """The metrics ``which`` selects cannot be computed on this dose: null, with the reason."""
    for name in list(res.metrics):
        if which(parse_metric(name)):
            res.metrics[name] = None
            res.metric_errors[name] = reason


def read_structures(path: Path, dose: DoseGrid, plan: PlanInfo) -> StructureSet:
    """The structure set, in the dose's Frame of Reference; its and the plan's hashes noted."""
    sset = read_structure_set(path)
    _check_frame_of_reference(sset, dose)
    dose.info.sha256[str(sset.path)] = sset.sha256
    return sset


def _external_roi(sset: StructureSet, name: str | None, problem: str | None) -> ROI | None:
    """The external ROI :func:`~dvheval.engine.quality.find_external` found, if any."""
    if problem is not None or name is None:
        return None
    return next((r for r in sset.rois if r.name == name), None)


def _external(found: tuple[str | None, str | None], sset: StructureSet,
              results: list[StructureResult], dose: DoseGrid, thickness: float, end_caps: bool,
              requested: list[Metric] | None) -> External:
    """The external contour for the quality indices (computed here if it was not selected);
    ``found`` is what :func:`~dvheval.engine.quality.find_external` said."""
    name, problem = found
    sr = next((r for r in results if name is not None and r.name == name), None)
    if sr is None and name is not None and any(m.needs_external for m in requested or ()):
        roi = next(r for r in sset.rois if r.name == name)
        sr = structure_result(roi, dose, thickness, end_caps, [], None, None)
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
        dose.info.sha256[plan.file] = plan.sha256
    dose.info.sha256[str(sset.path)] = sset.sha256
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


def _compute_from_datasets(datasets: Iterable[Any], *args: Any, **kwargs: Any) -> PlanDVHs:
    """:func:`compute_dvhs` on in-memory Datasets: written to a private folder, then read.

    The caller's Datasets are not changed (copies are written).
    """
    import copy
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dvheval-") as tmp:
        for i, ds in enumerate(datasets):
            mine = copy.deepcopy(ds)
            mine.save_as(Path(tmp) / f"dataset{i}.dcm", enforce_file_format=False)
        return compute_dvhs(Path(tmp), *args, **kwargs)


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


def read_headers(inputs: InputSet
                 ) -> tuple[PlanInfo | None, tuple[Header, list[Header], Header | None]]:
    """The plan, and the identity headers of the structure set, the doses and the plan.

    The plan is read whole, once: its header and prescription come from the
    same bytes, which its SHA-256 is of.
    """
    sset = read_identity(str(inputs.structure_set.path), "RTSTRUCT")
    doses = [read_identity(str(d.path), "RTDOSE") for d in inputs.doses]
    plan, header = read_plan_file(inputs.plan.path) if inputs.plan else (None, None)
    return plan, (sset, doses, header)


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
    dose_for = dose.frame_of_reference_uid.strip()
    elsewhere = [r.name for r in sset.rois if r.contours
                 and r.frame_of_reference_uid.strip() not in ("", dose_for)]
    if elsewhere and dose_for in fors:
        raise InputError(
            f"ROI(s) {', '.join(repr(n) for n in elsewhere)} are contoured in another Frame of "
            f"Reference than the dose ({dose_for}); their contours are not in the dose's "
            "coordinate system",
            sset.path,
            "ReferencedFrameOfReferenceUID",
        )
    if dose_for not in fors:
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

