"""Protocol files: shipped protocols, validation errors with their location, ROI matching."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from dvheval import protocol as proto
from dvheval.engine.metrics import parse_metric
from dvheval.errors import DvhevalError, MetricError
from dvheval.protocol import (
    ProtocolError,
    list_protocols,
    load_protocol,
    match_structures,
    shipped_protocol_dir,
    validate_protocol_file,
)

SCHEMA_PATH = Path(proto.__file__).parents[1] / "schemas" / "protocol.schema.json"
SHIPPED = sorted(p.stem for p in Path(shipped_protocol_dir()).glob("*.yaml"))
EXPECTED_SHIPPED = [
    "bone-conv-25x2",
    "bone-hypo-3x10",
    "bone-sib-30-40-10fx",
    "brain-postop-srs-1x20",
    "sbrt-1fx",
    "sbrt-3fx",
    "sbrt-5fx",
]


# --------------------------------------------------------- a tiny JSON Schema
def _check_schema(value, schema, root, path="$"):
    """Errors of ``value`` against the subset of JSON Schema the protocol schema uses."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _check_schema(value, node, root, path)
    errors = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        ok = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
        }
        if not any(ok[t](value) for t in names):
            return [f"{path}: expected {types}, got {value!r}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: too short")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: not above {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: too few items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += _check_schema(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, dict):
        if len(value) < schema.get("minProperties", 0):
            errors.append(f"{path}: too few properties")
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if "propertyNames" in schema:
                errors += _check_schema(key, schema["propertyNames"], root, f"{path}.<{key}>")
            if key in props:
                errors += _check_schema(item, props[key], root, f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unknown key {key}")
            elif isinstance(extra, dict):
                errors += _check_schema(item, extra, root, f"{path}.{key}")
    if "anyOf" in schema:
        if all(_check_schema(value, s, root, path) for s in schema["anyOf"]):
            errors.append(f"{path}: matches none of anyOf")
    return errors


@pytest.fixture(scope="module")
def schema():
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def test_schema_validator_rejects_bad_documents(schema):
    """The hand-written checker really checks (else schema conformance means nothing)."""
    good = yaml.safe_load((Path(shipped_protocol_dir()) / "sbrt-1fx.yaml").read_text("utf-8"))
    assert _check_schema(good, schema, schema) == []
    bad = dict(good, fractions=0, extra_key=1)
    bad["structures"] = [dict(good["structures"][0], required="yes")]
    errors = _check_schema(bad, schema, schema)
    assert any("fractions" in e for e in errors)
    assert any("extra_key" in e for e in errors)
    assert any("required" in e for e in errors)


# ------------------------------------------------------------ shipped files
def test_shipped_protocols_are_the_expected_set():
    assert SHIPPED == EXPECTED_SHIPPED
    assert [s.name for s in list_protocols()] == EXPECTED_SHIPPED


@pytest.mark.parametrize("name", EXPECTED_SHIPPED)
def test_shipped_protocol_loads_and_conforms_to_schema(name, schema):
    path = Path(shipped_protocol_dir()) / f"{name}.yaml"
    assert validate_protocol_file(path) == []
    p = load_protocol(name)
    assert p.name == name  # the name is the file's stem
    assert p.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert Path(p.file).resolve() == path.resolve()
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert _check_schema(data, schema, schema) == []
    try:
        import jsonschema
    except ImportError:
        pass
    else:
        jsonschema.validate(data, schema)
    # every limit cites a source and every source is a full reference
    for c in p.constraints():
        if not c.is_report:
            assert c.sources and c.citation, c.id
    for s in p.sources.values():
        assert len(s.reference) > 20


def test_schema_lists_the_keys_the_loader_accepts(schema):
    defs = schema["$defs"]
    assert set(schema["properties"]) == set(proto.TOP_KEYS)
    assert set(defs["source"]["properties"]) == set(proto.SOURCE_KEYS)
    assert set(defs["prescription"]["properties"]) == set(proto.PRESCRIPTION_KEYS)
    assert set(defs["structure"]["properties"]) == set(proto.STRUCTURE_KEYS)
    assert set(defs["constraint"]["properties"]) == set(proto.CONSTRAINT_KEYS)
    assert set(defs["alternative_constraint"]["properties"]) == set(proto.CONSTRAINT_KEYS) | {
        "structure"
    }
    assert set(defs["alternative"]["properties"]) == set(proto.ALTERNATIVE_KEYS)
    assert set(defs["alternative"]["properties"]["when"]["properties"]) == set(proto.WHEN_KEYS)
    for spec, d in ((proto.TOP_KEYS, schema), (proto.STRUCTURE_KEYS, defs["structure"]),
                    (proto.CONSTRAINT_KEYS, defs["constraint"])):
        assert {k for k, req in spec.items() if req} == set(d["required"])


def _limits(p, structure):
    """{check text: (value, unit, level)} of a structure's limits."""
    return {
        f"{c.metric_name} {c.operator}": (c.limit.value, c.limit.unit, c.limit.level)
        for c in p.constraints()
        if c.structure == structure and not c.is_report
    }


def test_sib_protocol_numbers():
    p = load_protocol("bone-sib-30-40-10fx")
    assert p.fractions == 10
    assert {k: v.dose_gy for k, v in p.prescriptions.items()} == {"PTV40": 40.0, "PTV30": 30.0}
    assert _limits(p, "PTV_Low") == {
        "D98% >=": (90.0, "%Rx", "PTV30"),
        "D2% <=": (107.0, "%Rx", "PTV30"),
    }
    cord = p.constraints()[[c.id for c in p.constraints()].index("cord-dmax")]
    assert (cord.metric_name, cord.operator, cord.limit.value, cord.limit.unit) == (
        "Dmax", "<=", 34.0, "Gy")
    assert cord.priority == "hard"
    assert _limits(p, "Kidney_L") == {"Mean <=": (12.0, "Gy", None)}
    assert _limits(p, "Kidney_R") == {"Mean <=": (12.0, "Gy", None)}
    alt = {a.id: a for a in p.alternatives}["cauda-equina"]
    # the cauda equina gets its own limit; the cord keeps its limit
    assert alt.present == ("CaudaEquina",) and alt.replaces == ()
    (cauda,) = alt.constraints
    assert cauda.metric.model == "EQD2" and cauda.metric.alpha_beta == 2.0
    assert (cauda.limit.value, cauda.limit.unit) == (60.0, "Gy")
    # report-only metrics of the cohort tables
    reports = {(c.structure, c.metric_name) for c in p.constraints() if c.is_report}
    for s in ("GTV_High", "CTV_Low", "PTV_High", "PTV_Low"):
        assert {(s, "Volume"), (s, "D2%"), (s, "D98%")} <= reports
    assert ("GTV_High", "gEUD(a=-10)") in reports
    assert {("SpinalCord", "Dmax"), ("SpinalCord", "D2%"), ("SpinalCord", "D0.5cc")} <= reports
    assert {("Kidney_L", "Mean"), ("Kidney_R", "Mean")} <= reports
    assert not p.structure("Kidney_L").required and p.structure("SpinalCord").required


@pytest.mark.parametrize(
    "name, structure, check, value",
    [
        # AAPM TG-101 Table III (Benedict et al. 2010, Med Phys 37:4078)
        ("sbrt-1fx", "SpinalCord", "D0.35cc <", 10.0),
        ("sbrt-1fx", "SpinalCord", "D1.2cc <", 7.0),
        ("sbrt-1fx", "SpinalCord", "D0.035cc <=", 14.0),
        ("sbrt-3fx", "SpinalCord", "D0.35cc <", 18.0),
        ("sbrt-3fx", "SpinalCord", "D1.2cc <", 12.3),
        ("sbrt-3fx", "SpinalCord", "D0.035cc <=", 21.9),
        ("sbrt-5fx", "SpinalCord", "D0.35cc <", 23.0),
        ("sbrt-5fx", "SpinalCord", "D1.2cc <", 14.5),
        ("sbrt-5fx", "SpinalCord", "D0.035cc <=", 30.0),
        ("sbrt-1fx", "CaudaEquina", "D5cc <", 14.0),
        ("sbrt-3fx", "CaudaEquina", "D0.035cc <=", 24.0),
        ("sbrt-5fx", "CaudaEquina", "D0.035cc <=", 32.0),
        ("sbrt-1fx", "SacralPlex", "D5cc <", 14.4),
        ("sbrt-5fx", "SacralPlex", "D5cc <", 30.0),
        ("sbrt-1fx", "Esophagus", "D5cc <", 11.9),
        ("sbrt-3fx", "Esophagus", "D5cc <", 17.7),
        ("sbrt-5fx", "Esophagus", "D0.035cc <=", 35.0),
        ("sbrt-3fx", "Ribs", "D30cc <", 30.0),
        ("sbrt-5fx", "Duodenum", "D10cc <", 12.5),
        ("sbrt-1fx", "Kidney_Hilum_L", "V10.6Gy[%] <", 66.7),
        ("bone-hypo-3x10", "SpinalCord", "D0.035cc <=", 21.9),
        ("brain-postop-srs-1x20", "Brainstem", "D0.035cc <=", 15.0),
        ("brain-postop-srs-1x20", "OpticChiasm", "D0.2cc <", 8.0),
        ("brain-postop-srs-1x20", "Cochlea_L", "D0.035cc <=", 9.0),
        # QUANTEC (Kirkpatrick 2010; Dawson 2010)
        ("bone-conv-25x2", "SpinalCord", "Dmax <=", 50.0),
        ("bone-conv-25x2", "Kidneys", "Mean <=", 15.0),
        ("bone-conv-25x2", "Kidneys", "V20Gy[%] <", 32.0),
    ],
)
def test_transcribed_limits(name, structure, check, value):
    assert _limits(load_protocol(name), structure)[check][0] == value


def test_acceptable_tiers_in_shipped_protocols():
    brain = load_protocol("brain-postop-srs-1x20")
    chiasm = [c for c in brain.constraints() if c.structure == "OpticChiasm" and c.acceptable]
    assert [(c.limit.value, c.acceptable.value) for c in chiasm] == [(10.0, 12.0)]
    kidneys = [c for c in load_protocol("bone-conv-25x2").constraints()
               if c.structure == "Kidneys" and c.acceptable]
    assert [(c.limit.value, c.acceptable.value) for c in kidneys] == [(15.0, 18.0)]


def test_sbrt_prescription_comes_from_the_plan():
    for n in (1, 3, 5):
        p = load_protocol(f"sbrt-{n}fx")
        assert p.fractions == n
        assert p.prescriptions["PTV"].dose_gy is None
        d95 = [c for c in p.constraints() if c.structure == "PTV" and c.metric_name == "D95%"]
        assert [(c.operator, c.limit.value, c.limit.unit) for c in d95] == [(">=", 100.0, "%Rx")]


def test_load_protocol_by_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ProtocolError, match="unknown protocol 'sbrt-2fx'.*sbrt-1fx"):
        load_protocol("sbrt-2fx")
    with pytest.raises(ProtocolError, match="no such protocol file"):
        load_protocol("/nonexistent/protocol.yaml")
    assert issubclass(ProtocolError, DvhevalError)


# ---------------------------------------------------------- bad protocols
BASE = """\
format_version: 1
name: test-protocol
title: Test protocol
version: "1"
date: "2026-01-01"
sources:
  ref:
    short: Ref 2020
    reference: A reference to a published paper, volume and pages.
fractions: 10
prescriptions:
  PTV40: {dose_gy: 40}
  PTV30: {dose_gy: 30, aliases: [PTV_3000]}
conditions:
  lumbar: The target is at the lumbar level.
structures:
  - name: PTV_Low
    aliases: [PTV30]
    prescription: PTV30
    constraints:
      - check: D98% >= 90% of PTV30
        source: ref
  - name: SpinalCord
    aliases: [Myelon, SC]
    patterns: ['(spinal[ _-]?)?cord']
    alpha_beta: 0.87
    constraints:
      - id: cord-max
        check: Dmax <= 34 Gy
        acceptable: 35 Gy
        source: ref
    report: [Dmax, D0.5cc]
  - name: CaudaEquina
    required: false
    alpha_beta: 2
alternatives:
  - id: cauda
    description: Cauda equina level
    when: {present: CaudaEquina}
    replaces: [cord-max]
    constraints:
      - structure: CaudaEquina
        check: "Dmax[EQD2] <= 60 Gy"
        source: ref
"""


def _write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _line_of(text, fragment, nth=0):
    """1-based line of the nth line containing ``fragment`` (the expected location)."""
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if fragment in line]
    return lines[nth]


