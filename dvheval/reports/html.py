"""The HTML report: one self-contained page with the verdict, the constraints and the DVH plot.

The page loads nothing: the style sheet (``report.css``, package data) is
inlined, and so is the plot (SVG). Every text is escaped with
:func:`dvheval.sanitize.for_html`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from dvheval.check import CheckResult
from dvheval.reports.common import fmt_margin, fmt_value, limit_parts
from dvheval.reports.json import report_view
from dvheval.reports.plot import dvh_svg
from dvheval.reports.summary import (
    closing_findings,
    constraint_note,
    constraint_rows,
    fractions_text,
    gate_reason,
    integrity_findings,
    matching_rows,
    overrides_text,
    patient_text,
    plan_label,
    plan_text,
    prescriptions_text,
    protocol_text,
    report_rows,
    severity_word,
    summary_text,
)
from dvheval.sanitize import for_html as _e

_CSS_FILE = "report.css"

#: Columns of the constraint table; report.css gives each a fixed share of the page.
_CONSTRAINT_COLUMNS = ("Verdict", "Structure", "ROI", "Metric", "Limit", "Value", "Margin",
                       "Priority", "Note")

_PLOT_CAPTION = (
    "Cumulative DVH of the matched structures (colours and solid, dashed and dotted lines "
    "cycle; no curve is red, amber or green). Each limit is a numbered marker on its "
    "structure's curve, listed under the plot: dose limits of D-metrics at (limit, volume) "
    "pointing to the allowed side, volume limits of V-metrics at (dose, limit), Dmax limits "
    "at 0 % and Dmin limits at 100 % volume, mean limits as a diamond on the curve; EQD2/BED "
    "limits converted to physical dose. Green: PASS, amber: ACCEPTABLE, red: FAIL."
)


@functools.cache
def report_css() -> str:
    """The style sheet of the HTML report (package data ``dvheval/reports/report.css``).

    Raises
    ------
    OSError
        The file is missing from the installation or cannot be read.
    """
    path = resources.files(__package__ or "dvheval.reports").joinpath(_CSS_FILE)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OSError(f"{path}: the style sheet of the HTML report cannot be read "
                      f"({exc.strerror or exc}); reinstall dvheval") from exc


def to_html(result: CheckResult, plot: bool = True) -> str:
    """One self-contained HTML page: verdict banner, verdict table, DVH plot, details.

    The page loads nothing: the CSS is inline and the plot is an inline
    SVG. It prints on A4 (light backgrounds, rows and the plot are not
    split across pages).

    Parameters
    ----------
    result : CheckResult
    plot : bool
        Include the DVH plot (needs matplotlib).

    Returns
    -------
    str
    """
    d = report_view(result)
    parts = _head(d)
    parts.append(_info_table(d))
    parts += _constraints(d)
    if plot:
        parts.append("<h2>Dose-volume histogram</h2>")
        parts.append(f"<figure>{dvh_svg(result)}<figcaption class=\"small muted\">"
                     f"{_PLOT_CAPTION}</figcaption></figure>")
    parts += _report_metrics(d)
    parts += _structures(d)
    parts += _integrity_and_warnings(d)
    parts += _sources(d)
    parts += _provenance(d)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _head(d: dict[str, Any]) -> list[str]:
    """From the DOCTYPE to the verdict banner (with the integrity findings that closed the gate)."""
    proto = d["protocol"]
    verdict = d["verdict"]
    conditions = d.get("conditions") or []
    qualifier = (f'<p class="qualifier"><b>Condition asserted:</b> {_e(", ".join(conditions))}'
                 "</p>" if conditions else "")
    title = f"{verdict}: {patient_text(d)}, {plan_label(d)} - {proto['name']}"
    closers = closing_findings(d) if d["exit_code"] else []
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>\n{report_css()}</style></head><body>",
        f"<h1>Plan check: {_e(patient_text(d))}, {_e(plan_label(d))}</h1>",
        f'<div class="muted">Protocol {_e(protocol_text(d))}</div>',
        f'<div class="banner {_e(verdict)}"><span class="verdict">{_e(verdict)}</span>'
        f" <span>exit code {d['exit_code']}</span>{qualifier}<p>{_e(gate_reason(d))}</p>"
        + "".join(_closing_line(f) for f in closers) + "</div>",
    ]


def _closing_line(f: dict[str, Any]) -> str:
    """A paragraph of the banner for an integrity finding that closed the gate."""
    where = f' <span class="mono">({_e(f["file"])})</span>' if f.get("file") else ""
    return (f'<p class="closes"><span class="badge FAIL">CLOSES THE GATE</span> '
            f"integrity <code>{_e(f.get('check'))}</code>: {_e(f.get('message'))}{where}</p>")


def _info_table(d: dict[str, Any]) -> str:
    """Patient, plan, protocol, prescriptions, fractions, overrides, conditions, summary."""
    proto = d["protocol"]
    info = [
        ("Patient", patient_text(d)),
        ("Plan", plan_text(d)),
        ("Protocol", f"{protocol_text(d)}; file {proto['file']}"),
        ("Prescriptions", prescriptions_text(d)),
        ("Fractions", fractions_text(d)),
    ]
    if overrides_text(d):
        info.append(("Overrides", overrides_text(d)))
    if d.get("conditions"):
        info.append(("Conditions asserted", ", ".join(d["conditions"])))
    info.append(("Summary", summary_text(d)))
    return '<table class="info">' + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info) + "</table>"


def _constraints(d: dict[str, Any]) -> list[str]:
    """The constraint table and the required structures that are missing."""
    rows = []
    for c in constraint_rows(d):
        rows.append(
            f'<tr class="{_e(c["verdict"])}"><td>{_badge(c["verdict"])}</td>'
            f"<td>{_e(c['structure'])}</td><td>{_e(c['roi'] or '-')}</td>"
            f"<td class=\"nowrap\">{_e(c['metric'])}</td>"
            f"<td>{_html_limit(c)}</td>"
            f"<td class=\"num\">{_e(fmt_value(c['value'], c['limit_unit']))}</td>"
            f"<td class=\"num\">{_e(fmt_margin(c['margin'], c['limit_unit']))}</td>"
            f"<td>{_e(c['priority'])}</td>"
            f"<td class=\"small note\">{_e(constraint_note(c))}</td></tr>"
        )
    parts = ["<h2>Constraints</h2>",
             _html_table(_CONSTRAINT_COLUMNS, rows, "constraints")]
    missing = d["gate"]["unresolved_required_structures"]
    if missing:
        parts.append(f'<p><span class="badge NOT_EVALUATED">NOT_EVALUATED</span> required '
                     f"structure(s) missing or ambiguous: {_e(', '.join(missing))}</p>")
    return parts


def _report_metrics(d: dict[str, Any]) -> list[str]:
    reports = report_rows(d)
    if not reports:
        return []
    return ["<h2>Report-only metrics</h2>",
            _html_table(["Structure -> ROI", "Values", "Note"], (
                f"<tr><td class=\"nowrap\">{_e(a)}</td><td>{_e(b)}</td>"
                f"<td class=\"small muted\">{_e(c)}</td></tr>" for a, b, c in reports))]


def _structures(d: dict[str, Any]) -> list[str]:
    """Structure matching, unmatched ROIs and the protocol's alternatives."""
    parts = ["<h2>Structures</h2>",
             _html_table(["Protocol structure", "ROI", "Matched by", "Required", "Note"], (
                 "<tr>" + "".join(f"<td>{_e(x)}</td>" for x in row) + "</tr>"
                 for row in matching_rows(d))),
             f"<p>Unmatched ROIs: {_e(', '.join(d['unmatched_rois']) or 'none')}</p>"]
    if d["alternatives"]:
        parts.append("<h2>Alternatives</h2><ul>" + "".join(
            f"<li><b>{_e(a['id'])}</b> {'active' if a['active'] else 'not active'}: "
            f"{_e(a['reason'])}. <span class=\"muted\">{_e(a['description'])}</span></li>"
            for a in d["alternatives"]) + "</ul>")
    return parts


