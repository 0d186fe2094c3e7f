"""The report dict every format reads, and the JSON report.

:func:`report_dict` is ``CheckResult.to_dict()`` completed with the
integrity findings and the matched ROIs' defects; :func:`report_view` is the
same with every string cleaned for one output format; :func:`to_json`
writes the true strings as strict JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dvheval.check import CheckResult
from dvheval.sanitize import clean_tree, dumps_json, visible


def report_dict(result: CheckResult) -> dict[str, Any]:
    """``CheckResult.to_dict()`` with the integrity findings and structure defects filled in.

    Fills ``integrity`` from the findings of the check and of the plan when
    the dict does not carry it, and each matched protocol structure's
    ``defects`` and ``roi_warnings`` (the matched ROI's warnings, each of
    which can change a value measured on it) when absent. Strings are the
    true ones.
    """
    d = result.to_dict()
    if "integrity" not in d:
        seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        for f in [*getattr(result, "findings", []), *getattr(result.plan, "findings", [])]:
            fd = f.to_dict()
            seen.setdefault((fd["check"], fd["message"], fd["file"]), fd)
        d["integrity"] = list(seen.values())
    for s in d.get("structures", []):
        roi = result.plan.structure(s["roi"]) if s.get("roi") is not None else None
        if "defects" not in s:
            s["defects"] = list(getattr(roi, "defects", []) or [])
        if "roi_warnings" not in s:
            s["roi_warnings"] = list(getattr(roi, "warnings", []) or [])
    return d


def report_view(result: CheckResult, clean: Callable[[Any], str] = visible) -> dict[str, Any]:
    """The dict every renderer reads: :func:`report_dict` with every string cleaned.

    Parameters
    ----------
    result : CheckResult
    clean : callable
        Applied to every string and key (e.g. :func:`dvheval.sanitize.visible`),
        so a name from the DICOM can neither forge a line nor break the format.

    Returns
    -------
    dict
    """
    view: dict[str, Any] = clean_tree(report_dict(result), clean)
    return view


def to_json(result: CheckResult) -> str:
    """``CheckResult.to_dict()`` as strict JSON, indented by 2.

    Strings are the true ones (JSON escapes control characters); a
    non-finite number is ``null``, never a bare ``NaN`` or ``Infinity``.
    ``integrity`` and the structures' ``defects`` are filled in as in
    :func:`report_dict`.

    Parameters
    ----------
    result : CheckResult

    Returns
    -------
    str
    """
    return dumps_json(report_dict(result))
