"""The identity attributes of a plan's files, read from their headers.

Patient, study, the references between RTDOSE, RTPLAN and RTSTRUCT, approval,
dose type and summation, and the treatment isocentres: what the integrity
checks (:mod:`dvheval.integrity`) compare before any dose is computed. Only
the header is read, with the tags named here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dvheval.dicom.completeness import ITEM


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


#: The beam sequences of an RTPLAN and the control point sequence of their beams.
_BEAMS = {"BeamSequence": "ControlPointSequence", "IonBeamSequence": "IonControlPointSequence"}
_BEAM_TAGS = {0x300A00B0: 0x300A0111, 0x300A03A2: 0x300A03A8}  # (the same, by tag)
_DELIVERY_TYPE = 0x300A00CE
_ISOCENTER = 0x300A012C
#: Elements of an RTPLAN the completeness walk records for :func:`isocenters_of_events`:
#: the beams (their items), each beam's TreatmentDeliveryType and the
#: IsocenterPosition of its control points.
PLAN_ELEMENTS = frozenset({(beams, 0) for beams in _BEAM_TAGS}
                          | {(_DELIVERY_TYPE, beams) for beams in _BEAM_TAGS}
                          | {(_ISOCENTER, points) for points in _BEAM_TAGS.values()})


def _isocenters(ds: Any) -> tuple[tuple[float, float, float], ...]:
    """The distinct finite IsocenterPositions of the control points of every
    beam that is not a setup beam, beams first, then ion beams."""
    out: list[tuple[float, float, float]] = []
    for keyword, points in _BEAMS.items():
        for beam in ds.get(keyword) or []:
            if _text(beam.get("TreatmentDeliveryType")).upper() == "SETUP":
                continue
            for cp in beam.get(points) or []:
                iso = cp.get("IsocenterPosition")
                if iso is None:
                    continue
                try:
                    _add_isocenter(out, tuple(float(v) for v in iso))
                except (TypeError, ValueError):
                    continue
    return tuple(out)


def _add_isocenter(out: list[tuple[float, float, float]], values: tuple[float, ...]) -> None:
    """Add three finite coordinates to ``out`` unless they are there already."""
    import math

    if len(values) == 3 and all(math.isfinite(v) for v in values):
        xyz = (values[0], values[1], values[2])
        if xyz not in out:
            out.append(xyz)


def isocenters_of_events(buf: bytes, events: list[tuple[int, int, int, int]]
                         ) -> tuple[tuple[float, float, float], ...] | None:
    """:func:`_isocenters` from the elements the completeness walk recorded
    (:data:`PLAN_ELEMENTS`), without building a dataset for every control point.

    Parameters
    ----------
    buf : bytes
        The file's bytes.
    events : list of (tag, value start, value length, enclosing sequence tag)
        What :func:`~dvheval.dicom.completeness.walk_encoded` recorded.

    Returns
    -------
    tuple or None
        None when a value is not plainly readable here (an isocentre that is
        not three numbers, a beam with two delivery types): then pydicom
        reads the plan's beams, and names what is wrong.
    """
    # per beam: its sequence's tag, its delivery types and its isocentres
    beams: list[tuple[int, list[bytes], list[bytes]]] = []
    for tag, start, length, parent in events:
        if tag == ITEM:
            if parent in _BEAM_TAGS:
                beams.append((parent, [], []))
        elif beams and tag == _DELIVERY_TYPE:
            beams[-1][1].append(buf[start:start + length])
        elif beams and tag == _ISOCENTER and parent == _BEAM_TAGS[beams[-1][0]]:
            beams[-1][2].append(buf[start:start + length])
    out: list[tuple[float, float, float]] = []
    # beams first, then ion beams, as the dataset orders them
    for _, types, points in sorted(beams, key=lambda beam: beam[0]):
        if len(types) > 1:
            return None
        if types and types[0].strip(b" \0").upper() == b"SETUP":
            continue
        for raw in points:
            try:
                xyz = tuple(float(v) for v in raw.split(b"\\"))
            except ValueError:
                return None
            _add_isocenter(out, xyz)
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


def header_of(ds: Any, path: str, kind: str,
              isocenters: tuple[tuple[float, float, float], ...] | None = None) -> Header:
    """The identity attributes of ``ds``, the dataset read from ``path``.

    ``isocenters`` are the plan's, when already read from the file's bytes
    (:func:`isocenters_of_events`); else they are read from ``ds``.

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
            isocenters_mm=(() if kind != "RTPLAN" else
                           _isocenters(ds) if isocenters is None else isocenters),
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
