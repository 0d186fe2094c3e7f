"""The identity attributes of a plan's files, read from their headers.

Patient, study, the references between RTDOSE, RTPLAN and RTSTRUCT, approval,
dose type and summation, and the treatment isocentres: what the integrity
checks (:mod:`dvheval.integrity`) compare before any dose is computed. Only
the header is read, with the tags named here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Header:
    """The identity attributes of one DICOM-RT file that integrity checks compare.

    Empty strings stand for attributes that are absent or empty.
    """

    path: str
    kind: str
    patient_id: str
    patient_name: str
    birth_date: str
    study_uid: str
    sop_instance_uid: str
    referenced_plan_uids: tuple[str, ...] = ()
    referenced_structure_set_uids: tuple[str, ...] = ()
    approval_status: str = ""
    dose_type: str = ""
    dose_summation: str = ""
    isocenters_mm: tuple[tuple[float, float, float], ...] = ()
    #: Reference sequences (keywords) holding an item without a
    #: ReferencedSOPInstanceUID: a reference that names nothing.
    blank_references: tuple[str, ...] = ()
    #: Reference sequences (keywords) that are absent or empty.
    absent_references: tuple[str, ...] = ()
    frame_of_reference_uid: str = ""
    #: RTPLAN: RT Plan Geometry (PATIENT or TREATMENT_DEVICE).
    plan_geometry: str = ""
    #: RTPLAN: Number of Fractions Planned of each fraction group, as written.
    fraction_groups: tuple[str, ...] = ()


_HEADER_TAGS = [
    "PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "SOPInstanceUID",
    "ReferencedRTPlanSequence", "ReferencedStructureSetSequence", "ApprovalStatus",
    "DoseType", "DoseSummationType", "BeamSequence", "IonBeamSequence",
    "FrameOfReferenceUID", "RTPlanGeometry", "FractionGroupSequence",
]


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _value_text(item: Any, keyword: str) -> str:
    """An attribute as text, or '?' when its value cannot be read (checked where it is used)."""
    try:
        return _text(item.get(keyword))
    except (ValueError, OverflowError, TypeError):
        return "?"


def _uids(ds: Any, keyword: str) -> tuple[str, ...]:
    seq = ds.get(keyword) or []
    return tuple(u for u in (_text(item.get("ReferencedSOPInstanceUID")) for item in seq) if u)


def _blank_references(ds: Any) -> tuple[str, ...]:
    return tuple(keyword for keyword in ("ReferencedRTPlanSequence",
                                         "ReferencedStructureSetSequence")
                 if any(not _text(item.get("ReferencedSOPInstanceUID"))
                        for item in ds.get(keyword) or []))


def _isocenters(ds: Any) -> tuple[tuple[float, float, float], ...]:
    import math

    out = []
    for keyword in ("BeamSequence", "IonBeamSequence"):
        for beam in ds.get(keyword) or []:
            if _text(beam.get("TreatmentDeliveryType")).upper() == "SETUP":
                continue
            for cp in beam.get("ControlPointSequence") or []:
                iso = cp.get("IsocenterPosition")
                if iso is None:
                    continue
                try:
                    xyz = tuple(float(v) for v in iso)
                except (TypeError, ValueError):
                    continue
                if len(xyz) == 3 and all(math.isfinite(v) for v in xyz) and xyz not in out:
                    out.append(xyz)
    return tuple(out)


def read_identity(path: str, kind: str) -> Header:
    """The identity attributes of one file (header only, pixel data not read).

    Raises
    ------
    InputError
        When the file cannot be read.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from dvheval.errors import InputError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError,
            AttributeError) as exc:
        raise InputError(f"cannot read the DICOM header ({exc})", path) from exc
    return header_of(ds, path, kind)


def header_of(ds: Any, path: str, kind: str) -> Header:
    """The identity attributes of ``ds``, the dataset read from ``path``.

    Raises
    ------
    InputError
        When one of them cannot be read.
    """
    from pydicom.errors import InvalidDicomError

    from dvheval.errors import InputError

    try:
        return Header(
            path=str(path),
            kind=kind,
            patient_id=_text(ds.get("PatientID")),
            patient_name=_text(ds.get("PatientName")),
            birth_date=_text(ds.get("PatientBirthDate")),
            study_uid=_text(ds.get("StudyInstanceUID")),
            sop_instance_uid=_text(ds.get("SOPInstanceUID")),
            referenced_plan_uids=_uids(ds, "ReferencedRTPlanSequence"),
            referenced_structure_set_uids=_uids(ds, "ReferencedStructureSetSequence"),
            approval_status=_text(ds.get("ApprovalStatus")).upper(),
            dose_type=_text(ds.get("DoseType")).upper(),
            dose_summation=_text(ds.get("DoseSummationType")).upper(),
            isocenters_mm=_isocenters(ds) if kind == "RTPLAN" else (),
            blank_references=_blank_references(ds),
            absent_references=tuple(k for k in ("ReferencedRTPlanSequence",
                                                "ReferencedStructureSetSequence")
                                    if not ds.get(k)),
            frame_of_reference_uid=_text(ds.get("FrameOfReferenceUID")),
            plan_geometry=_text(ds.get("RTPlanGeometry")).upper(),
            fraction_groups=tuple(_value_text(g, "NumberOfFractionsPlanned")
                                  for g in ds.get("FractionGroupSequence") or []),
        )
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError,
            AttributeError) as exc:
        raise InputError(f"cannot read the DICOM header ({exc})", path) from exc
