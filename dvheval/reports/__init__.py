"""Reports of a protocol check: terminal text, JSON, JUnit XML, Markdown and HTML.

Every renderer reads the stable JSON form, :meth:`CheckResult.to_dict`, and
the plan's DVHs (``CheckResult.plan``) for the plot, so all formats say the
same thing. The exit code does not depend on the format.

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

JUnit mapping
-------------
The suite agrees with the exit code: it holds a ``<failure>`` or an
``<error>`` if and only if the gate is closed (exit 1). One ``<testsuite>``
per plan; one ``<testcase>`` per constraint or report metric of the JSON
``constraints`` list, in the same order, then one per integrity check that
ran (``integrity ID``):

- a hard constraint that failed, or any constraint beyond its unacceptable
  limit: ``<failure type="FAIL">``;
- a hard constraint or objective that could not be evaluated
  (``NOT_EVALUATED``): ``<error type="NOT_EVALUATED">``;
- ``ACCEPTABLE``, or an objective not met, while the gate stays open:
  passed, with the verdict and "does not close the gate" in
  ``system-out``; ``<failure type="ACCEPTABLE">`` (or ``FAIL``) when the
  check was run with ``acceptable_fails_gate``;
- ``REPORT`` and ``NOT_APPLICABLE``: ``<skipped>``, value or reason in
  ``system-out``;
- ``PASS``: passed, value in ``system-out``;
- an integrity check: ``<failure type="INTEGRITY">`` when one of its
  findings closed the gate, else passed with its warnings in ``system-out``.

A required structure that is missing or ambiguous is the testcase of the
``structure-missing`` check (or its own ``<error>`` testcase when that check
did not run). Should the gate close for a reason none of these shows, a
``plan gate`` testcase fails, so the suite is red whenever the gate is closed.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from dvheval.check import CheckError, CheckResult, ConstraintResult, Verdict
from dvheval.integrity import CHECKS
from dvheval.protocol import Protocol
from dvheval.sanitize import clean_tree, dumps_json, for_html, for_markdown, for_xml, visible

#: What each exit code of ``dvheval check`` means.
EXIT_CODES: dict[int, str] = {
    0: "every hard constraint passed (PASS, or ACCEPTABLE without --acceptable-fails)",
    1: "a hard constraint failed or could not be evaluated, or a required structure is "
       "missing (or ACCEPTABLE with --acceptable-fails)",
    2: "unusable input or command line (unreadable DICOM, unknown or invalid protocol, "
       "bad option)",
}

#: Order of verdicts from the most to the least serious.
SEVERITY = ("FAIL", "NOT_EVALUATED", "ACCEPTABLE", "PASS", "NOT_APPLICABLE", "REPORT")

_RICH_STYLE = {
    "PASS": "bold green",
    "ACCEPTABLE": "bold yellow",
    "FAIL": "bold red",
    "NOT_EVALUATED": "bold magenta",
    "NOT_APPLICABLE": "dim",
    "REPORT": "dim",
}

_VERDICT_COLOUR = {  # dark text colours, readable on white and in print
    "PASS": "#1a7f37",
    "ACCEPTABLE": "#9a6700",
    "FAIL": "#cf222e",
    "NOT_EVALUATED": "#8250df",
    "NOT_APPLICABLE": "#6e7781",
    "REPORT": "#6e7781",
}


# ------------------------------------------------------------------ helpers
def parse_rx(values: Sequence[str], protocol: Protocol) -> dict[str, float]:
    """Prescription overrides written ``LEVEL=GY`` (or a bare ``GY``) as ``{level: Gy}``.

    Parameters
    ----------
    values : sequence of str
        E.g. ``["PTV30=32", "PTV40=42 Gy"]``; a level may be named by one of
        its aliases; a bare dose (``"32"``) is allowed when the protocol has a
        single prescription level.
    protocol : Protocol

    Returns
    -------
    dict
        Canonical level name -> dose in Gy, for ``check_plan(rx_overrides=...)``.

    Raises
    ------
    CheckError
        Malformed value, unknown level, a level given twice, a dose that is
        not positive, or a bare dose with a protocol of several levels.
    """
    levels = list(protocol.prescriptions)
    out: dict[str, float] = {}
    for raw in values:
        name, sep, dose_text = raw.rpartition("=")
        if not sep:
            if len(levels) != 1:
                raise CheckError(
                    f"--rx {raw}: protocol {protocol.name} has {len(levels)} prescription levels "
                    f"({', '.join(levels)}); write --rx LEVEL=GY, e.g. --rx {levels[0]}={raw}")
            name = levels[0]
        level = protocol.find_level(name.strip())
        if level is None:
            raise CheckError(f"--rx {raw}: {name.strip()!r} is not a prescription level of "
                             f"protocol {protocol.name} (levels: {', '.join(levels)})")
        text = dose_text.strip()
        if text.lower().endswith("gy"):
            text = text[:-2].strip()
        try:
            dose = float(text)
        except ValueError:
            raise CheckError(f"--rx {raw}: {dose_text.strip()!r} is not a dose in Gy") from None
        if not (math.isfinite(dose) and dose > 0):
            raise CheckError(f"--rx {raw}: the dose must be a positive number of Gy")
        if level in out:
            raise CheckError(f"--rx {raw}: prescription level {level} is given twice")
        out[level] = dose
    return out


def _g(v: float | None) -> str:
    """A limit or dose without trailing zeros: 34, 42.8, 0.035."""
    if v is None:
        return "-"
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _unit(unit: str | None) -> str:
    return "" if unit is None else unit


def fmt_value(v: float | None, unit: str | None) -> str:
    """A measured value with its unit, e.g. ``"31.06 Gy"``, ``"0.452 cc"``.

    Parameters
    ----------
    v : float or None
        The value; None gives ``"-"``.
    unit : str or None
        ``"Gy"``, ``"cc"``, ``"%"`` or ``"%Rx"``.

    Returns
    -------
    str
    """
    if v is None or not math.isfinite(v):
        return "-"
    digits = 3 if unit == "cc" and abs(v) < 1 else 2
    return f"{v:.{digits}f} {_unit(unit)}".rstrip()


def fmt_margin(v: float | None, unit: str | None) -> str:
    """A signed margin (positive inside the limit), e.g. ``"+2.94 Gy"``."""
    if v is None or not math.isfinite(v):
        return "-"
    digits = 3 if unit == "cc" and abs(v) < 1 else 2
    return f"{v:+.{digits}f} {_unit(unit)}".rstrip()


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
    unit = _unit(c.get("limit_unit"))
    main = f"{op} {_g(c['limit'])} {unit}".rstrip()
    origin = ""
    if "%" in text and c.get("limit_unit") == "Gy":
        rx, level = c.get("prescription_gy"), c.get("prescription")
        pct = text.split(" of ")[0]
        origin = f"{pct} of {level} {_g(rx)} Gy" if level and rx is not None else text
    if c.get("acceptable_limit") is not None:
        main += f", acceptable {_g(c['acceptable_limit'])} {unit}".rstrip()
    if c.get("unacceptable_limit") is not None:
        main += f", unacceptable beyond {_g(c['unacceptable_limit'])} {unit}".rstrip()
    return main, origin


def fmt_limit(c: dict[str, Any]) -> str:
    """Operator and limit on one line, e.g. ``">= 27 Gy (90% of PTV30 30 Gy)"``.

    See :func:`limit_parts`.
    """
    main, origin = limit_parts(c)
    return f"{main} ({origin})" if origin else main


def structure_label(c: dict[str, Any]) -> str:
    """``"PTV_Low -> PTV30"``, or the structure alone when no ROI matched."""
    roi = c.get("roi")
    if roi is None:
        return c["structure"]
    return f"{c['structure']} -> {roi}"


def _note(c: dict[str, Any]) -> str:
    """What the table shows beside the verdict: the reason when it explains something."""
    verdict = c["verdict"]
    parts = []
    if c.get("unacceptable"):
        limit = f"{_g(c.get('unacceptable_limit'))} {_unit(c.get('limit_unit'))}".rstrip()
        parts.append(f"beyond the unacceptable limit {limit}: closes the gate")
    if c.get("alternative") and verdict != "NOT_APPLICABLE":
        parts.append(f"alternative {c['alternative']!r}")
    if verdict in ("NOT_EVALUATED", "NOT_APPLICABLE", "ACCEPTABLE") and c.get("reason"):
        parts.append(c["reason"])
    return "; ".join(parts)


def _rx_text(p: dict[str, Any]) -> str:
    if p["dose_gy"] is None:
        return f"{p['name']} unknown (not in the protocol, the RTPLAN or --rx)"
    extra = []
    if p["source"] != "protocol" and p.get("protocol_gy") is not None:
        extra.append(f"protocol {_g(p['protocol_gy'])} Gy")
    if p.get("rtplan_gy") is not None and p["source"] != "rtplan":
        if abs(p["rtplan_gy"] - p["dose_gy"]) <= 0.005:
            extra.append("RTPLAN agrees")
        else:
            extra.append(f"RTPLAN {_g(p['rtplan_gy'])} Gy")
    detail = "; ".join([p["source"], *extra])
    return f"{p['name']} {_g(p['dose_gy'])} Gy ({detail})"


def prescriptions_text(d: dict[str, Any]) -> str:
    """Prescription doses used and where each came from, on one line."""
    return ", ".join(_rx_text(p) for p in d["prescriptions"]) or "none"


def fractions_text(d: dict[str, Any]) -> str:
    """Number of fractions used and where it came from."""
    f = d["fractions"]
    extra = [f["source"]]
    if f["source"] != "protocol":
        extra.append(f"protocol {f['protocol']}")
    if f.get("rtplan") is not None:
        extra.append(f"RTPLAN {f['rtplan']}")
    return f"{f['used']} ({'; '.join(extra)})"


def protocol_text(d: dict[str, Any]) -> str:
    """``name version (date): title``."""
    p = d["protocol"]
    return f"{p['name']} {p['version']} ({p['date']}): {p['title']}"


def plan_label(d: dict[str, Any]) -> str:
    """The RTPLAN label, else the structure set label, else ``"plan"``."""
    rt = d["plan"].get("rtplan") or {}
    return rt.get("label") or d["plan"]["structure_set"].get("label") or "plan"


def patient_text(d: dict[str, Any]) -> str:
    """Patient id and name."""
    pat = d["plan"]["patient"]
    return f"{pat.get('id') or '?'} {pat.get('name') or ''}".rstrip()


def plan_text(d: dict[str, Any]) -> str:
    """Plan label and the files it was read from."""
    plan = d["plan"]
    rt = plan.get("rtplan")
    parts = []
    if rt:
        parts.append(f"RTPLAN {rt['file']}")
    parts.append(f"structure set {plan['structure_set']['file']}")
    parts.append("dose " + ", ".join(plan["dose"]["files"]))
    return f"{plan_label(d)} ({'; '.join(parts)})"


def _hard_and_objective(d: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    cs = d["constraints"]
    return ([c for c in cs if c["priority"] == "hard"],
            [c for c in cs if c["priority"] == "objective"])


def _ids(cs: Iterable[dict[str, Any]]) -> str:
    return ", ".join(f"{c['structure']} {c['metric']}" for c in cs)


def gate_text(d: dict[str, Any]) -> str:
    """One line: the plan verdict, why, and what the exit code means.

    Parameters
    ----------
    d : dict
        ``CheckResult.to_dict()``.

    Returns
    -------
    str
        E.g. ``"PASS: every hard constraint and objective is met; exit 0 (gate open)"``;
        asserted conditions follow the verdict, e.g. ``"PASS (condition asserted:
        lumbosacral): ..."``. Control characters are shown as escapes.
    """
    conditions = d.get("conditions") or []
    qualifier = ""
    if conditions:
        word = "condition" if len(conditions) == 1 else "conditions"
        qualifier = f" ({word} asserted: {', '.join(conditions)})"
    return visible(f"{d['verdict']}{qualifier}: {gate_reason(d)}")


def integrity_findings(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The integrity findings of a report dict, gate-closing ones first.

    Parameters
    ----------
    d : dict
        ``CheckResult.to_dict()`` (its ``integrity`` list; absent means none).

    Returns
    -------
    list of dict
        ``{"check", "severity", "message", "file"}`` each.
    """
    found = list(d.get("integrity") or [])
    return sorted(found, key=lambda f: f.get("severity") != "close")