def _errors(tmp_path, text):
    path = _write(tmp_path, text)
    errors = validate_protocol_file(path)
    for e in errors:
        assert e.file == str(path)
    return errors


def _one(tmp_path, text):
    errors = _errors(tmp_path, text)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def test_base_snippet_is_valid(tmp_path):
    assert _errors(tmp_path, BASE) == []
    p = load_protocol(_write(tmp_path, BASE))
    assert p.name == "test-protocol"


def test_yaml_syntax_error_is_located(tmp_path):
    text = BASE.replace("  PTV40: {dose_gy: 40}", "  PTV40: {dose_gy: 40")
    e = _errors(tmp_path, text)[0]
    assert "not valid YAML" in e.message
    assert e.line is not None and e.line >= _line_of(text, "PTV40: {dose_gy: 40")


def test_unknown_key_gives_line_field_and_hint(tmp_path):
    text = BASE.replace("        acceptable: 35 Gy", "        acceptible: 35 Gy")
    e = _one(tmp_path, text)
    assert e.line == _line_of(text, "acceptible")
    assert e.field == "structures[SpinalCord].constraints[0].acceptible"
    assert "unknown key 'acceptible'" in e.message and "did you mean 'acceptable'" in e.message
    text = BASE.replace("fractions: 10", "fractions: 10\nfraction: 10")
    e = _one(tmp_path, text)
    assert (e.line, e.field) == (_line_of(text, "fraction: 10"), "fraction")


