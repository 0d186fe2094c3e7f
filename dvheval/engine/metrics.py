"""DVH metric names (AAPM TG-263 style) and their evaluation.

Grammar, case-insensitive for the letters, numbers with a decimal point::

    Dmax | Max | Dmin | Min | Dmean | Mean
    D<x>%            dose covering x % of the structure volume
    D<x>cc           dose covering the hottest x cm^3
    V<x>Gy | V<x>cGy volume receiving at least x Gy
    V<x>%            volume receiving at least x % of the prescription
    CV<x>Gy | CV<x>cGy | CV<x>%
                     critical (spared) volume: receiving less than x
    gEUD(a=<a>)      generalised equivalent uniform dose

plan-quality indices of a target (see :mod:`dvheval.engine.quality`), at
the prescription, or at the level written in parentheses, ``(<x>Gy)``,
``(<x>cGy)`` or ``(<x>%)`` of the prescription::

    PaddickCI | PaddickCI(<level>)         Paddick conformity index TV_PIV^2 / (TV PIV)
    RTOGCI | RTOGCI(<level>)               RTOG conformity index PIV / TV
    GI | GI(<level>)                       gradient index PIV(level / 2) / PIV(level)
    HI                                     ICRU 83 homogeneity index (D2% - D98%) / D50%
    IsodoseVolume | IsodoseVolume(<level>) volume (cc) of the external receiving the level

each optionally followed by options in brackets: an output unit (``Gy``,
``cGy`` or ``%`` for doses; ``cc`` or ``%`` for volumes) and/or a
radiobiological model applied voxel by voxel (``EQD2`` or ``BED`` with
``a/b=<alpha/beta in Gy>``)::

    D95%[Gy]  V20Gy[%]  D0.03cc[cGy]  Dmax[EQD2, a/b=2]  Mean[BED,a/b=3,Gy]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from dvheval.engine.dvh import DVH
from dvheval.engine.quality import (
    External,
    IndexNotComputable,
    gradient_index,
    homogeneity_index,
    paddick_ci,
    rtog_ci,
)
from dvheval.errors import MetricError
from dvheval.vocab import UNIT_INDEX, MetricKind

ALLOWED = (
    "Dmax, Dmin, Dmean (or Max, Min, Mean), D<x>%, D<x>cc, V<x>Gy, V<x>cGy, "
    "V<x>% (of prescription), CV<x>Gy (volume below x), gEUD(a=<a>); optional [unit] "
    "with Gy, cGy or % for doses and cc or % for volumes, and [EQD2, a/b=<x>] or [BED, a/b=<x>]; "
    "quality indices PaddickCI, RTOGCI, GI, IsodoseVolume (at the prescription, or at a level "
    "such as PaddickCI(30Gy) or GI(95%)) and HI"
)

#: Metrics reported when the user asks for none.
DEFAULT_METRICS = ("Dmax", "Dmin", "Dmean", "D98%", "D50%", "D2%", "D0.03cc", "D0.5cc")
#: Added to the defaults for targets (RT ROI Interpreted Type PTV/CTV/GTV).
DEFAULT_TARGET_METRICS = ("gEUD(a=-10)",)

#: A dose in Gy: one number or an array of them.
Dose = TypeVar("Dose", float, NDArray[np.float64])

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_SIGNED = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))"
_PATTERNS = [
    ("stat", re.compile(r"^D?(max|min|mean)$", re.I)),
    ("dose_at_volume", re.compile(rf"^D{_NUM}(%|cc|cm3)$", re.I)),
    ("volume_at_dose", re.compile(rf"^V{_NUM}(Gy|cGy|%)$", re.I)),
    ("volume_below_dose", re.compile(rf"^CV{_NUM}(Gy|cGy|%)$", re.I)),
    ("geud", re.compile(rf"^g?EUD\(\s*a\s*=\s*{_SIGNED}\s*\)$", re.I)),
]
_LEVEL = rf"(?:\(\s*{_NUM}\s*(Gy|cGy|%)\s*\))?"
#: Quality indices and the isodose volume: name pattern and kind.
_INDEX_PATTERNS = [
    (MetricKind.PADDICK_CI, re.compile(rf"^Paddick\s*CI\s*{_LEVEL}$", re.I)),
    (MetricKind.RTOG_CI, re.compile(rf"^RTOG\s*CI\s*{_LEVEL}$", re.I)),
    (MetricKind.GRADIENT_INDEX, re.compile(rf"^GI\s*{_LEVEL}$", re.I)),
    (MetricKind.HOMOGENEITY_INDEX, re.compile(r"^HI$", re.I)),
    (MetricKind.ISODOSE_VOLUME, re.compile(rf"^Isodose\s*Volume\s*{_LEVEL}$", re.I)),
]
#: Kinds whose value is a ratio without unit.
INDEX_KINDS = frozenset({MetricKind.PADDICK_CI, MetricKind.RTOG_CI, MetricKind.GRADIENT_INDEX,
                         MetricKind.HOMOGENEITY_INDEX})
#: Kinds that read the external contour's DVH.
EXTERNAL_KINDS = frozenset({MetricKind.PADDICK_CI, MetricKind.RTOG_CI,
                            MetricKind.GRADIENT_INDEX, MetricKind.ISODOSE_VOLUME})


class NotComputable(Exception):
    """A metric cannot be evaluated for this structure; the text says why."""


@dataclass(frozen=True)
class Metric:
    """A parsed DVH metric.

    Attributes
    ----------
    name : str
        The name exactly as written by the user (used as the output key).
    kind : str
        A :class:`~dvheval.vocab.MetricKind`: ``"max"``, ``"min"``,
        ``"mean"``, ``"dose_at_volume"``, ``"volume_at_dose"``,
        ``"volume_below_dose"``, ``"geud"`` or a quality index
        (``"paddick_ci"``, ``"rtog_ci"``, ``"gradient_index"``,
        ``"homogeneity_index"``, ``"isodose_volume"``).
    value : float or None
        The volume (for D-metrics), dose (for V-metrics), ``a`` (gEUD) or
        the dose level of a quality index (None: the prescription).
    value_unit : str or None
        ``"%"`` or ``"cc"`` for D-metrics; ``"Gy"``, ``"cGy"`` or ``"%"``
        for V-metrics and the level of a quality index.
    output_unit : str
        ``"Gy"``, ``"cGy"`` or ``"%"`` (of prescription) for doses; ``"cc"``
        or ``"%"`` (of structure volume) for volumes; ``"1"``
        (:data:`~dvheval.vocab.UNIT_INDEX`) for the dimensionless indices.
    model : str or None
        ``"EQD2"`` or ``"BED"`` for a radiobiological DVH.
    alpha_beta : float or None
        alpha/beta in Gy of the model.
    """

    name: str
    kind: str
    value: float | None
    value_unit: str | None
    output_unit: str
    model: str | None = None
    alpha_beta: float | None = None

    @property
    def is_dose(self) -> bool:
        """True when the metric's result is a dose."""
        return self.kind not in ("volume_at_dose", "volume_below_dose", "isodose_volume",
                                 *INDEX_KINDS)

    @property
    def is_index(self) -> bool:
        """True for a dimensionless quality index (PaddickCI, RTOGCI, GI, HI)."""
        return self.kind in INDEX_KINDS

    @property
    def needs_external(self) -> bool:
        """True when the metric reads the external contour (an isodose volume)."""
        return self.kind in EXTERNAL_KINDS

    @property
    def needs_prescription(self) -> bool:
        if self.kind in EXTERNAL_KINDS:
            return self.value_unit in (None, "%")
        return (not self.is_dose and self.value_unit == "%") or (
            self.is_dose and self.output_unit == "%"
        )

    @property
    def needs_fractions(self) -> bool:
        return self.model is not None


