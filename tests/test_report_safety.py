"""Names from the DICOM cannot forge or break a report, whatever the format.

A ROI name, patient name, plan label or file name may hold escape
sequences, line breaks, NUL, markup, HTML or a spreadsheet formula. Every
format must stay well formed (XML parses, JSON parses strictly, CSV cells are
guarded, Markdown has no raw HTML) and no text output may carry a raw
control character; the JSON keeps the true strings.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from dvheval.check import check_plan
from dvheval.cli import app
from dvheval.engine.dvh import DVH
from dvheval.engine.results import DoseInfo, PlanDVHs, PlanInfo, Prescription, StructureResult
from dvheval.integrity import Finding, Severity
from dvheval.protocol import ProtocolError, load_protocol
from dvheval.reports import render_text, to_html, to_json, to_junit, to_markdown, to_text
from dvheval.reports.dvh_table import render_table, to_csv
from dvheval.reports.dvh_table import to_json as dvh_json
from dvheval.sanitize import (
    dumps_json,
    error_lines,
    for_csv,
    for_html,
    for_markdown,
    json_safe,
    print_error,
    visible,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "sample_plan"

#: A line a hostile name tries to forge in a report whose gate is closed.
FORGED = "PASS: every hard constraint and objective is met; exit 0 (gate open)"
#: The same in a report whose gate is open.
FORGED_FAIL = "FAIL: 1 hard constraint(s) failed: SpinalCord Dmax; exit 1 (gate closed)"
CLEAR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
ANSI_NAME = f"Liver{CLEAR}"
CRLF_NAME = f"Duodenum\r\n{FORGED}"
NUL_NAME = "Bowel\x00Bag"
FORMULA = "=cmd|' /C calc'!A0"
SCRIPT = "<script>alert(1)</script>"
MARKUP = "Lung[bold]L[/] [/]"
PIPE = "Stomach | PASS | x"
HOSTILE = [ANSI_NAME, CRLF_NAME, NUL_NAME, FORMULA, SCRIPT, MARKUP, PIPE]
#: Characters no text output may carry raw (tab and newline are the report's own).
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")

PROTOCOL = """\
format_version: 1
name: cord
title: Report safety protocol
version: "1"
date: "2026-01-01"
sources:
  ref: {short: Ref, reference: A published reference with volume and pages.}
fractions: 10
prescriptions:
  PTV: {dose_gy: 30}
structures:
  - name: SpinalCord
    aliases: [Myelon]
    constraints:
      - {id: cord-max, check: Dmax <= 34 Gy, acceptable: 35 Gy, source: ref}
    report: [D2%]
