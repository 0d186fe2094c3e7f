"""Plans for the plan-sum and course tests: copies of a plan as new RTPLAN/RTDOSE objects."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom

from dvheval.testing.synthetic import new_uid

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"


def _files(folder: Path) -> dict[str, Path]:
    """The RTPLAN, RTDOSE and RTSTRUCT of a one-plan folder, by Modality."""
    out = {}
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[str(ds.Modality)] = f
    return out


def copy_plan(src: Path, dst: Path, *, label: str | None = None, fractions: int | None = None,
              scale: float = 1.0, frame_of_reference_uid: str | None = None,
              with_structures: bool = True, drop_fractions: bool = False) -> Path:
    """A second plan made from the plan in ``src``: new RTPLAN and RTDOSE UIDs, the RTDOSE
    referencing the new RTPLAN; optionally another label, fraction count, dose scale (the
    grid scaling is multiplied, so the dose is exactly ``scale`` times the original) or
    Frame of Reference of the dose. The structure set is copied unchanged (same UID)."""
    files = _files(src)
    dst.mkdir(parents=True, exist_ok=True)
    plan = pydicom.dcmread(files["RTPLAN"])
    dose = pydicom.dcmread(files["RTDOSE"])
    plan.SOPInstanceUID = new_uid()
    plan.file_meta.MediaStorageSOPInstanceUID = plan.SOPInstanceUID
    if label is not None:
        plan.RTPlanLabel = label
    if fractions is not None:
        plan.FractionGroupSequence[0].NumberOfFractionsPlanned = fractions
    if drop_fractions:
        del plan.FractionGroupSequence[0].NumberOfFractionsPlanned
    dose.SOPInstanceUID = new_uid()
    dose.file_meta.MediaStorageSOPInstanceUID = dose.SOPInstanceUID
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan.SOPInstanceUID
    if scale != 1.0:
        dose.DoseGridScaling = float(dose.DoseGridScaling) * scale
    if frame_of_reference_uid is not None:
        dose.FrameOfReferenceUID = frame_of_reference_uid
    plan.save_as(dst / "RTPLAN.dcm")
    dose.save_as(dst / "RTDOSE.dcm")
    if with_structures:
        shutil.copy(files["RTSTRUCT"], dst / "RTSTRUCT.dcm")
    return dst


def uniform_plan(folder: Path, dose_gy: float, fractions: int) -> Path:
    """A plan of uniform dose over a box that holds a cylinder PTV and a cylinder organ.

    Every dose metric of either structure is ``dose_gy`` exactly.
    """
    from .phantoms import cylinder, write_phantom

    shapes = [cylinder("PTV", 10.0, -10.0, 10.0, 2.0), cylinder("Cord", 4.0, -10.0, 10.0, 2.0,
                                                                  cx=-20.0)]
    shapes[0].interpreted_type = "PTV"
    shapes[1].interpreted_type = "ORGAN"
    return write_phantom(folder, shapes, lambda x, y, z: np.full_like(x, dose_gy),
                         prescriptions=[("PTV", dose_gy)], fractions=fractions)


def join_structure_set(a: Path, b: Path) -> None:
    """Put the phantom plan in ``b`` on the structure set, study and Frame of Reference of
    the phantom plan in ``a`` (its own structure set is removed)."""
    ss = pydicom.dcmread(a / "rs.dcm")
    for_uid = ss.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    for f in sorted(b.glob("rd*.dcm")):
        dose = pydicom.dcmread(f)
        dose.FrameOfReferenceUID = for_uid
        dose.StudyInstanceUID = ss.StudyInstanceUID
        dose.save_as(f)
    plan = pydicom.dcmread(b / "rp.dcm")
    plan.StudyInstanceUID = ss.StudyInstanceUID
    if "FrameOfReferenceUID" in plan:
        plan.FrameOfReferenceUID = for_uid
    plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = ss.SOPInstanceUID
    plan.save_as(b / "rp.dcm")
    (b / "rs.dcm").unlink()