def parse_metric(name: str) -> Metric:
    """Parse a TG-263 style DVH metric name.

    (About 60 lines: one branch per metric kind of the grammar, then the
    options in brackets; splitting them would scatter the grammar.)

    Parameters
    ----------
    name : str
        E.g. ``"D98%"``, ``"V20Gy[%]"``, ``"Dmax[EQD2, a/b=2]"``.

    Returns
    -------
    Metric

    Raises
    ------
    MetricError
        If the name does not follow the grammar; the message lists what is
        allowed.

    Examples
    --------
    >>> m = parse_metric("V20Gy[%]")
    >>> m.kind, m.value, m.value_unit, m.output_unit
    ('volume_at_dose', 20.0, 'Gy', '%')
    >>> parse_metric("Dmax[EQD2, a/b=2]").model
    'EQD2'
    """
    text = name.strip()
    m = re.match(r"^([^\[\]]+?)\s*(?:\[([^\[\]]*)\])?$", text)
    if not m:
        raise MetricError(f"malformed metric {name!r}; allowed: {ALLOWED}")
    base, opts = m.group(1).strip(), m.group(2)
    index = _parse_index(text, base, opts)
    if index is not None:
        return index
    kind = value = value_unit = None
    for k, pat in _PATTERNS:
        mm = pat.match(base)
        if mm:
            kind = k
            if k == "stat":
                kind = mm.group(1).lower()
            else:
                value = float(mm.group(1))
                if k != "geud":
                    unit = mm.group(2)
                    value_unit = {"gy": "Gy", "cgy": "cGy", "%": "%", "cc": "cc", "cm3": "cc"}[
                        unit.lower()
                    ]
            break
    if kind is None:
        raise MetricError(f"unknown metric {name!r}; allowed: {ALLOWED}")
    if kind == "geud" and value == 0:
        raise MetricError(f"{name!r}: gEUD needs a != 0")
    if kind == "dose_at_volume" and value_unit == "%" and value is not None and value > 100:
        raise MetricError(f"{name!r}: a volume percentage must be between 0 and 100")

    is_dose = kind not in ("volume_at_dose", "volume_below_dose")
    output_unit = "Gy" if is_dose else "cc"
    model = alpha_beta = None
    for raw in (opts.split(",") if opts else []):
        item = raw.strip()
        low = item.lower().replace(" ", "")
        if not item:
            continue
        if low in ("gy", "cgy") and is_dose:
            output_unit = "Gy" if low == "gy" else "cGy"
        elif low == "%":
            output_unit = "%"
        elif low in ("cc", "cm3") and not is_dose:
            output_unit = "cc"
        elif low in ("eqd2", "bed"):
            model = low.upper()
        elif re.match(rf"^(a/b|ab|alpha/beta)={_NUM}$", low):
            alpha_beta = float(low.split("=", 1)[1])
        else:
            what = "dose" if is_dose else "volume"
            raise MetricError(
                f"{name!r}: unknown option {item!r} for a {what} metric; allowed: {ALLOWED}"
            )
    if model and alpha_beta is None:
        raise MetricError(f"{name!r}: {model} needs a/b=<alpha/beta in Gy>, e.g. [{model}, a/b=2]")
    if alpha_beta is not None and not model:
        raise MetricError(f"{name!r}: a/b given without EQD2 or BED")
    if alpha_beta is not None and alpha_beta <= 0:
        raise MetricError(f"{name!r}: a/b must be positive")
    return Metric(text, kind, value, value_unit, output_unit, model, alpha_beta)


