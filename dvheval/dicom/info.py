"""What was read from the dose and plan files, as plain records with a JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def json_number(v: float | None) -> float | None:
    """A number for JSON: rounded to 6 decimals; None for None, NaN and infinity."""
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v):
        return None
    return float(np.round(v, 6))


@dataclass(frozen=True)
class Prescription:
    """A prescribed dose level, e.g. ``Prescription("PTV40", 40.0, 10)``."""

    name: str
    dose_gy: float
    fractions: int | None = None


@dataclass
class DoseInfo:
    """What dose was used: the files, how they were combined, the grid."""

    files: list[str]
    units: str
    summation: str
    summation_types: list[str]
    frame_of_reference_uid: str
    grid_shape: tuple[int, int, int]
    grid_spacing_mm: tuple[float, float, float]
    grid_origin_mm: tuple[float, float, float]
    resampled_files: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)
    #: Highest dose of the whole grid (Gy) and where it is (x, y, z mm); None
    #: when the grid holds no finite dose.
    max_gy: float | None = None
    max_position_mm: tuple[float, float, float] | None = None
    #: The plans whose doses were combined (a plan sum or treatment courses), each
    #: as :meth:`dvheval.dicom.plan_sum.PlanPart.to_dict`; empty for one plan.
    components: list[dict[str, Any]] = field(default_factory=list)
    #: What the grid holds: ``"physical"`` dose, or e.g. ``"EQD2, a/b=3 Gy"`` for
    #: the cumulative dose of courses.
    quantity: str = "physical"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``dose`` of a DVH result)."""
        return {
            "files": list(self.files),
            "units": self.units,
            "summation": self.summation,
            "summation_types": list(self.summation_types),
            "summed": len(self.files) > 1,
            "resampled_files": list(self.resampled_files),
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "grid": {
                "shape_zyx": list(self.grid_shape),
                "spacing_mm_zyx": [round(float(v), 6) for v in self.grid_spacing_mm],
                "origin_mm_xyz": [round(float(v), 6) for v in self.grid_origin_mm],
            },
            "sha256": dict(self.sha256),
            "max_gy": json_number(self.max_gy),
            "max_position_mm": (None if self.max_position_mm is None
                                else [json_number(v) for v in self.max_position_mm]),
            **self.combination(),
        }

    def combination(self) -> dict[str, Any]:
        """``components`` and ``quantity`` for JSON, only when plans were combined."""
        if not self.components:
            return {}
        return {"components": [dict(c) for c in self.components], "quantity": self.quantity}


@dataclass
class PlanInfo:
    """Prescription read from an RTPLAN.

    ``treatment_beams`` maps each fraction group number to the numbers of
    the beams it delivers (setup beams and beams of zero meterset left out).
    """

    file: str
    label: str
    sop_instance_uid: str
    prescriptions: list[Prescription]
    fractions: int | None
    treatment_beams: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: SHA-256 of the file's bytes as read (empty for a plan that is not one file).
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``plan`` of a DVH result)."""
        return {
            "file": self.file,
            "label": self.label,
            "sop_instance_uid": self.sop_instance_uid,
            "fractions": self.fractions,
            "treatment_beams": {k: list(v) for k, v in self.treatment_beams.items()},
            "prescriptions": [
                {"name": p.name, "dose_gy": p.dose_gy, "fractions": p.fractions}
                for p in self.prescriptions
            ],
        }
