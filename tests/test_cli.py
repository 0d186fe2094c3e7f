"""The command line on the shipped sample plan: exit codes, formats, overrides.

Expected numbers are worked out by hand from the protocol
``bone-sib-30-40-10fx`` (PTV30 30 Gy, D98% >= 90 % = 27 Gy, D2% <= 107 % =
32.1 Gy; cord Dmax <= 34 Gy) and the sample plan's README (cord Dmax about
31 Gy, PTV30 D98% about 29 Gy, kidney means about 4 Gy).
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dvheval.cli import app

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "sample_plan"
PROTOCOL = "bone-sib-30-40-10fx"
D98 = "PTV_Low: D98% >= 90% of PTV30"
D2 = "PTV_Low: D2% <= 107% of PTV30"

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def check(*args: object, plan: Path = SAMPLE):
    return run("check", plan, "--protocol", PROTOCOL, *args)


def constraint(doc: dict, cid: str) -> dict:
    for c in doc["constraints"]:
        if c["id"] == cid:
            return c
    raise KeyError(cid)


@pytest.fixture(scope="module")
def sample_json() -> dict:
    res = check("--format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def no_cord_plan(tmp_path_factory) -> Path:
    """The sample plan with the SpinalCord ROI removed from a new RTSTRUCT."""
    out = tmp_path_factory.mktemp("no_cord")
    ds = pydicom.dcmread(SAMPLE / "RTSTRUCT.dcm")
    number = next(int(r.ROINumber) for r in ds.StructureSetROISequence
                  if r.ROIName == "SpinalCord")
    ds.StructureSetROISequence = [r for r in ds.StructureSetROISequence
                                  if int(r.ROINumber) != number]
    ds.ROIContourSequence = [r for r in ds.ROIContourSequence
                             if int(r.ReferencedROINumber) != number]
    ds.RTROIObservationsSequence = [r for r in ds.RTROIObservationsSequence
                                    if int(r.ReferencedROINumber) != number]
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(out / "RTSTRUCT.dcm", enforce_file_format=True)
    for name in ("RTDOSE.dcm", "RTPLAN.dcm"):
        shutil.copy(SAMPLE / name, out / name)
    return out


# ---------------------------------------------------------------- exit codes
def test_sample_plan_passes(sample_json):
    doc = sample_json
    assert doc["verdict"] == "PASS" and doc["exit_code"] == 0
    assert doc["protocol"]["name"] == PROTOCOL
    cord = constraint(doc, "cord-dmax")
    # README: cord Dmax about 31 Gy, well under 34 Gy
    assert cord["verdict"] == "PASS" and cord["limit"] == 34.0
    assert 30.0 < cord["value"] < 32.0
    assert cord["margin"] == pytest.approx(34.0 - cord["value"], abs=1e-5)
    # relative limits: 90 % and 107 % of 30 Gy
    assert constraint(doc, D98)["limit"] == pytest.approx(27.0)
    assert constraint(doc, D2)["limit"] == pytest.approx(32.1)
    for kidney in ("Kidney_L: Mean <= 12 Gy", "Kidney_R: Mean <= 12 Gy"):
        k = constraint(doc, kidney)
        assert k["verdict"] == "PASS" and 3.0 < k["value"] < 5.0
    assert doc["unmatched_rois"] == ["BODY", "Liver", "Iso", "Duodenum"]


def test_text_report_is_plain_when_piped_and_ends_with_the_verdict():
    res = check()
    assert res.exit_code == 0
    out = res.stdout
    assert "\x1b[" not in out  # no colour codes outside a terminal
    assert "DVHEVAL-SAMPLE-01" in out and "bone-sib-30-40-10fx 1.0" in out
    assert "PTV30 30 Gy (protocol; RTPLAN agrees)" in out
    assert re.search(r"SpinalCord -> SpinalCord\s+Dmax\s+<= 34 Gy\s+\d+\.\d\d Gy\s+\+\d", out)
    assert re.search(r"PTV_Low\s+PTV30\s+alias 'PTV30'", out)  # matching, with the alias
    assert "Unmatched ROIs  BODY, Liver, Iso, Duodenum" in out
    assert "Report-only metrics" in out
    last = out.strip().splitlines()[-1]
    assert last == "PASS: every hard constraint and objective is met; exit 0 (gate open)"


def test_missing_cord_closes_the_gate(no_cord_plan):
    res = check("--format", "json", plan=no_cord_plan)
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "NOT_EVALUATED" and doc["exit_code"] == 1
    cord = constraint(doc, "cord-dmax")
    assert cord["verdict"] == "NOT_EVALUATED"
    assert "required structure SpinalCord not found" in cord["reason"]
    assert doc["gate"]["unresolved_required_structures"] == ["SpinalCord"]
    # every format gives the same exit code
    for fmt in ("text", "junit", "markdown"):
        assert check("--format", fmt, plan=no_cord_plan).exit_code == 1


def test_missing_cord_in_junit_is_an_error(no_cord_plan):
    res = check("--format", "junit", plan=no_cord_plan)
    root = ET.fromstring(res.stdout)
    suite = root.find("testsuite")
    doc = json.loads(check("--format", "json", plan=no_cord_plan).stdout)
    # one testcase per constraint, plus one per integrity check that ran
    checks = sorted({f["check"] for f in doc["integrity"]})
    assert "structure-missing" in checks
    assert int(suite.get("tests")) == len(doc["constraints"]) + len(doc["integrity_checks"])
    assert int(suite.get("errors")) == 1
    errors = [c.get("name") for c in suite.iter("testcase") if c.find("error") is not None]
    assert errors == ["SpinalCord Dmax <= 34 Gy"]
    failures = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert "integrity structure-missing" in failures


def test_unreadable_input_exits_2(tmp_path):
    bad = tmp_path / "plan"
    bad.mkdir()
    (bad / "RS.dcm").write_bytes(b"this is not DICOM" * 20)
    res = check(plan=bad)
    assert res.exit_code == 2
    assert res.stderr.startswith("error:") and res.stdout == ""
    res = check(plan=tmp_path / "nowhere")
    assert res.exit_code == 2 and "no such file" in res.stderr


def test_unknown_protocol_exits_2():
    res = run("check", SAMPLE, "--protocol", "bone-sib-30-40")
    assert res.exit_code == 2
    assert "unknown protocol 'bone-sib-30-40'" in res.stderr
    assert "bone-sib-30-40-10fx" in res.stderr  # the shipped ones are listed


def _broken_protocol(tmp_path: Path) -> tuple[Path, int]:
    """The SIB protocol with a malformed cord check; returns the file and that line."""
    text = (ROOT / "protocols" / f"{PROTOCOL}.yaml").read_text(encoding="utf-8")
    assert text.count("check: Dmax <= 34 Gy") == 1
    text = text.replace("check: Dmax <= 34 Gy", "check: Dmax <== 34 Gy")
    line = text.splitlines().index("        check: Dmax <== 34 Gy") + 1
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path, line


def test_invalid_protocol_file_exits_2_with_the_located_error(tmp_path):
    path, line = _broken_protocol(tmp_path)
    res = run("check", SAMPLE, "--protocol", path)
    assert res.exit_code == 2
    assert f"error: {path}:{line}: structures[SpinalCord].constraints[0].check:" in res.stderr


# ------------------------------------------------------------------- formats
def test_junit_counts_match_the_json(sample_json):
    res = check("--format", "junit")
    assert res.exit_code == 0
    root = ET.fromstring(res.stdout)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "DVHEVAL-SAMPLE-01 L1 SIB 30/40"
    cases = suite.findall("testcase")
    constraints = sample_json["constraints"]
    verdicts = [c["verdict"] for c in constraints]
    # one testcase per constraint and one per integrity check (all passed here)
    checks = sample_json["integrity_checks"]
    assert len(checks) == 27 and sample_json["integrity"] == []
    assert int(suite.get("tests")) == len(cases) == len(constraints) + len(checks) == 30 + 27
    assert int(suite.get("failures")) == verdicts.count("FAIL") == 0
    assert int(suite.get("errors")) == verdicts.count("NOT_EVALUATED") == 0
    skipped = verdicts.count("REPORT") + verdicts.count("NOT_APPLICABLE")
    assert int(suite.get("skipped")) == len(suite.findall("testcase/skipped")) == skipped == 24
    for el in (root, suite):  # numeric attributes
        for attr in ("tests", "failures", "errors"):
            int(el.get(attr))
        float(el.get("time"))
    assert all(float(c.get("time")) == 0.0 for c in cases)
    cord = next(c for c in cases if c.get("name") == "SpinalCord Dmax <= 34 Gy")
    assert cord.get("classname") == f"{PROTOCOL}.SpinalCord"
    assert "limit <= 34 Gy" in cord.find("system-out").text
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["verdict"] == "PASS" and props["exit_code"] == "0"


def test_markdown_and_html_carry_the_verdict(tmp_path):
    res = check("--format", "markdown")
    assert res.exit_code == 0
    md = res.stdout
    assert "**Verdict: `PASS`**" in md
    assert "| **PASS** | SpinalCord | SpinalCord | Dmax | &lt;= 34 Gy |" in md  # no raw <
    assert "| PTV_Low | PTV30 | alias 'PTV30' | required |" in md
    assert "Unmatched ROIs: BODY, Liver, Iso, Duodenum" in md

    out = tmp_path / "report.html"
    res = check("--format", "html", "--output", out)
    assert res.exit_code == 0 and res.stdout == ""
    assert res.stderr.startswith("PASS: ") and f"report: {out}" in res.stderr
    page = out.read_text(encoding="utf-8")
    assert '<div class="banner PASS"><span class="verdict">PASS</span>' in page
    assert "<svg" in page
    # self-contained: no resource is loaded from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "<link" not in page and "<script" not in page
    assert "xmlns" not in page and "http://www.w3.org" not in page


def test_rx_override_scales_relative_limits(sample_json):
    res = check("--format", "json", "--rx", "PTV30=32")
    doc = json.loads(res.stdout)
    # 90 % and 107 % of 32 Gy instead of 30 Gy
    assert constraint(doc, D98)["limit"] == pytest.approx(28.8)
    assert constraint(doc, D2)["limit"] == pytest.approx(34.24)
    assert constraint(doc, D98)["value"] == constraint(sample_json, D98)["value"]
    assert constraint(doc, "cord-dmax")["limit"] == 34.0  # absolute: unchanged
    rx = {p["name"]: p for p in doc["prescriptions"]}
    assert rx["PTV30"]["dose_gy"] == 32.0 and rx["PTV30"]["source"] == "override"
    assert rx["PTV40"]["dose_gy"] == 40.0 and rx["PTV40"]["source"] == "protocol"
    # PTV30 D98% is about 28.4 Gy: below 28.8 Gy, an objective only -> ACCEPTABLE, gate open
    assert 28.0 < constraint(doc, D98)["value"] < 28.8
    assert constraint(doc, D98)["verdict"] == "FAIL"
    assert doc["verdict"] == "ACCEPTABLE" and res.exit_code == 0
    # an alias of the level works too; --acceptable-fails closes the gate
    res = check("--rx", "PTV_3000=32 Gy", "--acceptable-fails")
    assert res.exit_code == 1
    assert res.stdout.strip().splitlines()[-1].startswith("ACCEPTABLE: no hard constraint failed")


@pytest.mark.parametrize("value, words", [
    ("32", "has 2 prescription levels"),
    ("PTV50=32", "'PTV50' is not a prescription level"),
    ("PTV30=abc", "is not a dose in Gy"),
    ("PTV30=-3", "must be a positive number"),
])
def test_bad_rx_exits_2(value, words):
    res = check("--rx", value)
    assert res.exit_code == 2 and words in res.stderr


def test_fractions_below_one_is_a_usage_error():
    assert check("--fractions", "0").exit_code == 2


# ------------------------------------------------------------------ protocol
def test_protocol_validate(tmp_path):
    shipped = sorted((ROOT / "protocols").glob("*.yaml"))
    res = run("protocol", "validate", *shipped)
    assert res.exit_code == 0, res.output
    assert res.stdout.count(": valid (") == len(shipped)

    path, line = _broken_protocol(tmp_path)
    res = run("protocol", "validate", path, shipped[0])
    assert res.exit_code == 2
    assert (f"{path}:{line}: structures[SpinalCord].constraints[0].check: 'Dmax <== 34 Gy'"
            in res.stdout)
    assert f"{shipped[0]}: valid" in res.stdout
    assert "1 of 2 protocol file(s) invalid" in res.stderr


def test_protocol_list():
    names = sorted(p.stem for p in (ROOT / "protocols").glob("*.yaml"))
    res = run("protocol", "list")
    assert res.exit_code == 0
    for name in names:
        assert re.search(rf"^{re.escape(name)}\s", res.stdout, re.M), name
    assert re.search(r"bone-sib-30-40-10fx\s+Bone metastases, SIB .*\s+1\.0\s+10\s+"
                     r"PTV40 40 Gy, PTV30 30 Gy", res.stdout)

    res = run("protocol", "list", "--format", "json")
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == names
    sib = next(r for r in rows if r["name"] == PROTOCOL)
    assert sib["fractions"] == 10 and sib["prescriptions"] == {"PTV40": 40.0, "PTV30": 30.0}
    assert "QUANTEC spinal cord (Kirkpatrick 2010)" in sib["sources"]
    assert sib["error"] is None


# ------------------------------------------------------------ version, help
def test_version() -> None:
    res = run("--version")
    assert res.exit_code == 0
    assert res.stdout == "dvheval 0.1.0\n"


@pytest.mark.parametrize("command, example", [
    (["dvh"], "dvheval dvh sample_dicom/sample_plan"),
    (["check"], "dvheval check plan/ -p sbrt-3fx --rx 27 --acceptable-fails"),
    (["batch"], "dvheval batch --db dvheval.sqlite --export cohort.parquet"),
    (["protocol", "validate"], "dvheval protocol validate protocols/*.yaml"),
])
def test_help_keeps_its_examples(command: list[str], example: str) -> None:
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert example in res.stdout


@pytest.mark.parametrize("command", [["dvh"], ["check"], ["batch"]])
def test_rx_has_one_syntax(command: list[str]) -> None:
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.stdout.replace("│", " ").split())
    assert "--rx LEVEL=GY Prescription dose LEVEL=GY" in text
    assert "A plain GY (--rx 32) where it is unambiguous" in text


# --------------------------------------------------------------- dvh --rx
def _cord_v20(*rx: str) -> tuple[int, str]:
    res = run("dvh", SAMPLE, "-s", "SpinalCord", "-m", "V20%", "--format", "json",
              *(a for v in rx for a in ("--rx", v)))
    if res.exit_code:
        return res.exit_code, res.stderr
    return 0, json.loads(res.stdout)["structures"][0]["metrics"]["V20%"]


def test_dvh_rx_plain_or_level_of_the_rtplan() -> None:
    code, plain = _cord_v20("30")
    assert code == 0 and plain is not None
    assert _cord_v20("30 Gy") == (0, plain)
    assert _cord_v20("PTV30=30") == (0, plain)  # a prescription of the RTPLAN
    assert _cord_v20("ptv30=30 Gy") == (0, plain)
    code, other = _cord_v20("PTV40=40")
    assert code == 0 and other < plain  # 20 % of 40 Gy is a higher dose than 20 % of 30 Gy


@pytest.mark.parametrize("values, words", [
    (("PTV50=30",), "'PTV50' is not a prescription of the RTPLAN (prescriptions: PTV40, PTV30)"),
    (("abc",), "'abc' is not a dose in Gy"),
    (("PTV30=-3",), "the dose must be a positive number of Gy"),
    (("=30",), "the level name before '=' is empty"),
    (("PTV30=30", "PTV40=40"), "dvheval dvh takes one prescription"),
])
def test_dvh_bad_rx_exits_2(values: tuple[str, ...], words: str) -> None:
    code, stderr = _cord_v20(*values)
    assert code == 2 and stderr.startswith("error: --rx ") and words in stderr
