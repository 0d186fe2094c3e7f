"""Reports of a protocol check: terminal text, JSON, JUnit XML, Markdown, HTML and PDF.

Every renderer reads the stable JSON form, :meth:`CheckResult.to_dict`
(completed by :func:`~dvheval.reports.json.report_dict`), and the plan's
DVHs (``CheckResult.plan``) for the plot, so all formats say the same thing.
The exit code does not depend on the format.

Exit codes of ``dvheval check``
-------------------------------
====  =====================================================================
0     every hard constraint passed: the plan verdict is PASS, or ACCEPTABLE
      (an objective not met, or a hard limit within its acceptable
      variation) without ``--acceptable-fails``
1     a hard constraint failed (FAIL) or could not be evaluated, or a
      required structure is missing or ambiguous (NOT_EVALUATED); or the
      verdict is ACCEPTABLE and ``--acceptable-fails`` was given
2     unusable input or command line: unreadable DICOM, unknown or invalid
      protocol, bad ``--rx``
====  =====================================================================

Modules: :mod:`~dvheval.reports.text`, :mod:`~dvheval.reports.json`,
:mod:`~dvheval.reports.junit` (with how verdicts map to JUnit),
:mod:`~dvheval.reports.markdown`, :mod:`~dvheval.reports.html` and its
:mod:`~dvheval.reports.plot`, :mod:`~dvheval.reports.pdf` (A4 pages, binary);
:mod:`~dvheval.reports.summary` and :mod:`~dvheval.reports.common` hold what
they share;
:mod:`~dvheval.reports.dvh_table` is the output of ``dvheval dvh``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dvheval.check import CheckResult

#: Public names and their modules, imported on first use: ``dvheval dvh`` needs
#: only :mod:`~dvheval.reports.dvh_table`, not the check or the plot.
_LAZY = {
    "EXIT_CODES": "dvheval.reports.common",
    "fmt_limit": "dvheval.reports.common",
    "fmt_margin": "dvheval.reports.common",
    "fmt_number": "dvheval.reports.common",
    "fmt_value": "dvheval.reports.common",
    "limit_parts": "dvheval.reports.common",
    "parse_rx": "dvheval.check",
    "to_html": "dvheval.reports.html",
    "report_dict": "dvheval.reports.json",
    "report_view": "dvheval.reports.json",
    "to_json": "dvheval.reports.json",
    "to_junit": "dvheval.reports.junit",
    "to_markdown": "dvheval.reports.markdown",
    "to_pdf": "dvheval.reports.pdf",
    "dvh_svg": "dvheval.reports.plot",
    "limit_marker": "dvheval.reports.plot",
    "closing_findings": "dvheval.reports.summary",
    "finding_text": "dvheval.reports.summary",
    "fractions_text": "dvheval.reports.summary",
    "gate_reason": "dvheval.reports.summary",
    "gate_text": "dvheval.reports.summary",
    "integrity_findings": "dvheval.reports.summary",
    "overrides_text": "dvheval.reports.summary",
    "patient_text": "dvheval.reports.summary",
    "plan_label": "dvheval.reports.summary",
    "plan_text": "dvheval.reports.summary",
    "prescriptions_text": "dvheval.reports.summary",
    "protocol_text": "dvheval.reports.summary",
    "structure_label": "dvheval.reports.summary",
    "structure_notes": "dvheval.reports.summary",
    "summary_text": "dvheval.reports.summary",
    "render_text": "dvheval.reports.text",
    "to_text": "dvheval.reports.text",
}

__all__ = [
    "BINARY_FORMATS",
    "EXIT_CODES",
    "FORMATS",
    "closing_findings",
    "dvh_svg",
    "finding_text",
    "fmt_limit",
    "fmt_margin",
    "fmt_number",
    "fmt_value",
    "fractions_text",
    "gate_reason",
    "gate_text",
    "integrity_findings",
    "limit_marker",
    "limit_parts",
    "overrides_text",
    "parse_rx",
    "patient_text",
    "plan_label",
    "plan_text",
    "prescriptions_text",
    "protocol_text",
    "render",
    "render_text",
    "report_dict",
    "report_view",
    "structure_label",
    "structure_notes",
    "summary_text",
    "to_html",
    "to_json",
    "to_junit",
    "to_markdown",
    "to_pdf",
    "to_text",
]

#: Report formats of ``dvheval check``.
FORMATS = ("text", "json", "junit", "html", "markdown", "pdf")

#: The formats of :data:`FORMATS` whose report is bytes, written to a file only.
BINARY_FORMATS = ("pdf",)


def render(result: CheckResult, fmt: str, width: int = 200,
           seconds: float = 0.0) -> str | bytes:
    """The report of one check in a format of :data:`FORMATS` (text without colours).

    Parameters
    ----------
    result : CheckResult
    fmt : str
        One of :data:`FORMATS`.
    width : int
        Line width of the text format.
    seconds : float
        Duration recorded in the JUnit suite.

    Returns
    -------
    str or bytes
        Bytes for a format of :data:`BINARY_FORMATS`, text for the others.

    Raises
    ------
    ValueError
        An unknown format.
    """
    if fmt == "text":
        from dvheval.reports.text import to_text

        return to_text(result, width)
    if fmt == "json":
        from dvheval.reports.json import to_json

        return to_json(result)
    if fmt == "junit":
        from dvheval.reports.junit import to_junit

        return to_junit([result], [seconds])
    if fmt == "html":
        from dvheval.reports.html import to_html

        return to_html(result)
    if fmt == "markdown":
        from dvheval.reports.markdown import to_markdown

        return to_markdown(result)
    if fmt == "pdf":
        from dvheval.reports.pdf import to_pdf

        return to_pdf(result)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dvheval.reports' has no attribute {name!r}")
