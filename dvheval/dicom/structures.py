"""Reading an RTSTRUCT: ROI numbers, names, interpreted types and contours."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray

from dvheval.dicom.attributes import (
    MAX_COORDINATE_MM,
    dataset_from_bytes,
    integer,
    read_file_bytes,
    required_integer,
    sha256_while,
)
from dvheval.dicom.completeness import ITEM, Event, walk_encoded
from dvheval.dicom.decimals import parse_decimals
from dvheval.dicom.files import RTSTRUCT_SOP
from dvheval.errors import InputError

#: The ContourGeometricType values of DICOM (required in every contour).
CONTOUR_TYPES = frozenset({"POINT", "OPEN_PLANAR", "OPEN_NONPLANAR", "CLOSED_PLANAR",
                           "CLOSEDPLANAR_XOR"})

_CONTOUR_DATA = 0x30060050
_GEOMETRIC_TYPE = 0x30060042
_NUMBER_OF_POINTS = 0x30060046
_ROI_CONTOURS = 0x30060039
_CONTOUR_SEQUENCE = 0x30060040
_REFERENCED_ROI = 0x30060084
#: Elements of the ROI Contour Sequence read straight from the file's bytes,
#: with the sequence that encloses each.
_CONTOUR_ELEMENTS = frozenset({
    (_ROI_CONTOURS, 0), (_REFERENCED_ROI, _ROI_CONTOURS), (_CONTOUR_SEQUENCE, _ROI_CONTOURS),
    (_GEOMETRIC_TYPE, _CONTOUR_SEQUENCE), (_NUMBER_OF_POINTS, _CONTOUR_SEQUENCE),
    (_CONTOUR_DATA, _CONTOUR_SEQUENCE)})
#: Position of each contour element's raw value in a contour record.
_SLOT = {_GEOMETRIC_TYPE: 0, _NUMBER_OF_POINTS: 1, _CONTOUR_DATA: 2}
#: Raw text read without pydicom: code strings and whole numbers.
_PLAIN = re.compile(rb"[A-Z0-9_ ]+")


@dataclass(frozen=True)
class Contour:
    """One contour: geometric type and (N, 3) points in patient mm."""

    geometric_type: str
    points: np.ndarray


@dataclass(frozen=True)
class ROI:
    """A region of interest of a structure set."""

    number: int
    name: str
    interpreted_type: str
    frame_of_reference_uid: str
    contours: tuple[Contour, ...]


@dataclass(frozen=True)
class StructureSet:
    path: Path
    label: str
    sop_instance_uid: str
    frame_of_reference_uid: str
    patient_id: str
    patient_name: str
    rois: tuple[ROI, ...]
    #: SHA-256 of the file's bytes, as read.
    sha256: str

    def slice_thickness(self) -> float | None:
        """Most common distance (mm) between consecutive contour planes of all ROIs."""
        zs = set()
        for roi in self.rois:
            for c in roi.contours:
                if c.geometric_type.startswith("CLOSED") and len(c.points):
                    zs.add(round(float(c.points[0, 2]), 2))
        z = np.array(sorted(zs))
        if z.size < 2:
            return None
        d = np.round(np.diff(z), 2)
        d = d[d > 0.01]
        if d.size == 0:
            return None
        vals, counts = np.unique(d, return_counts=True)
        return float(vals[np.argmax(counts)])


def read_structure_set(path: str | Path) -> StructureSet:
    """Read an RTSTRUCT: ROI numbers, names, interpreted types and contours.

    ROI numbers must be whole numbers and unique; every contour's
    ContourData must hold finite x, y, z triplets within
    :data:`MAX_COORDINATE_MM` (and as many as NumberOfContourPoints says).
    Contours filed under an ROI number the structure set does not define are
    refused when a defined ROI has no contours, since they may be its own.

    Raises
    ------
    InputError
        Naming the file, the attribute and, for contours, the ROI.
    """
    path = Path(path)
    buf = read_file_bytes(path)
    with sha256_while(buf) as digest:
        return _structure_set(path, buf, digest)


def _structure_set(path: Path, buf: bytes, digest: Callable[[], str]) -> StructureSet:
    """:func:`read_structure_set` of the bytes read from ``path``."""
    walked = walk_encoded(buf, path, _CONTOUR_ELEMENTS)
    events = None
    if walked is not None and _ROI_CONTOURS in walked[1]:
        # the contours are read from the file's bytes; pydicom reads the rest
        events = walked[0]
        first, last = walked[1][_ROI_CONTOURS]
        ds = dataset_from_bytes(buf[:first] + buf[last:], path)
    else:
        ds = dataset_from_bytes(buf, path)
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP and ds.get("Modality") != "RTSTRUCT":
        raise InputError("not an RT Structure Set", path, "SOPClassUID")
    rois_seq = ds.get("StructureSetROISequence")
    if rois_seq is None:
        raise InputError("required attribute is missing", path, "StructureSetROISequence")
    set_for = ""
    rfor = ds.get("ReferencedFrameOfReferenceSequence")
    if rfor:
        set_for = str(rfor[0].get("FrameOfReferenceUID", ""))
    _check_declared_frames(rois_seq, rfor, path)
    names = _roi_names(rois_seq, path)
    types = _interpreted_types(ds, path)
    contours = None if events is None else _plain_contours(buf, events, names, path)
    if contours is None:  # unusual values: read through pydicom, which names them
        contours = _all_contours(ds if events is None else dataset_from_bytes(buf, path),
                                 names, path)
    _check_orphan_contours(contours, names, path)
    rois = []
    for item in rois_seq:
        num = int(item.ROINumber)
        rois.append(
            ROI(
                number=num,
                name=names[num],
                interpreted_type=types.get(num, ""),
                frame_of_reference_uid=str(item.get("ReferencedFrameOfReferenceUID", "")
                                           or set_for),
                contours=tuple(contours.get(num, [])),
            )
        )
    return StructureSet(
        path=path,
        label=str(ds.get("StructureSetLabel", "") or ""),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        frame_of_reference_uid=set_for or (rois[0].frame_of_reference_uid if rois else ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        rois=tuple(rois),
        sha256=digest(),
    )


def _check_declared_frames(rois_seq: Iterable[pydicom.Dataset],
                           rfor: Iterable[pydicom.Dataset] | None,
                           path: Path) -> None:
    """Every ROI's Frame of Reference is one the structure set declares.

    DICOM requires an ROI's ReferencedFrameOfReferenceUID to be one of the
    Frames of Reference of the Referenced Frame of Reference Sequence; one
    that is not contradicts the file's own header.
    """
    declared = {str(item.get("FrameOfReferenceUID", "") or "").strip() for item in rfor or []}
    declared.discard("")
    if not declared:
        return
    for item in rois_seq:
        roi_for = str(item.get("ReferencedFrameOfReferenceUID", "") or "").strip()
        if roi_for and roi_for not in declared:
            raise InputError(
                f"ROI {str(item.get('ROIName', '') or '')!r} is in Frame of Reference "
                f"{roi_for}, which the structure set does not declare (its Referenced Frame of "
                f"Reference Sequence names {', '.join(sorted(declared))})",
                path, "ReferencedFrameOfReferenceUID")


def _roi_names(rois_seq: Iterable[pydicom.Dataset], path: Path) -> dict[int, str]:
    """ROIName by ROINumber; numbers must be whole and unique."""
    names: dict[int, str] = {}
    for item in rois_seq:
        num = required_integer(item, "ROINumber", path)
        name = str(item.get("ROIName", "") or f"ROI {num}")
        if num in names:
            raise InputError(f"ROI number {num} is used by both {names[num]!r} and {name!r}",
                             path, "ROINumber")
        names[num] = name
    return names


def _interpreted_types(ds: pydicom.Dataset, path: Path) -> dict[int, str]:
    """RTROIInterpretedType by ROI number."""
    types: dict[int, str] = {}
    if not ds.get("RTROIObservationsSequence") and ds.get("StructureSetROISequence"):
        raise InputError("required attribute is missing or empty (is the file cut short?); "
                         "without it the ROIs' types (EXTERNAL, PTV, ORGAN ...) are unknown",
                         path, "RTROIObservationsSequence")
    for obs in ds.get("RTROIObservationsSequence", []) or []:
        num = integer(obs, "ReferencedROINumber", path, required=False,
                      where="an RT ROI Observations item: ")
        if num is not None:
            types[num] = str(obs.get("RTROIInterpretedType", "") or "")
    return types


def _all_contours(ds: pydicom.Dataset, names: dict[int, str],
                  path: Path) -> dict[int, list[Contour]]:
    """The contours of every ROI Contour item, by ReferencedROINumber."""
    contours: dict[int, list[Contour]] = {}
    for item in ds.get("ROIContourSequence", []) or []:
        if "ReferencedROINumber" not in item:
            raise InputError("an ROI Contour item has no ReferencedROINumber", path,
                             "ROIContourSequence")
        num = required_integer(item, "ReferencedROINumber", path, where="an ROI Contour item: ")
        lst = contours.setdefault(num, [])
        label = _roi_label(num, names)
        items = list(item.get("ContourSequence", []) or [])
        raws = _raw_contour_data(items)
        parsed = None if raws is None else parse_decimals(raws)
        for k, c in enumerate(items):
            gtype = _checked_type(_geometric_type(c), path, label)
            data = _contour_values(c, path, num, label,
                                   parsed=None if parsed is None else parsed[k])
            lst.append(Contour(gtype, data.reshape(-1, 3)))
    return contours


def _plain_contours(buf: bytes, events: list[Event], names: dict[int, str],
                    path: Path) -> dict[int, list[Contour]] | None:
    """The contours of every ROI Contour item, from the elements collected by the walk.

    This is the fast path of :func:`_all_contours`, with the same checks
    (:func:`_checked_type`, :func:`_checked_points`). It returns None when a
    value is not plain (an ROI number or point count that is not a whole
    number written plainly, a geometric type or ContourData that is not
    plain text, a contour without ContourData), so that the general path
    reads the structure set and names the problem.
    """
    items: list[tuple[list[bytes], list[list[bytes | None]]]] = []
    data: list[memoryview] = []  # ContourData of each contour, not copied
    view = memoryview(buf)
    for tag, start, length, parent in events:
        if tag == ITEM:
            if parent == _ROI_CONTOURS:
                items.append(([], []))
            elif parent == _CONTOUR_SEQUENCE and items:
                items[-1][1].append([None, None, None])
        elif tag == _REFERENCED_ROI and items:
            items[-1][0].append(buf[start:start + length])
        elif tag == _CONTOUR_DATA and items and items[-1][1]:
            if items[-1][1][-1][2] is not None:  # two ContourData in one contour
                return None
            items[-1][1][-1][2] = b""
            data.append(view[start:start + length])
        elif tag in _SLOT and items and items[-1][1]:
            items[-1][1][-1][_SLOT[tag]] = buf[start:start + length]
    if any(c[2] is None for _, cs in items for c in cs):
        return None  # a contour without ContourData: the general path names it
    parsed = [_general_decimals(raw) if values is None else values  # not plain decimals
              for values, raw in zip(parse_decimals(data), data, strict=True)]
    if any(values is None for values in parsed):
        return None
    # plain decimals are finite: when every contour has whole triplets within the
    # plausible range, the per-contour checks below have nothing to find
    arrays = [v for v in parsed if v is not None]
    checked = bool(arrays) and all(v.size and v.size % 3 == 0 for v in arrays) and all(
        _within(np.concatenate(arrays[i:i + 256]), MAX_COORDINATE_MM)
        for i in range(0, len(arrays), 256))  # (in groups: a copy of all would be large)
    contours: dict[int, list[Contour]] = {}
    values = iter(parsed)
    for numbers, records in items:
        if len(numbers) != 1 or not numbers[0].strip(b" \0").isdigit():
            return None
        number = int(numbers[0].strip(b" \0"))
        label = _roi_label(number, names)
        lst = contours.setdefault(number, [])
        for gtype, count, _ in records:
            points = next(values)
            assert points is not None
            plain_count = count is None or count.strip(b" \0").isdigit()
            if gtype is None or not _PLAIN.fullmatch(gtype) or not plain_count:
                return None
            kind = _checked_type(gtype.decode("ascii").strip().upper(), path, label)
            if not checked:
                _checked_points(points, path, label)
            _checked_count(None if count is None else int(count.strip(b" \0")), points, path,
                           label)
            lst.append(Contour(kind, points.reshape(-1, 3)))
    return contours


def _within(values: NDArray[np.float64], bound: float) -> bool:
    """Whether every value lies in ``[-bound, bound]`` (no copy of the values)."""
    return bool(values.max() <= bound and values.min() >= -bound)


def _general_decimals(raw: bytes | memoryview) -> NDArray[np.float64] | None:
    """Finite numbers of one raw decimal string, any form ``float()`` reads
    (exponents too); None when a value is not one."""
    try:
        values = np.array(bytes(raw).decode("ascii").replace("\\", " ").split(), dtype=float)
    except (ValueError, UnicodeDecodeError):
        return None
    return values if np.all(np.isfinite(values)) else None


def _raw_contour_data(items: Sequence[pydicom.Dataset]) -> list[bytes] | None:
    """The raw bytes of each contour's ContourData (b"" where it is absent).

    None when a value is not raw bytes (then each contour is parsed by
    :func:`_parse_contour_data`).
    """
    out = []
    for c in items:
        raw = getattr(c.get_item(_CONTOUR_DATA), "value", None) if _CONTOUR_DATA in c else None
        if raw is not None and not isinstance(raw, bytes | bytearray):
            return None
        out.append(bytes(raw or b""))
    return out


def _raw_text(item: pydicom.Dataset, tag: int) -> str | None:
    """A raw value as text when it is plain (only ``A-Z``, ``0-9``, ``_`` and spaces:
    a code string or a whole number), else None: then it is read through pydicom."""
    raw = getattr(item.get_item(tag), "value", None) if tag in item else None
    if isinstance(raw, bytes) and raw and _PLAIN.fullmatch(raw):
        return raw.decode("ascii")
    return None


def _geometric_type(c: pydicom.Dataset) -> str:
    """ContourGeometricType, stripped and upper case ('' when absent)."""
    text = _raw_text(c, _GEOMETRIC_TYPE)
    if text is None:
        text = str(c.get("ContourGeometricType", "") or "")
    return text.strip().upper()


def _roi_label(number: int, names: dict[int, str]) -> str:
    """``ROI 5 'PTV40'`` for messages."""
    if number in names:
        return f"ROI {number} {names[number]!r}"
    return f"ROI {number} (not defined in StructureSetROISequence)"


def _check_orphan_contours(contours: dict[int, list[Contour]], names: dict[int, str],
                           path: Path) -> None:
    """Refuse contours of an undefined ROI number when a defined ROI has none.

    Such contours are not part of any structure; when a named ROI has no
    contours of its own they may well be its contours under a damaged
    number, and that ROI would be reported empty instead of evaluated.
    """
    orphans = sorted(n for n, lst in contours.items() if lst and n not in names)
    bare = [f"{n} {names[n]!r}" for n in names if not contours.get(n)]
    if orphans and bare:
        raise InputError(
            f"contours are filed under ROI number(s) {', '.join(map(str, orphans))}, which "
            f"the structure set does not define, while ROI(s) {', '.join(bare)} have no "
            "contours; the contours cannot be attributed",
            path, "ReferencedROINumber")


def _contour_values(item: pydicom.Dataset, path: Path, roi_number: int,
                    roi_label: str | None = None, *,
                    parsed: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """ContourData as floats, parsed straight from the raw bytes when possible.

    ``parsed`` is ContourData already parsed by
    :func:`~dvheval.dicom.decimals.parse_decimals` (then it is only checked).

    Raises
    ------
    InputError
        When ContourData is missing or empty, is not numbers, is not x, y, z
        triplets, holds NaN, infinity or a coordinate beyond
        :data:`MAX_COORDINATE_MM`, or disagrees with NumberOfContourPoints.
    """
    label = roi_label or f"ROI {roi_number}"
    data = _parse_contour_data(item, path, label) if parsed is None else parsed
    _checked_points(data, path, label)
    text = _raw_text(item, _NUMBER_OF_POINTS)
    count = int(text) if text is not None and text.strip().isdigit() else integer(
        item, "NumberOfContourPoints", path, required=False, where=f"{label}: ")
    return _checked_count(count, data, path, label)


def _checked_type(gtype: str, path: Path, label: str) -> str:
    """A contour's ContourGeometricType, refused unless it is one DICOM defines."""
    if gtype not in CONTOUR_TYPES:
        raise InputError(
            f"{label}: a contour has ContourGeometricType {gtype or '(none)'!r}; "
            f"expected one of {', '.join(sorted(CONTOUR_TYPES))}", path,
            "ContourGeometricType")
    return gtype


