"""The HTML report printed on A4, and the DVH plot it carries.

The printed test renders the page to PDF with headless Chromium and reads it
back with poppler's pdftotext: every constraint row's Priority and Note must
be on the page in full, and no text may reach into the page's right margin.
The plans are the shipped sample plan (with PTV30 at 25 Gy, so that it
fails) and a hand-made plan with long, unbreakable names and long reasons.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dvheval.check import CheckResult, check_plan
from dvheval.protocol import load_protocol
from dvheval.reports import to_html
from dvheval.reports.html import _CONSTRAINT_COLUMNS, report_css
from dvheval.reports.json import report_dict
from dvheval.reports.summary import constraint_note, constraint_rows

from .test_report_safety import make_plan, roi

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "sample_plan"
A4_MM = (210.0, 297.0)
MARGIN_MM = 12.0
PT_PER_MM = 72.0 / 25.4

LONG_PTV = "PTV_Boost_Evaluation_HighRisk_4000cGy_Version2_Final"
LONG_CORD = "SpinalCord_PRV_5mm_Planning_Risk_Volume_Expanded"

STRESS = f"""\
format_version: 1
name: print-stress
title: Print layout protocol with long names
version: "1"
date: "2026-01-01"
sources:
  ref: {{short: Ref, reference: A published reference with volume and pages.}}
fractions: 10
prescriptions:
  PTV: {{dose_gy: 30}}
  BOOST: {{}}
structures:
  - name: {LONG_PTV}
    type: target
    prescription: PTV
    constraints:
      - {{check: D98% >= 95%, priority: objective, unacceptable: "< 80%", source: ref}}
      - {{check: D2% <= 107%, priority: objective, unacceptable: "> 115%", source: ref}}
  - name: Boost
    type: target
    prescription: BOOST
    constraints:
      - {{check: D95% >= 100%, source: ref}}
  - name: {LONG_CORD}
    alpha_beta: 0.87
    constraints:
      - {{check: "Dmax[EQD2] <= 50 Gy", acceptable: 52 Gy, source: ref}}
      - {{check: "V20Gy[%] <= 10", priority: objective, source: ref}}
  - name: BrachialPlexus_Left_Complete_Nerve_Roots_C5_T1
    required: false
    constraints:
      - {{check: D0.03cc <= 32 Gy, source: ref}}
  - name: Esophagus
    constraints:
      - {{check: Dmax <= 32 Gy, source: ref}}
