"""Reading the DVHs a planning system stored in an RTDOSE's DVH Sequence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvheval.dicom.attributes import floats, read_dataset, required_integer
from dvheval.errors import InputError


@dataclass(frozen=True)
class StoredDVH:
    """A differential DVH as stored by a planning system, trimmed to its non-empty bins.

    The fields are those of :class:`dvheval.engine.dvh.DVH`, which the
    engine builds from it.
    """

    edges_gy: np.ndarray
    volumes_cc: np.ndarray
    total_cc: float
    min_gy: float
    max_gy: float
    mean_gy: float


def read_dvh_sequence(path: str | Path) -> dict[int, StoredDVH]:
    """DVHs a planning system stored in an RTDOSE's DVH Sequence, by ROI number.

    Only cumulative or differential DVHs in GY with volumes in CM3 are read;
    others are skipped. Useful to compare dvheval's DVHs with the planning
    system's own.

    Raises
    ------
    InputError
        When the file cannot be read or a DVH item is damaged (ROI number not
        a whole number, DVHData not finite dose/volume pairs, negative bin
        widths or volumes beyond rounding (1e-6 of the largest volume),
        DVHDoseScaling not finite and above 0).
    """
    path = Path(path)
    ds = read_dataset(path, stop_before_pixels=True)
    out: dict[int, StoredDVH] = {}
    for item in ds.get("DVHSequence", []) or []:
        if str(item.get("DoseUnits", "")).upper() != "GY":
            continue
        if str(item.get("DVHVolumeUnits", "")).upper() != "CM3":
            continue
        refs = item.get("DVHReferencedROISequence")
        if not refs:
            continue
        roi = required_integer(refs[0], "ReferencedROINumber", path, where="a DVH item: ")
        where = f"the DVH of ROI {roi}: "
        data = floats(item, "DVHData", path, where=where)
        if data.size % 2:
            raise InputError(f"{where}DVHData has {data.size} values, not dose/volume pairs",
                             path, "DVHData")
        data = data.reshape(-1, 2)
        scale = 1.0
        if item.get("DVHDoseScaling") not in (None, ""):
            scale = float(floats(item, "DVHDoseScaling", path, 1, where=where)[0])
            if scale <= 0:
                raise InputError(f"{where}must be greater than 0, is {scale:g}", path,
                                 "DVHDoseScaling")
        widths, vols = data[:, 0] * scale, data[:, 1]
        # planning systems store rounding noise such as -3e-13 cc; more is damage
        if np.any(widths < 0) or np.any(vols < -1e-6 * max(1.0, float(vols.max()))):
            raise InputError(f"{where}DVHData holds negative bin widths or volumes", path,
                             "DVHData")
        edges = np.concatenate([[0.0], np.cumsum(widths)])
        if str(item.get("DVHType", "")).upper() == "CUMULATIVE":
            diff = np.clip(vols - np.concatenate([vols[1:], [0.0]]), 0.0, None)
        else:
            diff = vols
        nz = np.nonzero(diff > 0)[0]
        if nz.size == 0:
            continue
        edges = edges[nz[0]: nz[-1] + 2]
        diff = diff[nz[0]: nz[-1] + 1]
        total = float(diff.sum())
        centres = 0.5 * (edges[:-1] + edges[1:])
        out[roi] = StoredDVH(edges, diff, total, float(edges[0]), float(edges[-1]),
                             float(np.dot(diff, centres) / total))
    return out
