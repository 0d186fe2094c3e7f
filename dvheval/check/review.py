"""Integrity review of a plan's files without computing DVHs (``--integrity-only``)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from dvheval.check.gate import structure_findings
from dvheval.check.prescriptions import resolve_fractions, resolve_prescriptions
from dvheval.engine.results import PlanDVHs, StructureResult
from dvheval.integrity import Finding, regrade
from dvheval.protocol import (
    Protocol,
    match_structures,
)


def review_integrity(
    paths: Collection[str | Path],
    protocol: Protocol,
    *,
    rx_overrides: dict[str, float] | None = None,
    fractions: int | None = None,
    strict: Collection[str] = (),
) -> list[Finding]:
    """The integrity stage alone: headers and contours, no dose grid and no DVH.

    Runs every check of :data:`dvheval.integrity.CHECKS` that does not need
    the dose values: identity and references between the files, approval,
    dose type, fractions and prescriptions against the protocol, isocenter
    position, and whether the structures the protocol needs exist and have
    usable contours. Fast enough to run on every plan before the DVHs.

    Returns
    -------
    list of Finding
        Findings of severity ``close`` close the gate.

    Raises
    ------
    InputError
        When the files cannot be read.
    """
    from dvheval.dicom import find_inputs, read_structure_set
    from dvheval.engine.compute import read_headers
    from dvheval.engine.results import DoseInfo
    from dvheval.engine.structure_dvh import group_planes
    from dvheval.integrity import header_findings, location_findings, roi_findings

    inputs = find_inputs(paths)
    plan_info, headers = read_headers(inputs)
    findings = header_findings(*headers)
    sset = read_structure_set(inputs.structure_set.path)
    findings += roi_findings(sset.rois)
    thickness = sset.slice_thickness() or 3.0
    isocenters = headers[2].isocenters_mm if headers[2] is not None else ()
    findings += location_findings(sset.rois, isocenters, None, None, thickness)
    structures = []
    for roi in sset.rois:
        sr = StructureResult(roi.name, roi.number, roi.interpreted_type, "ok", None, None)
        if not roi.contours:
            sr.status = "empty"
        else:
            planes, warns, usable, defects = group_planes(roi)
            sr.warnings, sr.defects = warns, defects
            sr.status = "error" if not usable else ("ok" if planes else "no_dvh")
        structures.append(sr)
    dose = DoseInfo([str(d.path) for d in inputs.doses], "", "", [], "", (0, 0, 0),
                    (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    plan = PlanDVHs(sset.patient_id, sset.patient_name, dose, str(sset.path), sset.label,
                    sset.frame_of_reference_uid, plan_info, structures)
    warnings: list[str] = []
    resolve_fractions(plan, protocol, fractions, warnings, findings)
    resolve_prescriptions(plan, protocol, rx_overrides, warnings, findings)
    match = match_structures(protocol, [s.name for s in structures])
    needed = {c.structure for c in protocol.constraints()
              if not c.is_report and c.alternative is None}
    required = {s.name for s in protocol.structures if s.required}
    findings += structure_findings(plan, match, needed & set(match.matched), required)
    return regrade(findings, strict)
