"""Reading DICOM-RT files: RTDOSE grids, RTSTRUCT contours, RTPLAN prescriptions.

Files are classified by their SOP Class UID (falling back to Modality), never
by name. Every problem with an input file raises :class:`InputError` naming
the file and, where it applies, the attribute. The user's files are only
read, never modified (:mod:`dvheval.dicom.writer` writes new files only).

Submodules
----------
files       finding files, reading headers, the RT objects of one plan
attributes  reading attributes with every bad value refused by name
grid        dose-grid geometry: affine, canonical ``[z, y, x]`` layout, interpolation
info        records of the dose and plan read (DoseInfo, PlanInfo, Prescription)
dose        one RTDOSE file, every attribute checked
dose_sum    the RTDOSE files of one plan summed
structures  RTSTRUCT contours (ContourData parsed by :mod:`~dvheval.dicom.decimals`)
plan        RTPLAN prescription and beams
stored_dvh  DVHs stored in an RTDOSE (as engine DVHs: :mod:`dvheval.engine.stored`)
discover    grouping the files of an archive into plans
writer      writing an RT Structure Set
"""

from __future__ import annotations

from dvheval.dicom.attributes import MAX_COORDINATE_MM
from dvheval.dicom.dose import (
    DOSE_SUMMATION_TYPES,
    MAX_DOSE_GY,
    MAX_GRID_VOXELS,
    MIN_MAX_DOSE_GY,
    ORIENTATION_TOLERANCE,
    SESSION_SUMMATIONS,
    SPACING_RANGE_MM,
    DoseFile,
    DoseGrid,
    read_dose_file,
)
from dvheval.dicom.dose_sum import load_dose
from dvheval.dicom.files import (
    RTDOSE_SOP,
    RTPLAN_SOPS,
    RTSTRUCT_SOP,
    DicomFile,
    InputSet,
    classify,
    expand_paths,
    find_inputs,
    rt_kind,
    sha256_of,
)
from dvheval.dicom.plan import MAX_FRACTIONS, MAX_PRESCRIPTION_GY, read_plan
from dvheval.dicom.stored_dvh import StoredDVH, read_dvh_sequence
from dvheval.dicom.structures import CONTOUR_TYPES, ROI, Contour, StructureSet, read_structure_set

__all__ = [
    "CONTOUR_TYPES", "DOSE_SUMMATION_TYPES", "MAX_COORDINATE_MM", "MAX_DOSE_GY",
    "MAX_FRACTIONS", "MAX_GRID_VOXELS", "MAX_PRESCRIPTION_GY", "MIN_MAX_DOSE_GY",
    "ORIENTATION_TOLERANCE", "RTDOSE_SOP", "RTPLAN_SOPS", "RTSTRUCT_SOP", "ROI",
    "SESSION_SUMMATIONS", "SPACING_RANGE_MM", "Contour", "DicomFile", "DoseFile", "DoseGrid",
    "InputSet", "StoredDVH", "StructureSet", "classify", "expand_paths", "find_inputs",
    "load_dose", "read_dose_file", "read_dvh_sequence", "read_plan", "read_structure_set",
    "rt_kind", "sha256_of",
]
