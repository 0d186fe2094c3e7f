"""Writing DICOM-RT objects: the RT Structure Set and the parts every RT object shares.

``dvheval dvh --write-rtstruct`` writes derived structures with
:func:`write_rtstruct`; :mod:`dvheval.testing.synthetic` builds phantom
doses and plans on the same helpers. Numbers are written as DICOM Decimal
Strings of at most 16 characters, closest to the value.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from dvheval import __version__

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: SOP class conventionally used to reference a study from an RT Structure Set.
_STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"

_DEFAULT_PATIENT_ID = "PHANTOM"
_DEFAULT_PATIENT_NAME = "PHANTOM^DVHEVAL"

_TYPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "EXTERNAL": (0, 160, 0),
    "PTV": (255, 0, 0),
    "CTV": (255, 140, 0),
    "GTV": (255, 0, 255),
    "MARKER": (255, 255, 0),
}
_ORGAN_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 128, 255),
    (0, 200, 200),
    (160, 80, 255),
    (200, 120, 60),
    (120, 200, 0),
    (255, 128, 192),
)


def new_uid() -> str:
    """Return a new, globally unique DICOM UID.

    Returns
    -------
    str
        A UID made by :func:`pydicom.uid.generate_uid`.
    """
    return str(generate_uid())


def derived_uid(*parts: str) -> str:
    """Return a UID fixed by the given strings.

    The UID is ``2.25.`` followed by the integer form of the name-based
    (SHA-1, version 5) UUID of the joined parts, as ISO/IEC 9834-8 allows:
    the same parts always give the same UID, so generated files can be
    reproduced byte for byte.

    Parameters
    ----------
    *parts : str
        Strings identifying the object, e.g. a fixed root and a role.

    Returns
    -------
    str
        A UID of at most 44 characters.
    """
    name = "\x1f".join(parts)
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


# ------------------------------------------------------------------ helpers


def decimal_strings(values: Sequence[float] | np.ndarray) -> list[str]:
    """Format numbers as DICOM Decimal Strings (at most 16 characters)."""
    flat = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(flat)):
        raise ValueError("cannot write non-finite numbers to DICOM")
    numbers = [v + 0.0 for v in flat.tolist()]  # + 0.0 writes -0.0 as 0.0
    texts = [repr(v) for v in numbers]
    return [t if len(t) <= 16 else _ds_one(v) for t, v in zip(texts, numbers, strict=True)]


#: Tag of ContourData (3006,0050).
_CONTOUR_DATA = 0x30060050


def _raw_decimal_strings(tag: int, texts: list[str]) -> RawDataElement:
    """A DS element holding ``texts`` as written bytes.

    pydicom would turn each of thousands of contour values into a validated
    decimal object only to write the same text back; the raw element is
    written as it is (the bytes are those pydicom writes: the values joined
    by backslashes, padded with a space to an even length).
    """
    raw = "\\".join(texts).encode("ascii")
    if len(raw) % 2:
        raw += b" "
    return RawDataElement(Tag(tag), "DS", len(raw), raw, 0, False, True)


def _ds_one(value: float) -> str:
    """Shortest text of at most 16 characters that is closest to ``value``."""
    text = repr(value)
    if len(text) <= 16:
        return text
    for digits in range(15, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value} as a DICOM Decimal String")


def base_dataset(
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    *,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    patient_id: str,
    patient_name: str,
    series_number: int,
    series_description: str,
) -> Dataset:
    """Dataset with the patient, study, series, frame-of-reference,
    equipment and SOP common modules filled in."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DVHEVAL_{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    # Patient
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    # RT Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.OperatorsName = ""
    # Frame of Reference
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = "dvheval"
    ds.ManufacturerModelName = "dvheval.synthetic"
    ds.SoftwareVersions = __version__
    return ds


