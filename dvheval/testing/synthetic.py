"""Write synthetic DICOM-RT files: RT Dose, RT Structure Set and RT Plan.

These writers build small, standard-conforming DICOM-RT objects from numpy
arrays and analytic shapes. They are used to make phantoms with known dose
and volumes for the test suite and to generate the sample plan shipped in
``sample_dicom/``. They need only numpy and pydicom. (About 700 lines: three
writers with the full attribute sets of their IODs, for tests and tools only.)

Coordinates are DICOM patient coordinates in mm (x towards the patient's
left, y posterior, z superior for a head-first supine patient).

Grid geometry follows DICOM PS3.3 C.7.6.2 and C.8.8.3.2: the centre of the
voxel in frame ``f``, row ``r``, column ``c`` lies at::

    origin + c * PixelSpacing[1] * row_direction
           + r * PixelSpacing[0] * column_direction
           + frame_displacement[f]

where ``row_direction`` is ImageOrientationPatient[0:3] (the direction in
which the column index grows along a row), ``column_direction`` is
ImageOrientationPatient[3:6], and ``frame_displacement`` comes from
GridFrameOffsetVector (see :class:`GridSpec`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from dvheval.dicom.writer import (
    _DEFAULT_PATIENT_ID,
    _DEFAULT_PATIENT_NAME,
    base_dataset,
    decimal_strings,
    save,
)

# the structure set writer and the UIDs live in dvheval.dicom.writer (the
# product writes derived structures with it); they are offered here as well
from dvheval.dicom.writer import RT_STRUCTURE_SET_STORAGE as RT_STRUCTURE_SET_STORAGE
from dvheval.dicom.writer import ROISpec as ROISpec
from dvheval.dicom.writer import derived_uid as derived_uid
from dvheval.dicom.writer import new_uid as new_uid
from dvheval.dicom.writer import write_rtstruct as write_rtstruct

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"

#: Row and column directions (ImageOrientationPatient) of axial images for
#: each patient position, as written by CT scanners for that position.
ORIENTATIONS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "HFS": ((1, 0, 0), (0, 1, 0)),
    "FFS": ((-1, 0, 0), (0, 1, 0)),
    "HFP": ((-1, 0, 0), (0, -1, 0)),
    "FFP": ((1, 0, 0), (0, -1, 0)),
    "HFDL": ((0, -1, 0), (1, 0, 0)),
    "HFDR": ((0, 1, 0), (-1, 0, 0)),
    "FFDL": ((0, 1, 0), (1, 0, 0)),
    "FFDR": ((0, -1, 0), (-1, 0, 0)),
}

# --------------------------------------------------------------------- grids


@dataclass(frozen=True)
class GridSpec:
    """Geometry of a multi-frame RT Dose grid as written to DICOM.

    Attributes
    ----------
    origin_mm : tuple of 3 float
        ImagePositionPatient: centre of the voxel in frame 0, row 0,
        column 0 (mm).
    row_direction : tuple of 3 float
        ImageOrientationPatient[0:3], unit vector along which the column
        index increases.
    column_direction : tuple of 3 float
        ImageOrientationPatient[3:6], unit vector along which the row index
        increases.
    pixel_spacing_mm : tuple of 2 float
        PixelSpacing in DICOM order: (spacing between adjacent rows,
        spacing between adjacent columns).
    frame_offsets_mm : tuple of float
        GridFrameOffsetVector, one value per frame, written as given.
    absolute_offsets : bool
        False (default): the offsets are relative distances along the
        normal ``row_direction x column_direction`` from the origin, and
        the first one must be 0. True: the offsets are the absolute patient
        z coordinates of the frames, and the first one must equal the
        origin's z.

    Notes
    -----
    The dataclass accepts any values, so that deliberately inconsistent
    files can be written; :meth:`voxel_positions` raises ``ValueError`` on a
    grid whose offsets contradict its origin.
    """

    origin_mm: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    pixel_spacing_mm: tuple[float, float]
    frame_offsets_mm: tuple[float, ...]
    absolute_offsets: bool = False

    @property
    def normal(self) -> np.ndarray:
        """Frame stacking direction ``row_direction x column_direction``."""
        return np.cross(
            np.asarray(self.row_direction, dtype=float),
            np.asarray(self.column_direction, dtype=float),
        )

    def frame_displacements(self) -> np.ndarray:
        """Displacement (mm) of each frame's origin from ``origin_mm``.

        Returns
        -------
        ndarray, shape (frames, 3)

        Raises
        ------
        ValueError
            If the first offset is not 0 (relative offsets) or not the
            origin's z (absolute offsets), or if absolute offsets are used
            with a normal that has no z component.
        """
        offsets = np.asarray(self.frame_offsets_mm, dtype=float).reshape(-1)
        normal = self.normal
        if offsets.size == 0:
            raise ValueError("frame_offsets_mm is empty")
        if self.absolute_offsets:
            z0 = float(self.origin_mm[2])
            if abs(offsets[0] - z0) > 1e-4:
                raise ValueError(
                    f"absolute frame offsets must start at the origin z {z0}, not {offsets[0]}"
                )
            if abs(normal[2]) < 1e-6:
                raise ValueError("absolute frame offsets need a normal with a z component")
            steps = (offsets - z0) / normal[2]
        else:
            if abs(offsets[0]) > 1e-6:
                raise ValueError(f"relative frame offsets must start at 0, not {offsets[0]}")
            steps = offsets
        out: np.ndarray = steps[:, None] * normal[None, :]
        return out

    def voxel_positions(self, shape: Sequence[int]) -> np.ndarray:
        """Patient coordinates of every voxel centre.

        Parameters
        ----------
        shape : sequence of 3 int
            (frames, rows, columns) of the dose array; ``frames`` must equal
            the number of frame offsets.

        Returns
        -------
        ndarray, shape (frames, rows, columns, 3)
            x, y, z in mm of each voxel centre.
        """
        frames, rows, cols = (int(s) for s in shape)
        if frames != len(self.frame_offsets_mm):
            raise ValueError(
                f"shape has {frames} frames but the grid has "
                f"{len(self.frame_offsets_mm)} frame offsets"
            )
        row_dir = np.asarray(self.row_direction, dtype=float)
        col_dir = np.asarray(self.column_direction, dtype=float)
        row_spacing, col_spacing = (float(s) for s in self.pixel_spacing_mm)
        frame_part = self.frame_displacements()  # (F, 3)
        row_part = np.arange(rows)[:, None] * row_spacing * col_dir[None, :]  # (R, 3)
        col_part = np.arange(cols)[:, None] * col_spacing * row_dir[None, :]  # (C, 3)
        origin = np.asarray(self.origin_mm, dtype=float)
        positions: np.ndarray = (
            origin[None, None, None, :]
            + frame_part[:, None, None, :]
            + row_part[None, :, None, :]
            + col_part[None, None, :, :]
        )
        return positions


def _axis_of(vector: Sequence[float] | np.ndarray) -> int:
    """Index (0 = x, 1 = y, 2 = z) of the patient axis a unit vector lies on."""
    v = np.abs(np.asarray(vector, dtype=float))
    axis = int(np.argmax(v))
    if abs(v[axis] - 1.0) > 1e-6 or np.delete(v, axis).max() > 1e-6:
        raise ValueError(f"direction {tuple(vector)} is not along a patient axis")
    return axis


def axial_grid(
    origin_mm: Sequence[float],
    spacing_mm: Sequence[float] = (2.5, 2.5, 2.5),
    shape: Sequence[int] | None = None,
    orientation: str = "HFS",
    absolute_offsets: bool = False,
) -> GridSpec:
    """Grid over an axis-aligned box, written in a given patient orientation.

    The box is the one whose voxel centres an HFS grid with ``origin_mm``,
    ``spacing_mm`` and ``shape`` would have. The returned grid covers the
    same voxel centres but uses the image orientation a scanner writes for
    ``orientation``; frames are stacked along its normal with increasing
    offsets (for feet-first positions the normal is -z, so frame 0 is the
    most superior one).

    Parameters
    ----------
    origin_mm : sequence of 3 float
        (x, y, z) of the box corner with the smallest x, y and z (mm).
    spacing_mm : sequence of 3 float
        Voxel spacing (dz, dy, dx) in mm, in the same order as ``shape``.
    shape : sequence of 3 int
        Number of voxels (nz, ny, nx) of the box. Required.
    orientation : str
        One of ``HFS, FFS, HFP, FFP, HFDL, HFDR, FFDL, FFDR``.
    absolute_offsets : bool
        Write GridFrameOffsetVector as absolute z values instead of
        offsets relative to the first frame.

    Returns
    -------
    GridSpec
        Use :func:`reorient_dose` to get a ``[z, y, x]`` dose array in the
        (frames, rows, columns) order of this grid.
    """
    if shape is None:
        raise TypeError("axial_grid() needs the box shape (nz, ny, nx)")
    try:
        row_dir, col_dir = ORIENTATIONS[orientation.upper()]
    except KeyError:
        raise ValueError(
            f"unknown orientation {orientation!r}; expected one of {', '.join(ORIENTATIONS)}"
        ) from None
    origin = np.asarray(origin_mm, dtype=float)
    # per patient axis (x, y, z): voxel count and spacing
    counts_xyz = np.array([shape[2], shape[1], shape[0]], dtype=int)
    spacing_xyz = np.array([spacing_mm[2], spacing_mm[1], spacing_mm[0]], dtype=float)
    if np.any(counts_xyz < 1) or np.any(spacing_xyz <= 0):
        raise ValueError("shape must be positive and spacing_mm > 0")
    normal = np.cross(row_dir, col_dir)
    corner = origin.copy()
    for vec in (row_dir, col_dir, normal):
        axis = _axis_of(vec)
        if vec[axis] < 0:
            corner[axis] = origin[axis] + (counts_xyz[axis] - 1) * spacing_xyz[axis]
    row_axis, col_axis = _axis_of(row_dir), _axis_of(col_dir)
    pixel_spacing = (float(spacing_xyz[col_axis]), float(spacing_xyz[row_axis]))
    steps = np.arange(counts_xyz[2]) * spacing_xyz[2]
    if absolute_offsets:
        offsets = corner[2] + steps * normal[2]
    else:
        offsets = steps
    return GridSpec(
        origin_mm=(float(corner[0]), float(corner[1]), float(corner[2])),
        row_direction=(float(row_dir[0]), float(row_dir[1]), float(row_dir[2])),
        column_direction=(float(col_dir[0]), float(col_dir[1]), float(col_dir[2])),
        pixel_spacing_mm=pixel_spacing,
        frame_offsets_mm=tuple(float(v) for v in offsets),
        absolute_offsets=absolute_offsets,
    )


def reorient_dose(
    dose_zyx: np.ndarray,
    grid: GridSpec,
    hfs_origin_mm: Sequence[float],
    spacing_mm: Sequence[float],
    *,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Rearrange a ``[z, y, x]`` dose array into the voxel order of ``grid``.

    Every voxel of the result takes the value of the nearest voxel of
    ``dose_zyx``, so written with ``grid`` the same dose lies at the same
    physical point.

    Parameters
    ----------
    dose_zyx : ndarray, shape (nz, ny, nx)
        Dose on the HFS box: ``dose_zyx[k, j, i]`` is at
        ``hfs_origin_mm + (i * dx, j * dy, k * dz)``.
    grid : GridSpec
        Target grid, usually from :func:`axial_grid` on the same box.
    hfs_origin_mm : sequence of 3 float
        (x, y, z) of ``dose_zyx[0, 0, 0]``.
    spacing_mm : sequence of 3 float
        (dz, dy, dx) of ``dose_zyx``.
    shape : sequence of 3 int, optional
        (frames, rows, columns) of the result. Derived from ``grid`` and
        ``dose_zyx`` when the grid's directions lie along patient axes.

    Returns
    -------
    ndarray, shape (frames, rows, columns)

    Raises
    ------
    ValueError
        If a voxel of ``grid`` lies outside the box of ``dose_zyx``.
    """
    dose_zyx = np.asarray(dose_zyx)
    if dose_zyx.ndim != 3:
        raise ValueError("dose_zyx must be 3-D, indexed [z, y, x]")
    if shape is None:
        size_xyz = (dose_zyx.shape[2], dose_zyx.shape[1], dose_zyx.shape[0])
        shape = (
            len(grid.frame_offsets_mm),
            size_xyz[_axis_of(grid.column_direction)],
            size_xyz[_axis_of(grid.row_direction)],
        )
    positions = grid.voxel_positions(shape)
    origin = np.asarray(hfs_origin_mm, dtype=float)
    spacing_xyz = np.array([spacing_mm[2], spacing_mm[1], spacing_mm[0]], dtype=float)
    index_xyz = np.rint((positions - origin) / spacing_xyz).astype(np.int64)
    limits_xyz = np.array([dose_zyx.shape[2], dose_zyx.shape[1], dose_zyx.shape[0]])
    if np.any(index_xyz < 0) or np.any(index_xyz >= limits_xyz):
        raise ValueError("the grid reaches outside the box of dose_zyx")
    picked: np.ndarray = dose_zyx[index_xyz[..., 2], index_xyz[..., 1], index_xyz[..., 0]]
    return picked