"""


@pytest.fixture(scope="module")
def stress(tmp_path_factory: pytest.TempPathFactory) -> CheckResult:
    """Long unbreakable names, every verdict, long reasons (the gate is closed)."""
    path = tmp_path_factory.mktemp("print") / "print-stress.yaml"
    path.write_text(STRESS, encoding="utf-8")
    plan = make_plan(
        roi(LONG_PTV, np.full(40, 30.0), number=1),
        roi("Boost", np.full(5, 36.0), number=2),
        roi(LONG_CORD, np.linspace(5.0, 34.15, 12), number=3),
        roi("Esophagus", np.linspace(2.0, 34.0, 10), number=4),
    )
    return check_plan(plan, load_protocol(path))


@pytest.fixture(scope="module")
def failing_sample() -> CheckResult:
    from dvheval.engine.compute import compute_dvhs

    plan = compute_dvhs([SAMPLE])
    res = check_plan(plan, load_protocol("bone-sib-30-40-10fx"), rx_overrides={"PTV30": 25.0})
    assert res.verdict == "FAIL"
    return res


# ------------------------------------------------------------ the style sheet
def _constraint_widths(css: str) -> dict[str, float]:
    """``col`` class -> width (%) of the constraint table, from report.css."""
    widths: dict[str, float] = {}
    for selectors, pct in re.findall(r"([^{}]+)\{\s*width:\s*([\d.]+)%;\s*\}", css):
        for name in re.findall(r"table\.constraints col\.(\w+)", selectors):
            widths[name] = float(pct)
    return widths


def test_constraint_columns_have_fixed_widths_that_fill_the_page():
    css = report_css()
    widths = _constraint_widths(css)
    assert set(widths) == {c.lower() for c in _CONSTRAINT_COLUMNS}
    assert sum(widths.values()) == pytest.approx(100.0)
    assert re.search(r"table\.constraints\s*\{\s*table-layout:\s*fixed", css)
    # the note gets the most room; no numeric column is wider than the limit's
    assert widths["note"] == max(widths.values())
    assert max(widths["value"], widths["margin"], widths["priority"]) < widths["limit"]


def test_print_rules_for_a4():
    css = report_css()
    assert re.search(r"@page\s*\{\s*size:\s*A4;\s*margin:\s*12mm;\s*\}", css)
    assert "@media print" in css
    assert re.search(r"td\s*\{[^}]*overflow-wrap:\s*anywhere", css)


class _Table(HTMLParser):
    """The col classes, header cells and cells per body row of the first table read."""

    def __init__(self) -> None:
        super().__init__()
        self.cols: list[str | None] = []
        self.heads: list[str] = []
        self.rows: list[int] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "col":
            self.cols.append(dict(attrs).get("class"))
        elif tag == "tr":
            self.rows.append(0)
        elif tag in ("th", "td"):
            self._in = tag
            self.rows[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "th":
            self.heads.append(data)


def test_constraint_table_has_one_col_per_header(stress):
    page = to_html(stress, plot=False)
    table = page[page.index('<table class="constraints">'):]
    parsed = _Table()
    parsed.feed(table[:table.index("</table>")])
    assert parsed.heads == list(_CONSTRAINT_COLUMNS)
    assert parsed.cols == [h.lower() for h in _CONSTRAINT_COLUMNS]
    body = parsed.rows[1:]
    assert len(body) == len(constraint_rows(report_dict(stress)))
    assert set(body) == {len(_CONSTRAINT_COLUMNS)}


# ------------------------------------------------------- printed by Chromium
def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


needs_printing = pytest.mark.skipif(
    _browser() is None or shutil.which("pdftotext") is None,
    reason="needs headless Chromium/Chrome and poppler's pdftotext on PATH (Debian: apt-get "
           "install chromium poppler-utils); the printed report is not checked")


def _print_pdf(result: CheckResult, out: Path) -> Path:
    page = out / "report.html"
    page.write_text(to_html(result), encoding="utf-8")
    pdf = out / "report.pdf"
    profile = out / "profile"
    profile.mkdir()
    browser = _browser()
    assert browser is not None
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--no-pdf-header-footer", "--print-to-pdf-no-header",
           f"--print-to-pdf={pdf}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    assert pdf.is_file(), f"chromium wrote no PDF: {proc.stderr.decode(errors='replace')}"
    return pdf


def _words(pdf: Path) -> list[list[dict[str, Any]]]:
    """Per page, the words with their boxes (points), as pdftotext -bbox gives them."""
    xhtml = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True,
                           check=True).stdout.decode("utf-8")
    xhtml = re.sub(r"<!DOCTYPE[^>]*>", "", xhtml).replace(' xmlns="http://www.w3.org/1999/xhtml"',
                                                         "")
    pages = []
    for page in ET.fromstring(xhtml).iter("page"):
        width, height = float(page.get("width", 0)), float(page.get("height", 0))
        pages.append([{"text": w.text or "", "page": (width, height),
                       **{k: float(w.get(k, 0)) for k in ("xMin", "xMax", "yMin", "yMax")}}
                      for w in page.iter("word")])
    return pages


def _column_text(pdf: Path, page_no: int, x0: float, x1: float) -> str:
    """The text of one page between x0 and x1 (points), whitespace removed."""
    w, h = (round(v * PT_PER_MM) for v in A4_MM)
    out = subprocess.run(["pdftotext", "-layout", "-r", "72", "-f", str(page_no), "-l",
                          str(page_no), "-x", str(int(x0)), "-y", "0", "-W", str(int(x1 - x0)),
                          "-H", str(h), str(pdf), "-"], capture_output=True, check=True)
    assert w > x1 - x0
    return re.sub(r"\s+", "", out.stdout.decode("utf-8"))


def _check_printed(result: CheckResult, out: Path) -> None:
    """Every row's Priority and Note in full, and nothing in the right margin."""
    pdf = _print_pdf(result, out)
    pages = _words(pdf)
    assert pages, "the PDF has no pages"
    width, height = pages[0][0]["page"] if pages[0] else (0.0, 0.0)
    assert (width, height) == pytest.approx(tuple(v * PT_PER_MM for v in A4_MM), abs=1.5)
    right = width - MARGIN_MM * PT_PER_MM + 1.0
    beyond = [w["text"] for p in pages for w in p if w["xMax"] > right or w["xMin"] < 0]
    assert beyond == [], f"text in the right margin or off the page: {beyond}"

    heads = next((p, i) for i, p in enumerate(pages)
                 if any(w["text"] == "Priority" for w in p))
    first, first_no = heads
    prio_x = next(w["xMin"] for w in first if w["text"] == "Priority")
    note_x = next(w["xMin"] for w in first if w["text"] == "Note" and w["xMin"] > prio_x)
    rows = constraint_rows(report_dict(result))
    notes = "".join(_column_text(pdf, n + 1, note_x - 2, right)
                    for n in range(first_no, len(pages)))
    at = 0
    for row in rows:
        note = re.sub(r"\s+", "", constraint_note(row))
        found = notes.find(note, at)
        assert found >= 0, f"note of {row['id']!r} not printed in full: {constraint_note(row)!r}"
        at = found + len(note)
    printed = [w["text"] for p in pages[first_no:] for w in p
               if prio_x - 2 <= w["xMin"] and w["xMax"] <= note_x - 1]
    priorities = [w for w in printed if w in ("hard", "objective", "report")]
    assert priorities[:len(rows)] == [str(r["priority"]) for r in rows]


