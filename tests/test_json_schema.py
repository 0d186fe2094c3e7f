"""The published JSON contracts: real documents validate, broken ones do not.

``dvheval/schemas/dvh.schema.json`` describes ``dvheval dvh --format json``
and ``dvheval/schemas/check.schema.json`` ``dvheval check --format json``.
Every document below is produced by the command line on the shipped sample
plan or a variant of it; the expected verdicts are the ones worked out in
tests/test_cli.py (the sample plan passes bone-sib-30-40-10fx; with PTV30
at 25 Gy its D2% of 31.7 Gy exceeds 107 % = 26.75 Gy; without a cord ROI a
hard constraint cannot be evaluated).
"""

from __future__ import annotations

import copy
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pydicom
import pytest
from typer.testing import CliRunner

from dvheval.cli import app
from dvheval.integrity import CHECKS, Severity
from dvheval.vocab import PLAN_VERDICTS, MatchState, Priority, StructureStatus, Verdict

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "sample_plan"
PROTOCOL = "bone-sib-30-40-10fx"
#: Schema version of each document: 1.1 added the combined plans (both) and
#: the unit "1" of the quality indices (check report).
VERSION = "1.1"
VERSIONS = {"dvh": "1.1", "check": "1.1"}

runner = CliRunner()


def _schema(name: str) -> dict[str, Any]:
    """A schema as shipped in the package (``dvheval/schemas``)."""
    text = resources.files("dvheval.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@pytest.fixture(scope="module")
def dvh_validator() -> Any:
    schema = _schema("dvh")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def check_validator() -> Any:
    schema = _schema("check")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _json(*args: object, code: int) -> dict[str, Any]:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _errors(validator: Any, doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def _copy_sample(out: Path, skip: str = "") -> None:
    for name in ("RTSTRUCT.dcm", "RTDOSE.dcm", "RTPLAN.dcm"):
        if name != skip:
            shutil.copy(SAMPLE / name, out / name)



@pytest.fixture(scope="module")
def no_cord_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample plan without its SpinalCord ROI (a required structure)."""
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
    _copy_sample(out, skip="RTSTRUCT.dcm")
    # the RTPLAN references the structure set it was planned on: keep that UID
    ds.save_as(out / "RTSTRUCT.dcm", enforce_file_format=True)
    return out


@pytest.fixture(scope="module")
def unapproved_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample plan with an RTPLAN whose Approval Status is UNAPPROVED."""
    out = tmp_path_factory.mktemp("unapproved")
    _copy_sample(out, skip="RTPLAN.dcm")
    ds = pydicom.dcmread(SAMPLE / "RTPLAN.dcm")
    ds.ApprovalStatus = "UNAPPROVED"
    ds.save_as(out / "RTPLAN.dcm", enforce_file_format=True)
    return out


@pytest.fixture(scope="module")
def no_rtplan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("no_rtplan")
    _copy_sample(out, skip="RTPLAN.dcm")
    return out


@pytest.fixture(scope="module")
def sample_check() -> dict[str, Any]:
    return _json("check", SAMPLE, "--protocol", PROTOCOL, "--format", "json", code=0)


@pytest.fixture(scope="module")
def sample_dvh() -> dict[str, Any]:
    return _json("dvh", SAMPLE, "--format", "json", code=0)


# ------------------------------------------------------------ real documents
def test_sample_dvh_document_is_valid(dvh_validator, sample_dvh):
    assert _errors(dvh_validator, sample_dvh) == []
    assert sample_dvh["schema_version"] == VERSIONS["dvh"]
    statuses = {s["name"]: s["status"] for s in sample_dvh["structures"]}
    # the README's sample table: BODY partly outside the grid, Iso a point, Duodenum empty
    assert statuses["BODY"] == "partial" and statuses["Iso"] == "no_dvh"
    assert statuses["Duodenum"] == "empty" and statuses["SpinalCord"] == "ok"


def test_dvh_document_with_derived_structures_is_valid(dvh_validator):
    doc = _json("dvh", SAMPLE, "--format", "json", "-s", "Kidney_L", "-s", "Kidney_R",
                "-s", "Kidneys", "-s", "Ghost", "-m", "Dmean", "-m", "V95%[%]",
                "--derive", "Kidneys=Kidney_L | Kidney_R", "--derive", "Ghost=Nope | Kidney_L",
                code=0)
    assert _errors(dvh_validator, doc) == []
    by_name = {s["name"]: s for s in doc["structures"]}
    left, right, both = (by_name[n]["volume_cc"] for n in ("Kidney_L", "Kidney_R", "Kidneys"))
    assert both == pytest.approx(left + right, rel=1e-3)  # disjoint kidneys
    ghost = by_name["Ghost"]
    assert ghost["status"] == "empty" and ghost["metrics"]["Dmean"] is None
    assert ghost["dvh"] == {"dose_gy": [], "volume_cc": []}
    # no prescription for a single level: the relative metric is null with a reason
    assert by_name["Kidneys"]["metrics"]["V95%[%]"] is None
    assert "prescription" in by_name["Kidneys"]["metric_errors"]["V95%[%]"]


def test_sample_check_document_is_valid(check_validator, sample_check):
    assert _errors(check_validator, sample_check) == []
    assert (sample_check["schema_version"], sample_check["verdict"]) == (VERSIONS["check"], "PASS")
    assert sample_check["exit_code"] == 0


def test_failing_plan_document_is_valid(check_validator):
    doc = _json("check", SAMPLE, "--protocol", PROTOCOL, "--format", "json",
                "--rx", "PTV30=25", code=1)
    assert _errors(check_validator, doc) == []
    assert doc["verdict"] == "FAIL"
    d2 = next(c for c in doc["constraints"] if c["id"] == "PTV_Low: D2% <= 107% of PTV30")
    assert d2["verdict"] == "FAIL" and d2["limit"] == pytest.approx(26.75)


def test_not_evaluated_plan_document_is_valid(check_validator, no_cord_plan):
    doc = _json("check", no_cord_plan, "--protocol", PROTOCOL, "--format", "json", code=1)
    assert _errors(check_validator, doc) == []
    assert doc["verdict"] == "NOT_EVALUATED"
    assert doc["gate"]["unresolved_required_structures"] == ["SpinalCord"]
    cord = next(s for s in doc["structures"] if s["structure"] == "SpinalCord")
    assert (cord["match"], cord["roi"], cord["roi_status"]) == ("missing", None, None)


def test_check_document_with_derived_structures_is_valid(check_validator):
    doc = _json("check", SAMPLE, "--protocol", PROTOCOL, "--format", "json",
                "--derive", "Kidneys=Kidney_L | Kidney_R", code=0)
    assert _errors(check_validator, doc) == []
    assert "Kidneys" in doc["unmatched_rois"]


def test_strict_all_document_is_valid(check_validator, unapproved_plan):
    warned = _json("check", unapproved_plan, "--protocol", PROTOCOL, "--format", "json",
                   code=0)
    strict = _json("check", unapproved_plan, "--protocol", PROTOCOL, "--format", "json",
                   "--strict", "all", code=1)
    for doc in (warned, strict):
        assert _errors(check_validator, doc) == []
    assert [f["severity"] for f in warned["integrity"] if f["check"] == "plan-not-approved"] \
        == ["warn"]
    assert strict["verdict"] == "NOT_EVALUATED"
    assert strict["gate"]["closed_by"] == ["plan-not-approved"]


def test_plan_without_rtplan_documents_are_valid(check_validator, dvh_validator, no_rtplan):
    dvh = _json("dvh", no_rtplan, "--format", "json", "-s", "SpinalCord", code=0)
    assert _errors(dvh_validator, dvh) == []
    assert dvh["plan"] is None and dvh["settings"]["fractions"] is None
    doc = _json("check", no_rtplan, "--protocol", PROTOCOL, "--format", "json", code=0)
    assert _errors(check_validator, doc) == []
    assert doc["plan"]["rtplan"] is None
    assert doc["fractions"]["source"] == "protocol"
    assert "no-rtplan" in [f["check"] for f in doc["integrity"]]


# ---------------------------------------------------- the schemas can say no
def test_check_schema_rejects_a_wrong_verdict(check_validator, sample_check):
    doc = copy.deepcopy(sample_check)
    doc["verdict"] = "MAYBE"
    assert any(e.startswith("verdict:") for e in _errors(check_validator, doc))
    doc = copy.deepcopy(sample_check)
    doc["verdict"] = "REPORT"  # a constraint verdict, never a plan's
    assert _errors(check_validator, doc)
    doc = copy.deepcopy(sample_check)
    doc["constraints"][0]["verdict"] = "pass"
    assert any(e.startswith("constraints/0/verdict:") for e in _errors(check_validator, doc))


@pytest.mark.parametrize("path", [("gate",), ("schema_version",), ("constraints", 0, "margin"),
                                  ("structures", 0, "defects"), ("plan", "rtplan")])
def test_check_schema_rejects_a_missing_key(check_validator, sample_check, path):
    doc = copy.deepcopy(sample_check)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    errors = _errors(check_validator, doc)
    assert any(f"'{path[-1]}' is a required property" in e for e in errors), errors


def test_check_schema_rejects_unknown_keys_and_wrong_types(check_validator, sample_check):
    doc = copy.deepcopy(sample_check)
    doc["constraints"][0]["valeu"] = 1.0
    assert _errors(check_validator, doc)
    doc = copy.deepcopy(sample_check)
    doc["constraints"][3]["value"] = "31.06"  # a number as text
    assert _errors(check_validator, doc)
    doc = copy.deepcopy(sample_check)
    doc["schema_version"] = "2.0"
    assert _errors(check_validator, doc)
    doc = copy.deepcopy(sample_check)
    doc["gate"]["closed_by"] = ["no-such-check"]
    assert _errors(check_validator, doc)


def test_dvh_schema_rejects_broken_documents(dvh_validator, sample_dvh):
    doc = copy.deepcopy(sample_dvh)
    doc["structures"][0]["status"] = "fine"
    assert _errors(dvh_validator, doc)
    doc = copy.deepcopy(sample_dvh)
    del doc["structures"][0]["volume_cc"]
    assert any("'volume_cc' is a required property" in e for e in _errors(dvh_validator, doc))
    doc = copy.deepcopy(sample_dvh)
    doc["structures"][1]["metrics"]["D2%"] = "NaN"
    assert _errors(dvh_validator, doc)
    doc = copy.deepcopy(sample_dvh)
    doc["dose"]["sha256"] = {"RTDOSE.dcm": "not a hash"}
    assert _errors(dvh_validator, doc)


# ------------------------------------------------------ enums cannot drift
def _enum(schema: dict[str, Any], name: str) -> list[Any]:
    values: list[Any] = schema["$defs"][name]["enum"]
    return values


def test_schema_enums_are_the_vocabulary():
    dvh, check = _schema("dvh"), _schema("check")
    for schema in (dvh, check):
        assert _enum(schema, "check_id") == list(CHECKS)
        assert _enum(schema, "severity") == [s.value for s in Severity]
        assert _enum(schema, "structure_status") == [s.value for s in StructureStatus]
    assert _enum(check, "verdict") == [v.value for v in Verdict]
    assert _enum(check, "plan_verdict") == [v.value for v in PLAN_VERDICTS]
    assert _enum(check, "priority") == [p.value for p in Priority]
    assert _enum(check, "match_state") == [m.value for m in MatchState]
    assert sorted(check["properties"]["summary"]["required"]) == sorted(p.value for p in Priority)


def test_limit_units_are_the_protocol_units():
    from dvheval.protocol import UNIT_CC, UNIT_GY, UNIT_INDEX, UNIT_PCT, UNIT_PCT_RX

    units = _schema("check")["$defs"]["constraint"]["properties"]["limit_unit"]["enum"]
    assert units == [UNIT_GY, UNIT_CC, UNIT_PCT, UNIT_PCT_RX, UNIT_INDEX, None]


def test_schema_ids_name_the_version():
    for name in ("dvh", "check"):
        schema = _schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        version = VERSIONS[name]
        assert schema["properties"]["schema_version"] == {"const": version}
        assert schema["$id"].endswith(f"/{name}/{version}/{name}.schema.json")
        assert version in schema["title"]
