"""The ``unacceptable`` field (hard floors and ceilings) and the reviewed shipped protocols."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvheval.protocol import (
    Limit,
    ProtocolError,
    load_protocol,
    shipped_protocol_dir,
    validate_protocol_file,
)

SHIPPED = sorted(p.stem for p in Path(shipped_protocol_dir()).glob("*.yaml"))

BASE = """\
format_version: 1
name: floors
title: Floors
version: "1"
date: "2026-01-01"
sources:
  ref:
    short: Ref 2020
    reference: A reference to a published paper, volume and pages.
fractions: 10
prescriptions:
  PTV30: {dose_gy: 30}
  PTV40: {dose_gy: 40}
structures:
  - name: PTV_Low
    type: target
    prescription: PTV30
    constraints:
      - check: D98% >= 90% of PTV30
        priority: objective
        unacceptable: "< 80%"
        source: ref
  - name: SpinalCord
    constraints:
      - id: cord
        check: Dmax <= 34 Gy
        acceptable: 35 Gy
        unacceptable: "> 36 Gy"
        source: ref
"""
FLOOR = 'unacceptable: "< 80%"'
CEILING = 'unacceptable: "> 36 Gy"'


def _write(tmp_path, text):
    path = tmp_path / "floors.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _line_of(text, fragment):
    return next(i + 1 for i, line in enumerate(text.splitlines()) if fragment in line)


def _constraint(p, structure):
    (c,) = [c for c in p.constraints() if c.structure == structure and not c.is_report]
    return c


def test_floor_and_ceiling_are_parsed(tmp_path):
    p = load_protocol(_write(tmp_path, BASE))
    ptv = _constraint(p, "PTV_Low")
    # a bare '80%' takes the limit's level (PTV30)
    assert ptv.unacceptable == Limit(80.0, "%Rx", "PTV30", "80%")
    assert ptv.unacceptable_operator == "<" and ptv.priority == "objective"
    cord = _constraint(p, "SpinalCord")
    assert cord.unacceptable == Limit(36.0, "Gy", None, "36 Gy")
    assert cord.unacceptable_operator == ">"
    assert cord.acceptable.value == 35.0


def test_without_unacceptable_both_fields_are_none(tmp_path):
    p = load_protocol(_write(tmp_path, BASE.replace(f"        {FLOOR}\n", "")))
    c = _constraint(p, "PTV_Low")
    assert c.unacceptable is None and c.unacceptable_operator is None


@pytest.mark.parametrize("new", [
    'unacceptable: "< 2400 cGy"',  # 24 Gy: another unit
    'unacceptable: "< 80% of PTV40"',  # another level
])
def test_floor_in_another_unit_or_level_is_refused(tmp_path, new):
    text = BASE.replace(FLOOR, new)
    (e,) = validate_protocol_file(_write(tmp_path, text))
    assert e.field == "structures[PTV_Low].constraints[0].unacceptable"
    assert "in the unit of the limit ('90% of PTV30')" in e.message
    assert e.line == _line_of(text, "unacceptable: \"< ")


@pytest.mark.parametrize("structure, new, words", [
    ("PTV_Low", 'unacceptable: "> 80%"', "is a floor: its unacceptable condition must use < or <="),
    ("PTV_Low", 'unacceptable: "< 95%"', "must lie below the limit '90% of PTV30'"),
    ("PTV_Low", 'unacceptable: "< 90%"', "must lie below the limit"),
    ("PTV_Low", 'unacceptable: "= 80%"', "operator '=' is not allowed"),
    ("PTV_Low", 'unacceptable: "80%"', "is not '<operator> <limit>'"),
    ("PTV_Low", "unacceptable: 80", "expected an operator and a limit"),
    ("PTV_Low", 'unacceptable: "< 80 cc"', "is a dose; its limit cannot be in cc"),
    ("PTV_Low", 'unacceptable: "< -5%"', "negative limit"),
    ("SpinalCord", 'unacceptable: "< 30 Gy"', "is a ceiling: its unacceptable condition must use"),
    ("SpinalCord", 'unacceptable: "> 34.5 Gy"', "overlaps the acceptable limit '35 Gy'"),
    ("SpinalCord", 'unacceptable: ">= 35 Gy"', "overlaps the acceptable limit '35 Gy'"),
    ("SpinalCord", 'unacceptable: "> 1e3 Gy"', "is not '<number> <unit>'"),
    ("SpinalCord", 'unacceptable: "> 2000 Gy"', "(0, 1000] Gy"),
])
def test_bad_unacceptable_is_located(tmp_path, structure, new, words):
    old = FLOOR if structure == "PTV_Low" else CEILING
    text = BASE.replace(old, new)
    errors = validate_protocol_file(_write(tmp_path, text))
    assert len(errors) == 1, [str(e) for e in errors]
    (e,) = errors
    assert e.field == f"structures[{structure}].constraints[0].unacceptable"
    assert words in e.message, e.message
    assert e.line == _line_of(text, new)


def test_unacceptable_at_the_acceptable_limit_with_a_strict_operator(tmp_path):
    # ACCEPTABLE up to 35 Gy, unacceptable above it: the two meet without overlap
    p = load_protocol(_write(tmp_path, BASE.replace(CEILING, 'unacceptable: "> 35 Gy"')))
    assert _constraint(p, "SpinalCord").unacceptable.value == 35.0


def test_load_protocol_raises_the_located_error(tmp_path):
    with pytest.raises(ProtocolError, match=r"floors.yaml:\d+: .*unacceptable: .*floor"):
        load_protocol(_write(tmp_path, BASE.replace(FLOOR, 'unacceptable: ">= 80%"')))


# ------------------------------------------------------------ shipped protocols
@pytest.mark.parametrize("name", SHIPPED)
def test_every_target_dose_limit_has_an_unacceptable_bound(name):
    path = Path(shipped_protocol_dir()) / f"{name}.yaml"
    assert validate_protocol_file(path) == []
    p = load_protocol(name)
    targets = {s.name for s in p.structures if s.type == "target"}
    checked = [c for c in p.constraints()
               if c.structure in targets and not c.is_report and c.metric.is_dose]
    assert checked, f"{name}: no target dose limit"
    for c in checked:
        assert c.unacceptable is not None, c.id
        floor = c.operator in (">=", ">")
        assert c.unacceptable_operator in (("<", "<=") if floor else (">", ">=")), c.id
        assert (c.unacceptable.value < c.limit.value) if floor else (
            c.unacceptable.value > c.limit.value), c.id
        assert "local choice" in (c.checked_against or p.checked_against or ""), c.id


def test_sib_floors_and_ceilings():
    p = load_protocol("bone-sib-30-40-10fx")
    got = {c.id: (c.unacceptable_operator, c.unacceptable.value, c.unacceptable.level)
           for c in p.constraints() if c.unacceptable is not None}
    assert got == {
        "PTV_High: D2% <= 107%": (">", 115.0, "PTV40"),
        "PTV_Low: D98% >= 90% of PTV30": ("<", 80.0, "PTV30"),
        "PTV_Low: D2% <= 107% of PTV30": (">", 115.0, "PTV30"),
    }


def test_brain_srs_has_a_coverage_objective_with_a_floor():
    c = _constraint(load_protocol("brain-postop-srs-1x20"), "PTV")
    assert (c.metric_name, c.operator, c.limit.value, c.limit.unit, c.priority) == (
        "D95%", ">=", 100.0, "%Rx", "objective")
    assert (c.unacceptable_operator, c.unacceptable.value) == ("<", 90.0)


@pytest.mark.parametrize("fx, hytec, acceptable, tg101", [
    (1, 12.4, 14.0, 14.0),
    (3, 20.3, None, 21.9),
    (5, 25.3, None, 30.0),
])
def test_sbrt_cord_point_limit_is_hytec_with_tg101_as_alternative(fx, hytec, acceptable, tg101):
    """HyTEC (Sahgal 2021): Pmax 12.4-14 Gy / 1 fx, 20.3 Gy / 3 fx, 25.3 Gy / 5 fx."""
    p = load_protocol(f"sbrt-{fx}fx")
    by_id = {c.id: c for c in p.constraints()}
    cord = by_id["cord-pmax"]
    assert (cord.metric_name, cord.operator, cord.limit.value, cord.priority) == (
        "D0.035cc", "<=", hytec, "hard")
    assert (cord.acceptable.value if cord.acceptable else None) == acceptable
    assert cord.alternative is None and cord.sources == ("hytec-cord",)
    assert p.sources["hytec-cord"].doi == "10.1016/j.ijrobp.2019.09.038"
    assert "2021;110(1):124-136" in p.sources["hytec-cord"].reference
    alt = {a.id: a for a in p.alternatives}["tg101-cord"]
    assert alt.condition == "tg101-cord" and alt.replaces == ("cord-pmax",)
    (tg,) = alt.constraints
    assert (tg.structure, tg.limit.value) == ("SpinalCord", tg101)


@pytest.mark.parametrize("name", SHIPPED)
def test_no_alternative_drops_the_cord_on_the_presence_of_another_structure(name):
    """A contoured CaudaEquina alone never replaces the cord's limit or its requirement."""
    p = load_protocol(name)
    cord_ids = {c.id for c in p.constraints()
                if c.structure == "SpinalCord" and c.alternative is None}
    for a in p.alternatives:
        if a.condition is None:
            assert not set(a.replaces) & cord_ids, a.id
            assert "SpinalCord" not in a.makes_optional, a.id


def test_sib_cauda_alternatives():
    p = load_protocol("bone-sib-30-40-10fx")
    alt = {a.id: a for a in p.alternatives}
    cauda = alt["cauda-equina"]
    assert cauda.present == ("CaudaEquina",) and cauda.condition is None
    assert cauda.replaces == () and cauda.makes_optional == ()
    assert [c.id for c in cauda.constraints] == ["cauda-eqd2"]
    canal = alt["lumbosacral-cord-contour"]
    assert canal.condition == "lumbosacral" and canal.replaces == ("cord-dmax",)
    only = alt["lumbosacral-cauda-only"]
    assert (only.present, only.condition, only.makes_optional) == (
        ("CaudaEquina",), "lumbosacral", ("SpinalCord",))
    note = " ".join(p.notes)
    assert "34.09 Gy and 34.25 Gy, both at L4" in note
    assert "39.89 Gy at the sacrum" in note and "cauda-equina limit" in note
    # 39.89 Gy in 10 fractions at a/b 2: 39.89 (3.989 + 2) / 4 = 59.725 Gy
    assert "59.7 Gy EQD2" in note and round(39.89 * (3.989 + 2) / 4, 1) == 59.7
