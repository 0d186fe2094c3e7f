"""Write the plan-sum and course examples of the README from the shipped sample plan.

    python tools/make_course_demo.py OUT

writes three folders into OUT, all on the sample plan's structure set and
Frame of Reference:

* ``primary/``: the sample plan (30/40 Gy SIB in 10 fractions), unchanged;
* ``boost/``: a second plan, the sample dose x 0.25 in 5 fractions (PTV40
  10 Gy, PTV30 7.5 Gy), new RTPLAN and RTDOSE UIDs;
* ``reirr/``: a re-irradiation course, the sample dose x 0.5 in 5 fractions
  (PTV40 20 Gy, PTV30 15 Gy), new UIDs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"


def derived_plan(out: Path, label: str, scale: float, fractions: int) -> None:
    """The sample plan's dose and prescriptions times ``scale`` in ``fractions`` fractions."""
    out.mkdir(parents=True, exist_ok=True)
    plan = pydicom.dcmread(SAMPLE / "RTPLAN.dcm")
    dose = pydicom.dcmread(SAMPLE / "RTDOSE.dcm")
    plan.SOPInstanceUID = generate_uid()
    plan.file_meta.MediaStorageSOPInstanceUID = plan.SOPInstanceUID
    plan.RTPlanLabel = label
    plan.FractionGroupSequence[0].NumberOfFractionsPlanned = fractions
    for item in plan.DoseReferenceSequence:
        item.TargetPrescriptionDose = round(float(item.TargetPrescriptionDose) * scale, 4)
    dose.SOPInstanceUID = generate_uid()
    dose.file_meta.MediaStorageSOPInstanceUID = dose.SOPInstanceUID
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan.SOPInstanceUID
    dose.DoseGridScaling = float(dose.DoseGridScaling) * scale
    plan.save_as(out / "RTPLAN.dcm")
    dose.save_as(out / "RTDOSE.dcm")


def main(out: Path) -> None:
    """Write ``primary/``, ``boost/`` and ``reirr/`` into ``out``."""
    shutil.copytree(SAMPLE, out / "primary", dirs_exist_ok=True)
    derived_plan(out / "boost", "Boost 5fx", 0.25, 5)
    derived_plan(out / "reirr", "Re-RT 5fx", 0.5, 5)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
