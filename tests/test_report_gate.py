"""Every report shows what gates the plan, and JUnit agrees with the exit code.

Plans are hand-made DVHs (1 cc per dose sample), so each verdict below is
known by hand: cord Dmax <= 34 Gy (acceptable 35 Gy, hard), PTV D98% >= 27 Gy
(objective, unacceptable below 24 Gy), and under the asserted condition
``lumbar`` the cord limit is replaced by Dmax <= 40 Gy.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from dvheval.check import check_plan
from dvheval.integrity import CHECKS, Finding, Severity
from dvheval.protocol import load_protocol
from dvheval.reports import gate_text, render, to_html, to_json, to_junit, to_markdown, to_text

from .test_report_safety import make_plan, roi

PROTOCOL = """\
format_version: 1
name: gate
title: Report gate protocol
version: "1"
date: "2026-01-01"
sources:
  ref: {short: Ref, reference: A published reference with volume and pages.}
fractions: 10
prescriptions:
  PTV: {dose_gy: 30}
conditions:
  lumbar: The target lies below the conus; the canal limit replaces the cord limit.
structures:
  - name: PTV
    type: target
    constraints:
      - {id: ptv-d98, check: D98% >= 27 Gy, priority: objective, unacceptable: "< 24 Gy",
         source: ref}
  - name: SpinalCord
    aliases: [Myelon]
    constraints:
      - {id: cord-max, check: Dmax <= 34 Gy, acceptable: 35 Gy, source: ref}
alternatives:
  - id: lumbar-canal
    description: Canal limit below the conus.
    when: {condition: lumbar}
    replaces: [cord-max]
    source: ref
    constraints:
      - {structure: SpinalCord, id: canal-max, check: Dmax <= 40 Gy, source: ref}
