"""The JUnit XML report, for CI test reports (GitLab, Jenkins).

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
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from dvheval.check import CheckResult
from dvheval.integrity import CHECKS
from dvheval.reports.common import fmt_limit, fmt_margin, fmt_value
from dvheval.reports.json import report_view
from dvheval.reports.summary import (
    closing_findings,
    finding_text,
    fractions_text,
    gate_text,
    integrity_findings,
    overrides_text,
    plan_label,
    prescriptions_text,
    structure_notes,
)
from dvheval.sanitize import for_xml
from dvheval.vocab import Priority, Verdict

#: Verdicts that need attention: with ``acceptable_fails_gate`` they close the gate.
_UNMET = (Verdict.ACCEPTABLE, Verdict.FAIL, Verdict.NOT_EVALUATED)
_JUDGED_PRIORITIES = (Priority.HARD, Priority.OBJECTIVE)


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


class _Suite:
    """A ``<testsuite>`` element being filled, with its counts of tests, failures..."""

    def __init__(self, name: str) -> None:
        self.element = ET.Element("testsuite", name=name)
        self.counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}

    def case(self, name: str, classname: str) -> ET.Element:
        """A new ``<testcase>``."""
        self.counts["tests"] += 1
        return ET.SubElement(self.element, "testcase", name=name, classname=classname,
                             time="0")

    def fail(self, case: ET.Element, kind: str, message: str) -> None:
        """Mark a testcase as an ``<error>`` (NOT_EVALUATED) or a ``<failure>`` (else)."""
        tag = "error" if kind == Verdict.NOT_EVALUATED else "failure"
        ET.SubElement(case, tag, message=message, type=kind)
        self.counts["errors" if tag == "error" else "failures"] += 1

    def skip(self, case: ET.Element, message: str) -> None:
        """Mark a testcase as ``<skipped>``."""
        ET.SubElement(case, "skipped", message=message)
        self.counts["skipped"] += 1

    @property
    def red(self) -> bool:
        """Whether a testcase failed or is an error."""
        return self.counts["failures"] + self.counts["errors"] > 0


def _junit_suite(result: CheckResult, seconds: float, stamp: str) -> ET.Element:
    d = report_view(result, for_xml)
    proto = d["protocol"]
    closed = d["exit_code"] != 0
    suite = _Suite(f"{d['plan']['patient']['id']} {plan_label(d)}")
    _add_properties(suite.element, d)
    _add_constraint_cases(suite, d, closed)
    ran = _integrity_ids(d)
    _add_missing_structure_cases(suite, d, closed, ran)
    _add_integrity_cases(suite, d, closed, ran)
    if closed and not suite.red:
        # the gate closed for a reason no testcase above shows: keep the suite red
        el = suite.case("plan gate", f"{proto['name']}.gate")
        kind = Verdict.NOT_EVALUATED if d["verdict"] == Verdict.NOT_EVALUATED else Verdict.FAIL
        suite.fail(el, kind.value, gate_text(d))
    ET.SubElement(suite.element, "system-out").text = "\n".join(_suite_lines(d))
    for k, v in suite.counts.items():
        suite.element.set(k, str(v))
    suite.element.set("time", f"{seconds:.3f}")
    suite.element.set("timestamp", stamp)
    return suite.element


def _add_properties(suite: ET.Element, d: dict[str, Any]) -> None:
    """The suite's ``<properties>``: protocol, plan, prescriptions, verdict, tool."""
    proto = d["protocol"]
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