@needs_printing
def test_long_names_and_notes_print_in_full_on_a4(stress, tmp_path):
    pytest.importorskip("matplotlib")
    verdicts = {str(r.verdict) for r in stress.results}
    assert {"PASS", "ACCEPTABLE", "FAIL", "NOT_EVALUATED", "NOT_APPLICABLE"} <= verdicts
    _check_printed(stress, tmp_path)


@needs_printing
def test_failing_sample_plan_prints_in_full_on_a4(failing_sample, tmp_path):
    pytest.importorskip("matplotlib")
    _check_printed(failing_sample, tmp_path)


# ------------------------------------------------------------- the DVH plot
PLOT = """\
format_version: 1
name: plot
title: Plot protocol
version: "1"
date: "2026-01-01"
sources:
  ref: {short: Ref, reference: A published reference with volume and pages.}
fractions: 10
prescriptions:
  PTV: {dose_gy: 30}
structures:
  - name: PTV
    type: target
    prescription: PTV
    constraints:
      - {check: D98% >= 90%, priority: objective, source: ref}
      - {check: "V95%[%] >= 95", priority: objective, source: ref}
  - name: Organ
    constraints:
      - {check: Dmax <= 40 Gy, source: ref}
      - {check: Mean <= 20 Gy, source: ref}
      - {check: gEUD(a=1) <= 25 Gy, source: ref}
      - {check: Dmin >= 1 Gy, priority: objective, source: ref}
      - {check: V20Gy <= 5 cc, source: ref}
  - name: Lens
    required: false
    constraints:
      - {check: Dmax <= 5 Gy, source: ref}
  - name: Kidney_L
  - name: Kidney_R
"""

#: Hues (degrees) of the verdict colours a curve must not look like: FAIL red,
#: ACCEPTABLE amber, PASS green.
VERDICT_HUES = {"FAIL": 356.0, "ACCEPTABLE": 40.0, "PASS": 136.0}


def _hue_saturation(colour: str) -> tuple[float, float]:
    import colorsys

    r, g, b = (int(colour[i:i + 2], 16) / 255.0 for i in (1, 3, 5))
    h, _l, s = colorsys.rgb_to_hls(r, g, b)
    return 360.0 * h, s