def closing_findings(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The integrity findings of severity ``close``."""
    return [f for f in integrity_findings(d) if f.get("severity") == "close"]


def finding_text(f: dict[str, Any]) -> str:
    """``"check-id: message (file)"`` for one integrity finding."""
    where = f" ({f['file']})" if f.get("file") else ""
    return f"{f.get('check')}: {f.get('message')}{where}"


def overrides_text(d: dict[str, Any]) -> str:
    """Doses and fractions given on the command line instead of the protocol's, on one line.

    E.g. ``"--rx PTV30=32 Gy (protocol 30 Gy, RTPLAN 30 Gy); --fractions 5
    (protocol 10)"``; empty when nothing was overridden.
    """
    parts = []
    for p in d.get("prescriptions") or []:
        if p.get("source") != "override":
            continue
        was = [f"protocol {_g(p.get('protocol_gy'))} Gy" if p.get("protocol_gy") is not None
               else "protocol leaves it to the plan"]
        if p.get("rtplan_gy") is not None:
            was.append(f"RTPLAN {_g(p['rtplan_gy'])} Gy")
        parts.append(f"--rx {p['name']}={_g(p.get('dose_gy'))} Gy ({', '.join(was)})")
    f = d.get("fractions") or {}
    if f.get("source") == "override" or f.get("override") is not None:
        was = [f"protocol {f.get('protocol')}"]
        if f.get("rtplan") is not None:
            was.append(f"RTPLAN {f['rtplan']}")
        parts.append(f"--fractions {f.get('override', f.get('used'))} ({', '.join(was)})")
    return "; ".join(parts)


def structure_notes(s: dict[str, Any]) -> list[str]:
    """Defects and ROI warnings of a protocol structure's ROI (each can change a value)."""
    notes = [f"defect: {x}" for x in s.get("defects") or []]
    notes += [w for w in s.get("roi_warnings") or [] if w not in notes]
    return notes


def gate_reason(d: dict[str, Any]) -> str:
    """Why the plan got its verdict, and what the exit code means.

    Parameters
    ----------
    d : dict
        ``CheckResult.to_dict()``.

    Returns
    -------
    str
        E.g. ``"every hard constraint and objective is met; exit 0 (gate open)"``.
    """
    verdict, code = d["verdict"], d["exit_code"]
    hard, objective = _hard_and_objective(d)
    gate = "gate open" if code == 0 else "gate closed"
    closers = closing_findings(d) if code != 0 else []
    integrity = ""
    if closers:
        ids = list(dict.fromkeys(str(f.get("check")) for f in closers))
        integrity = f"{len(ids)} integrity check(s) closed the gate: {', '.join(ids)}"
    unacceptable = [c for c in objective if c.get("unacceptable")]
    if verdict == "PASS":
        why = "every hard constraint and objective is met"
    elif verdict == "FAIL":
        failed = [c for c in hard if c["verdict"] == "FAIL"]
        bits = [f"{len(failed)} hard constraint(s) failed: {_ids(failed)}"] if failed else []
        if unacceptable:
            bits.append(f"{len(unacceptable)} objective(s) beyond the unacceptable limit: "
                        f"{_ids(unacceptable)}")
        why = "; ".join(bits + [integrity] if integrity else bits) or "a constraint failed"
    elif verdict == "NOT_EVALUATED":
        bits = []
        missing = d["gate"]["unresolved_required_structures"]
        unevaluated = [c for c in hard if c["verdict"] == "NOT_EVALUATED"]
        if unevaluated:
            bits.append(f"{len(unevaluated)} hard constraint(s) could not be evaluated: "
                        f"{_ids(unevaluated)}")
        unevaluated = [c for c in objective if c["verdict"] == "NOT_EVALUATED"]
        if unevaluated:
            bits.append(f"{len(unevaluated)} objective(s) could not be evaluated: "
                        f"{_ids(unevaluated)}")
        if missing:
            bits.append(f"required structure(s) missing or ambiguous: {', '.join(missing)}")
        if integrity:
            bits.append(integrity)
        why = "; ".join(bits) or "not every hard constraint could be evaluated"
    else:
        bits = []
        acc = [c for c in hard if c["verdict"] == "ACCEPTABLE"]
        unmet = [c for c in objective if c["verdict"] in ("ACCEPTABLE", "FAIL", "NOT_EVALUATED")]
        if acc:
            bits.append(f"{len(acc)} hard constraint(s) within the acceptable variation only: "
                        f"{_ids(acc)}")
        if unmet:
            bits.append(f"{len(unmet)} objective(s) not met: {_ids(unmet)}")
        why = "no hard constraint failed; " + "; ".join(bits)
        if integrity:
            why += f"; {integrity}"
        elif code == 1:
            gate += ", --acceptable-fails"
    warned = [f for f in integrity_findings(d) if f not in closers]
    if warned:
        ids = list(dict.fromkeys(str(f.get("check")) for f in warned))
        why += f"; integrity warning(s): {', '.join(ids)}"
    return f"{why}; exit {code} ({gate})"


def _report_rows(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(structure -> ROI, "metric value, ...", note) per structure with report metrics."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for c in d["constraints"]:
        if c["verdict"] == "REPORT":
            rows.setdefault(c["structure"], []).append(c)
    out = []
    for entries in rows.values():
        values = ", ".join(
            f"{c['metric']} {fmt_value(c['value'], c['limit_unit'])}" for c in entries
        )
        reasons = []
        for c in entries:
            if c["reason"] and c["reason"] not in reasons:
                reasons.append(c["reason"])
        out.append((structure_label(entries[0]), values, "; ".join(reasons)))
    return out


def _matching_rows(d: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(structure, ROI, matched by, required, note) per protocol structure."""
    out = []
    for s in d["structures"]:
        required = "required" if s["required"] else "optional"
        if s["match"] == "matched":
            note = s["reason"] or ("" if s["roi_status"] == "ok" else f"ROI {s['roi_status']}")
            extra = [n for n in structure_notes(s) if n not in note]
            note = "; ".join([note, *extra] if note else extra)
            out.append((s["structure"], s["roi"], s["matched_by"] or "", required, note))
        else:
            out.append((s["structure"], "-", "", required, f"{s['match']}: {s['reason']}"))
    return out


def _alternative_lines(d: dict[str, Any]) -> list[str]:
    return [
        f"{a['id']}: {'ACTIVE' if a['active'] else 'not active'} ({a['reason']})"
        for a in d["alternatives"]
    ]


def _constraint_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in d["constraints"] if c["verdict"] != "REPORT"]


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


def report_view(result: CheckResult, clean: Any = visible) -> dict[str, Any]:
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
    return clean_tree(report_dict(result), clean)


# --------------------------------------------------------------------- text
def render_text(result: CheckResult, console: Console) -> None:
    """Print the check as a table, coloured when the console is a terminal.

    Parameters
    ----------
    result : CheckResult
    console : rich.console.Console
        Where to print; colours follow the console's settings.
    """
    d = report_view(result)
    console.print(_header_grid(d))
    block = _integrity_block(d)
    if block:
        console.print()
        for line in block:
            console.print(line)
    console.print()
    console.print(Text("Constraints", style="bold"))
    # on a narrow console long notes go below the table, numbered
    footnotes: list[str] = []
    rows = []
    for c in _constraint_rows(d):
        style = "dim" if c["verdict"] == "NOT_APPLICABLE" else ""
        note = _note(c)
        if note and console.width < 160:
            footnotes.append(note)
            note = f"[{len(footnotes)}]"
        rows.append([
            Text(structure_label(c), style=style),
            Text(c["metric"], style=style),
            Text(fmt_limit(c), style=style),
            Text(fmt_value(c["value"], c["limit_unit"]), style=style),
            Text(fmt_margin(c["margin"], c["limit_unit"]), style=style),
            Text(c["priority"], style=style),
            Text(c["verdict"], style=_RICH_STYLE[c["verdict"]]),
            Text(note, style=style),
        ])
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    # numbers and verdicts never wrap or shrink; names, limits and notes wrap on narrow screens
    for i, (name, justify, fixed) in enumerate((
            ("Structure -> ROI", "left", False), ("Metric", "left", False),
            ("Limit", "left", False), ("Value", "right", True), ("Margin", "right", True),
            ("Priority", "left", True), ("Verdict", "left", True), ("Note", "left", False))):
        width = max([len(name)] + [len(r[i].plain) for r in rows]) if fixed else None
        table.add_column(name, justify=justify, overflow="fold",  # type: ignore[arg-type]
                         no_wrap=fixed, min_width=width)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for i, note in enumerate(footnotes, 1):
        console.print(Text(f"[{i}] {note}", style="dim"))
    console.print()

    reports = _report_rows(d)
    if reports:
        console.print(Text("Report-only metrics", style="bold"))
        rt = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
        rt.add_column("Structure -> ROI", no_wrap=True)
        rt.add_column("Values", overflow="fold")
        rt.add_column("Note", overflow="fold")
        for label, values, note in reports:
            rt.add_row(Text(label), Text(values), Text(note, style="dim"))
        console.print(rt)
        console.print()

    console.print(Text("Structures", style="bold"))
    mt = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for name in ("Protocol structure", "ROI", "Matched by", "Required", "Note"):
        mt.add_column(name, overflow="fold")
    for row in _matching_rows(d):
        mt.add_row(*(Text(x) for x in row))
    console.print(mt)
    console.print()
    lines = [
        ("Unmatched ROIs", ", ".join(d["unmatched_rois"]) or "none"),
    ]
    alts = _alternative_lines(d)
    if alts:
        lines.append(("Alternatives", "; ".join(alts)))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for k, v in lines:
        grid.add_row(k, Text(v))
    console.print(grid)
    for w in d["warnings"]:
        console.print(Text.assemble(("warning ", "yellow"), w))
    for f in integrity_findings(d):
        if f.get("severity") != "close":
            console.print(Text.assemble(("integrity warning ", "yellow"), finding_text(f)))
    console.print()
    # the verdict is one line, however long, for pipelines that read the last line
    console.print(Text(gate_text(d), style=_RICH_STYLE[d["verdict"]]), soft_wrap=True)


def _integrity_block(d: dict[str, Any]) -> list[Text]:
    """Gate-closing integrity findings, for the top of the text report."""
    return [Text.assemble(("CLOSES THE GATE ", "bold red"), ("integrity ", "bold"),
                          finding_text(f)) for f in closing_findings(d)]


def _header_grid(d: dict[str, Any]) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("Patient", Text(patient_text(d)))
    grid.add_row("Plan", Text(plan_text(d)))
    grid.add_row("Protocol", Text(protocol_text(d)))
    grid.add_row("Prescriptions", Text(prescriptions_text(d)))
    grid.add_row("Fractions", Text(fractions_text(d)))
    if overrides_text(d):
        grid.add_row("Overrides", Text(overrides_text(d), style="bold yellow"))
    if d.get("conditions"):
        grid.add_row("Conditions", Text(f"asserted: {', '.join(d['conditions'])} (activates "
                                        "the protocol's alternatives)", style="bold yellow"))
    return Group(grid)


def to_text(result: CheckResult, width: int = 200) -> str:
    """The text report without colours, for files and pipes.

    Parameters
    ----------
    result : CheckResult
    width : int
        Line width; tables wrap long notes below it. Trailing blanks are removed.

    Returns
    -------
    str
    """
    buf = io.StringIO()
    console = Console(file=buf, no_color=True, width=width, force_terminal=False,
                      highlight=False, emoji=False)
    render_text(result, console)
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


# --------------------------------------------------------------------- json
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


# -------------------------------------------------------------------- junit
def _testcase_name(c: dict[str, Any]) -> str:
    if c["operator"]:
        return f"{c['structure']} {c['metric']} {c['operator']} {c['limit_text']}"
    return f"{c['structure']} {c['metric']} (report)"


def _value_line(c: dict[str, Any]) -> str:
    parts = [f"verdict {c['verdict']} ({c['priority']})"]
    if c["roi"]:
        parts.append(f"ROI {c['roi']} ({c['matched_by']})")
    if c["value"] is not None:
        parts.append(f"value {fmt_value(c['value'], c['limit_unit'])}")
    if c["operator"]:
        parts.append(f"limit {fmt_limit(c)}")
    if c["margin"] is not None:
        parts.append(f"margin {fmt_margin(c['margin'], c['limit_unit'])}")
    if c["reason"]:
        parts.append(c["reason"])
    if c["citation"]:
        parts.append(f"source: {c['citation']}")
    return "\n".join(parts)


def to_junit(
    results: CheckResult | Sequence[CheckResult],
    times: Sequence[float] | None = None,
    timestamp: _dt.datetime | None = None,
) -> str:
    """JUnit XML: a ``<testsuites>`` root, one ``<testsuite>`` per plan.

    Parameters
    ----------
    results : CheckResult or sequence of CheckResult
        One check per plan.
    times : sequence of float, optional
        Seconds each check took (the suites' ``time``); 0 by default.
    timestamp : datetime, optional
        The suites' ``timestamp`` (UTC); now by default.

    Returns
    -------
    str
        The XML document. See the module docstring for how verdicts map to
        ``<failure>``, ``<error>`` and ``<skipped>``.
    """
    if isinstance(results, CheckResult):
        results = [results]
    if times is None:
        times = [0.0] * len(results)
    stamp = (timestamp or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S")
    root = ET.Element("testsuites", name="dvheval check")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for result, seconds in zip(results, times, strict=True):
        suite = _junit_suite(result, seconds, stamp)
        root.append(suite)
        for k in totals:
            totals[k] += int(suite.get(k, "0"))
        total_time += seconds
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"


def _gating(c: dict[str, Any], strict: bool) -> str | None:
    """How a constraint closes the gate: ``"FAIL"``, ``"NOT_EVALUATED"``, ``"ACCEPTABLE"`` or None.

    A hard constraint that failed, any constraint (hard or objective) that
    could not be evaluated, and a value beyond an unacceptable limit (even
    of an objective) close it; with ``acceptable_fails_gate`` an ACCEPTABLE
    hard limit or an unmet objective does too. Only called for a closed gate.
    """
    verdict = c["verdict"]
    if c.get("unacceptable"):
        return "FAIL"
    if c["priority"] == "hard" and verdict == "FAIL":
        return verdict
    if c["priority"] in ("hard", "objective") and verdict == "NOT_EVALUATED":
        return verdict
    if strict and c["priority"] in ("hard", "objective") and verdict in (
            "ACCEPTABLE", "FAIL", "NOT_EVALUATED"):
        return verdict
    return None


def _integrity_ids(d: dict[str, Any]) -> list[str]:
    """The integrity checks that ran, in the order of :data:`~dvheval.integrity.CHECKS`.

    ``d["integrity_checks"]`` when the result lists them, else the checks
    that produced a finding (they certainly ran).
    """
    ran = d.get("integrity_checks")
    ids = list(ran) if ran is not None else [str(f.get("check")) for f in integrity_findings(d)]
    ids = list(dict.fromkeys(ids))
    order = {k: i for i, k in enumerate(CHECKS)}
    return sorted(ids, key=lambda k: order.get(k, len(order)))


def _junit_suite(result: CheckResult, seconds: float, stamp: str) -> ET.Element:
    d = report_view(result, for_xml)
    proto = d["protocol"]
    closed = d["exit_code"] != 0
    closers = closing_findings(d) if closed else []
    suite = ET.Element("testsuite", name=f"{d['plan']['patient']['id']} {plan_label(d)}")
    props = ET.SubElement(suite, "properties")
    integrity = ", ".join(f"{f.get('check')} ({f.get('severity')})"
                          for f in integrity_findings(d)) or "none"
    for name, value in (
        ("protocol", proto["name"]),
        ("protocol_version", proto["version"]),
        ("protocol_sha256", proto["sha256"]),
        ("patient_id", d["plan"]["patient"]["id"]),
        ("plan", plan_label(d)),
        ("prescriptions", prescriptions_text(d)),
        ("fractions", fractions_text(d)),
        ("overrides", overrides_text(d) or "none"),
        ("conditions", ", ".join(d.get("conditions") or []) or "none"),
        ("integrity", integrity),
        ("verdict", d["verdict"]),
        ("exit_code", str(d["exit_code"])),
        ("tool", f"{d['tool']['name']} {d['tool']['version']}"),
    ):
        ET.SubElement(props, "property", name=name, value=str(value))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}

    def case(name: str, classname: str) -> ET.Element:
        counts["tests"] += 1
        return ET.SubElement(suite, "testcase", name=name, classname=classname, time="0")

    def fail(el: ET.Element, kind: str, message: str) -> None:
        tag = "error" if kind == "NOT_EVALUATED" else "failure"
        ET.SubElement(el, tag, message=message, type=kind)
        counts["errors" if tag == "error" else "failures"] += 1

    strict = d["gate"]["acceptable_fails_gate"]
    for c in d["constraints"]:
        el = case(_testcase_name(c), f"{proto['name']}.{c['structure']}")
        verdict = c["verdict"]
        message = f"{verdict}: {c['reason']}" if c["reason"] else verdict
        kind = _gating(c, strict) if closed else None
        out = _value_line(c)
        if kind is not None:
            fail(el, kind, message)
        elif verdict in ("REPORT", "NOT_APPLICABLE"):
            ET.SubElement(el, "skipped", message=message)
            counts["skipped"] += 1
        elif verdict in ("FAIL", "NOT_EVALUATED", "ACCEPTABLE"):
            out += f"\n{verdict} ({c['priority']}): does not close the gate"
        ET.SubElement(el, "system-out").text = out
    ran = _integrity_ids(d)
    # a missing required structure is the testcase of the structure-missing check when it ran
    missing = [] if "structure-missing" in ran else d["gate"]["unresolved_required_structures"]
    for name in missing:
        s = next(s for s in d["structures"] if s["structure"] == name)
        el = case(f"{name} required structure", f"{proto['name']}.{name}")
        message = f"NOT_EVALUATED: required structure {name}: {s['reason']}"
        if closed:
            fail(el, "NOT_EVALUATED", message)
        else:
            ET.SubElement(el, "system-out").text = message
    by_check: dict[str, list[dict[str, Any]]] = {}
    for f in integrity_findings(d):
        by_check.setdefault(str(f.get("check")), []).append(f)
    for check in ran:
        el = case(f"integrity {check}", f"{proto['name']}.integrity")
        found = by_check.get(check, [])
        closing = [f for f in found if f in closers]
        if closing:
            fail(el, "INTEGRITY", "; ".join(finding_text(f) for f in closing))
        spec = CHECKS.get(check)
        lines = [f"compares: {spec.compares}" if spec else f"check {check}"]
        lines += [f"{f.get('severity')}: {finding_text(f)}" for f in found]
        if not found:
            lines.append("no problem found")
        ET.SubElement(el, "system-out").text = "\n".join(lines)
    if closed and counts["failures"] + counts["errors"] == 0:
        # the gate closed for a reason no testcase above shows: keep the suite red
        el = case("plan gate", f"{proto['name']}.gate")
        fail(el, "NOT_EVALUATED" if d["verdict"] == "NOT_EVALUATED" else "FAIL", gate_text(d))
    lines = [gate_text(d)]
    if overrides_text(d):
        lines.append(f"overrides: {overrides_text(d)}")
    if d.get("conditions"):
        lines.append(f"conditions asserted: {', '.join(d['conditions'])}")
    lines += [f"integrity {f.get('severity')}: {finding_text(f)}" for f in integrity_findings(d)]
    lines += [f"{s['structure']} ({s['roi']}): {n}" for s in d["structures"]
              for n in structure_notes(s)]
    lines += d["warnings"]
    ET.SubElement(suite, "system-out").text = "\n".join(lines)
    for k, v in counts.items():
        suite.set(k, str(v))
    suite.set("time", f"{seconds:.3f}")
    suite.set("timestamp", stamp)
    return suite


# ----------------------------------------------------------------- markdown
def _severity_word(f: dict[str, Any], d: dict[str, Any]) -> str:
    """``"closes the gate"`` or ``"warning"`` for an integrity finding."""
    if f.get("severity") == "close":
        return "closes the gate" if d.get("exit_code") else "close (gate open)"
    return "warning"


_md = for_markdown


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table; every cell is escaped except those wrapped in :class:`_Raw`."""
    out = ["| " + " | ".join(_md(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(x if isinstance(x, _Raw) else _md(x) for x in row) + " |"
            for row in rows]
    return out


class _Raw(str):
    """Markdown written by this module (not escaped again)."""


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
            fmt_margin(c["margin"], c["limit_unit"]), c["priority"], _note(c)]


def summary_text(d: dict[str, Any]) -> str:
    """Verdict counts per priority, e.g. ``"hard 3 PASS, 2 NOT_APPLICABLE; objective 3 PASS"``."""
    parts = []
    for priority in ("hard", "objective"):
        counts = d["summary"].get(priority) or {}
        if counts:
            inner = ", ".join(f"{counts[v]} {v}" for v in SEVERITY if v in counts)
            parts.append(f"{priority} {inner}")
    return "; ".join(parts) or "no constraints"


def to_markdown(result: CheckResult) -> str:
    """A compact Markdown summary for pipeline pages and merge requests.

    The verdict line comes first, then the constraints that need attention
    (FAIL, NOT_EVALUATED, ACCEPTABLE), then every constraint, report-only
    metrics and structure matching.
    """
    d = report_view(result)
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
    header = ["Verdict", "Structure", "ROI", "Metric", "Limit", "Value", "Margin", "Priority",
              "Note"]
    rows = _constraint_rows(d)
    attention = sorted(
        (c for c in rows if c["verdict"] in ("FAIL", "NOT_EVALUATED", "ACCEPTABLE")),
        key=lambda c: (c["priority"] != "hard", SEVERITY.index(c["verdict"])),
    )
    out += ["", "#### Failing or not evaluated", ""]
    missing = d["gate"]["unresolved_required_structures"]
    if attention:
        out += _md_table(header, (_md_constraint_row(c) for c in attention))
    elif not missing:
        out.append("None: every constraint was evaluated and none failed.")
    if missing:
        out += ["", f"Required structure(s) missing or ambiguous: {_md(', '.join(missing))}."]
    out += ["", "#### All constraints", ""]
    out += _md_table(header, (_md_constraint_row(c) for c in rows))
    reports = _report_rows(d)
    if reports:
        out += ["", "#### Report-only metrics", ""]
        out += _md_table(["Structure -> ROI", "Values", "Note"], reports)
    out += ["", "#### Structures", ""]
    out += _md_table(["Protocol structure", "ROI", "Matched by", "Required", "Note"],
                     _matching_rows(d))
    out += ["", f"Unmatched ROIs: {_md(', '.join(d['unmatched_rois']) or 'none')}"]
    alts = _alternative_lines(d)
    if alts:
        out += ["", "Alternatives: " + _md("; ".join(alts))]
    findings = integrity_findings(d)
    if findings:
        out += ["", "#### Integrity", ""]
        out += _md_table(["Check", "Severity", "Message", "File"], (
            [_Raw(f"{_md_code(f.get('check'))}"),
             _Raw(f"**{_md(_severity_word(f, d))}**"), f.get("message") or "",
             f.get("file") or "-"] for f in findings))
    if d["warnings"]:
        out += ["", "#### Warnings", ""]
        out += [f"- {_md(w)}" for w in d["warnings"]]
    out += ["", f"_{_md(d['tool']['name'])} {_md(d['tool']['version'])}, protocol "
                f"{_md(proto['name'])} {_md(proto['version'])}_", ""]
    return "\n".join(out)


# --------------------------------------------------------------------- plot
def _physical(dose: float, model: str, fractions: int, ab: float) -> float:
    """Physical dose whose EQD2 or BED (in ``fractions`` fractions) is ``dose``."""
    n = float(fractions)
    if model == "EQD2":
        return n / 2.0 * (-ab + math.sqrt(ab * ab + 4.0 * dose * (2.0 + ab) / n))
    return n * ab / 2.0 * (-1.0 + math.sqrt(1.0 + 4.0 * dose / (n * ab)))


def limit_marker(
    r: ConstraintResult, covered_cc: float, fractions: int
) -> tuple[str, float, float] | None:
    """Where a constraint's limit lies on its structure's cumulative DVH.

    Parameters
    ----------
    r : ConstraintResult
        An evaluated constraint (with a limit).
    covered_cc : float
        Volume of the structure inside the dose grid (100 % of its DVH).
    fractions : int
        Fractions used for EQD2/BED limits.

    Returns
    -------
    tuple or None
        ``(kind, dose_gy, volume_pct)`` in physical dose and per cent of the
        volume: ``"dose"`` for a D-metric limit (dose ``limit`` at volume
        ``x``), ``"volume"`` for a V-metric limit (volume ``limit`` at dose
        ``x``), ``"max"``/``"min"`` for a vertical tick at the limit dose,
        ``"mean"`` for the limit dose (the volume is left to the caller).
        None when the limit cannot be shown (gEUD, no limit, unknown unit).
    """
    m = r.constraint.metric
    if m is None or r.limit is None or r.unit is None or covered_cc <= 0:
        return None

    def to_physical(dose: float) -> float:
        if m.model and m.alpha_beta:
            return _physical(dose, m.model, fractions, float(m.alpha_beta))
        return dose

    if m.kind in ("dose_at_volume", "max", "min", "mean"):
        if r.unit == "Gy":
            limit = r.limit
        elif r.unit == "%Rx" and r.prescription_gy:
            limit = r.limit / 100.0 * r.prescription_gy
        else:
            return None
        dose = to_physical(limit)
        if m.kind == "dose_at_volume":
            assert m.value is not None
            pct = m.value if m.value_unit == "%" else 100.0 * m.value / covered_cc
            return "dose", dose, min(pct, 100.0)
        return m.kind, dose, math.nan
    if m.kind == "volume_at_dose":
        assert m.value is not None
        x = m.value
        if m.value_unit == "cGy":
            x = x / 100.0
        elif m.value_unit == "%":
            if not r.prescription_gy:
                return None
            x = x / 100.0 * r.prescription_gy
        x = to_physical(x)
        if r.unit == "%":
            pct = r.limit
        elif r.unit == "cc":
            pct = 100.0 * r.limit / covered_cc
        else:
            return None
        return "volume", x, min(pct, 100.0)
    return None


def _short_limit(r: ConstraintResult) -> str:
    c = r.constraint
    op = {"<=": "\u2264", ">=": "\u2265"}.get(c.operator or "", c.operator or "")
    unit = "%" if r.unit == "%Rx" else r.unit
    return f"{c.metric_name} {op} {_g(r.limit)} {unit}"


def dvh_svg(result: CheckResult) -> str:
    """Cumulative DVHs (% volume vs Gy) of the matched structures with their limits, as SVG.

    Curves are drawn for every protocol structure matched to a ROI with a
    DVH (targets solid, organs dashed). Each evaluated limit is a marker on
    its structure's curve: D-metric limits at (limit, x %), V-metric limits
    at (x Gy, limit), Dmax/Dmin limits as a vertical tick, mean-dose limits
    as a diamond on the curve; EQD2/BED limits are converted to physical
    dose. Markers are green (PASS), amber (ACCEPTABLE) or red (FAIL).

    Parameters
    ----------
    result : CheckResult

    Returns
    -------
    str
        An ``<svg>`` element without XML declaration, DOCTYPE, metadata or
        namespace URLs, ready to be inlined in HTML.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    plan = result.plan
    fractions = result.fractions.fractions
    colours = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#1f77b4", "#2ca02c", "#17becf",
               "#e377c2", "#7f7f7f", "#bcbd22"]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "dvheval",
                                "font.family": "sans-serif", "font.size": 9}):
        fig = Figure(figsize=(9.0, 5.0))
        ax = fig.add_subplot(1, 1, 1)
        curves: dict[str, tuple[Any, Any, str, float]] = {}
        xmax = 1.0
        for i, spec in enumerate(result.protocol.structures):
            m = result.matching.matched.get(spec.name)
            if m is None:
                continue
            sr = plan.structures[m.index]
            if sr.dvh is None or sr.dvh.is_empty or sr.dvh.covered_cc <= 0:
                continue
            dose, vol = sr.dvh.cumulative()
            covered = float(sr.dvh.covered_cc)
            pct = 100.0 * vol / covered
            colour = colours[i % len(colours)]
            style = "-" if spec.type == "target" else "--"
            label = _plot_text(spec.name if m.roi == spec.name else f"{spec.name} ({m.roi})")
            ax.plot(dose, pct, style, color=colour, lw=1.6, label=label)
            curves[spec.name] = (dose, pct, colour, covered)
            xmax = max(xmax, float(dose[-1]))
        verdict_seen = set()
        labels_at: dict[tuple[Any, ...], list[str]] = {}
        for r in result.results:
            if r.verdict not in (Verdict.PASS, Verdict.ACCEPTABLE, Verdict.FAIL):
                continue
            curve = curves.get(r.constraint.structure)
            if curve is None:
                continue
            dose, pct, colour, covered = curve
            mark = limit_marker(r, covered, fractions)
            if mark is None:
                continue
            kind, x, y = mark
            vcol = _VERDICT_COLOUR[r.verdict.value]
            verdict_seen.add(r.verdict.value)
            if kind in ("max", "min"):
                y0, y1 = (0.0, 12.0) if kind == "max" else (88.0, 100.0)
                ax.plot([x, x], [y0, y1], color=vcol, lw=2.5, solid_capstyle="butt")
                ty = y1
            else:
                if kind == "mean":
                    y = _interp(x, dose, pct)
                    marker = "D"
                elif kind == "dose":
                    marker = "<" if r.constraint.operator in ("<", "<=") else ">"
                else:
                    marker = "v" if r.constraint.operator in ("<", "<=") else "^"
                ax.plot([x], [y], marker=marker, ms=8, color=vcol, mec=colour, mew=1.2,
                        linestyle="none")
                ty = y
            xmax = max(xmax, x)
            key = (round(x, 2), round(ty, 1), _short_limit(r), vcol)
            labels_at.setdefault(key, []).append(r.constraint.structure)
        ax.set_xlim(0, xmax * 1.05)
        ax.set_ylim(0, 105)
        _place_labels(ax, [(x, ty, _plot_text(f"{', '.join(names)} {text}"), vcol)
                           for (x, ty, text, vcol), names in labels_at.items()])
        ax.set_xlabel("Dose (Gy)")
        ax.set_ylabel("Volume (%)")
        ax.grid(True, color="#dddddd", lw=0.6)
        handles, labels = ax.get_legend_handles_labels()
        for v in ("PASS", "ACCEPTABLE", "FAIL"):
            if v in verdict_seen:
                handles.append(Line2D([], [], marker="o", color=_VERDICT_COLOUR[v],
                                      linestyle="none"))
                labels.append(f"limit {v}")
        if handles:
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize=8, frameon=False)
        ax.set_title(_plot_text(f"Cumulative DVH: {result.protocol.name}"), fontsize=10)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return _inline_svg(buf.getvalue())


def _plot_text(text: str) -> str:
    """A label for matplotlib: control characters as escapes, ``$`` not read as math."""
    out = visible(text).replace("$", r"\$")
    return " " + out if out.startswith("_") else out  # a leading _ hides a legend entry


def _place_labels(ax: Any, labels: list[tuple[float, float, str, str]]) -> None:
    """Annotate limit markers, moving labels up or down so that they do not overlap.

    Label sizes are estimated from the font size (7 pt), which is enough to
    keep neighbouring limits (e.g. a Dmax tick next to a D2% marker) apart.
    """
    dpi = ax.figure.dpi
    pt = dpi / 72.0
    height = 9.0 * pt
    box = ax.bbox
    placed: list[tuple[float, float, float, float]] = []
    for x, y, text, colour in labels:
        px, py = ax.transData.transform((x, y))
        width = 0.56 * 7.0 * len(text) * pt
        right = px + (5.0 + 0.0) * pt + width <= box.x1
        x0 = px + 5.0 * pt if right else px - 5.0 * pt - width
        first = -11.0 if y > 90 else 3.0
        candidates = [first] + [first + sign * step * 10.0 for step in range(1, 8)
                                for sign in (1, -1)]
        chosen = first
        for dy in candidates:
            y0 = py + dy * pt
            if y0 < box.y0 or y0 + height > box.y1:
                continue
            if all(x0 + width <= a0 or x0 >= a1 or y0 + height <= b0 or y0 >= b1
                   for a0, b0, a1, b1 in placed):
                chosen = dy
                break
        y0 = py + chosen * pt
        placed.append((x0, y0, x0 + width, y0 + height))
        ax.annotate(text, (x, y), xytext=(5 if right else -5, chosen),
                    textcoords="offset points", fontsize=7, color=colour,
                    ha="left" if right else "right", va="bottom", zorder=5,
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.85,
                          "edgecolor": "none"})


def _interp(x: float, xs: Any, ys: Any) -> float:
    import numpy as np

    return float(np.interp(x, xs, ys))


def _inline_svg(svg: str) -> str:
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)

    def root(match: re.Match[str]) -> str:
        tag = match.group(0)
        tag = re.sub(r'\s(width|height)="[^"]*"', "", tag)
        return tag[:-1] + ' role="img" aria-label="Cumulative DVH" class="dvh">'

    svg = re.sub(r"<svg\b[^>]*>", root, svg, count=1)
    return svg.strip()


# --------------------------------------------------------------------- html
_CSS = """
:root { --pass: #1a7f37; --acc: #9a6700; --fail: #cf222e; --ne: #8250df; --na: #6e7781; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif;
       font-size: 14px; color: #1f2328; background: #fff; margin: 0 auto;
       max-width: 1180px; padding: 20px 24px; line-height: 1.4; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 22px 0 8px; border-bottom: 1px solid #d0d7de;
     padding-bottom: 3px; }
.banner { border: 2px solid; border-left-width: 12px; border-radius: 6px;
          padding: 10px 16px; margin: 8px 0 16px; }
.banner .verdict { font-size: 26px; font-weight: 700; letter-spacing: 0.5px; }
.banner p { margin: 4px 0 0; }
.banner p.closes { font-weight: 600; }
.banner.PASS { border-color: var(--pass); background: #eef8f1; }
.banner.ACCEPTABLE { border-color: var(--acc); background: #fdf6e3; }
.banner.FAIL { border-color: var(--fail); background: #fdeeee; }
.banner.NOT_EVALUATED { border-color: var(--ne); background: #f5f0fd; }
.banner.PASS .verdict { color: var(--pass); }
.banner.ACCEPTABLE .verdict { color: var(--acc); }
.banner.FAIL .verdict { color: var(--fail); }
.banner.NOT_EVALUATED .verdict { color: var(--ne); }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #d8dee4;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.nowrap { white-space: nowrap; }
.nowrap { white-space: nowrap; }
td.note { min-width: 12em; }
table.info th { width: 150px; background: none; }
.badge { display: inline-block; font-weight: 700; font-size: 12px; padding: 1px 6px;
         border-radius: 4px; border: 1px solid; white-space: nowrap; }
.badge.PASS { color: var(--pass); background: #eef8f1; }
.badge.ACCEPTABLE { color: var(--acc); background: #fdf6e3; }
.badge.FAIL { color: var(--fail); background: #fdeeee; }
.badge.NOT_EVALUATED { color: var(--ne); background: #f5f0fd; }
.badge.NOT_APPLICABLE, .badge.REPORT { color: var(--na); background: #f6f8fa; }
tr.NOT_APPLICABLE td { color: #57606a; }
tr.FAIL td { background: #fff5f5; }
tr.NOT_EVALUATED td { background: #faf7fe; }
tr.ACCEPTABLE td { background: #fffbf0; }
.muted { color: #57606a; }
.small { font-size: 12px; }
figure { margin: 8px 0; }
svg.dvh { width: 100%; height: auto; }
ul { margin: 4px 0; padding-left: 20px; }
code, .mono { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: 12px;
              word-break: break-all; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5px; }
  h2 { break-after: avoid; page-break-after: avoid; }
  tr, figure, .banner { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  .banner, .badge, tr td, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  svg.dvh { max-height: 120mm; }
}
"""


_e = for_html


def _html_limit(c: dict[str, Any]) -> str:
    main, origin = limit_parts(c)
    out = f'<span class="nowrap">{_e(main)}</span>'
    if origin:
        out += f' <span class="nowrap small muted">({_e(origin)})</span>'
    return out


def _badge(verdict: str) -> str:
    return f'<span class="badge {_e(verdict)}">{_e(verdict)}</span>'


def _html_table(header: Sequence[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


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
    proto = d["protocol"]
    verdict = d["verdict"]
    conditions = d.get("conditions") or []
    qualifier = (f'<p class="qualifier"><b>Condition asserted:</b> {_e(", ".join(conditions))}'
                 "</p>" if conditions else "")
    title = f"{verdict}: {patient_text(d)}, {plan_label(d)} - {proto['name']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Plan check: {_e(patient_text(d))}, {_e(plan_label(d))}</h1>",
        f'<div class="muted">Protocol {_e(protocol_text(d))}</div>',
        f'<div class="banner {_e(verdict)}"><span class="verdict">{_e(verdict)}</span>'
        f" <span>exit code {d['exit_code']}</span>{qualifier}<p>{_e(gate_reason(d))}</p>"
        + "".join(f'<p class="closes"><span class="badge FAIL">CLOSES THE GATE</span> '
                  f"integrity <code>{_e(f.get('check'))}</code>: {_e(f.get('message'))}"
                  + (f' <span class="mono">({_e(f["file"])})</span>' if f.get("file") else "")
                  + "</p>" for f in (closing_findings(d) if d["exit_code"] else []))
        + "</div>",
    ]
    info = [
        ("Patient", patient_text(d)),
        ("Plan", plan_text(d)),
        ("Protocol", f"{protocol_text(d)}; file {proto['file']}"),
        ("Prescriptions", prescriptions_text(d)),
        ("Fractions", fractions_text(d)),
    ]
    if overrides_text(d):
        info.append(("Overrides", overrides_text(d)))
    if conditions:
        info.append(("Conditions asserted", ", ".join(conditions)))
    info.append(("Summary", summary_text(d)))
    parts.append('<table class="info">' + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info) + "</table>")

    rows = []
    for c in _constraint_rows(d):
        rows.append(
            f'<tr class="{_e(c["verdict"])}"><td>{_badge(c["verdict"])}</td>'
            f"<td>{_e(c['structure'])}</td><td>{_e(c['roi'] or '-')}</td>"
            f"<td class=\"nowrap\">{_e(c['metric'])}</td>"
            f"<td>{_html_limit(c)}</td>"
            f"<td class=\"num\">{_e(fmt_value(c['value'], c['limit_unit']))}</td>"
            f"<td class=\"num\">{_e(fmt_margin(c['margin'], c['limit_unit']))}</td>"
            f"<td>{_e(c['priority'])}</td><td class=\"small note\">{_e(_note(c))}</td></tr>"
        )
    parts.append("<h2>Constraints</h2>")
    parts.append(_html_table(["Verdict", "Structure", "ROI", "Metric", "Limit", "Value",
                              "Margin", "Priority", "Note"], rows))
    missing = d["gate"]["unresolved_required_structures"]
    if missing:
        parts.append(f'<p><span class="badge NOT_EVALUATED">NOT_EVALUATED</span> required '
                     f"structure(s) missing or ambiguous: {_e(', '.join(missing))}</p>")

    if plot:
        parts.append("<h2>Dose-volume histogram</h2>")
        parts.append(f"<figure>{dvh_svg(result)}<figcaption class=\"small muted\">"
                     "Cumulative DVH of the matched structures (targets solid, organs dashed). "
                     "Limits on their structure's curve: dose limits of D-metrics as a "
                     "triangle at (limit, volume) pointing to the allowed side, volume limits "
                     "of V-metrics at (dose, limit), Dmax/Dmin limits as a vertical tick, mean "
                     "limits as a diamond; EQD2/BED limits converted to physical dose. "
                     "Green: PASS, amber: ACCEPTABLE, red: FAIL.</figcaption></figure>")

    reports = _report_rows(d)
    if reports:
        parts.append("<h2>Report-only metrics</h2>")
        parts.append(_html_table(["Structure -> ROI", "Values", "Note"], (
            f"<tr><td class=\"nowrap\">{_e(a)}</td><td>{_e(b)}</td>"
            f"<td class=\"small muted\">{_e(c)}</td></tr>" for a, b, c in reports)))

    parts.append("<h2>Structures</h2>")
    parts.append(_html_table(["Protocol structure", "ROI", "Matched by", "Required", "Note"], (
        "<tr>" + "".join(f"<td>{_e(x)}</td>" for x in row) + "</tr>"
        for row in _matching_rows(d))))
    parts.append(f"<p>Unmatched ROIs: {_e(', '.join(d['unmatched_rois']) or 'none')}</p>")
    if d["alternatives"]:
        parts.append("<h2>Alternatives</h2><ul>" + "".join(
            f"<li><b>{_e(a['id'])}</b> {'active' if a['active'] else 'not active'}: "
            f"{_e(a['reason'])}. <span class=\"muted\">{_e(a['description'])}</span></li>"
            for a in d["alternatives"]) + "</ul>")
    findings = integrity_findings(d)
    if findings:
        parts.append("<h2>Integrity</h2>")
        parts.append(_html_table(["Check", "Severity", "Message", "File"], (
            f"<tr><td class=\"mono\">{_e(f.get('check'))}</td>"
            f"<td class=\"nowrap\">{_e(_severity_word(f, d))}</td>"
            f"<td>{_e(f.get('message'))}</td><td class=\"mono\">{_e(f.get('file') or '-')}"
            "</td></tr>" for f in findings)))
    if d["warnings"]:
        parts.append("<h2>Warnings</h2><ul>" + "".join(
            f"<li>{_e(w)}</li>" for w in d["warnings"]) + "</ul>")
    if proto["sources"]:
        parts.append("<h2>Sources</h2><ul class=\"small\">" + "".join(
            f"<li><b>{_e(s['short'])}</b>. {_e(s['reference'])}"
            + (f" doi:{_e(s['doi'])}" if s.get("doi") else "")
            + (f' <span class="mono">{_e(s["url"])}</span>' if s.get("url") else "")
            + "</li>" for s in proto["sources"].values()) + "</ul>")
    hashes = "".join(f"<tr><td class=\"mono\">{_e(f)}</td><td class=\"mono\">{_e(h)}</td></tr>"
                     for f, h in d["plan"]["dose"]["sha256"].items())
    hashes += (f"<tr><td class=\"mono\">{_e(proto['file'])}</td>"
               f"<td class=\"mono\">{_e(proto['sha256'])}</td></tr>")
    parts.append("<h2>Provenance</h2>")
    parts.append(f"<p class=\"small\">{_e(d['tool']['name'])} {_e(d['tool']['version'])}; "
                 "SHA-256 of the files read:</p>")
    parts.append(f'<table class="small"><tbody>{hashes}</tbody></table>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ dispatch
#: Report formats of ``dvheval check``.
FORMATS = ("text", "json", "junit", "html", "markdown")


def render(result: CheckResult, fmt: str, width: int = 200, seconds: float = 0.0) -> str:
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
    str
    """
    if fmt == "text":
        return to_text(result, width)
    if fmt == "json":
        return to_json(result)
    if fmt == "junit":
        return to_junit([result], [seconds])
    if fmt == "html":
        return to_html(result)
    if fmt == "markdown":
        return to_markdown(result)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
