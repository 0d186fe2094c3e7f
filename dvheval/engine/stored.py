"""DVHs a planning system stored in an RTDOSE, as engine DVHs.

Useful to compare dvheval's DVHs with the planning system's own: metrics
are evaluated on them exactly as on computed DVHs.
:func:`read_stored_dvh_set` also says, item by item, which stored DVHs
cannot be compared and why, so that none is dropped unseen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvheval.dicom.attributes import read_dataset
from dvheval.dicom.stored_dvh import read_dvh_sequence
from dvheval.engine.dvh import DVH


def read_stored_dvhs(path: str | Path) -> dict[int, DVH]:
    """DVHs a planning system stored in an RTDOSE's DVH Sequence, by ROI number.

    Only cumulative or differential DVHs in GY with volumes in CM3 are read;
    others are skipped (see :func:`dvheval.dicom.stored_dvh.read_dvh_sequence`).

    Raises
    ------
    InputError
        When the file cannot be read or a DVH item is damaged.
    """
    return {roi: DVH(d.edges_gy, d.volumes_cc, d.total_cc, d.min_gy, d.max_gy, d.mean_gy)
            for roi, d in read_dvh_sequence(path).items()}


@dataclass
class StoredDVHSet:
    """The DVH Sequence of one RTDOSE: what can be compared, and what cannot.

    Attributes
    ----------
    path : Path
        The RTDOSE file.
    has_sequence : bool
        Whether the file holds a non-empty DVH Sequence at all.
    dvhs : dict of int to DVH
        Comparable DVHs by ROI number: one item per ROI, dose in GY, volume
        in CM3, cumulative or differential, of the grid's dose type, with
        some volume.
    skipped : list of (int or None, str)
        Every other item: its ROI number (None when it names none) and why
        it cannot be compared.
    """

    path: Path
    has_sequence: bool
    dvhs: dict[int, DVH] = field(default_factory=dict)
    skipped: list[tuple[int | None, str]] = field(default_factory=list)


def _roi_numbers(item: Any) -> list[int | None]:
    """The ROI numbers an item references (None for one that is not a whole number)."""
    out: list[int | None] = []
    for ref in item.get("DVHReferencedROISequence", None) or []:
        try:
            value = float(ref.get("ReferencedROINumber"))
            out.append(int(value) if value.is_integer() else None)
        except (TypeError, ValueError):
            out.append(None)
    return out


def _skip_reason(item: Any, grid_dose_type: str) -> str | None:
    """Why an item cannot be compared with the grid's DVH, or None when it can."""
    units = str(item.get("DoseUnits", "")).upper()
    if units != "GY":
        return f"dose units {units or 'missing'} (only GY is compared)"
    vol_units = str(item.get("DVHVolumeUnits", "")).upper()
    if vol_units != "CM3":
        return f"volume units {vol_units or 'missing'} (only CM3 is compared)"
    kind = str(item.get("DVHType", "")).upper()
    if kind not in ("CUMULATIVE", "DIFFERENTIAL"):
        return f"DVH type {kind or 'missing'} (only CUMULATIVE and DIFFERENTIAL are compared)"
    dose_type = str(item.get("DoseType", "")).upper()
    if dose_type and grid_dose_type and dose_type != grid_dose_type:
        return f"dose type {dose_type}, but the dose grid is {grid_dose_type}"
    refs = _roi_numbers(item)
    if len(refs) > 1:
        return f"the DVH combines {len(refs)} ROIs"
    return None


def read_stored_dvh_set(path: str | Path) -> StoredDVHSet:
    """The comparable stored DVHs of an RTDOSE, and every item that is not, with the reason.

    Parameters
    ----------
    path : str or Path
        An RTDOSE file.

    Returns
    -------
    StoredDVHSet

    Raises
    ------
    InputError
        When the file cannot be read or a DVH item is damaged (see
        :func:`dvheval.dicom.stored_dvh.read_dvh_sequence`).
    """
    path = Path(path)
    read = read_stored_dvhs(path)
    ds = read_dataset(path, stop_before_pixels=True)
    items = list(ds.get("DVHSequence", None) or [])
    out = StoredDVHSet(path, bool(items))
    grid_dose_type = str(ds.get("DoseType", "")).upper()
    counts = Counter(refs[0] for refs in map(_roi_numbers, items) if len(refs) == 1)
    for item in items:
        refs = _roi_numbers(item)
        roi = refs[0] if refs else None
        reason = _skip_reason(item, grid_dose_type)
        if reason is None and roi is None:
            reason = "the DVH references no ROI"
        if reason is None and roi is not None and counts[roi] > 1:
            reason = f"ROI {roi} has {counts[roi]} DVH items; which one to compare is ambiguous"
        if reason is None and roi is not None and roi not in read:
            reason = "the stored DVH holds no volume"
        if reason is not None:
            if (roi, reason) not in out.skipped:
                out.skipped.append((roi, reason))
        elif roi is not None:
            out.dvhs[roi] = read[roi]
    return out