def test_missing_required_key(tmp_path):
    text = BASE.replace("        source: ref\n  - name: SpinalCord", "  - name: SpinalCord")
    e = _one(tmp_path, text)
    assert "missing required key 'source'" in e.message
    assert e.field == "structures[PTV_Low].constraints[0]"
    assert e.line == _line_of(text, "check: D98% >= 90% of PTV30")


def test_bad_metric_name_gives_the_metric_error_text(tmp_path):
    text = BASE.replace("check: Dmax <= 34 Gy", "check: Dmaxx <= 34 Gy")
    e = _one(tmp_path, text)
    with pytest.raises(MetricError) as info:
        parse_metric("Dmaxx")
    assert e.message == str(info.value)
    assert (e.line, e.field) == (
        _line_of(text, "Dmaxx"), "structures[SpinalCord].constraints[0].check")


def test_bad_report_metric(tmp_path):
    text = BASE.replace("report: [Dmax, D0.5cc]", "report: [Dmax, D120%]")
    e = _one(tmp_path, text)
    assert "between 0 and 100" in e.message
    assert (e.line, e.field) == (_line_of(text, "D120%"), "structures[SpinalCord].report[1]")


def test_undefined_prescription(tmp_path):
    text = BASE.replace("D98% >= 90% of PTV30", "D98% >= 90% of PTV33")
    e = _one(tmp_path, text)
    assert "undefined prescription 'PTV33'" in e.message and "PTV30" in e.message
    assert e.line == _line_of(text, "PTV33")
    text = BASE.replace("    prescription: PTV30", "    prescription: PTV99")
    e = _errors(tmp_path, text)[0]
    assert (e.line, e.field) == (_line_of(text, "PTV99"), "structures[PTV_Low].prescription")


