"""Plan-quality indices: conformity, gradient, homogeneity and isodose volumes.

Every index is computed from two partial-volume DVHs: the target's and the
external contour's (the patient outline, RT ROI Interpreted Type EXTERNAL).
The volume of an isodose inside the patient is the external's volume
receiving at least that dose, so the indices keep the accuracy of the DVH
engine (see README, Accuracy). With ``TV`` the target volume, ``PIV`` the
prescription isodose volume (the external's volume receiving at least the
reference dose) and ``TV_PIV`` the target volume receiving at least it:

* Paddick conformity index ``TV_PIV^2 / (TV * PIV)`` (Paddick 2000,
  J Neurosurg 93 Suppl 3:219-222); 1 is a perfect match, it falls with both
  under-coverage and spill.
* RTOG conformity index ``PIV / TV`` (Shaw et al. 1993, Int J Radiat Oncol
  Biol Phys 27:1231-1239); 1 is ideal, 1-2 per protocol in the RTOG
  radiosurgery guidelines.
* Gradient index ``PIV(50 % of the level) / PIV(level)`` (Paddick & Lippitz
  2006, J Neurosurg 105 Suppl:194-201).
* Homogeneity index ``(D2% - D98%) / D50%`` of the target (ICRU Report 83,
  2010); 0 is a uniform dose.

The target is taken to lie inside the external: ``TV_PIV`` is the target's
volume at the level, capped at ``PIV`` (a target contour reaching outside
the patient outline cannot have more of its volume inside the isodose than
the isodose has inside the patient).

Which ROI is the external (:func:`find_external`): the one ROI of RT ROI
Interpreted Type ``EXTERNAL``; without one, the one ROI named ``BODY``,
``External`` or ``Outline`` (case, spaces, ``_`` and ``-`` ignored). ``Skin``
is not taken: in many departments it names a shell a few mm under the
surface, not the whole patient. None, or two, and the indices are not
computable.

When the external reaches outside the dose grid, the isodose volume
outside the grid is unknown. It is taken as zero only when the dose on
every outer face of the grid is below the level, assuming that the dose,
which falls off away from the targets, does not rise back to the level
beyond a boundary where it is lower; otherwise the index is not computable.
The rule looks at all six faces, not only where the external crosses them,
so it may refuse an index that a finer rule would allow, never the reverse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dvheval.engine.dvh import DVH

#: Names of the external contour when no ROI has Interpreted Type EXTERNAL
#: (compared with case, spaces, ``_`` and ``-`` ignored).
EXTERNAL_NAMES = ("body", "external", "outline")


class IndexNotComputable(Exception):
    """A quality index cannot be computed; the text says why."""


@dataclass(frozen=True)
class External:
    """The patient's external contour as the quality indices need it.

    Attributes
    ----------
    name : str or None
        ROI name of the external; None when none was found.
    dvh : DVH or None
        Its partial-volume DVH (of the part inside the dose grid).
    coverage : float
        Fraction of its volume inside the dose grid (0..1).
    boundary_max_gy : float
        Highest dose on the outer faces of the dose grid.
    problem : str or None
        Why the external cannot be used (none found, ambiguous, its contours
        unusable); None when it can.
    """

    name: str | None
    dvh: DVH | None
    coverage: float
    boundary_max_gy: float
    problem: str | None = None

    def isodose_cc(self, level_gy: float) -> float:
        """Volume (cm^3) of the external receiving at least ``level_gy``.

        Raises
        ------
        IndexNotComputable
            No usable external, or it reaches outside the dose grid where the
            dose on the grid's boundary reaches the level.
        """
        if self.problem is not None or self.dvh is None or self.dvh.is_empty:
            raise IndexNotComputable(self.problem or f"the external {self.name!r} has no dose")
        if self.coverage < 1.0 and not self.boundary_max_gy < level_gy:
            raise IndexNotComputable(
                f"the external {self.name!r} reaches outside the dose grid "
                f"({100 * self.coverage:.1f} % inside) and the dose on the grid's boundary "
                f"reaches {self.boundary_max_gy:.4g} Gy, not below the level {level_gy:.4g} Gy: "
                "the isodose volume outside the grid is unknown")
        return self.dvh.volume_at_dose(level_gy)


    def describe(self) -> str:
        """One line for the reports: which ROI the indices read, and how far it is covered.

        Examples
        --------
        >>> External("BODY", None, 1.0, 0.0).describe()
        "quality indices: the external contour is 'BODY', wholly inside the dose grid"
        """
        if self.problem is not None:
            return f"quality indices: {self.problem}"
        text = f"quality indices: the external contour is {self.name!r}"
        if self.coverage >= 1.0:
            return text + ", wholly inside the dose grid"
        if not math.isfinite(self.boundary_max_gy):
            return (f"{text}, {100 * self.coverage:.1f} % inside the dose grid; outside it the "
                    "isodose volume is unknown (the grid holds unknown doses)")
        return (f"{text}, {100 * self.coverage:.1f} % inside the dose grid; outside it the "
                f"isodose volume is taken as 0 for levels above {self.boundary_max_gy:.4g} Gy "
                "(the highest dose on the grid's faces) and unknown below")


def name_key(name: str) -> str:
    """A name compared with case, spaces, ``_`` and ``-`` ignored."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def find_external(rois: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    """The ROI name of the external contour among ``(name, interpreted type)`` pairs.

    Returns
    -------
    name, problem : str or None
        The name, or None and why none could be chosen.

    Examples
    --------
    >>> find_external([("PTV", "PTV"), ("Patient", "EXTERNAL")])
    ('Patient', None)
    >>> find_external([("PTV", "PTV"), ("body", "")])
    ('body', None)
    >>> find_external([("B1", "EXTERNAL"), ("B2", "EXTERNAL")])[1]
    "two or more ROIs of Interpreted Type EXTERNAL ('B1', 'B2'): the external is ambiguous"
    """
    typed = [n for n, t in rois if (t or "").strip().upper() == "EXTERNAL"]
    if len(typed) == 1:
        return typed[0], None
    if typed:
        names = ", ".join(repr(n) for n in typed)
        return None, (f"two or more ROIs of Interpreted Type EXTERNAL ({names}): "
                      "the external is ambiguous")
    named = [n for n, _ in rois if name_key(n) in EXTERNAL_NAMES]
    if len(named) == 1:
        return named[0], None
    if named:
        names = ", ".join(repr(n) for n in named)
        return None, f"two or more ROIs are named like the external ({names}): ambiguous"
    return None, ("no external contour: no ROI of Interpreted Type EXTERNAL and none named "
                  "BODY, External or Outline")


def boundary_max(dose_gy: NDArray[np.floating]) -> float:
    """Highest dose on the six outer faces of a dose grid ``[z, y, x]``.

    A grid with an unknown (NaN) dose anywhere, as a resampled sum of grids
    has outside one of them, bounds nothing: the result is infinite.

    Examples
    --------
    >>> d = np.zeros((3, 3, 3)); d[1, 1, 1] = 9.0; d[0, 2, 2] = 1.0
    >>> boundary_max(d)
    1.0
    >>> d[1, 1, 1] = np.nan
    >>> boundary_max(d)
    inf
    """
    if dose_gy.size == 0 or not np.isfinite(dose_gy).all():
        return math.inf
    faces = (dose_gy[0], dose_gy[-1], dose_gy[:, 0], dose_gy[:, -1],
             dose_gy[:, :, 0], dose_gy[:, :, -1])
    return float(max(float(f.max()) for f in faces))


def _check_target(target: DVH) -> None:
    """Raise unless the whole target lies inside the dose grid."""
    if target.is_empty:
        raise IndexNotComputable("the target has no dose")
    if target.coverage < 1.0 - 1e-9:
        raise IndexNotComputable(
            f"the target is partly outside the dose grid ({100 * target.coverage:.1f} % "
            "inside): its dose-volume values are not those of the whole target")


def _target_volumes(target: DVH, level_gy: float) -> tuple[float, float]:
    """``TV`` and ``TV_PIV`` of a fully covered target."""
    _check_target(target)
    return target.covered_cc, target.volume_at_dose(level_gy)


def paddick_ci(target: DVH, external: External, level_gy: float) -> float:
    """Paddick conformity index ``TV_PIV^2 / (TV * PIV)`` at ``level_gy``.

    Examples
    --------
    A target of 10 cc with 8 cc inside an isodose of 16 cc: 64 / 160.

    >>> round(paddick_from_volumes(10.0, 8.0, 16.0), 6)
    0.4
    """
    tv, tv_piv = _target_volumes(target, level_gy)
    return paddick_from_volumes(tv, tv_piv, external.isodose_cc(level_gy))


def paddick_from_volumes(tv: float, tv_piv: float, piv: float) -> float:
    """``TV_PIV^2 / (TV * PIV)``, ``TV_PIV`` capped at ``PIV``; 0 when nothing is covered."""
    tv_piv = min(tv_piv, piv)
    if tv_piv <= 0:
        return 0.0
    return tv_piv * tv_piv / (tv * piv)


def rtog_ci(target: DVH, external: External, level_gy: float) -> float:
    """RTOG conformity index ``PIV / TV`` at ``level_gy``."""
    tv, _ = _target_volumes(target, level_gy)
    return external.isodose_cc(level_gy) / tv


def gradient_index(external: External, level_gy: float) -> float:
    """Paddick gradient index ``PIV(level / 2) / PIV(level)``.

    Raises
    ------
    IndexNotComputable
        Also when no volume receives the level (the ratio is undefined).
    """
    piv = external.isodose_cc(level_gy)
    if not piv > 0:
        raise IndexNotComputable(
            f"no volume of the external receives {level_gy:.4g} Gy: the gradient index is "
            "undefined")
    return external.isodose_cc(level_gy / 2.0) / piv


def homogeneity_index(target: DVH) -> float:
    """ICRU 83 homogeneity index ``(D2% - D98%) / D50%`` of a target.

    Raises
    ------
    IndexNotComputable
        The target is not fully inside the dose grid, or its D50% is 0.
    """
    _check_target(target)
    tv = target.covered_cc
    d2, d50, d98 = (target.dose_at_volume(tv * f) for f in (0.02, 0.50, 0.98))
    if not d50 > 0:
        raise IndexNotComputable("the target's D50% is 0: the homogeneity index is undefined")
    return (d2 - d98) / d50
