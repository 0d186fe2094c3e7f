"""Helpers every report format shares: exit codes, numbers and limits as text, ``--rx``.

The numbers are written the same way in every format: a measured value with
two decimals (three for volumes under 1 cc), a limit without trailing zeros.
"""

from __future__ import annotations

import math
from typing import Any

from dvheval.vocab import UNIT_INDEX

#: What each exit code of ``dvheval check`` means.
EXIT_CODES: dict[int, str] = {
    0: "every hard constraint passed (PASS, or ACCEPTABLE without --acceptable-fails)",
    1: "a hard constraint failed or could not be evaluated, or a required structure is "
       "missing (or ACCEPTABLE with --acceptable-fails)",
    2: "unusable input or command line (unreadable DICOM, unknown or invalid protocol, "
       "bad option)",
}


def fmt_number(v: float | None) -> str:
    """A limit or dose without trailing zeros: 34, 42.8, 0.035 (``"-"`` for None)."""
    if v is None:
        return "-"
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def unit_text(unit: str | None) -> str:
    """The unit as written after a number; empty for None and for a quality index ("1")."""
    return "" if unit is None or unit == UNIT_INDEX else unit


def fmt_value(v: float | None, unit: str | None) -> str:
    """A measured value with its unit, e.g. ``"31.06 Gy"``, ``"0.452 cc"``.

    Parameters
    ----------
    v : float or None
        The value; None gives ``"-"``.
    unit : str or None
        ``"Gy"``, ``"cc"``, ``"%"``, ``"%Rx"`` or ``"1"`` (a quality index,
        written without unit).

    Returns
    -------
    str
    """
    if v is None or not math.isfinite(v):
        return "-"
    digits = 3 if unit == "cc" and abs(v) < 1 else 2
    return f"{v:.{digits}f} {unit_text(unit)}".rstrip()


def fmt_margin(v: float | None, unit: str | None) -> str:
    """A signed margin (positive inside the limit), e.g. ``"+2.94 Gy"``."""
    if v is None or not math.isfinite(v):
        return "-"
    digits = 3 if unit == "cc" and abs(v) < 1 else 2
    return f"{v:+.{digits}f} {unit_text(unit)}".rstrip()


def limit_parts(c: dict[str, Any]) -> tuple[str, str]:
    """Operator and limit of a constraint entry of the JSON, and where a relative limit comes from.

    Parameters
    ----------
    c : dict
        An entry of ``CheckResult.to_dict()["constraints"]``.

    Returns
    -------
    limit, origin : str
        E.g. ``(">= 27 Gy", "90% of PTV30 30 Gy")``; ``origin`` is empty for
        an absolute limit. A limit that could not be resolved (no
        prescription dose) is shown as written, e.g. ``">= 90% of PTV30"``.
        An acceptable limit is appended to ``limit``.
    """
    op = c.get("operator")
    if not op:
        return "", ""
    text = c.get("limit_text") or ""
    if c.get("limit") is None:
        return f"{op} {text}".strip(), ""
    unit = unit_text(c.get("limit_unit"))
    main = f"{op} {fmt_number(c['limit'])} {unit}".rstrip()
    origin = ""
    if "%" in text and c.get("limit_unit") == "Gy":
        rx, level = c.get("prescription_gy"), c.get("prescription")
        pct = text.split(" of ")[0]
        origin = f"{pct} of {level} {fmt_number(rx)} Gy" if level and rx is not None else text
    if c.get("acceptable_limit") is not None:
        main += f", acceptable {fmt_number(c['acceptable_limit'])} {unit}".rstrip()
    if c.get("unacceptable_limit") is not None:
        main += f", unacceptable beyond {fmt_number(c['unacceptable_limit'])} {unit}".rstrip()
    return main, origin


def fmt_limit(c: dict[str, Any]) -> str:
    """Operator and limit on one line, e.g. ``">= 27 Gy (90% of PTV30 30 Gy)"``.

    See :func:`limit_parts`.
    """
    main, origin = limit_parts(c)
    return f"{main} ({origin})" if origin else main