def test_relative_limit_needs_a_prescription_level(tmp_path):
    # two levels and no default on the cord: "107%" is relative to nothing
    text = BASE.replace("check: Dmax <= 34 Gy\n        acceptable: 35 Gy",
                        "check: Dmax <= 107%")
    e = _one(tmp_path, text)
    assert "relative to a prescription" in e.message
    assert e.line == _line_of(text, "Dmax <= 107%")


def test_duplicate_structures_and_alias_collisions(tmp_path):
    text = BASE.replace("  - name: CaudaEquina", "  - name: spinalcord\n    required: false\n"
                        "  - name: CaudaEquina")
    e = _one(tmp_path, text)
    assert "duplicate structure 'spinalcord'" in e.message
    assert e.line == _line_of(text, "name: spinalcord")
    text = BASE.replace("    alpha_beta: 2", "    alpha_beta: 2\n    aliases: [Myelon]")
    e = _one(tmp_path, text)
    assert "'Myelon' also names structure 'SpinalCord'" in e.message
    assert (e.line, e.field) == (_line_of(text, "aliases: [Myelon]"),
                                 "structures[CaudaEquina].aliases")


@pytest.mark.parametrize("op", ["=", "==", "=<", "≤"])
def test_bad_operator(tmp_path, op):
    text = BASE.replace("check: Dmax <= 34 Gy", f"check: Dmax {op} 34 Gy")
    e = _one(tmp_path, text)
    assert "operator" in e.message and "<=" in e.message
    assert e.line == _line_of(text, f"Dmax {op} 34 Gy")