def _parse_index(text: str, base: str, opts: str | None) -> Metric | None:
    """A quality index or isodose volume, or None when ``base`` names none.

    The indices take no options; the isodose volume only ``[cc]``.
    """
    for kind, pat in _INDEX_PATTERNS:
        mm = pat.match(base)
        if not mm:
            continue
        value = unit = None
        if kind != MetricKind.HOMOGENEITY_INDEX and mm.group(1) is not None:
            value = float(mm.group(1))
            unit = {"gy": "Gy", "cgy": "cGy", "%": "%"}[mm.group(2).lower()]
            if not value > 0:
                raise MetricError(f"{text!r}: the dose level must be positive")
        out = UNIT_INDEX if kind in INDEX_KINDS else "cc"
        items = [o.strip().lower() for o in (opts or "").split(",") if o.strip()]
        if any(not (kind == MetricKind.ISODOSE_VOLUME and o in ("cc", "cm3")) for o in items):
            what = ("gives cc and takes only [cc]" if kind == MetricKind.ISODOSE_VOLUME
                    else "is a ratio without unit and takes no options")
            raise MetricError(f"{text!r}: {base} {what} (no EQD2/BED); the dose level goes in "
                              "parentheses, e.g. PaddickCI(30Gy)")
        return Metric(text, kind, value, unit, out)
    return None


