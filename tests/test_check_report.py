"""Check reports: formatting, JUnit mapping, DVH plot limits, HTML in a real browser.

Plans are built from hand-made DVHs (1 cc per dose sample), so every value
below is worked out by hand.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from dvheval.check import CheckError, check_plan
from dvheval.engine.dvh import DVH
from dvheval.engine.metrics import bed, eqd2
from dvheval.engine.results import DoseInfo, PlanDVHs, PlanInfo, Prescription, StructureResult
from dvheval.integrity import CHECKS
from dvheval.protocol import load_protocol
from dvheval.reports import (
    EXIT_CODES,
    FORMATS,
    fmt_limit,
    fmt_margin,
    fmt_value,
    gate_text,
    limit_marker,
    parse_rx,
    render,
    to_html,
    to_junit,
    to_markdown,
    to_text,
)
from dvheval.reports.plot import _physical

ROOT = Path(__file__).resolve().parents[1]

SOURCE = """\
format_version: 1
name: {name}
title: Report test protocol
version: "1"
date: "2026-01-01"
sources:
  ref: {{short: Ref, reference: A published reference with volume and pages.}}
fractions: 10
prescriptions:
  PTV: {{dose_gy: 30}}
"""

CORD = SOURCE.format(name="cord") + """\
structures:
  - name: SpinalCord
    aliases: [Myelon]
    constraints:
      - id: cord-max
        check: Dmax <= 34 Gy
        acceptable: 35 Gy
        source: ref
    report: [D2%]
"""

MARKS = SOURCE.format(name="marks") + """\
structures:
  - name: PTV
    type: target
    constraints:
      - {id: d98, check: D98% >= 90%, priority: objective, source: ref}
      - {id: d95rel, check: "D95%[%] >= 95%", priority: objective, source: ref}
      - {id: v95, check: "V95%[%] >= 95", priority: objective, source: ref}
  - name: Organ
    type: oar
    alpha_beta: 2
    constraints:
      - {id: eqd2max, check: "Dmax[EQD2] <= 60 Gy", source: ref}
      - {id: bedmax, check: "Dmax[BED] <= 100 Gy", source: ref}
      - {id: v20pct, check: "V20Gy[%] <= 32", source: ref}
      - {id: v20cc, check: "V20Gy <= 5 cc", source: ref}
      - {id: d05cc, check: "D0.5cc <= 30 Gy", source: ref}
      - {id: mean, check: "Mean <= 20 Gy", source: ref}
      - {id: geud, check: "gEUD(a=1) <= 25 Gy", source: ref}
      - {id: dmin, check: "Dmin >= 1 Gy", priority: objective, source: ref}
