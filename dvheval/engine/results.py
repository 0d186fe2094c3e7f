"""Result objects of a DVH calculation and their JSON form.

The JSON produced by :meth:`PlanDVHs.to_dict` is the stable contract that
protocol checks, batch runs and other programs read: doses in Gy, volumes
in cm^3, metric keys exactly as requested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dvheval.engine.dvh import DVH
from dvheval.integrity import Finding


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

    def to_dict(self) -> dict[str, Any]:
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
            "max_gy": _num(self.max_gy),
            "max_position_mm": (None if self.max_position_mm is None
                                else [_num(v) for v in self.max_position_mm]),
        }


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

    def to_dict(self) -> dict[str, Any]:
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


@dataclass
class StructureResult:
    """DVH and metrics of one ROI.

    ``status`` is one of ``"ok"``; ``"partial"`` (part of the structure lies
    outside the dose grid: metrics refer to the covered part only);
    ``"outside"`` (no part inside the dose grid); ``"empty"`` (no contours);
    ``"no_dvh"`` (only POINT or OPEN contours); ``"error"`` (contours
    unusable, see ``warnings``).
    """

    name: str
    number: int
    type: str
    status: str
    volume_cc: float | None
    coverage: float | None
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    metric_errors: dict[str, str] = field(default_factory=dict)
    dvh: DVH | None = None
    #: Contour problems that can change a value computed from this structure
    #: (dropped, duplicated or self-intersecting contours); a protocol
    #: constraint on a structure with defects is not evaluated.
    defects: list[str] = field(default_factory=list)

    @property
    def fully_covered(self) -> bool:
        return self.status == "ok"

    def to_dict(self, include_dvh: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "number": self.number,
            "type": self.type,
            "status": self.status,
            "volume_cc": _num(self.volume_cc),
            "coverage": _num(self.coverage),
            "warnings": list(self.warnings),
            "defects": list(self.defects),
            "metrics": {k: _num(v) for k, v in self.metrics.items()},
        }
        if self.metric_errors:
            out["metric_errors"] = dict(self.metric_errors)
        if include_dvh:
            if self.dvh is not None and not self.dvh.is_empty:
                d, v = self.dvh.cumulative()
                out["dvh"] = {
                    "dose_gy": [round(float(x), 4) for x in d],
                    "volume_cc": [round(float(x), 6) for x in v],
                }
            else:
                out["dvh"] = {"dose_gy": [], "volume_cc": []}
        return out


@dataclass
class PlanDVHs:
    """Everything computed for one plan."""

    patient_id: str
    patient_name: str
    dose: DoseInfo
    structure_set_file: str
    structure_set_label: str
    frame_of_reference_uid: str
    plan: PlanInfo | None
    structures: list[StructureResult]
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Integrity findings of the input files (see :mod:`dvheval.integrity`).
    findings: list[Finding] = field(default_factory=list)

    def structure(self, name: str) -> StructureResult | None:
        """The structure with this exact ROI name, or None."""
        for s in self.structures:
            if s.name == name:
                return s
        return None

    def to_dict(self, include_dvh: bool = True) -> dict[str, Any]:
        from dvheval import __version__

        return {
            "tool": {"name": "dvheval", "version": __version__},
            "patient": {"id": self.patient_id, "name": self.patient_name},
            "dose": self.dose.to_dict(),
            "structure_set": {
                "file": self.structure_set_file,
                "label": self.structure_set_label,
                "frame_of_reference_uid": self.frame_of_reference_uid,
            },
            "plan": self.plan.to_dict() if self.plan else None,
            "settings": dict(self.settings),
            "warnings": list(self.warnings),
            "integrity": [f.to_dict() for f in self.findings],
            "structures": [s.to_dict(include_dvh) for s in self.structures],
        }


def _num(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v):
        return None
    return float(np.round(v, 6))