"""

#: PTV doses (Gy) giving D98% = 30, 25 (objective not met) and 20 (unacceptable).
PTV_OK, PTV_LOW, PTV_BAD = [30.0] * 50, [25.0] * 50, [20.0] * 50


@pytest.fixture
def proto(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return load_protocol(path)


def plan(cord_gy: float | None, ptv=PTV_OK, findings=()):
    structures = [roi("PTV", ptv)]
    if cord_gy is not None:
        structures.append(roi("Myelon", [cord_gy] * 10, number=2))
    return make_plan(*structures, findings=findings)


def junit_counts(result) -> tuple[int, int]:
    suite = ET.fromstring(to_junit(result)).find("testsuite")
    failures = len(suite.findall("testcase/failure"))
    errors = len(suite.findall("testcase/error"))
    assert (int(suite.get("failures")), int(suite.get("errors"))) == (failures, errors)
    return failures, errors


MISMATCH = Finding("patient-id-mismatch", Severity.CLOSE,
                   "RTSTRUCT patient PAT1, RTDOSE patient PAT2", "RD.dcm")
UNAPPROVED = Finding("plan-not-approved", Severity.WARN,
                     "RTPLAN Approval Status is UNAPPROVED", "RP.dcm")

CASES = {
    # name: (plan kwargs, check kwargs, verdict, exit code)
    "pass": (dict(cord_gy=30.0), {}, "PASS", 0),
    "acceptable hard": (dict(cord_gy=34.5), {}, "ACCEPTABLE", 0),
    "objective not met": (dict(cord_gy=30.0, ptv=PTV_LOW), {}, "ACCEPTABLE", 0),
    "acceptable, strict": (dict(cord_gy=34.5), dict(acceptable_fails_gate=True),
                           "ACCEPTABLE", 1),
    "objective not met, strict": (dict(cord_gy=30.0, ptv=PTV_LOW),
                                  dict(acceptable_fails_gate=True), "ACCEPTABLE", 1),
    "fail": (dict(cord_gy=36.0), {}, "FAIL", 1),
    "objective unacceptable": (dict(cord_gy=30.0, ptv=PTV_BAD), {}, "FAIL", 1),
    "missing cord": (dict(cord_gy=None), {}, "NOT_EVALUATED", 1),
    "integrity closes": (dict(cord_gy=30.0, findings=[MISMATCH]), {}, "NOT_EVALUATED", 1),
    "integrity warns": (dict(cord_gy=30.0, findings=[UNAPPROVED]), {}, "PASS", 0),
    "condition": (dict(cord_gy=38.0), dict(conditions=["lumbar"]), "PASS", 0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_junit_is_red_if_and_only_if_the_gate_is_closed(proto, name):
    plan_kw, check_kw, verdict, code = CASES[name]
    res = check_plan(plan(**plan_kw), proto, **check_kw)
    assert (res.verdict.value, res.exit_code) == (verdict, code)
    failures, errors = junit_counts(res)
    assert (failures + errors > 0) == (res.exit_code != 0)
    # the same exit code from every format's point of view
    assert json.loads(to_json(res))["exit_code"] == code
    assert to_text(res).rstrip().splitlines()[-1].startswith(verdict)


def test_objective_not_met_with_the_gate_open_is_recorded_not_failed(proto):
    res = check_plan(plan(30.0, PTV_LOW), proto)
    suite = ET.fromstring(to_junit(res)).find("testsuite")
    case = next(c for c in suite.findall("testcase") if c.get("name").startswith("PTV D98%"))
    assert case.find("failure") is None and case.find("error") is None
    assert "FAIL (objective): does not close the gate" in case.find("system-out").text


def test_unacceptable_objective_fails_in_junit(proto):
    res = check_plan(plan(30.0, PTV_BAD), proto)
    suite = ET.fromstring(to_junit(res)).find("testsuite")
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed == ["PTV D98% >= 27 Gy"]
    assert "beyond the unacceptable limit 24 Gy" in to_text(res)


def test_integrity_testcases_fail_only_when_they_close_the_gate(proto):
    res = check_plan(plan(30.0, findings=[MISMATCH, UNAPPROVED]), proto)
    assert res.exit_code == 1
    suite = ET.fromstring(to_junit(res)).find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")
             if c.get("classname") == "gate.integrity"}
    assert set(cases) == {f"integrity {cid}" for cid in CHECKS}
    failed = {n for n, c in cases.items() if c.find("failure") is not None}
    assert failed == {"integrity patient-id-mismatch"}
    assert cases["integrity patient-id-mismatch"].find("failure").get("type") == "INTEGRITY"
    assert cases["integrity plan-not-approved"].find("failure") is None
    assert "UNAPPROVED" in cases["integrity plan-not-approved"].find("system-out").text
    assert set(CHECKS) >= {"patient-id-mismatch", "plan-not-approved"}
    # the only red testcase is the integrity check: the constraints all passed
    red = [c.get("name") for c in suite.findall("testcase")
           if c.find("failure") is not None or c.find("error") is not None]
    assert red == ["integrity patient-id-mismatch"]


def test_a_gate_closed_for_no_shown_reason_still_makes_the_suite_red(proto):
    res = check_plan(plan(30.0), proto)
    res.verdict = type(res.verdict)("NOT_EVALUATED")  # closed, with nothing to show why
    assert res.exit_code == 1
    assert junit_counts(res) == (0, 1)
    names = [c.get("name") for c in ET.fromstring(to_junit(res)).iter("testcase")
             if c.find("error") is not None]
    assert names == ["plan gate"]


# ---------------------------------------------------------- shown everywhere
FORMATS = ("text", "json", "junit", "markdown", "html")


def _all_formats(res) -> dict[str, str]:
    out = {fmt: render(res, fmt) for fmt in FORMATS if fmt != "html"}
    out["html"] = to_html(res, plot=False)
    return out


def test_integrity_findings_in_every_format(proto):
    res = check_plan(plan(30.0, findings=[MISMATCH, UNAPPROVED]), proto)
    for fmt, text in _all_formats(res).items():
        for f in (MISMATCH, UNAPPROVED):
            assert f.check in text, fmt
            assert f.message in text, fmt
    text = to_text(res)
    # the closing finding comes before the constraints, marked
    assert text.index("CLOSES THE GATE integrity patient-id-mismatch") < text.index(
        "Constraints")
    assert "integrity warning plan-not-approved: RTPLAN Approval Status" in text
    assert gate_text(res.to_dict()).startswith(
        "NOT_EVALUATED: 1 integrity check(s) closed the gate: patient-id-mismatch; "
        "integrity warning(s): plan-not-approved; exit 1 (gate closed)")
    md = to_markdown(res)
    assert md.index("**CLOSES THE GATE** `patient-id-mismatch`") < md.index("#### Failing")
    page = to_html(res, plot=False)
    assert page.index("CLOSES THE GATE</span> integrity <code>patient-id-mismatch") < \
        page.index("<h2>Constraints</h2>")
    doc = json.loads(to_json(res))
    assert {(f["check"], f["severity"]) for f in doc["integrity"]} == {
        ("patient-id-mismatch", "close"), ("plan-not-approved", "warn")}


def test_asserted_condition_in_every_verdict_line(proto):
    res = check_plan(plan(38.0), proto, conditions=["lumbar"])
    assert res.exit_code == 0  # 38 Gy: above the cord limit, within the canal limit
    line = "PASS (condition asserted: lumbar): every hard constraint and objective is met"
    assert gate_text(res.to_dict()).startswith(line)
    assert to_text(res).rstrip().splitlines()[-1].startswith(line)
    out = _all_formats(res)
    assert "**Verdict: `PASS`** (condition asserted: lumbar):" in out["markdown"]
    assert "<b>Condition asserted:</b> lumbar" in out["html"]
    suite = ET.fromstring(out["junit"]).find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["conditions"] == "lumbar"
    assert suite.find("system-out").text.startswith(line)
    assert json.loads(out["json"])["conditions"] == ["lumbar"]


def test_overrides_and_where_each_dose_came_from_in_every_format(proto):
    res = check_plan(plan(30.0), proto, rx_overrides={"PTV": 32.0}, fractions=5)
    expected = "--rx PTV=32 Gy (protocol 30 Gy, RTPLAN 30 Gy); --fractions 5 (protocol 10, " \
               "RTPLAN 10)"
    out = _all_formats(res)
    assert expected in out["text"]
    assert expected in out["markdown"]
    assert expected in out["html"]
    props = {p.get("name"): p.get("value")
             for p in ET.fromstring(out["junit"]).find("testsuite").find("properties")}
    assert props["overrides"] == expected
    assert props["prescriptions"] == "PTV 32 Gy (override; protocol 30 Gy; RTPLAN 30 Gy)"
    doc = json.loads(out["json"])
    assert doc["fractions"]["source"] == "override" and doc["fractions"]["used"] == 5
    assert doc["prescriptions"][0]["source"] == "override"


def test_structure_defects_and_warnings_in_every_format(proto):
    cord = roi("Myelon", [30.0] * 10, number=2, warnings=["2 contours on one slice"],
               defects=["slice at z=12 mm has no contour"])
    res = check_plan(make_plan(roi("PTV", PTV_OK), cord), proto)
    for fmt, text in _all_formats(res).items():
        assert "slice at z=12 mm has no contour" in text, fmt
        assert "2 contours on one slice" in text, fmt