"""


# ------------------------------------------------------------------ builders
def roi(name: str, doses, number: int = 1, **kw) -> StructureResult:
    """A fully covered structure whose 1 cc voxels get ``doses`` (Gy)."""
    doses = np.atleast_1d(np.asarray(doses, dtype=float))
    volumes = np.ones_like(doses)
    dvh = DVH.from_samples(doses, volumes, float(volumes.sum()))
    return StructureResult(name, number, "ORGAN", "ok", float(volumes.sum()), 1.0, dvh=dvh,
                           **kw)


def make_plan(*structures, patient=("PAT1", "Test^Patient"), label="Plan 1",
              files=("RD.dcm", "RS.dcm", "RP.dcm"), findings=()) -> PlanDVHs:
    dose_file, rs_file, rp_file = files
    dose = DoseInfo(
        files=[dose_file], units="GY", summation="PLAN", summation_types=["PLAN"],
        frame_of_reference_uid="1.2.3", grid_shape=(10, 10, 10),
        grid_spacing_mm=(3.0, 2.5, 2.5), grid_origin_mm=(0.0, 0.0, 0.0),
        sha256={dose_file: "a" * 64},
    )
    plan = PlanInfo(rp_file, label, "1.2.3.4", [Prescription("PTV", 30.0, 10)], 10)
    return PlanDVHs(patient[0], patient[1], dose, rs_file, label, "1.2.3", plan,
                    list(structures), findings=list(findings))


def cord_protocol(tmp_path: Path):
    path = tmp_path / "cord.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return load_protocol(path)


@pytest.fixture
def hostile(tmp_path):
    """A plan whose every DICOM string is hostile; the gate is closed.

    The cord (Dmax 36 Gy > 34) has a contour defect, so its limit is not
    evaluated: NOT_EVALUATED, exit 1.
    """
    extra = [roi(name, [1.0], number=i + 2) for i, name in enumerate(HOSTILE)]
    finding = Finding("patient-name-mismatch", Severity.WARN,
                      f"RTSTRUCT says {CRLF_NAME!s}, RTDOSE says {ANSI_NAME}", f"RS{CLEAR}.dcm")
    plan = make_plan(
        roi("Myelon", [36.0] * 10, warnings=[f"contour of {CRLF_NAME} {NUL_NAME}"],
            defects=[f"slice 3 dropped {ANSI_NAME}"]),
        *extra,
        patient=(FORMULA, f"{SCRIPT}{CRLF_NAME}"), label=MARKUP + ANSI_NAME,
        files=(f"RD{CLEAR}.dcm", f"{NUL_NAME}[/].dcm", f"{FORMULA}.dcm"), findings=[finding])
    res = check_plan(plan, cord_protocol(tmp_path))
    assert res.verdict.value == "NOT_EVALUATED" and res.exit_code == 1
    return res


# ------------------------------------------------------------ sanitizers
def test_visible_escapes_controls_and_is_idempotent():
    assert visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert visible("a\r\nb\tc\x00") == "a\\r\\nb\\tc\\x00"
    assert visible("x\u202ey\u2028\x85") == "x\\u202ey\\u2028\\x85"
    assert visible("\udc80") == "\\udc80"  # a lone surrogate (undecodable byte)
    assert visible(visible("a\x1bb")) == visible("a\x1bb")
    assert visible("PTV_Low [%] µ Ü 30/40 C:\\plans") == "PTV_Low [%] µ Ü 30/40 C:\\plans"
    # invisible characters that would make two different names look the same
    assert visible("PTV\u200b30") == "PTV\\u200b30"
    assert visible("\ufeffCord\u00ad\u2060") == "\\ufeffCord\\xad\\u2060"


def test_csv_guard_only_text_cells():
    assert for_csv(FORMULA) == "'" + FORMULA
    for start in "=+-@":
        assert for_csv(start + "SUM(A1)") == "'" + start + "SUM(A1)"
    assert for_csv("\tx") == "'\\tx" and for_csv("\rx") == "'\\rx"
    assert for_csv("PTV30") == "PTV30"
    assert for_csv(-1.5) == -1.5 and for_csv(3) == 3 and for_csv(None) is None


def test_markdown_and_html_escapes():
    assert for_markdown("a|b") == "a\\|b"
    assert for_markdown(SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert for_markdown("`x` [l](u) *e*") == "\\`x\\` \\[l\\](u) \\*e\\*"
    assert for_markdown("a\nb") == "a\\\\nb"  # the visible \n, its backslash escaped
    assert for_html(f"{SCRIPT}\x1b") == "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b"


def test_json_has_no_bare_nan():
    text = dumps_json({"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": "\x1b"})
    assert json.loads(text, parse_constant=_reject) == {"a": None, "b": [None, None, 1.5],
                                                       "c": "\x1b"}


def _reject(name: str):
    raise AssertionError(f"bare {name} in JSON")


class _Kind(enum.StrEnum):
    PASS = "PASS"


class _Level(enum.IntEnum):
    HIGH = 3


_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
            | st.sampled_from([_Kind.PASS, _Level.HIGH, np.float64(2.5), np.float64("nan"),
                               -0.0, 1e300, 5e-324]))
_TREES = st.recursive(
    _SCALARS | st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=6)
    | st.lists(st.integers(-5, 5), max_size=6),
    lambda kids: st.lists(kids, max_size=4) | st.tuples(kids, kids)
    | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3) | st.booleans() | st.none()
                      | st.floats(allow_nan=False, allow_infinity=False), kids, max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_TREES)
def test_indented_json_is_the_standard_librarys_text(tree):
    """The indented writer gives exactly json.dumps' text of the NaN-free tree."""
    expected = json.dumps(json_safe(tree), indent=2, allow_nan=False)
    assert dumps_json(tree) == expected
    assert dumps_json(tree, indent=4) == json.dumps(json_safe(tree), indent=4, allow_nan=False)


def test_indented_json_refuses_what_json_refuses():
    with pytest.raises(TypeError):
        dumps_json({"a": [1, object()]})
    with pytest.raises(TypeError):
        dumps_json({(1, 2): 1})
    with pytest.raises(ValueError):
        dumps_json({float("nan"): 1})


def test_the_dvh_document_is_the_standard_librarys_text():
    """A whole DVH document (long lists of doses and volumes) is written as json.dumps does."""
    doc = make_plan(roi("PTV\x1b", np.linspace(28.0, 32.0, 5000)),
                    roi("Cord", [0.0, 3.0, 12.5], number=2,
                        metrics={"Dmax": float("nan"), "D2%": 12.25})).to_dict()
    assert dumps_json(doc) == json.dumps(json_safe(doc), indent=2, allow_nan=False)