def eqd2(dose_gy: Dose, fractions: int, alpha_beta: float) -> Dose:
    """Equivalent dose in 2 Gy fractions: ``D (d + a/b) / (2 + a/b)``, ``d = D / n``.

    Examples
    --------
    30 Gy in 10 fractions to a tissue of alpha/beta 2 Gy:
    30 (3 + 2) / (2 + 2) = 37.5 Gy.

    >>> eqd2(30.0, 10, 2.0)
    37.5
    """
    return dose_gy * (dose_gy / fractions + alpha_beta) / (2.0 + alpha_beta)


def bed(dose_gy: Dose, fractions: int, alpha_beta: float) -> Dose:
    """Biologically effective dose: ``D (1 + d / (a/b))``, ``d = D / n``.

    Examples
    --------
    >>> bed(30.0, 10, 3.0)
    60.0
    """
    return dose_gy * (1.0 + dose_gy / fractions / alpha_beta)


def evaluate_metric(
    metric: Metric | str,
    dvh: DVH,
    prescription_gy: float | None = None,
    fractions: int | None = None,
    external: External | None = None,
) -> float:
    """Evaluate a metric on a DVH.

    (About 65 lines: one branch per metric kind, each a call or two; the
    kinds read best side by side.)

    Parameters
    ----------
    metric : Metric or str
    dvh : DVH
    prescription_gy : float, optional
        Needed for ``V<x>%``, ``[%]`` dose output and quality indices at the
        prescription (or at a percentage of it).
    fractions : int, optional
        Needed for EQD2/BED.
    external : External, optional
        The external contour; needed for PaddickCI, RTOGCI, GI and
        IsodoseVolume (see :mod:`dvheval.engine.quality`).

    Returns
    -------
    float
        In the metric's output unit.

    Raises
    ------
    NotComputable
        With the reason, e.g. the structure is smaller than the requested
        volume, or no dose covers it.
    """
    if isinstance(metric, str):
        metric = parse_metric(metric)
    if dvh.is_empty:
        raise NotComputable("no part of the structure has dose (empty or outside the dose grid)")
    if metric.needs_prescription and not prescription_gy:
        if metric.needs_external:
            raise NotComputable(f"{metric.name} needs a dose level: write it, e.g. "
                                f"{metric.name.split('(')[0]}(30Gy), or give a prescription "
                                "(--rx, or an RTPLAN prescription named like the structure)")
        raise NotComputable(f"{metric.name} needs a prescription dose")
    if metric.kind in INDEX_KINDS or metric.kind == MetricKind.ISODOSE_VOLUME:
        return _evaluate_index(metric, dvh, prescription_gy, external)
    if metric.model:
        if not fractions:
            raise NotComputable(f"{metric.name} needs the number of fractions")
        n, ab = int(fractions), float(metric.alpha_beta or 0.0)
        model = eqd2 if metric.model == "EQD2" else bed
        dvh = dvh.transformed(lambda d: model(d, n, ab))

    k = metric.kind
    value = float(metric.value) if metric.value is not None else math.nan
    rx = float(prescription_gy) if prescription_gy else math.nan
    if k == "max":
        dose = dvh.max_gy
    elif k == "min":
        dose = dvh.min_gy
    elif k == "mean":
        dose = dvh.mean_gy
    elif k == "geud":
        dose = dvh.geud(value)
    elif k == "dose_at_volume":
        vol = value
        if metric.value_unit == "%":
            vol = dvh.covered_cc * value / 100.0
        elif vol > dvh.covered_cc:
            raise NotComputable(
                f"{metric.name}: the structure's covered volume {dvh.covered_cc:.3g} cc "
                f"is smaller than {metric.value:g} cc"
            )
        dose = dvh.dose_at_volume(vol)
    else:  # volume at (or below) a dose
        threshold = value
        if metric.value_unit == "cGy":
            threshold = value / 100.0
        elif metric.value_unit == "%":
            threshold = rx * value / 100.0
        vol = dvh.volume_at_dose(threshold)
        if k == "volume_below_dose":
            vol = dvh.covered_cc - vol
        if metric.output_unit == "%":
            return 100.0 * vol / dvh.covered_cc
        return vol

    if not math.isfinite(dose):
        raise NotComputable(f"{metric.name} could not be computed")
    if metric.output_unit == "cGy":
        return dose * 100.0
    if metric.output_unit == "%":
        return 100.0 * dose / rx
    return dose


