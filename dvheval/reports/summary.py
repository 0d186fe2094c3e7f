"""The sentences and table rows every report format shows, from the report dict.

Each function reads the dict of :func:`dvheval.reports.json.report_view` (or
``CheckResult.to_dict()``) and returns plain text; the formats only differ
in how they lay it out and escape it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dvheval.reports.common import fmt_number, fmt_value, unit_text
from dvheval.sanitize import visible
from dvheval.vocab import VERDICT_SEVERITY, MatchState, Priority, StructureStatus, Verdict


# ------------------------------------------------------------ plan and protocol
def prescriptions_text(d: dict[str, Any]) -> str:
    """Prescription doses used and where each came from, on one line."""
    return ", ".join(_rx_text(p) for p in d["prescriptions"]) or "none"


def _rx_text(p: dict[str, Any]) -> str:
    if p["dose_gy"] is None:
        return f"{p['name']} unknown (not in the protocol, the RTPLAN or --rx)"
    extra = []
    if p["source"] != "protocol" and p.get("protocol_gy") is not None:
        extra.append(f"protocol {fmt_number(p['protocol_gy'])} Gy")
    if p.get("rtplan_gy") is not None and p["source"] != "rtplan":
        if abs(p["rtplan_gy"] - p["dose_gy"]) <= 0.005:
            extra.append("RTPLAN agrees")
        else:
            extra.append(f"RTPLAN {fmt_number(p['rtplan_gy'])} Gy")
    detail = "; ".join([p["source"], *extra])
    return f"{p['name']} {fmt_number(p['dose_gy'])} Gy ({detail})"


def fractions_text(d: dict[str, Any]) -> str:
    """Number of fractions used and where it came from."""
    f = d["fractions"]
    if f["source"] == "courses":
        counts = ", ".join(str(c.get("fractions")) for c in
                           d["plan"]["dose"].get("components") or [])
        return f"each course its own: {counts} (RTPLANs); protocol {f['protocol']}"
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
    text = f"{plan_label(d)} ({'; '.join(parts)})"
    combined = combination_lines(d)
    if combined:
        text += f"; dose: {combined[0]}: " + "; ".join(combined[1:])
    return text


def component_text(c: dict[str, Any]) -> str:
    """One plan of a sum or one course: label, prescriptions, fractions, recovery, file.

    Examples
    --------
    >>> component_text({"label": "Boost", "file": "b/RTPLAN.dcm", "fractions": 5,
    ...                 "prescriptions": [{"name": "PTV", "dose_gy": 20.0}], "recovery": 0.5})
    "RTPLAN 'Boost': PTV 20 Gy in 5 fractions, recovery 0.5 (b/RTPLAN.dcm)"
    """
    rx = ", ".join(f"{p['name']} {p['dose_gy']:g} Gy" for p in c.get("prescriptions") or []) \
        or "no prescription"
    nfx = f"{c['fractions']} fractions" if c.get("fractions") else "fractions unknown"
    rec = f", recovery {c['recovery']:g}" if c.get("recovery", 1.0) != 1.0 else ""
    return f"RTPLAN {c.get('label') or '(no label)'!r}: {rx} in {nfx}{rec} ({c.get('file')})"


def combination_lines(d: dict[str, Any]) -> list[str]:
    """For a plan sum or courses: what the dose is, then one line per plan; else nothing.

    Parameters
    ----------
    d : dict
        ``CheckResult.to_dict()``.
    """
    dose = d["plan"]["dose"]
    parts = dose.get("components") or []
    if not parts:
        return []
    courses = dose.get("quantity", "physical") != "physical"
    head = (f"cumulative {dose['quantity']} of {len(parts)} courses (each at its own "
            "fraction count; a limit in EQD2/BED is read on the grid of its model and a/b, "
            "physical-dose limits are not evaluated)"
            if courses else f"physical sum of {len(parts)} plans")
    word = "course" if courses else "plan"
    return [head] + [f"{word} {i}: {component_text(c)}" for i, c in enumerate(parts, start=1)]


def overrides_text(d: dict[str, Any]) -> str:
    """Doses and fractions given on the command line instead of the protocol's, on one line.

    E.g. ``"--rx PTV30=32 Gy (protocol 30 Gy, RTPLAN 30 Gy); --fractions 5
    (protocol 10)"``; empty when nothing was overridden.
    """
    parts = []
    for p in d.get("prescriptions") or []:
        if p.get("source") != "override":
            continue
        was = [f"protocol {fmt_number(p.get('protocol_gy'))} Gy"
               if p.get("protocol_gy") is not None else "protocol leaves it to the plan"]
        if p.get("rtplan_gy") is not None:
            was.append(f"RTPLAN {fmt_number(p['rtplan_gy'])} Gy")
        parts.append(f"--rx {p['name']}={fmt_number(p.get('dose_gy'))} Gy ({', '.join(was)})")
    f = d.get("fractions") or {}
    if f.get("source") == "override" or f.get("override") is not None:
        was = [f"protocol {f.get('protocol')}"]
        if f.get("rtplan") is not None:
            was.append(f"RTPLAN {f['rtplan']}")
        parts.append(f"--fractions {f.get('override', f.get('used'))} ({', '.join(was)})")
    return "; ".join(parts)


def summary_text(d: dict[str, Any]) -> str:
    """Verdict counts per priority, e.g. ``"hard 3 PASS, 2 NOT_APPLICABLE; objective 3 PASS"``."""
    parts = []
    for priority in (Priority.HARD.value, Priority.OBJECTIVE.value):
        counts = d["summary"].get(priority) or {}
        if counts:
            inner = ", ".join(f"{counts[v.value]} {v.value}" for v in VERDICT_SEVERITY
                              if v.value in counts)
            parts.append(f"{priority} {inner}")
    return "; ".join(parts) or "no constraints"


# ------------------------------------------------------------------ integrity
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


def severity_word(f: dict[str, Any], d: dict[str, Any]) -> str:
    """``"closes the gate"`` or ``"warning"`` for an integrity finding."""
    if f.get("severity") == "close":
        return "closes the gate" if d.get("exit_code") else "close (gate open)"
    return "warning"


# ----------------------------------------------------------------- the gate
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
    cs = d["constraints"]
    hard = [c for c in cs if c["priority"] == Priority.HARD]
    objective = [c for c in cs if c["priority"] == Priority.OBJECTIVE]
    gate = "gate open" if code == 0 else "gate closed"
    closers = closing_findings(d) if code != 0 else []
    integrity = ""
    if closers:
        ids = list(dict.fromkeys(str(f.get("check")) for f in closers))
        integrity = f"{len(ids)} integrity check(s) closed the gate: {', '.join(ids)}"
    if verdict == Verdict.PASS:
        why = "every hard constraint and objective is met"
    elif verdict == Verdict.FAIL:
        why = _fail_reason(hard, objective, integrity)
    elif verdict == Verdict.NOT_EVALUATED:
        missing = d["gate"]["unresolved_required_structures"]
        why = _not_evaluated_reason(hard, objective, missing, integrity)
    else:
        why = _acceptable_reason(hard, objective, integrity)
        if not integrity and code == 1:
            gate += ", --acceptable-fails"
    warned = [f for f in integrity_findings(d) if f not in closers]
    if warned:
        ids = list(dict.fromkeys(str(f.get("check")) for f in warned))
        why += f"; integrity warning(s): {', '.join(ids)}"
    return f"{why}; exit {code} ({gate})"


def _ids(cs: Iterable[dict[str, Any]]) -> str:
    return ", ".join(f"{c['structure']} {c['metric']}" for c in cs)


def _fail_reason(hard: list[dict[str, Any]], objective: list[dict[str, Any]],
                 integrity: str) -> str:
    """Why a plan FAILed: failed hard limits, objectives beyond their unacceptable limit."""
    failed = [c for c in hard if c["verdict"] == Verdict.FAIL]
    bits = [f"{len(failed)} hard constraint(s) failed: {_ids(failed)}"] if failed else []
    unacceptable = [c for c in objective if c.get("unacceptable")]
    if unacceptable:
        bits.append(f"{len(unacceptable)} objective(s) beyond the unacceptable limit: "
                    f"{_ids(unacceptable)}")
    if integrity:
        bits.append(integrity)
    return "; ".join(bits) or "a constraint failed"


def _not_evaluated_reason(hard: list[dict[str, Any]], objective: list[dict[str, Any]],
                          missing: list[str], integrity: str) -> str:
    """Why a plan is NOT_EVALUATED: constraints not evaluated, required structures missing."""
    bits = []
    unevaluated = [c for c in hard if c["verdict"] == Verdict.NOT_EVALUATED]
    if unevaluated:
        bits.append(f"{len(unevaluated)} hard constraint(s) could not be evaluated: "
                    f"{_ids(unevaluated)}")
    unevaluated = [c for c in objective if c["verdict"] == Verdict.NOT_EVALUATED]
    if unevaluated:
        bits.append(f"{len(unevaluated)} objective(s) could not be evaluated: "
                    f"{_ids(unevaluated)}")
    if missing:
        bits.append(f"required structure(s) missing or ambiguous: {', '.join(missing)}")
    if integrity:
        bits.append(integrity)
    return "; ".join(bits) or "not every hard constraint could be evaluated"


def _acceptable_reason(hard: list[dict[str, Any]], objective: list[dict[str, Any]],
                       integrity: str) -> str:
    """Why a plan is ACCEPTABLE: hard limits met only within their variation, objectives unmet."""
    bits = []
    acc = [c for c in hard if c["verdict"] == Verdict.ACCEPTABLE]
    unmet = [c for c in objective
             if c["verdict"] in (Verdict.ACCEPTABLE, Verdict.FAIL, Verdict.NOT_EVALUATED)]
    if acc:
        bits.append(f"{len(acc)} hard constraint(s) within the acceptable variation only: "
                    f"{_ids(acc)}")
    if unmet:
        bits.append(f"{len(unmet)} objective(s) not met: {_ids(unmet)}")
    why = "no hard constraint failed; " + "; ".join(bits)
    return f"{why}; {integrity}" if integrity else why


# ------------------------------------------------------------------- tables
def structure_label(c: dict[str, Any]) -> str:
    """``"PTV_Low -> PTV30"``, or the structure alone when no ROI matched."""
    roi = c.get("roi")
    if roi is None:
        return str(c["structure"])
    return f"{c['structure']} -> {roi}"


def structure_notes(s: dict[str, Any]) -> list[str]:
    """Defects and ROI warnings of a protocol structure's ROI (each can change a value)."""
    notes = [f"defect: {x}" for x in s.get("defects") or []]
    notes += [w for w in s.get("roi_warnings") or [] if w not in notes]
    return notes


