"""DVHs a planning system stored in an RTDOSE, as engine DVHs.

Useful to compare dvheval's DVHs with the planning system's own: metrics
are evaluated on them exactly as on computed DVHs.
"""

from __future__ import annotations

from pathlib import Path

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