def _evaluate_index(metric: Metric, dvh: DVH, prescription_gy: float | None,
                    external: External | None) -> float:
    """A quality index or isodose volume of a target (``dvh``); see :mod:`.quality`."""
    k = metric.kind
    try:
        if k == MetricKind.HOMOGENEITY_INDEX:
            return homogeneity_index(dvh)
        level = float(prescription_gy or math.nan)
        if metric.value_unit == "Gy":
            level = float(metric.value or math.nan)
        elif metric.value_unit == "cGy":
            level = float(metric.value or math.nan) / 100.0
        elif metric.value_unit == "%":
            level = level * float(metric.value or math.nan) / 100.0
        if external is None:
            raise IndexNotComputable("it needs the external contour's DVH, which was not given "
                                     "(one structure's DVH is not enough: compute the plan)")
        if k == MetricKind.PADDICK_CI:
            return paddick_ci(dvh, external, level)
        if k == MetricKind.RTOG_CI:
            return rtog_ci(dvh, external, level)
        if k == MetricKind.GRADIENT_INDEX:
            return gradient_index(external, level)
        return external.isodose_cc(level)
    except IndexNotComputable as exc:
        raise NotComputable(f"{metric.name}: {exc}") from None


def physical_dose(dose_gy: float, fractions: int, alpha_beta: float, model: str = "EQD2") -> float:
    """Total physical dose whose EQD2 (or BED) in ``fractions`` fractions is ``dose_gy``.

    The inverse of :func:`eqd2` and :func:`bed`, used to show an EQD2 or BED
    limit on a physical-dose DVH. With ``n`` fractions, total dose ``D`` and
    ``a/b`` the alpha/beta ratio, ``EQD2 = D (D/n + a/b) / (2 + a/b)`` is a
    quadratic in ``D`` whose positive root is::

        D = n/2 (-a/b + sqrt(a/b^2 + 4 EQD2 (2 + a/b) / n))

    and ``BED = D (1 + D / (n a/b))`` gives::

        D = n a/b / 2 (-1 + sqrt(1 + 4 BED / (n a/b)))

    Parameters
    ----------
    dose_gy : float
        The EQD2 or BED in Gy.
    fractions : int
        Number of fractions, at least 1.
    alpha_beta : float
        alpha/beta in Gy, positive.
    model : str
        ``"EQD2"`` or ``"BED"``: what ``dose_gy`` is.

    Returns
    -------
    float
        Total physical dose in Gy.

    Raises
    ------
    ValueError
        Unknown model, fewer than one fraction or a non-positive alpha/beta.

    Examples
    --------
    >>> round(physical_dose(60.0, 10, 2.0), 9)  # 60 Gy EQD2 at a/b 2 Gy: 10 x 4 Gy
    40.0
    >>> round(physical_dose(90.0, 5, 3.0, "BED"), 9)  # BED 90 Gy at a/b 3 Gy: 5 x 6 Gy
    30.0
    """
    if model not in ("EQD2", "BED"):
        raise ValueError(f"unknown dose model {model!r}; EQD2 or BED")
    if fractions < 1:
        raise ValueError(f"{model} needs at least one fraction, not {fractions}")
    if not alpha_beta > 0:
        raise ValueError(f"{model} needs a positive alpha/beta, not {alpha_beta}")
    n, ab = float(fractions), float(alpha_beta)
    if model == "EQD2":
        return n / 2.0 * (-ab + math.sqrt(ab * ab + 4.0 * dose_gy * (2.0 + ab) / n))
    return n * ab / 2.0 * (-1.0 + math.sqrt(1.0 + 4.0 * dose_gy / (n * ab)))
