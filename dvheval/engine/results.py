"""Result objects of a DVH calculation and their JSON form.

The JSON produced by :meth:`PlanDVHs.to_dict` is the stable contract that
protocol checks, batch runs and other programs read: doses in Gy, volumes
in cm^3, metric keys exactly as requested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the records of what was read live with the reader; offered here as well
from dvheval.dicom.info import DoseInfo, PlanInfo, Prescription
from dvheval.dicom.info import json_number as _num
from dvheval.engine.dvh import DVH
from dvheval.engine.quality import External
from dvheval.integrity import Finding

__all__ = ["DoseInfo", "PlanDVHs", "PlanInfo", "Prescription", "StructureResult", "_num"]


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
                # (numpy rounds by scaling: a value within 1e-12 of a half-way point
                # may round the other way than Python's round() would)
                out["dvh"] = {
                    "dose_gy": np.round(np.asarray(d, dtype=float), 4).tolist(),
                    "volume_cc": np.round(np.asarray(v, dtype=float), 6).tolist(),
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
    #: The external contour the quality indices read (see
    #: :mod:`dvheval.engine.quality`); None when it was not looked for.
    external: External | None = None

    def structure(self, name: str) -> StructureResult | None:
        """The structure of this ROI name, or None.

        The exact name wins; otherwise the name is matched ignoring case and
        surrounding spaces, as ``dvheval dvh --structures`` does. A name that
        matches several ROIs only that way is ambiguous and gives None (use
        the exact name).

        Examples
        --------
        >>> plan = PlanDVHs.__new__(PlanDVHs)
        >>> plan.structures = [StructureResult("SpinalCord", 1, "ORGAN", "ok", 2.0, 1.0)]
        >>> plan.structure("spinalcord").name
        'SpinalCord'
        >>> plan.structure("Cord") is None
        True
        """
        if not isinstance(name, str):
            raise TypeError(f"structure name must be a string, got {type(name).__name__}")
        exact = [s for s in self.structures if s.name == name]
        key = name.strip().lower()
        loose = [s for s in self.structures if s.name.strip().lower() == key]
        hit = exact or loose
        return hit[0] if len(hit) == 1 else None

    def __getitem__(self, name: str) -> StructureResult:
        """``plan["SpinalCord"]``: like :meth:`structure`, but a KeyError naming the ROIs."""
        found = self.structure(name)
        if found is None:
            names = ", ".join(s.name for s in self.structures)
            raise KeyError(f"no single structure named {name!r}; the plan has: {names}")
        return found

    def to_dataframe(self) -> Any:
        """The metrics of every structure as a long pandas DataFrame.

        One row per structure and metric: ``structure``, ``roi_number``,
        ``type``, ``status``, ``metric``, ``value`` (NaN when not computable),
        ``unit`` and ``note`` (why a value is missing). Needs pandas
        (``pip install "dvheval[pandas]"``).
        """
        from dvheval.engine.dvh import _optional
        from dvheval.engine.metrics import parse_metric
        from dvheval.errors import MetricError

        pd = _optional("pandas", "pandas")
        rows = []
        for s in self.structures:
            for name, value in s.metrics.items():
                try:
                    unit = parse_metric(name).output_unit
                except MetricError:
                    unit = None
                rows.append({
                    "structure": s.name, "roi_number": s.number, "type": s.type,
                    "status": s.status, "metric": name,
                    "value": float("nan") if value is None else float(value), "unit": unit,
                    "note": s.metric_errors.get(name, ""),
                })
        columns = ["structure", "roi_number", "type", "status", "metric", "value", "unit", "note"]
        return pd.DataFrame(rows, columns=columns)

    def to_dict(self, include_dvh: bool = True) -> dict[str, Any]:
        """The JSON document of ``dvheval dvh --format json``.

        Its contract is ``dvheval/schemas/dvh.schema.json``; ``schema_version``
        names the version of that schema the document follows (the minor
        number grows when fields are added, the major one when a field is
        removed or renamed).
        """
        from dvheval import __version__

        return {
            "tool": {"name": "dvheval", "version": __version__},
            "schema_version": "1.1",
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