def save(ds: Dataset, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ------------------------------------------------------- RT Structure Set


@dataclass(frozen=True)
class ROISpec:
    """One region of interest of a structure set.

    Attributes
    ----------
    number : int
        ROINumber.
    name : str
        ROIName.
    interpreted_type : str
        RTROIInterpretedType, e.g. ``PTV``, ``ORGAN``, ``EXTERNAL``; an
        empty string leaves the attribute empty.
    contours : tuple of (str, ndarray)
        (ContourGeometricType, points) pairs, points shaped (N, 3) in mm.
        An empty tuple writes the ROI without a ContourSequence.
    color : tuple of 3 int, optional
        ROIDisplayColor; chosen from the interpreted type when omitted.
    """

    number: int
    name: str
    interpreted_type: str
    contours: tuple[tuple[str, np.ndarray], ...] = ()
    color: tuple[int, int, int] | None = None


def _roi_colour(roi: ROISpec, index: int) -> tuple[int, int, int]:
    if roi.color is not None:
        return roi.color
    return _TYPE_COLOURS.get(
        roi.interpreted_type.upper(), _ORGAN_COLOURS[index % len(_ORGAN_COLOURS)]
    )


def write_rtstruct(
    path: str | Path,
    rois: Sequence[ROISpec],
    *,
    frame_of_reference_uid: str,
    study_uid: str,
    patient_id: str = _DEFAULT_PATIENT_ID,
    patient_name: str = _DEFAULT_PATIENT_NAME,
    label: str = "DVHEVAL",
    sop_instance_uid: str | None = None,
    referenced_series_uid: str | None = None,
    series_uid: str | None = None,
    patient_birth_date: str = "",
    patient_sex: str = "",
) -> str:
    """Write an RT Structure Set file.

    Parameters
    ----------
    path : str or Path
        File to write; parent folders are created.
    rois : sequence of ROISpec
        The regions of interest, written in this order.
    frame_of_reference_uid, study_uid : str
        UIDs shared with the dose and plan.
    patient_id, patient_name : str
        Patient identification.
    label : str
        StructureSetLabel (at most 16 characters).
    sop_instance_uid : str, optional
        Fixed SOPInstanceUID; a new one is generated when omitted.
    referenced_series_uid : str, optional
        Image series the contours were drawn on; written as an
        RTReferencedStudySequence/RTReferencedSeriesSequence item (with an
        empty ContourImageSequence, as there are no images).
    series_uid : str, optional
        Fixed SeriesInstanceUID; a new one is generated when omitted.
    patient_birth_date, patient_sex : str
        PatientBirthDate and PatientSex (empty by default).

    Returns
    -------
    str
        The SOPInstanceUID written.

    Notes
    -----
    Longer than 60 lines only because of the parameters documented here;
    the sequences are built by small helpers.
    """
    numbers = [int(r.number) for r in rois]
    if len(set(numbers)) != len(numbers):
        raise ValueError("ROI numbers must be unique")
    sop_instance_uid = sop_instance_uid or new_uid()
    ds = base_dataset(
        RT_STRUCTURE_SET_STORAGE,
        sop_instance_uid,
        "RTSTRUCT",
        study_uid=study_uid,
        series_uid=series_uid or new_uid(),
        frame_of_reference_uid=frame_of_reference_uid,
        patient_id=patient_id,
        patient_name=patient_name,
        series_number=1,
        series_description="Structures",
    )
    ds.PatientBirthDate = patient_birth_date
    ds.PatientSex = patient_sex
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label
    ds.StructureSetName = label
    ds.StructureSetDate = ""
    ds.StructureSetTime = ""

    ds.ReferencedFrameOfReferenceSequence = DicomSequence(
        [_frame_reference(frame_of_reference_uid, study_uid, referenced_series_uid)])
    ds.StructureSetROISequence = DicomSequence(
        [_roi_item(roi, frame_of_reference_uid) for roi in rois])
    ds.ROIContourSequence = DicomSequence(
        [_roi_contour(roi, index) for index, roi in enumerate(rois)])
    ds.RTROIObservationsSequence = DicomSequence([_observation(roi) for roi in rois])
    save(ds, path)
    return sop_instance_uid


def _frame_reference(frame_of_reference_uid: str, study_uid: str,
                     referenced_series_uid: str | None) -> Dataset:
    """The ReferencedFrameOfReferenceSequence item (with the image series, if given)."""
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_of_reference_uid
    if referenced_series_uid is not None:
        series_ref = Dataset()
        series_ref.SeriesInstanceUID = referenced_series_uid
        series_ref.ContourImageSequence = DicomSequence([])
        study_ref = Dataset()
        study_ref.ReferencedSOPClassUID = _STUDY_COMPONENT_MANAGEMENT
        study_ref.ReferencedSOPInstanceUID = study_uid
        study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
        frame_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    return frame_ref


def _roi_item(roi: ROISpec, frame_of_reference_uid: str) -> Dataset:
    """The StructureSetROISequence item of one ROI."""
    item = Dataset()
    item.ROINumber = int(roi.number)
    item.ReferencedFrameOfReferenceUID = frame_of_reference_uid
    item.ROIName = roi.name
    item.ROIGenerationAlgorithm = "AUTOMATIC"
    return item


def _roi_contour(roi: ROISpec, index: int) -> Dataset:
    """The ROIContourSequence item of one ROI: colour and contours.

    Raises
    ------
    ValueError
        When a contour's points are not shaped (N, 3) with N >= 1.
    """
    roi_contour = Dataset()
    roi_contour.ROIDisplayColor = list(_roi_colour(roi, index))
    contours = []
    for number, (geometric_type, points) in enumerate(roi.contours, start=1):
        pts = np.asarray(points, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 1:
            raise ValueError(f"ROI {roi.name!r}: contour points must be shaped (N, 3)")
        contour = Dataset()
        contour.ContourNumber = number
        contour.ContourGeometricType = geometric_type
        contour.NumberOfContourPoints = int(pts.shape[0])
        contour[_CONTOUR_DATA] = _raw_decimal_strings(_CONTOUR_DATA, decimal_strings(pts))
        # the raw value is encoded as the file is written (explicit VR little
        # endian); said so, pydicom writes it as it is instead of decoding it
        contour.set_original_encoding(False, True, "iso8859")
        contours.append(contour)
    if contours:
        roi_contour.ContourSequence = DicomSequence(contours)
    roi_contour.ReferencedROINumber = int(roi.number)
    return roi_contour


def _observation(roi: ROISpec) -> Dataset:
    """The RTROIObservationsSequence item of one ROI."""
    observation = Dataset()
    observation.ObservationNumber = int(roi.number)
    observation.ReferencedROINumber = int(roi.number)
    observation.RTROIInterpretedType = roi.interpreted_type or None
    observation.ROIInterpreter = ""
    return observation