# ------------------------------------------------------------- check reports
def _assert_clean_text(text: str, forged: str = FORGED) -> None:
    assert not RAW_CONTROL.search(text), repr(RAW_CONTROL.search(text))
    assert forged not in text.splitlines()


def test_text_report_shows_hostile_names_as_escapes(hostile):
    text = to_text(hostile)
    _assert_clean_text(text)
    assert "\\x1b[2J\\x1b[H" in text  # the ESC sequence, visible
    assert "Duodenum\\r\\nPASS: every" in text  # the forged line stays inside its cell
    assert "Lung[bold]L[/] [/]" in text  # markup printed as written
    assert text.rstrip().splitlines()[-1].startswith("NOT_EVALUATED: ")


def test_text_report_on_a_terminal_has_no_hostile_escape(hostile):
    buf = io.StringIO()
    render_text(hostile, Console(file=buf, force_terminal=True, color_system="truecolor",
                                 width=300))
    out = buf.getvalue()
    assert "\x1b[" in out  # colours are on
    assert CLEAR not in out and "\r" not in out and "\x00" not in out
    assert "\\x1b[2J\\x1b[H" in out
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # without the colour codes
    assert FORGED not in plain.splitlines()


def test_junit_is_well_formed_and_keeps_the_names_visible(hostile):
    xml = to_junit(hostile)
    root = ET.fromstring(xml)  # raises on a control character
    suite = root.find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["patient_id"] == "=cmd|' /C calc'!A0"
    assert props["plan"] == "Lung[bold]L[/] [/]Liver\\x1b[2J\\x1b[H"
    out = suite.find("system-out").text
    assert "Duodenum\\r\\nPASS" in out and "Bowel\\x00Bag" in out
    assert int(suite.get("failures")) + int(suite.get("errors")) > 0


def test_json_keeps_the_true_strings(hostile):
    doc = json.loads(to_json(hostile), parse_constant=_reject)
    assert doc["plan"]["patient"]["name"] == f"{SCRIPT}{CRLF_NAME}"
    assert sorted(doc["unmatched_rois"]) == sorted(HOSTILE)
    assert doc["integrity"][0]["file"] == f"RS{CLEAR}.dcm"


def test_markdown_has_no_raw_html_and_no_extra_cells(hostile):
    md = to_markdown(hostile)
    assert "<" not in md and ">" not in md.replace("&gt;", "")
    assert not RAW_CONTROL.search(md)
    assert "&lt;script&gt;" in md
    for line in md.splitlines():  # a forged line would start a paragraph of its own
        assert not line.startswith("PASS")
    table: list[str] = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:  # every row of a table has as many cells as its header
            cells = {len(re.findall(r"(?<!\\)\|", row)) for row in table}
            assert len(cells) == 1, table
            table = []


def test_html_escapes_every_name(hostile):
    page = to_html(hostile, plot=True)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not RAW_CONTROL.search(page)
    assert "Liver\\x1b[2J\\x1b[H" in page


# ------------------------------------------------------------------ dvh output
def _hostile_plan_dvhs() -> PlanDVHs:
    plan = make_plan(roi(FORMULA, [1.0, 2.0]), roi(MARKUP, [3.0], number=2),
                     roi(CRLF_NAME, [4.0], number=3),
                     patient=("@SUM(1+1)", ANSI_NAME), label=f"{MARKUP}\x1b[31m")
    for s, dmax in zip(plan.structures, (2.0, 3.0, -4.5), strict=True):
        s.metrics = {"Dmax": dmax, "V20Gy[cc]": 0.0}
    plan.settings = {"slice_thickness_mm": 3.0, "end_caps": True, "odd": float("nan")}
    return plan


def test_csv_cells_are_guarded_and_numbers_untouched():
    rows = list(csv.reader(io.StringIO(to_csv(_hostile_plan_dvhs()))))
    header, body = rows[0], rows[1:]
    col = {name: header.index(name) for name in header}
    assert {r[col["structure"]] for r in body} == {
        "'" + FORMULA, MARKUP, "Duodenum\\r\\nPASS: every hard constraint and objective is met; "
                               "exit 0 (gate open)"}
    assert {r[col["patient_id"]] for r in body} == {"'@SUM(1+1)"}
    values = [r[col["value"]] for r in body]  # numbers, not guarded
    assert values == ["2", "0", "3", "0", "-4.5", "0"]
    for r in body:  # no cell a spreadsheet reads as a formula
        assert not any(c.startswith(("=", "+", "@")) for c in r)


def test_dvh_json_is_strict():
    doc = json.loads(dvh_json(_hostile_plan_dvhs()), parse_constant=_reject)
    assert doc["settings"]["odd"] is None
    assert doc["structures"][0]["name"] == FORMULA