def test_check_without_operator(tmp_path):
    text = BASE.replace("check: Dmax <= 34 Gy", "check: Dmax 34 Gy")
    e = _one(tmp_path, text)
    assert "'<metric> <operator> <limit>'" in e.message


@pytest.mark.parametrize(
    "old, new, words, fragment",
    [
        ("check: Dmax <= 34 Gy", "check: Dmax <= -34 Gy", "negative dose", "-34 Gy"),
        ("PTV40: {dose_gy: 40}", "PTV40: {dose_gy: -40}", "must be positive", "dose_gy: -40"),
        ("fractions: 10", "fractions: 0", "at least 1", "fractions: 0"),
        ("fractions: 10", "fractions: ten", "expected a whole number", "fractions: ten"),
        ("alpha_beta: 0.87", "alpha_beta: -1", "must be positive", "alpha_beta: -1"),
        ("check: Dmax <= 34 Gy", "check: Dmax <= 34 Sv", "unknown unit 'Sv'", "34 Sv"),
        ("check: Dmax <= 34 Gy", "check: Dmax <= 34", "needs a unit", "Dmax <= 34"),
        ("check: Dmax <= 34 Gy", "check: V20Gy < 32%", "write V20Gy[%]", "V20Gy < 32%"),
        ("check: Dmax <= 34 Gy", "check: V20Gy[%] < 132", "cannot exceed 100", "132"),
        ("check: Dmax <= 34 Gy", "check: Dmax <= 34 cc", "cannot be in cc", "34 cc"),
        ("check: Dmax <= 34 Gy", "check: Dmax <= 34 Gy of PTV30", "only follows a percentage",
         "34 Gy of"),
        ("acceptable: 35 Gy", "acceptable: 33 Gy", "must lie above", "acceptable: 33"),
        ("acceptable: 35 Gy", "acceptable: 35 cc", "cannot be in cc", "acceptable: 35 cc"),
        ("acceptable: 35 Gy", "acceptable: 105%", "unit of the limit", "acceptable: 105%"),
        ("        source: ref\n  - name: SpinalCord", "        source: reff\n  - name: SpinalCord",
         "unknown source 'reff'", "source: reff"),
        ("replaces: [cord-max]", "replaces: [cord-min]", "no constraint has id 'cord-min'",
         "replaces: [cord-min]"),
        ("when: {present: CaudaEquina}", "when: {condition: sacral}", "undeclared condition",
         "condition: sacral"),
        ("when: {present: CaudaEquina}", "when: {present: Cauda}", "unknown structure 'Cauda'",
         "present: Cauda"),
        ("patterns: ['(spinal[ _-]?)?cord']", "patterns: ['(spinal[ _-]?cord']",
         "bad regular expression", "patterns:"),
        ("aliases: [Myelon, SC]", "aliases: 5", "expected text or a list", "aliases: 5"),
        ("    required: false", "    required: maybe", "expected true or false", "maybe"),
        ("        acceptable: 35 Gy", "        acceptable: 35 Gy\n        priority: must",
         "priority 'must'", "priority: must"),
        ('date: "2026-01-01"', 'date: "01.01.2026"', "not YYYY-MM-DD", "date:"),
        ("name: test-protocol", "name: Test Protocol", "lower-case", "name: Test"),
        ("format_version: 1", "format_version: 2", "format_version 1", "format_version"),
    ],
)
def test_invalid_values_are_located(tmp_path, old, new, words, fragment):
    assert old in BASE
    text = BASE.replace(old, new, 1)
    e = _one(tmp_path, text)
    assert words in e.message, e.message
    assert e.line == _line_of(text, fragment), (e.line, str(e))
    assert e.field
    assert str(e).startswith(f"{e.file}:{e.line}: {e.field}: ")


