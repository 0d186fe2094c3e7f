"""The Markdown report: a compact summary for pipeline pages and merge requests.

Every cell and line is escaped with :func:`dvheval.sanitize.for_markdown`,
except Markdown written here (wrapped in :class:`_Raw`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from dvheval.check import CheckResult
from dvheval.reports.common import fmt_limit, fmt_margin, fmt_value
from dvheval.reports.json import report_view
from dvheval.reports.summary import (
    alternative_lines,
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
from dvheval.sanitize import for_markdown as _md
from dvheval.vocab import Priority, Verdict

_CONSTRAINT_HEADER = ("Verdict", "Structure", "ROI", "Metric", "Limit", "Value", "Margin",
                      "Priority", "Note")
#: Constraint verdicts listed under "Failing or not evaluated".
_ATTENTION = (Verdict.FAIL, Verdict.NOT_EVALUATED, Verdict.ACCEPTABLE)


class _Raw(str):
    """Markdown written by this module (not escaped again)."""


def to_markdown(result: CheckResult) -> str:
    """A compact Markdown summary for pipeline pages and merge requests.

    The verdict line comes first, then the constraints that need attention
    (FAIL, NOT_EVALUATED, ACCEPTABLE), then every constraint, report-only
    metrics and structure matching.
    """
    d = report_view(result)
    proto = d["protocol"]
    out = _head(d)
    out += _constraint_sections(d)
    reports = report_rows(d)
    if reports:
        out += ["", "#### Report-only metrics", ""]
        out += _md_table(["Structure -> ROI", "Values", "Note"], reports)
    out += ["", "#### Structures", ""]
    out += _md_table(["Protocol structure", "ROI", "Matched by", "Required", "Note"],
                     matching_rows(d))
    out += ["", f"Unmatched ROIs: {_md(', '.join(d['unmatched_rois']) or 'none')}"]
    alts = alternative_lines(d)
    if alts:
        out += ["", "Alternatives: " + _md("; ".join(alts))]
    out += _integrity_and_warnings(d)
    out += ["", f"_{_md(d['tool']['name'])} {_md(d['tool']['version'])}, protocol "
                f"{_md(proto['name'])} {_md(proto['version'])}_", ""]
    return "\n".join(out)


def _head(d: dict[str, Any]) -> list[str]:
    """Title, verdict line, gate-closing integrity findings and the plan's details."""
    proto = d["protocol"]
    verdict = d["verdict"]  # a Verdict value, safe in a code span
    conditions = d.get("conditions") or []
    qualifier = f" (condition asserted: {_md(', '.join(conditions))})" if conditions else ""
    out = [
        f"### Plan check `{verdict}`: {_md(patient_text(d))}, {_md(plan_label(d))}",
        "",
        f"**Verdict: `{verdict}`**{qualifier}: {_md(gate_reason(d))}",
        "",
    ]
    closers = closing_findings(d) if d["exit_code"] != 0 else []
    if closers:
        out += ["**Integrity checks that close the gate:**", ""]
        out += [f"- **CLOSES THE GATE** {_md_code(f.get('check'))}: {_md(f.get('message'))}"
                + (f" ({_md(f['file'])})" if f.get("file") else "") for f in closers]
        out += [""]
    info = [
        ("Patient", patient_text(d)),
        ("Plan", plan_text(d)),
        ("Protocol", f"{protocol_text(d)} (sha256 {proto['sha256'][:12]})"),
        ("Prescriptions", prescriptions_text(d)),
        ("Fractions", fractions_text(d)),
    ]
    if overrides_text(d):
        info.append(("Overrides", overrides_text(d)))
    if conditions:
        info.append(("Conditions asserted", ", ".join(conditions)))
    info.append(("Summary", summary_text(d)))
    out += [f"- **{k}**: {_md(v)}" for k, v in info]
    return out


def _constraint_sections(d: dict[str, Any]) -> list[str]:
    """The constraints that need attention (hard first, worst first), then all constraints."""
    rows = constraint_rows(d)
    attention = sorted(
        (c for c in rows if c["verdict"] in _ATTENTION),
        key=lambda c: (c["priority"] != Priority.HARD, Verdict(c["verdict"]).severity),
    )
    out = ["", "#### Failing or not evaluated", ""]
    missing = d["gate"]["unresolved_required_structures"]
    if attention:
        out += _md_table(_CONSTRAINT_HEADER, (_md_constraint_row(c) for c in attention))
    elif not missing:
        out.append("None: every constraint was evaluated and none failed.")
    if missing:
        out += ["", f"Required structure(s) missing or ambiguous: {_md(', '.join(missing))}."]
    out += ["", "#### All constraints", ""]
    out += _md_table(_CONSTRAINT_HEADER, (_md_constraint_row(c) for c in rows))
    return out


def _integrity_and_warnings(d: dict[str, Any]) -> list[str]:
    """The integrity findings table and the warnings (nothing when there are none)."""
    out: list[str] = []
    findings = integrity_findings(d)
    if findings:
        out += ["", "#### Integrity", ""]
        out += _md_table(["Check", "Severity", "Message", "File"], (
            [_Raw(f"{_md_code(f.get('check'))}"),
             _Raw(f"**{_md(severity_word(f, d))}**"), f.get("message") or "",
             f.get("file") or "-"] for f in findings))
    if d["warnings"]:
        out += ["", "#### Warnings", ""]
        out += [f"- {_md(w)}" for w in d["warnings"]]
    return out


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table; every cell is escaped except those wrapped in :class:`_Raw`."""
    out = ["| " + " | ".join(_md(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(x if isinstance(x, _Raw) else _md(x) for x in row) + " |"
            for row in rows]
    return out


def _md_code(text: Any) -> str:
    """An identifier as a code span, anything else as escaped text.

    A code span keeps backslashes and entities literally, so only plain
    identifiers go into one.
    """
    text = str(text)
    return f"`{text}`" if re.fullmatch(r"[A-Za-z0-9._-]+", text) else _md(text)


def _md_constraint_row(c: dict[str, Any]) -> list[str]:
    return [_Raw(f"**{_md(c['verdict'])}**"), c["structure"], c["roi"] or "-", c["metric"],
            fmt_limit(c), fmt_value(c["value"], c["limit_unit"]),
            fmt_margin(c["margin"], c["limit_unit"]), c["priority"], constraint_note(c)]