def test_dvh_table_prints_names_as_written():
    buf = io.StringIO()
    render_table(_hostile_plan_dvhs(), Console(file=buf, force_terminal=True, width=300))
    out = buf.getvalue()
    assert "Lung[bold]L[/] [/]" in out and "V20Gy[cc]" in out
    assert CLEAR not in out and "\r" not in out and "\\x1b[2J\\x1b[H" in out


# ----------------------------------------------------------------- errors
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_print_error_one_line_per_problem(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    exc = ProtocolError("first", "p[/].yaml", 3, "a")
    exc.errors = [exc, ProtocolError("second\x1b[2J", "p[/].yaml", 9, "b[bold]")]
    buf = io.StringIO()
    print_error(exc, file=buf)
    assert buf.getvalue().splitlines() == error_lines(exc) == [
        "error: p[/].yaml:3: a: first", "error: p[/].yaml:9: b[bold]: second\\x1b[2J"]
    tty = _Tty()
    print_error("V20Gy[cc]x: bad", file=tty)
    assert tty.getvalue() == "\x1b[1;31merror:\x1b[0m V20Gy[cc]x: bad\n"


def test_cli_errors_keep_brackets(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["dvh", str(tmp_path / "plan[/]")])
    assert res.exit_code == 2, res.output  # not 1 with a MarkupError traceback
    assert res.stderr.startswith("error: ") and "plan[/]" in res.stderr
    res = runner.invoke(app, ["dvh", str(SAMPLE), "-s", "SpinalCord", "-m", "V20Gy[cc]x"])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and "V20Gy[cc]x" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_protocol_validate_prints_paths_as_written(tmp_path):
    path = tmp_path / "p[bold]x.yaml"
    path.write_text("format_version: 1\nname: [\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["protocol", "validate", str(path)])
    assert res.exit_code == 2
    assert f"{path}" in res.stdout and res.stderr == "error: 1 of 1 protocol file(s) invalid\n"


# ---------------------------------------------------------- end to end (DICOM)
@pytest.fixture(scope="module")
def hostile_dicom(tmp_path_factory) -> Path:
    """The sample plan with hostile ROI names (Liver, Duodenum and Iso renamed)."""
    out = tmp_path_factory.mktemp("hostile")
    for f in SAMPLE.iterdir():
        shutil.copy(f, out / f.name)
    ds = pydicom.dcmread(out / "RTSTRUCT.dcm")
    names = {"Liver": FORMULA, "Duodenum": f"Duo{CLEAR}\r\n{FORGED_FAIL}", "Iso": SCRIPT}
    for r in ds.StructureSetROISequence:
        r.ROIName = names.get(r.ROIName, r.ROIName)
    ds.save_as(out / "RTSTRUCT.dcm")
    return out


@pytest.mark.filterwarnings("ignore:.*(exceeds the maximum length|unknown escape):UserWarning")
def test_dvh_cli_csv_and_table_on_hostile_dicom(hostile_dicom):
    runner = CliRunner()
    res = runner.invoke(app, ["dvh", str(hostile_dicom), "--format", "csv", "-m", "Dmax"])
    assert res.exit_code == 0, res.output
    rows = list(csv.reader(io.StringIO(res.stdout)))
    names = {r[1] for r in rows[1:]}
    assert "'" + FORMULA in names and SCRIPT in names
    assert f"Duo\\x1b[2J\\x1b[H\\r\\n{FORGED_FAIL}" in names
    res = runner.invoke(app, ["dvh", str(hostile_dicom), "-m", "Dmax"])
    assert res.exit_code == 0, res.output
    _assert_clean_text(res.stdout, FORGED_FAIL)
    assert "Duo\\x1b[2J\\x1b[H\\r\\nFAIL" in res.stdout.replace("\n", "")


@pytest.mark.filterwarnings("ignore:.*(exceeds the maximum length|unknown escape):UserWarning")
def test_check_cli_formats_on_hostile_dicom(hostile_dicom):
    runner = CliRunner()
    args = ["check", str(hostile_dicom), "-p", "bone-sib-30-40-10fx"]
    text = runner.invoke(app, args)
    _assert_clean_text(text.stdout, FORGED_FAIL)
    junit = runner.invoke(app, [*args, "-f", "junit"])
    ET.fromstring(junit.stdout)
    doc = json.loads(runner.invoke(app, [*args, "-f", "json"]).stdout, parse_constant=_reject)
    assert f"Duo{CLEAR}\r\n{FORGED_FAIL}" in doc["unmatched_rois"]
    md = runner.invoke(app, [*args, "-f", "markdown"]).stdout
    assert "<" not in md
    codes = {r.exit_code for r in (text, junit)}
    assert codes == {doc["exit_code"]}