def test_eqd2_without_alpha_beta_anywhere(tmp_path):
    text = BASE.replace("    required: false\n    alpha_beta: 2", "    required: false")
    e = _one(tmp_path, text)
    assert "a/b" in e.message and "alpha_beta" in e.message
    assert e.field == "alternatives[cauda].constraints[0].check"


def test_duplicate_yaml_key(tmp_path):
    text = BASE.replace("title: Test protocol", "title: Test protocol\ntitle: Again")
    e = _one(tmp_path, text)
    assert "duplicate key 'title'" in e.message and "line 3" in e.message
    assert e.line == _line_of(text, "title: Again")


def test_all_problems_are_listed_and_the_first_is_raised(tmp_path):
    text = BASE.replace("fractions: 10", "fractions: -1").replace(
        "check: Dmax <= 34 Gy", "check: Dmaxx <= 34 Gy")
    path = _write(tmp_path, text)
    errors = validate_protocol_file(path)
    assert [e.line for e in errors] == [_line_of(text, "fractions: -1"), _line_of(text, "Dmaxx")]
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    assert info.value.line == errors[0].line and "1 more" in str(info.value)
    assert len(info.value.errors) == 2


def test_not_a_mapping_and_empty_file(tmp_path):
    assert "mapping" in _one(tmp_path, "- a\n- b\n").message
    assert "empty" in _one(tmp_path, "").message


def test_dates_stay_text(tmp_path):
    text = BASE.replace('date: "2026-01-01"', "date: 2026-01-01")
    assert load_protocol(_write(tmp_path, text)).date == "2026-01-01"


# --------------------------------------------------------------- matching
@pytest.fixture(scope="module")
def sib():
    return load_protocol("bone-sib-30-40-10fx")


@pytest.mark.parametrize(
    "roi, structure, how",
    [
        ("Myelon", "SpinalCord", "alias"),
        ("SC", "SpinalCord", "alias"),
        ("cord", "SpinalCord", "pattern"),
        ("Spinal_Cord", "SpinalCord", "alias"),
        ("spinalcord", "SpinalCord", "name"),
        ("  MYELON ", "SpinalCord", "alias"),
        ("Niere li", "Kidney_L", "alias"),
        ("niere-LI", "Kidney_L", "alias"),
        ("Niere  li", "Kidney_L", "alias"),
        ("Kidney_Left", "Kidney_L", "pattern"),
        ("Lt_Kidney", "Kidney_L", "alias"),
        ("Niere re", "Kidney_R", "alias"),
        ("PTV_3000", "PTV_Low", "alias"),
        ("PTV 30Gy", "PTV_Low", "pattern"),
        ("ptv3000cGy", "PTV_Low", "pattern"),
        ("PTV40", "PTV_High", "alias"),
        ("GTV_4000", "GTV_High", "alias"),
        ("Cauda equina", "CaudaEquina", "alias"),
    ],
)
def test_aliases_and_patterns(sib, roi, structure, how):
    m = match_structures(sib, ["BODY", roi])
    assert m.matched[structure].roi == roi
    assert m.matched[structure].how == how
    assert m.matched[structure].index == 1
    assert m.unmatched == ["BODY"]