@pytest.fixture(scope="module")
def plotted(tmp_path_factory: pytest.TempPathFactory) -> tuple[CheckResult, Any, list[Any]]:
    pytest.importorskip("matplotlib")
    from dvheval.reports.plot import _style, dvh_figure

    path = tmp_path_factory.mktemp("plot") / "plot.yaml"
    path.write_text(PLOT, encoding="utf-8")
    kidney = np.linspace(2.0, 6.0, 20)
    plan = make_plan(roi("PTV", np.full(10, 30.0), number=1),
                     roi("Organ", np.linspace(1.0, 45.0, 10), number=2),  # 10 cc
                     roi("Kidney_L", kidney, number=3), roi("Kidney_R", kidney, number=4))
    res = check_plan(plan, load_protocol(path))
    with _style():
        fig, marks = dvh_figure(res)
    return res, fig, marks


def test_every_drawn_limit_has_a_numbered_legend_entry(plotted):
    _res, fig, _marks = plotted
    # PTV D98% >= 90 % of 30 Gy and V95%[%] >= 95 pass (uniform 30 Gy); the organ's
    # 1..45 Gy in ten 1 cc voxels: Dmax 45, mean 23, six voxels of 20 Gy or more
    expected = ["1: PTV D98% \u2265 27 Gy (PASS)", "2: PTV V95%[%] \u2265 95 % (PASS)",
                "3: Organ Dmax \u2264 40 Gy (FAIL)", "4: Organ Mean \u2264 20 Gy (FAIL)",
                "5: Organ Dmin \u2265 1 Gy (PASS)", "6: Organ V20Gy \u2264 5 cc (FAIL)"]
    (table,) = fig.legends
    assert [t.get_text() for t in table.get_texts()] == expected  # no gEUD, no absent Lens
    ax = fig.axes[0]
    numbers = {n for t in ax.texts for n in t.get_text().split(",")}
    assert numbers == {str(n) for n in range(1, len(expected) + 1)}


def test_limit_markers_sit_at_their_points_unclipped(plotted):
    _res, fig, marks = plotted
    ax = fig.axes[0]
    points = [line for line in ax.get_lines() if line.get_marker() not in (None, "None", "")]
    assert len(points) == len(marks) == 6
    assert all(not line.get_clip_on() for line in points)
    at = sorted(tuple(np.round(line.get_xydata()[0], 6)) for line in points)
    # D98% (27 Gy, 98 %), V95%[%] (28.5 Gy, 95 %), Dmax (40 Gy, 0 %), Dmin (1 Gy, 100 %),
    # V20Gy <= 5 cc of 10 cc (20 Gy, 50 %); the mean is on the organ's curve at 20 Gy
    fixed = [(1.0, 100.0), (20.0, 50.0), (27.0, 98.0), (28.5, 95.0), (40.0, 0.0)]
    mean = [p for p in at if p not in fixed]
    assert sorted(set(at) - set(mean)) == fixed
    assert len(mean) == 1 and mean[0][0] == 20.0 and 0.0 < mean[0][1] < 100.0


def test_curve_colours_are_never_verdict_colours(plotted):
    from dvheval.reports.plot import CURVE_COLOURS

    _res, fig, _marks = plotted
    curves = [line for line in fig.axes[0].get_lines() if line.get_marker() in ("None", None)]
    assert len(curves) == 4
    for colour in {*CURVE_COLOURS, *(line.get_color() for line in curves)}:
        assert colour.lower() not in {"#1a7f37", "#9a6700", "#cf222e"}
        hue, saturation = _hue_saturation(colour)
        if saturation < 0.15:
            continue  # grey or black
        for verdict, verdict_hue in VERDICT_HUES.items():
            distance = min(abs(hue - verdict_hue), 360.0 - abs(hue - verdict_hue))
            assert distance >= 40.0, f"{colour} looks like {verdict}"


def test_identical_curves_stay_distinguishable(plotted):
    _res, fig, _marks = plotted
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    left, right = lines["Kidney_L"], lines["Kidney_R"]
    assert np.array_equal(left.get_xydata(), right.get_xydata())  # the same DVH
    assert left.get_color() != right.get_color()
    assert left.get_linestyle() != right.get_linestyle()
    top, below = sorted((left, right), key=lambda line: -line.get_zorder())
    # the curve on top is the narrower one: the wider one below shows on both sides
    assert top.get_linewidth() < below.get_linewidth()