def constraint_note(c: dict[str, Any]) -> str:
    """What the constraint tables show beside the verdict: the reason when it explains something."""
    verdict = c["verdict"]
    parts = []
    if c.get("unacceptable"):
        limit = f"{fmt_number(c.get('unacceptable_limit'))} {unit_text(c.get('limit_unit'))}"
        parts.append(f"beyond the unacceptable limit {limit.rstrip()}: closes the gate")
    if c.get("alternative") and verdict != Verdict.NOT_APPLICABLE:
        parts.append(f"alternative {c['alternative']!r}")
    if verdict in (Verdict.NOT_EVALUATED, Verdict.NOT_APPLICABLE, Verdict.ACCEPTABLE) \
            and c.get("reason"):
        parts.append(c["reason"])
    return "; ".join(parts)


def constraint_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The constraint entries with a limit (every verdict but REPORT), in protocol order."""
    return [c for c in d["constraints"] if c["verdict"] != Verdict.REPORT]


def report_rows(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(structure -> ROI, "metric value, ...", note) per structure with report metrics."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for c in d["constraints"]:
        if c["verdict"] == Verdict.REPORT:
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


def matching_rows(d: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(structure, ROI, matched by, required, note) per protocol structure."""
    out = []
    for s in d["structures"]:
        required = "required" if s["required"] else "optional"
        if s["match"] == MatchState.MATCHED:
            status = s["roi_status"]
            note = s["reason"] or ("" if status == StructureStatus.OK else f"ROI {status}")
            extra = [n for n in structure_notes(s) if n not in note]
            note = "; ".join([note, *extra] if note else extra)
            out.append((s["structure"], s["roi"], s["matched_by"] or "", required, note))
        else:
            out.append((s["structure"], "-", "", required, f"{s['match']}: {s['reason']}"))
    return out


def alternative_lines(d: dict[str, Any]) -> list[str]:
    """``"id: ACTIVE (reason)"`` per alternative of the protocol."""
    return [
        f"{a['id']}: {'ACTIVE' if a['active'] else 'not active'} ({a['reason']})"
        for a in d["alternatives"]
    ]