def _add_constraint_cases(suite: _Suite, d: dict[str, Any], closed: bool) -> None:
    """One testcase per entry of the JSON ``constraints`` list."""
    proto = d["protocol"]
    strict = d["gate"]["acceptable_fails_gate"]
    for c in d["constraints"]:
        el = suite.case(_testcase_name(c), f"{proto['name']}.{c['structure']}")
        verdict = c["verdict"]
        message = f"{verdict}: {c['reason']}" if c["reason"] else verdict
        kind = _gating(c, strict) if closed else None
        out = _value_line(c)
        if kind is not None:
            suite.fail(el, kind, message)
        elif verdict in (Verdict.REPORT, Verdict.NOT_APPLICABLE):
            suite.skip(el, message)
        elif verdict in _UNMET:
            out += f"\n{verdict} ({c['priority']}): does not close the gate"
        ET.SubElement(el, "system-out").text = out


def _add_missing_structure_cases(suite: _Suite, d: dict[str, Any], closed: bool,
                                 ran: list[str]) -> None:
    """A testcase per missing required structure, unless the structure-missing check ran."""
    proto = d["protocol"]
    missing = [] if "structure-missing" in ran else d["gate"]["unresolved_required_structures"]
    for name in missing:
        s = next(s for s in d["structures"] if s["structure"] == name)
        el = suite.case(f"{name} required structure", f"{proto['name']}.{name}")
        message = f"NOT_EVALUATED: required structure {name}: {s['reason']}"
        if closed:
            suite.fail(el, Verdict.NOT_EVALUATED.value, message)
        else:
            ET.SubElement(el, "system-out").text = message


def _add_integrity_cases(suite: _Suite, d: dict[str, Any], closed: bool,
                         ran: list[str]) -> None:
    """A testcase per integrity check that ran; failed when one of its findings closed the gate."""
    proto = d["protocol"]
    closers = closing_findings(d) if closed else []
    by_check: dict[str, list[dict[str, Any]]] = {}
    for f in integrity_findings(d):
        by_check.setdefault(str(f.get("check")), []).append(f)
    for check in ran:
        el = suite.case(f"integrity {check}", f"{proto['name']}.integrity")
        found = by_check.get(check, [])
        closing = [f for f in found if f in closers]
        if closing:
            suite.fail(el, "INTEGRITY", "; ".join(finding_text(f) for f in closing))
        spec = CHECKS.get(check)
        lines = [f"compares: {spec.compares}" if spec else f"check {check}"]
        lines += [f"{f.get('severity')}: {finding_text(f)}" for f in found]
        if not found:
            lines.append("no problem found")
        ET.SubElement(el, "system-out").text = "\n".join(lines)


def _suite_lines(d: dict[str, Any]) -> list[str]:
    """The suite's ``system-out``: verdict line, overrides, findings, ROI notes, warnings."""
    lines = [gate_text(d)]
    if overrides_text(d):
        lines.append(f"overrides: {overrides_text(d)}")
    if d.get("conditions"):
        lines.append(f"conditions asserted: {', '.join(d['conditions'])}")
    lines += [f"integrity {f.get('severity')}: {finding_text(f)}" for f in integrity_findings(d)]
    lines += [f"{s['structure']} ({s['roi']}): {n}" for s in d["structures"]
              for n in structure_notes(s)]
    lines += d["warnings"]
    return lines


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


def _gating(c: dict[str, Any], strict: bool) -> str | None:
    """How a constraint closes the gate: ``"FAIL"``, ``"NOT_EVALUATED"``, ``"ACCEPTABLE"`` or None.

    A hard constraint that failed, any constraint (hard or objective) that
    could not be evaluated, and a value beyond an unacceptable limit (even
    of an objective) close it; with ``acceptable_fails_gate`` an ACCEPTABLE
    hard limit or an unmet objective does too. Only called for a closed gate.
    """
    verdict: str = c["verdict"]
    if c.get("unacceptable"):
        return Verdict.FAIL.value
    if c["priority"] == Priority.HARD and verdict == Verdict.FAIL:
        return verdict
    if c["priority"] in _JUDGED_PRIORITIES and verdict == Verdict.NOT_EVALUATED:
        return verdict
    if strict and c["priority"] in _JUDGED_PRIORITIES and verdict in _UNMET:
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