"""


def roi(name, doses, number=1):
    """A fully covered structure whose 1 cc voxels get ``doses`` (Gy)."""
    doses = np.atleast_1d(np.asarray(doses, dtype=float))
    volumes = np.ones_like(doses)
    dvh = DVH.from_samples(doses, volumes, float(volumes.sum()))
    return StructureResult(name, number, "ORGAN", "ok", float(volumes.sum()), 1.0, dvh=dvh)


def make_plan(*structures):
    dose = DoseInfo(
        files=["RD.dcm"], units="GY", summation="PLAN", summation_types=["PLAN"],
        frame_of_reference_uid="1.2.3", grid_shape=(10, 10, 10),
        grid_spacing_mm=(3.0, 2.5, 2.5), grid_origin_mm=(0.0, 0.0, 0.0),
        sha256={"RD.dcm": "a" * 64},
    )
    plan = PlanInfo("RP.dcm", "Plan 1", "1.2.3.4", [Prescription("PTV", 30.0, 10)], 10)
    return PlanDVHs("PAT1", "Test^Patient", dose, "RS.dcm", "RS", "1.2.3", plan,
                    list(structures))


def protocol(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_protocol(path)


def by_id(result, cid):
    return next(r for r in result.results if r.constraint.id == cid)


# ----------------------------------------------------------------- formatting
def test_number_formatting():
    assert fmt_value(31.0627, "Gy") == "31.06 Gy"
    assert fmt_value(0.4521, "cc") == "0.452 cc"
    assert fmt_value(None, "Gy") == "-"
    assert fmt_margin(2.9373, "Gy") == "+2.94 Gy"
    assert fmt_margin(-0.38, "Gy") == "-0.38 Gy"


def test_relative_limit_shows_the_resolved_dose_and_its_origin():
    c = {"operator": ">=", "limit": 27.0, "limit_unit": "Gy", "limit_text": "90% of PTV30",
         "prescription": "PTV30", "prescription_gy": 30.0, "acceptable_limit": None}
    assert fmt_limit(c) == ">= 27 Gy (90% of PTV30 30 Gy)"
    c.update(limit=None, prescription_gy=None)  # no dose known: as written
    assert fmt_limit(c) == ">= 90% of PTV30"
    c = {"operator": "<=", "limit": 34.0, "limit_unit": "Gy", "limit_text": "34 Gy",
         "acceptable_limit": 35.0}
    assert fmt_limit(c) == "<= 34 Gy, acceptable 35 Gy"


def test_exit_code_table_is_complete():
    assert sorted(EXIT_CODES) == [0, 1, 2]
    assert FORMATS == ("text", "json", "junit", "html", "markdown", "pdf")


# ------------------------------------------------------------------------ rx
def test_parse_rx(tmp_path):
    sib = load_protocol("bone-sib-30-40-10fx")
    assert parse_rx(["PTV30=32", "PTV40=42"], sib) == {"PTV30": 32.0, "PTV40": 42.0}
    assert parse_rx(["PTV_3000 = 32 Gy"], sib) == {"PTV30": 32.0}  # alias, unit
    assert parse_rx([], sib) == {}
    single = protocol(tmp_path, CORD)
    assert parse_rx(["27"], single) == {"PTV": 27.0}
    for bad, words in (("32", "has 2 prescription levels"),
                       ("GTV=3", "not a prescription level"),
                       ("PTV30=x", "not a dose in Gy"),
                       ("PTV30=0", "positive")):
        with pytest.raises(CheckError, match=words):
            parse_rx([bad], sib)
    with pytest.raises(CheckError, match="given twice"):
        parse_rx(["PTV30=32", "PTV_3000=33"], sib)


# -------------------------------------------------------------------- verdicts
N_CHECKS = len(CHECKS)


@pytest.fixture
def cord(tmp_path):
    return protocol(tmp_path, CORD)


def test_acceptable_is_a_pass_in_junit_unless_the_gate_is_strict(cord):
    plan = make_plan(roi("Myelon", [34.5] * 10))  # Dmax 34.5: above 34, within 35
    res = check_plan(plan, cord)
    assert res.verdict.value == "ACCEPTABLE" and res.exit_code == 0
    suite = ET.fromstring(to_junit(res)).find("testsuite")
    # two constraint testcases and one per integrity check, none failed
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == (str(2 + N_CHECKS), "0", "0", "1")
    integrity = [c.get("name") for c in suite.findall("testcase")
                 if c.get("name").startswith("integrity ")]
    assert integrity == [f"integrity {cid}" for cid in CHECKS]
    strict = check_plan(plan, cord, acceptable_fails_gate=True)
    assert strict.exit_code == 1
    suite = ET.fromstring(to_junit(strict)).find("testsuite")
    failure = suite.find("testcase/failure")
    assert suite.get("failures") == "1" and failure.get("type") == "ACCEPTABLE"
    assert gate_text(strict.to_dict()).endswith("exit 1 (gate closed, --acceptable-fails)")


def test_fail_in_every_format(cord):
    res = check_plan(make_plan(roi("Myelon", [36.0] * 10)), cord)
    d = res.to_dict()
    line = "FAIL: 1 hard constraint(s) failed: SpinalCord Dmax; exit 1 (gate closed)"
    assert gate_text(d) == line
    assert to_text(res).strip().splitlines()[-1] == line
    suite = ET.fromstring(to_junit(res)).find("testsuite")
    case = suite.find("testcase")
    assert case.get("name") == "SpinalCord Dmax <= 34 Gy"
    assert case.get("classname") == "cord.SpinalCord"
    failure = case.find("failure")
    assert failure.get("type") == "FAIL" and "36 Gy violates <= 34" in failure.get("message")
    assert "value 36.00 Gy" in case.find("system-out").text
    assert "margin -2.00 Gy" in case.find("system-out").text
    md = to_markdown(res)
    attention = md.index("#### Failing or not evaluated")
    assert md.index("| **FAIL** | SpinalCord | Myelon | Dmax |", attention) < md.index(
        "#### All constraints")
    page = to_html(res)
    assert '<div class="banner FAIL">' in page and '<tr class="FAIL">' in page


def test_missing_required_structure_is_red_in_junit(cord):
    res = check_plan(make_plan(roi("BODY", [1.0] * 5)), cord)
    d = res.to_dict()
    assert d["verdict"] == "NOT_EVALUATED" and res.exit_code == 1
    suite = ET.fromstring(to_junit(res)).find("testsuite")
    # the Dmax limit, the D2% report, and one testcase per integrity check
    # (only structure-missing fails)
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures"),
            suite.get("skipped")) == (str(2 + N_CHECKS), "1", "1", "1")
    names = [c.get("name") for c in suite.findall("testcase") if c.find("error") is not None]
    assert names == ["SpinalCord Dmax <= 34 Gy"]
    failure = suite.find("testcase[@name='integrity structure-missing']/failure")
    assert failure.get("type") == "INTEGRITY" and "SpinalCord" in failure.get("message")
    assert "required structure(s) missing or ambiguous: SpinalCord" in gate_text(d)
    md = to_markdown(res)
    assert "| **NOT_EVALUATED** | SpinalCord | - | Dmax |" in md
    assert "Required structure(s) missing or ambiguous: SpinalCord." in md


def test_several_plans_make_several_suites(cord):
    a = check_plan(make_plan(roi("Myelon", [30.0] * 10)), cord)
    b = check_plan(make_plan(roi("Myelon", [36.0] * 10)), cord)
    root = ET.fromstring(to_junit([a, b], times=[1.5, 2.25]))
    assert len(root.findall("testsuite")) == 2
    assert (root.get("tests"), root.get("failures"), root.get("time")) == (
        str(2 * (2 + N_CHECKS)), "1", "3.750")


def test_html_escapes_plan_text(cord):
    plan = make_plan(roi("Myelon", [30.0] * 10), roi("<b>x</b> & y", [1.0], number=2))
    page = to_html(check_plan(plan, cord), plot=False)
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page and "<b>x</b>" not in page


def test_render_dispatch(cord):
    res = check_plan(make_plan(roi("Myelon", [30.0] * 10)), cord)
    assert render(res, "json").startswith("{\n  \"tool\"")
    assert render(res, "junit").startswith('<?xml version="1.0" encoding="UTF-8"?>')
    with pytest.raises(ValueError, match="unknown format"):
        render(res, "docx")


# ----------------------------------------------------------------- DVH limits
def test_physical_dose_of_eqd2_and_bed_limits():
    # CLINICAL.md: EQD2 60 Gy at a/b 2 in 10 fractions is a physical 40.0 Gy
    assert _physical(60.0, "EQD2", 10, 2.0) == pytest.approx(40.0)
    # 34 Gy in 10 fractions at a/b 0.87 is 50.6 Gy EQD2; back again
    assert _physical(float(eqd2(34.0, 10, 0.87)), "EQD2", 10, 0.87) == pytest.approx(34.0)
    assert _physical(float(bed(30.0, 5, 3.0)), "BED", 5, 3.0) == pytest.approx(30.0)


def test_limit_markers_lie_where_the_limits_are(tmp_path):
    p = protocol(tmp_path, MARKS)
    organ = roi("Organ", np.linspace(1.0, 45.0, 10))  # 10 cc
    target = roi("PTV", np.full(10, 30.0), number=2)
    res = check_plan(make_plan(target, organ), p)
    n = 10  # fractions

    def mark(cid):
        return limit_marker(by_id(res, cid), 10.0, n)

    # D98% >= 90 % of 30 Gy: dose 27 Gy at 98 % of the volume
    assert mark("d98") == ("dose", pytest.approx(27.0), 98.0)
    # D95%[%] >= 95 %Rx: 28.5 Gy at 95 %
    assert mark("d95rel") == ("dose", pytest.approx(28.5), 95.0)
    # V95%[%] >= 95: the volume limit 95 % at 95 % of 30 Gy = 28.5 Gy
    assert mark("v95") == ("volume", pytest.approx(28.5), 95.0)
    # Dmax[EQD2, a/b=2] <= 60 Gy: physical 40 Gy, a vertical tick
    kind, x, y = mark("eqd2max")
    assert (kind, x) == ("max", pytest.approx(40.0)) and math.isnan(y)
    # Dmax[BED, a/b=2] <= 100 Gy in 10 fx: D + D^2/20 = 100 -> D = 10 (-1 + sqrt(21))
    assert mark("bedmax")[1] == pytest.approx(10.0 * (math.sqrt(21.0) - 1.0))
    # V20Gy[%] <= 32: 32 % at 20 Gy; V20Gy <= 5 cc of 10 cc: 50 % at 20 Gy
    assert mark("v20pct") == ("volume", 20.0, 32.0)
    assert mark("v20cc") == ("volume", 20.0, pytest.approx(50.0))
    # D0.5cc <= 30 Gy on 10 cc: 30 Gy at 5 %
    assert mark("d05cc") == ("dose", 30.0, pytest.approx(5.0))
    assert mark("mean")[:2] == ("mean", 20.0)
    assert mark("dmin")[:2] == ("min", 1.0)
    assert mark("geud") is None  # no place on a DVH


def test_dvh_plot_is_inline_svg(tmp_path):
    pytest.importorskip("matplotlib")
    from dvheval.reports import dvh_svg

    p = protocol(tmp_path, MARKS)
    res = check_plan(make_plan(roi("PTV", np.full(10, 30.0), number=2),
                               roi("Organ", np.linspace(1.0, 45.0, 10))), p)
    svg = dvh_svg(res)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "xmlns" not in svg and "<metadata" not in svg and "http" not in svg
    assert 'viewBox="' in svg
    assert "PTV" in svg and "Organ" in svg  # legend as text
    assert "Organ D0.5cc \u2264 30 Gy" in svg  # a limit label


# ---------------------------------------------------------- real browser test
def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_browser() is None,
                    reason="no headless Chromium/Chrome on PATH (Debian: apt-get install "
                           "chromium); the HTML report is not rendered in a browser")
def test_html_report_renders_in_headless_chromium(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from dvheval.engine.compute import compute_dvhs

    plan = compute_dvhs([ROOT / "sample_dicom" / "sample_plan"])
    res = check_plan(plan, load_protocol("bone-sib-30-40-10fx"))
    page = tmp_path / "report.html"
    page.write_text(to_html(res), encoding="utf-8")
    png = tmp_path / "report.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
           "--window-size=1200,1600", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    assert png.is_file(), "chromium wrote no screenshot"
    assert png.stat().st_size > 20_000
    img = imread(png)
    assert img.shape[:2] == (1600, 1200)
    rgb = img[..., :3]
    not_white = np.any(rgb < 0.9, axis=-1)
    assert 0.02 < not_white.mean() < 0.6  # text, table, plot on a white page
    # the green PASS banner is drawn (border colour #1a7f37)
    green = (np.abs(rgb[..., 0] - 0x1A / 255) < 0.08) & (np.abs(rgb[..., 1] - 0x7F / 255) < 0.08)
    assert green.sum() > 500
    assert re.search(r"<svg\b", page.read_text(encoding="utf-8"))