def _integrity_and_warnings(d: dict[str, Any]) -> list[str]:
    parts = []
    findings = integrity_findings(d)
    if findings:
        parts.append("<h2>Integrity</h2>")
        parts.append(_html_table(["Check", "Severity", "Message", "File"], (
            f"<tr><td class=\"mono\">{_e(f.get('check'))}</td>"
            f"<td class=\"nowrap\">{_e(severity_word(f, d))}</td>"
            f"<td>{_e(f.get('message'))}</td><td class=\"mono\">{_e(f.get('file') or '-')}"
            "</td></tr>" for f in findings)))
    if d["warnings"]:
        parts.append("<h2>Warnings</h2><ul>" + "".join(
            f"<li>{_e(w)}</li>" for w in d["warnings"]) + "</ul>")
    return parts


def _sources(d: dict[str, Any]) -> list[str]:
    """The protocol's published sources."""
    sources = d["protocol"]["sources"]
    if not sources:
        return []
    return ["<h2>Sources</h2><ul class=\"small\">" + "".join(
        f"<li><b>{_e(s['short'])}</b>. {_e(s['reference'])}"
        + (f" doi:{_e(s['doi'])}" if s.get("doi") else "")
        + (f' <span class="mono">{_e(s["url"])}</span>' if s.get("url") else "")
        + "</li>" for s in sources.values()) + "</ul>"]


def _provenance(d: dict[str, Any]) -> list[str]:
    """The tool's version and the SHA-256 of the dose files and the protocol."""
    proto = d["protocol"]
    hashes = "".join(f"<tr><td class=\"mono\">{_e(f)}</td><td class=\"mono\">{_e(h)}</td></tr>"
                     for f, h in d["plan"]["dose"]["sha256"].items())
    hashes += (f"<tr><td class=\"mono\">{_e(proto['file'])}</td>"
               f"<td class=\"mono\">{_e(proto['sha256'])}</td></tr>")
    return ["<h2>Provenance</h2>",
            f"<p class=\"small\">{_e(d['tool']['name'])} {_e(d['tool']['version'])}; "
            "SHA-256 of the files read:</p>",
            f'<table class="small"><tbody>{hashes}</tbody></table>']


def _html_limit(c: dict[str, Any]) -> str:
    main, origin = limit_parts(c)
    out = f'<span class="nowrap">{_e(main)}</span>'
    if origin:
        out += f' <span class="nowrap small muted">({_e(origin)})</span>'
    return out


def _badge(verdict: str) -> str:
    """A verdict badge; a narrow printed column may break it after an underscore only."""
    word = "_<wbr>".join(_e(part) for part in verdict.split("_"))
    return f'<span class="badge {_e(verdict)}">{word}</span>'


def _html_table(header: Sequence[str], rows: Iterable[str], css_class: str = "") -> str:
    """A table; with ``css_class``, a ``<colgroup>`` whose columns the style sheet sizes.

    The column classes are the header words in lower case (``col.verdict``,
    ``col.note`` ...), so that ``table.constraints`` gets fixed widths that
    sum to the printed page.
    """
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    if not css_class:
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    cols = "".join(f'<col class="{_e(h.lower())}">' for h in header)
    return (f'<table class="{_e(css_class)}"><colgroup>{cols}</colgroup>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