# ------------------------------------------------------------------ RT Dose


def write_rtdose(
    path: str | Path,
    dose_gy: np.ndarray,
    grid: GridSpec,
    *,
    frame_of_reference_uid: str,
    study_uid: str,
    patient_id: str = _DEFAULT_PATIENT_ID,
    patient_name: str = _DEFAULT_PATIENT_NAME,
    summation_type: str = "PLAN",
    units: str = "GY",
    referenced_plan_uid: str | None = None,
    referenced_fraction_group: int | None = None,
    referenced_beam_number: int | None = None,
    bits: int = 32,
    sop_instance_uid: str | None = None,
    series_uid: str | None = None,
) -> str:
    """Write a multi-frame RT Dose file.

    The dose is stored as unsigned integers with
    ``DoseGridScaling = max(dose) / (2**bits - 1)``, so each stored value
    is within half a scaling step of the input.

    Parameters
    ----------
    path : str or Path
        File to write; parent folders are created.
    dose_gy : ndarray, shape (frames, rows, columns)
        Non-negative dose in ``units``; frame ``f``, row ``r``, column
        ``c`` is the voxel placed by ``grid``.
    grid : GridSpec
        Geometry; its number of frame offsets must equal ``frames``.
    frame_of_reference_uid, study_uid : str
        UIDs shared with the structure set and plan.
    patient_id, patient_name : str
        Patient identification.
    summation_type : str
        DoseSummationType, e.g. ``PLAN``, ``FRACTION``, ``BEAM``.
    units : str
        DoseUnits, ``GY`` or ``RELATIVE``.
    referenced_plan_uid : str, optional
        SOPInstanceUID of the RT Plan; writes ReferencedRTPlanSequence.
    referenced_fraction_group : int, optional
        Fraction group referenced inside the plan reference; written when
        given and for FRACTION and BEAM summation (default group 1).
    referenced_beam_number : int, optional
        Beam referenced inside the fraction group; required for BEAM
        summation when a plan is referenced.
    bits : int
        16 or 32 bits per stored value.
    sop_instance_uid, series_uid : str, optional
        Fixed UIDs; new ones are generated when omitted.

    Returns
    -------
    str
        The SOPInstanceUID written.

    Notes
    -----
    Long on purpose: it sets the attributes of one DICOM object module by
    module, in the order of the standard, so that each can be checked
    against PS3.3 by reading down the function.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    if dose.ndim != 3:
        raise ValueError("dose_gy must be 3-D, shaped (frames, rows, columns)")
    frames, rows, cols = dose.shape
    if frames != len(grid.frame_offsets_mm):
        raise ValueError(
            f"dose has {frames} frames but the grid has {len(grid.frame_offsets_mm)} offsets"
        )
    if not (1 <= rows <= 65535 and 1 <= cols <= 65535 and frames >= 1):
        raise ValueError(f"unsupported dose array shape {dose.shape}")
    if not np.all(np.isfinite(dose)):
        raise ValueError("dose_gy contains NaN or infinite values")
    if dose.min() < 0:
        raise ValueError("dose_gy contains negative values")
    if bits not in (16, 32):
        raise ValueError("bits must be 16 or 32")
    summation_type = summation_type.upper()

    max_count = 2**bits - 1
    max_dose = float(dose.max())
    scaling_text = decimal_strings([max_dose / max_count if max_dose > 0 else 1.0])[0]
    scaling = float(scaling_text)
    counts = np.clip(np.rint(dose / scaling), 0, max_count)
    dtype = np.dtype("<u2") if bits == 16 else np.dtype("<u4")
    pixel_bytes = counts.astype(dtype).tobytes()
    expected = frames * rows * cols * (bits // 8)
    if len(pixel_bytes) != expected or len(pixel_bytes) % 2:
        raise AssertionError("pixel data length does not match the image attributes")

    sop_instance_uid = sop_instance_uid or new_uid()
    ds = base_dataset(
        RT_DOSE_STORAGE,
        sop_instance_uid,
        "RTDOSE",
        study_uid=study_uid,
        series_uid=series_uid or new_uid(),
        frame_of_reference_uid=frame_of_reference_uid,
        patient_id=patient_id,
        patient_name=patient_name,
        series_number=3,
        series_description="Dose",
    )
    # General Image
    ds.InstanceNumber = 1
    # Image Plane
    ds.PixelSpacing = decimal_strings(grid.pixel_spacing_mm)
    ds.ImageOrientationPatient = decimal_strings([*grid.row_direction, *grid.column_direction])
    ds.ImagePositionPatient = decimal_strings(grid.origin_mm)
    ds.SliceThickness = None
    # Image Pixel / RT Dose
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    # Multi-frame
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = Tag("GridFrameOffsetVector")
    ds.DoseUnits = units
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation_type
    ds.GridFrameOffsetVector = decimal_strings(grid.frame_offsets_mm)
    ds.DoseGridScaling = scaling_text
    if referenced_plan_uid is not None:
        plan_ref = Dataset()
        plan_ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        plan_ref.ReferencedSOPInstanceUID = referenced_plan_uid
        needs_group = summation_type in ("FRACTION", "BEAM", "FRACTION_SESSION", "BEAM_SESSION")
        needs_beam = summation_type in ("BEAM", "BEAM_SESSION")
        if needs_beam and referenced_beam_number is None:
            raise ValueError(f"{summation_type} dose needs referenced_beam_number")
        if needs_group or referenced_fraction_group is not None:
            group = Dataset()
            group.ReferencedFractionGroupNumber = (
                1 if referenced_fraction_group is None else int(referenced_fraction_group)
            )
            if referenced_beam_number is not None:
                beam = Dataset()
                beam.ReferencedBeamNumber = int(referenced_beam_number)
                group.ReferencedBeamSequence = DicomSequence([beam])
            plan_ref.ReferencedFractionGroupSequence = DicomSequence([group])
        ds.ReferencedRTPlanSequence = DicomSequence([plan_ref])
    ds.add_new(Tag("PixelData"), "OW", pixel_bytes)
    save(ds, path)
    return sop_instance_uid


# ------------------------------------------------------------------ RT Plan


def write_rtplan(
    path: str | Path,
    *,
    prescriptions: Sequence[tuple[str, float]],
    fractions: int,
    frame_of_reference_uid: str,
    study_uid: str,
    patient_id: str = _DEFAULT_PATIENT_ID,
    patient_name: str = _DEFAULT_PATIENT_NAME,
    structure_set_uid: str | None = None,
    label: str = "DVHEVAL",
    sop_instance_uid: str | None = None,
    series_uid: str | None = None,
    roi_numbers: Mapping[str, int] | None = None,
    beam_metersets: Mapping[int, float] | None = None,
    approval_status: str | None = "APPROVED",
    isocenter_mm: Sequence[float] | None = None,
) -> str:
    """Write an RT Plan file holding prescriptions and a fraction scheme.

    Parameters
    ----------
    path : str or Path
        File to write; parent folders are created.
    prescriptions : sequence of (str, float)
        (target name, total prescribed dose in Gy); one DoseReferenceSequence
        item each, numbered from 1, with DoseReferenceStructureType VOLUME,
        DoseReferenceType TARGET and the name as DoseReferenceDescription.
    fractions : int
        NumberOfFractionsPlanned of the single fraction group.
    frame_of_reference_uid, study_uid : str
        UIDs shared with the dose and structure set.
    patient_id, patient_name : str
        Patient identification.
    structure_set_uid : str, optional
        SOPInstanceUID of the RT Structure Set. With it RTPlanGeometry is
        ``PATIENT`` and ReferencedStructureSetSequence is written; without
        it RTPlanGeometry is ``TREATMENT_DEVICE``.
    label : str
        RTPlanLabel (at most 16 characters).
    sop_instance_uid, series_uid : str, optional
        Fixed UIDs; new ones are generated when omitted.
    roi_numbers : mapping of str to int, optional
        ROI number of each prescription's target, written as
        ReferencedROINumber of its dose reference.
    beam_metersets : mapping of int to float, optional
        Beam number -> meterset (MU) of the beams the fraction group
        delivers, written as its ReferencedBeamSequence (no BeamSequence is
        written: the file describes what is delivered, not the machine).
    approval_status : str or None
        ApprovalStatus (``APPROVED``, ``UNAPPROVED``, ``REJECTED``); None
        leaves the attribute out.
    isocenter_mm : sequence of 3 float, optional
        Treatment isocenter: with it a BeamSequence is written, one beam
        per delivered beam (or beam 1), each with one control point at
        this IsocenterPosition.

    Returns
    -------
    str
        The SOPInstanceUID written.

    Notes
    -----
    Long on purpose: it sets the attributes of one DICOM object module by
    module, in the order of the standard, so that each can be checked
    against PS3.3 by reading down the function.
    """
    if int(fractions) < 1:
        raise ValueError("fractions must be at least 1")
    sop_instance_uid = sop_instance_uid or new_uid()
    ds = base_dataset(
        RT_PLAN_STORAGE,
        sop_instance_uid,
        "RTPLAN",
        study_uid=study_uid,
        series_uid=series_uid or new_uid(),
        frame_of_reference_uid=frame_of_reference_uid,
        patient_id=patient_id,
        patient_name=patient_name,
        series_number=2,
        series_description="Plan",
    )
    ds.InstanceNumber = 1
    ds.RTPlanLabel = label
    ds.RTPlanName = label
    ds.RTPlanDate = ""
    ds.RTPlanTime = ""
    if approval_status is not None:
        ds.ApprovalStatus = approval_status
    if structure_set_uid is not None:
        ds.RTPlanGeometry = "PATIENT"
        ss_ref = Dataset()
        ss_ref.ReferencedSOPClassUID = RT_STRUCTURE_SET_STORAGE
        ss_ref.ReferencedSOPInstanceUID = structure_set_uid
        ds.ReferencedStructureSetSequence = DicomSequence([ss_ref])
    else:
        ds.RTPlanGeometry = "TREATMENT_DEVICE"

    references, referenced = [], []
    for number, (name, dose) in enumerate(prescriptions, start=1):
        if not float(dose) > 0:
            raise ValueError(f"prescription {name!r}: dose must be positive")
        item = Dataset()
        item.DoseReferenceNumber = number
        item.DoseReferenceUID = derived_uid(sop_instance_uid, "dose reference", str(number))
        item.DoseReferenceStructureType = "VOLUME"
        item.DoseReferenceDescription = name
        if roi_numbers is not None and name in roi_numbers:
            item.ReferencedROINumber = int(roi_numbers[name])
        item.DoseReferenceType = "TARGET"
        item.TargetPrescriptionDose = decimal_strings([dose])[0]
        references.append(item)
        ref = Dataset()
        ref.ReferencedDoseReferenceNumber = number
        referenced.append(ref)
    ds.DoseReferenceSequence = DicomSequence(references)

    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = int(fractions)
    group.NumberOfBeams = len(beam_metersets or {})
    group.NumberOfBrachyApplicationSetups = 0
    if beam_metersets:
        beam_refs = []
        for number, meterset in beam_metersets.items():
            ref = Dataset()
            ref.ReferencedBeamNumber = int(number)
            ref.BeamMeterset = decimal_strings([meterset])[0]
            beam_refs.append(ref)
        group.ReferencedBeamSequence = DicomSequence(beam_refs)
    if referenced:
        group.ReferencedDoseReferenceSequence = DicomSequence(referenced)
    ds.FractionGroupSequence = DicomSequence([group])
    if isocenter_mm is not None:
        beams = []
        for number in beam_metersets or {1: 0.0}:
            cp = Dataset()
            cp.ControlPointIndex = 0
            cp.IsocenterPosition = decimal_strings(isocenter_mm)
            beam = Dataset()
            beam.BeamNumber = int(number)
            beam.BeamName = f"Beam {number}"
            beam.TreatmentDeliveryType = "TREATMENT"
            beam.NumberOfControlPoints = 1
            beam.ControlPointSequence = DicomSequence([cp])
            beams.append(beam)
        ds.BeamSequence = DicomSequence(beams)
    save(ds, path)
    return sop_instance_uid


# ------------------------------------------------------------------- shapes


def ellipse_contour(
    center_xy: Sequence[float],
    semi_axes_xy: Sequence[float],
    z: float,
    n: int = 96,
) -> np.ndarray:
    """Closed planar polygon approximating an axis-aligned ellipse.

    Parameters
    ----------
    center_xy : sequence of 2 float
        Centre (x, y) in mm.
    semi_axes_xy : sequence of 2 float
        Semi-axes along x and y in mm.
    z : float
        Plane of the contour (mm).
    n : int
        Number of vertices (at least 3).

    Returns
    -------
    ndarray, shape (n, 3)
        Vertices on the ellipse, counter-clockwise in the patient x-y plane
        (positive shoelace area), starting on the +x axis; the first point
        is not repeated at the end.
    """
    if n < 3:
        raise ValueError("a closed contour needs at least 3 points")
    theta = 2.0 * np.pi * np.arange(n) / n
    points = np.empty((n, 3))
    points[:, 0] = center_xy[0] + semi_axes_xy[0] * np.cos(theta)
    points[:, 1] = center_xy[1] + semi_axes_xy[1] * np.sin(theta)
    points[:, 2] = z
    return points


def circle_contour(
    center_xy: Sequence[float],
    radius: float,
    z: float,
    n: int = 96,
) -> np.ndarray:
    """Closed planar polygon approximating a circle.

    Parameters
    ----------
    center_xy : sequence of 2 float
        Centre (x, y) in mm.
    radius : float
        Radius in mm.
    z : float
        Plane of the contour (mm).
    n : int
        Number of vertices (at least 3).

    Returns
    -------
    ndarray, shape (n, 3)
        See :func:`ellipse_contour`.
    """
    return ellipse_contour(center_xy, (radius, radius), z, n)