def _checked_points(data: NDArray[np.float64], path: Path, label: str
                    ) -> NDArray[np.float64]:
    """ContourData values, refused unless they are finite, plausible x, y, z triplets.

    Raises
    ------
    InputError
        When there are no values, not a multiple of 3, NaN or infinity, or a
        coordinate beyond :data:`MAX_COORDINATE_MM`.
    """
    if data.size == 0:
        raise InputError(f"{label}: a contour has no points (ContourData missing or empty)",
                         path, "ContourData")
    if data.size % 3:
        raise InputError(f"{label}: ContourData has {data.size} values, not a multiple of 3",
                         path, "ContourData")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{label}: ContourData holds a value that is not a finite number",
                         path, "ContourData")
    far = float(np.abs(data).max())
    if far > MAX_COORDINATE_MM:
        raise InputError(f"{label}: ContourData has a coordinate of {far:g} mm, beyond the "
                         f"plausible {MAX_COORDINATE_MM:g} mm", path, "ContourData")
    return data


def _checked_count(count: int | None, data: NDArray[np.float64], path: Path,
                   label: str) -> NDArray[np.float64]:
    """``data``, refused unless it holds NumberOfContourPoints (``count``; None: absent) points."""
    if count is not None and count != data.size // 3:
        raise InputError(f"{label}: NumberOfContourPoints is {count}, but ContourData holds "
                         f"{data.size // 3} points", path, "NumberOfContourPoints")
    return data




def _parse_contour_data(item: pydicom.Dataset, path: Path, label: str) -> NDArray[np.float64]:
    """ContourData of one contour, parsed the general way (any number ``float()`` reads)."""
    raw = getattr(item.get_item(_CONTOUR_DATA), "value", None) if _CONTOUR_DATA in item \
        else None
    try:
        if isinstance(raw, bytes | bytearray):
            text = raw.decode("ascii").replace("\\", " ")
            return np.array(text.split(), dtype=float)
        if raw is None:
            return np.zeros(0)
        value = item.ContourData
        items = [value] if isinstance(value, str) or not hasattr(value, "__iter__") \
            else value
        return np.asarray([float(v) for v in items], dtype=float)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"{label}: ContourData is not a list of numbers ({exc})",
                         path, "ContourData") from exc
