"""Reading an RTPLAN: prescription, fractions and the beams each fraction group delivers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom

from dvheval.dicom.attributes import (
    dataset_from_bytes,
    floats,
    integer,
    read_file_bytes,
    sha256_while,
)
from dvheval.dicom.completeness import walk_encoded
from dvheval.dicom.identity import PLAN_ELEMENTS, Header, header_of, isocenters_of_events
from dvheval.dicom.info import PlanInfo, Prescription
from dvheval.errors import InputError

#: Plausible NumberOfFractionsPlanned and TargetPrescriptionDose (Gy).
MAX_FRACTIONS = 1000
MAX_PRESCRIPTION_GY = 1000.0


def read_plan(path: str | Path) -> PlanInfo:
    """Prescription (dose levels and fractions) from an RTPLAN.

    NumberOfFractionsPlanned (of the first fraction group) must be a whole
    number from 1 to :data:`MAX_FRACTIONS`; each TargetPrescriptionDose a
    finite dose above 0 and at most :data:`MAX_PRESCRIPTION_GY` Gy.

    Raises
    ------
    InputError
    """
    return read_plan_file(path)[0]


def read_plan_file(path: str | Path) -> tuple[PlanInfo, Header]:
    """:func:`read_plan` and the plan's identity header
    (:func:`~dvheval.dicom.identity.header_of`), from one read of the file;
    the plan's ``sha256`` is of the very bytes read.

    Raises
    ------
    InputError
    """
    path = Path(path)
    buf = read_file_bytes(path)
    with sha256_while(buf) as digest:
        walked = walk_encoded(buf, path, PLAN_ELEMENTS)  # (refuses a file cut short)
        ds = dataset_from_bytes(buf, path)
        isocenters = None if walked is None else isocenters_of_events(buf, walked[0])
        header = header_of(ds, str(path), "RTPLAN", isocenters)
        return _plan_info(ds, path, digest), header


def _plan_info(ds: pydicom.Dataset, path: Path, digest: Callable[[], str]) -> PlanInfo:
    """:func:`read_plan` of the dataset read from ``path`` (``digest`` gives its SHA-256)."""
    fractions = None
    fgs = ds.get("FractionGroupSequence")
    if fgs:
        fractions = integer(fgs[0], "NumberOfFractionsPlanned", path, required=False,
                             lo=1, hi=MAX_FRACTIONS)
    rx = []
    for i, item in enumerate(ds.get("DoseReferenceSequence", []) or [], start=1):
        if item.get("TargetPrescriptionDose") is None:
            continue
        name = str(item.get("DoseReferenceDescription", "") or f"Dose reference {i}")
        where = f"dose reference {name!r}: "
        dose = float(floats(item, "TargetPrescriptionDose", path, 1, where=where)[0])
        if not 0.0 < dose <= MAX_PRESCRIPTION_GY:
            raise InputError(f"{where}{dose:g} Gy is not a plausible prescription (must be "
                             f"above 0 and at most {MAX_PRESCRIPTION_GY:g} Gy)", path,
                             "TargetPrescriptionDose")
        rx.append(Prescription(name, dose, fractions))
    return PlanInfo(
        file=str(path),
        label=str(ds.get("RTPlanLabel", "") or ""),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        prescriptions=rx,
        fractions=fractions,
        treatment_beams=_treatment_beams(ds),
        sha256=digest(),
    )



def _treatment_beams(ds: pydicom.Dataset) -> dict[str, tuple[str, ...]]:
    setup = {
        str(b.get("BeamNumber", ""))
        for seq in ("BeamSequence", "IonBeamSequence")
        for b in ds.get(seq, []) or []
        if str(b.get("TreatmentDeliveryType", "")).upper() == "SETUP"
    }
    out = {}
    for group in ds.get("FractionGroupSequence", []) or []:
        beams = []
        for ref in group.get("ReferencedBeamSequence", []) or []:
            number = str(ref.get("ReferencedBeamNumber", "") or "")
            meterset = ref.get("BeamMeterset")
            try:
                delivers = meterset in (None, "") or float(meterset) > 0
            except (TypeError, ValueError):
                delivers = True
            if number and number not in setup and delivers:
                beams.append(number)
        out[str(group.get("FractionGroupNumber", "") or "")] = tuple(beams)
    return out




def plan_summary(plan: PlanInfo) -> str:
    """One line naming a plan: label, prescriptions, fractions and file.

    Examples
    --------
    >>> p = PlanInfo("a/RTPLAN.dcm", "L1 SIB", "1.2", [Prescription("PTV40", 40.0, 10)], 10)
    >>> plan_summary(p)
    "RTPLAN 'L1 SIB': PTV40 40 Gy in 10 fractions (a/RTPLAN.dcm)"
    """
    rx = ", ".join(f"{p.name} {p.dose_gy:g} Gy" for p in plan.prescriptions) or (
        "no prescription")
    nfx = f"{plan.fractions} fractions" if plan.fractions else "fractions unknown"
    return f"RTPLAN {plan.label or '(no label)'!r}: {rx} in {nfx} ({plan.file})"


def describe_plans(paths: list[Path]) -> str:
    """The RTPLAN files (see :func:`plan_summary`) numbered on one line, for error messages.

    A file that cannot be read as an RTPLAN is listed with the reason.
    """
    items = []
    for i, path in enumerate(paths, start=1):
        try:
            items.append(f"({i}) " + plan_summary(read_plan(path)))
        except InputError as exc:
            items.append(f"({i}) RTPLAN {path}: unreadable ({exc.message})")
    return "; ".join(items)