def test_patterns_match_the_whole_name(sib):
    m = match_structures(sib, ["cord_PRV5", "PTV30-PTV40", "Niere li PRV"])
    assert m.matched == {}
    assert m.unmatched == ["cord_PRV5", "PTV30-PTV40", "Niere li PRV"]


def test_two_rois_for_one_structure_is_ambiguous(sib):
    m = match_structures(sib, ["Myelon", "cord", "PTV30"])
    assert "SpinalCord" not in m.matched
    assert m.status("SpinalCord") == "ambiguous"
    assert "'Myelon'" in m.ambiguous["SpinalCord"] and "'cord'" in m.ambiguous["SpinalCord"]
    assert m.present("SpinalCord")
    assert m.matched["PTV_Low"].roi == "PTV30"


def test_exact_canonical_name_is_preferred(sib):
    m = match_structures(sib, ["Myelon", "SpinalCord"])
    assert m.matched["SpinalCord"].roi == "SpinalCord"
    assert m.matched["SpinalCord"].how == "name"
    assert any("also matched: 'Myelon'" in n for n in m.notes)


def test_duplicate_roi_names_are_ambiguous(sib):
    m = match_structures(sib, ["SpinalCord", "SpinalCord"])
    assert m.status("SpinalCord") == "ambiguous"
    assert "2 ROIs match" in m.ambiguous["SpinalCord"]


def test_missing_structures_are_listed(sib):
    m = match_structures(sib, ["PTV30"])
    assert "SpinalCord" in m.missing and "Kidney_L" in m.missing
    assert m.status("SpinalCord") == "missing" and not m.present("SpinalCord")


def test_roi_matching_the_patterns_of_two_structures_is_used_for_neither(tmp_path):
    text = BASE.replace("    alpha_beta: 2", "    alpha_beta: 2\n    patterns: ['.*cord.*']")
    p = load_protocol(_write(tmp_path, text))
    m = match_structures(p, ["cord"])
    assert m.status("SpinalCord") == "ambiguous" and m.status("CaudaEquina") == "ambiguous"
    assert "patterns of SpinalCord and CaudaEquina" in m.ambiguous["SpinalCord"]
    # a name or alias match wins over another structure's pattern
    m = match_structures(p, ["Myelon"])
    assert m.matched["SpinalCord"].how == "alias" and m.status("CaudaEquina") == "missing"


def test_match_to_dict_is_json(sib):
    d = match_structures(sib, ["Myelon", "Niere li", "BODY"]).to_dict()
    json.dumps(d)
    assert {"structure": "SpinalCord", "roi": "Myelon", "how": "alias", "by": "Myelon"} in d[
        "matched"]
    assert d["unmatched_rois"] == ["BODY"]


def test_normalize_name():
    assert proto.normalize_name("  Niere - li_ ") == "niere_li"
    assert proto.normalize_name("PTV 3000") == proto.normalize_name("ptv-3000")


def test_structure_alpha_beta_fills_eqd2(tmp_path):
    p = load_protocol(_write(tmp_path, BASE))
    (c,) = p.alternatives[0].constraints
    assert c.metric_name == "Dmax[EQD2, a/b=2]"
    report = [c.metric_name for c in p.constraints() if c.is_report]
    assert report == ["Dmax", "D0.5cc"]


def test_readme_documents_every_shipped_protocol():
    readme = (Path(shipped_protocol_dir()) / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED_SHIPPED:
        assert f"`{name}`" in readme
