"""Derived structures (structure algebra) against closed forms.

Booleans are exact per contour plane, so their volumes are compared with the
slab-model truth (the closed-form area of each plane times the slice
thickness) to 0.1 %, and with the continuous closed form (spherical lens) to
the 1 % of the phantom tests. Margins are compared with a directly contoured
sphere of the expanded or contracted radius, computed by the same engine,
within the phantom tests' 1 % volume tolerance, and with the closed-form
sphere volume within 1 %. The one exception: on 3 mm planes the directly
contoured 7 mm sphere is itself 1.6 % above its closed form (its end caps), so
the contraction is compared with it within 2.5 % (and with the closed form
within 1 %).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pydicom
import pytest

from dvheval import compute_dvhs
from dvheval.dicom import read_structure_set
from dvheval.engine.derive import DerivationError, parse_derivation, parse_expression

from .phantoms import LinearDose, polygon_area, sphere

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"
UNIFORM = LinearDose(30.0, 0.0, 0)


def volumes(plan) -> dict[str, float]:
    return {s.name: s.volume_cc * 1000.0 for s in plan.structures if s.volume_cc is not None}


def lens_area(r: float, d: float) -> float:
    """Area of the intersection of two discs of radius r whose centres are d apart."""
    if d >= 2 * r:
        return 0.0
    return 2 * r * r * math.acos(d / (2 * r)) - 0.5 * d * math.sqrt(4 * r * r - d * d)


@pytest.fixture(scope="module")
def two_spheres(tmp_path_factory):
    from .phantoms import write_phantom

    folder = tmp_path_factory.mktemp("two") / "plan"
    shapes = [sphere("A", 10.0, 2.0), sphere("B", 10.0, 2.0, cx=10.0), sphere("Core", 4.0, 2.0)]
    write_phantom(folder, shapes, UNIFORM)
    derive = {"U": "A | B", "I": "A & B", "D": "A - B", "Shell": "A - Core",
              "X": "A + (3,0,0)mm", "Z": "A + (0,0,4)mm"}
    return shapes, volumes(compute_dvhs([folder], derive=derive, metrics=["Dmax"]))


def test_intersection_union_difference_of_overlapping_spheres(two_spheres):
    shapes, v = two_spheres
    a = shapes[0]
    # slab truth: on each plane the lens of two discs of that plane's radius
    lens_slabs = sum(a.thickness * lens_area(d[0][2], 10.0) for _, d in a.planes)
    assert v["I"] == pytest.approx(lens_slabs, rel=1e-3)
    # continuous truth: lens of two spheres R = 10 mm, centres 10 mm apart
    lens = math.pi * (4 * 10.0 + 10.0) * (2 * 10.0 - 10.0) ** 2 / 12
    assert v["I"] == pytest.approx(lens, rel=0.01)
    union_slabs = 2 * a.volume_mm3() - lens_slabs
    assert v["U"] == pytest.approx(union_slabs, rel=1e-3)
    assert v["U"] == pytest.approx(2 * 4 / 3 * math.pi * 1000 - lens, rel=0.015)
    assert v["D"] == pytest.approx(a.volume_mm3() - lens_slabs, rel=1e-3)
    # identities of the set algebra
    assert v["U"] + v["I"] == pytest.approx(v["A"] + v["B"], rel=1e-6)
    assert v["D"] == pytest.approx(v["A"] - v["I"], rel=1e-6)


def test_shell_is_sphere_minus_inner_sphere(two_spheres):
    shapes, v = two_spheres
    truth = shapes[0].volume_mm3() - shapes[2].volume_mm3()
    assert v["Shell"] == pytest.approx(truth, rel=1e-3)
    assert v["Shell"] == pytest.approx(4 / 3 * math.pi * (10.0**3 - 4.0**3), rel=0.015)


def test_anisotropic_margins_sweep_the_sphere(two_spheres):
    shapes, v = two_spheres
    a = shapes[0]
    # + (3, 0, 0) mm: every plane's disc swept 6 mm along x adds a 2r x 6 mm rectangle
    swept = sum(a.thickness * 2 * d[0][2] * 6.0 for _, d in a.planes)
    assert v["X"] == pytest.approx(v["A"] + swept, rel=0.005)
    # + (0, 0, 4) mm: the sphere opened at its equator by an 8 mm cylinder
    assert v["Z"] == pytest.approx(v["A"] + 8.0 * polygon_area(10.0), rel=0.005)


@pytest.mark.parametrize("t, tol_shrink", [(1.0, 0.01), (3.0, 0.025)])
def test_sphere_margins_give_the_expanded_and_contracted_sphere(tmp_path, write, t,
                                                                tol_shrink):
    shapes = [sphere("S10", 10.0, t), sphere("S13", 13.0, t), sphere("S7", 7.0, t)]
    folder = write(tmp_path, shapes, UNIFORM)
    plan = compute_dvhs([folder], derive=["Grow=S10 + 3mm", "Shrink=S10 - 3 mm"],
                        metrics=["Dmax"])
    v = volumes(plan)
    assert v["Grow"] == pytest.approx(v["S13"], rel=0.01)
    assert v["Grow"] == pytest.approx(4 / 3 * math.pi * 13.0**3, rel=0.01)
    assert v["Shrink"] == pytest.approx(v["S7"], rel=tol_shrink)
    assert v["Shrink"] == pytest.approx(4 / 3 * math.pi * 7.0**3, rel=0.01)
    grow = plan.structure("Grow")
    assert grow.number > max(plan.structure(n).number for n in ("S10", "S13", "S7"))
    assert grow.type == "ORGAN"


def test_expansion_adds_planes_on_the_same_spacing(tmp_path, write):
    from dvheval.engine.derive import derive_structures

    folder = write(tmp_path, [sphere("S10", 10.0, 3.0)], UNIFORM)
    sset = read_structure_set(folder / "rs.dcm")
    grown = derive_structures(sset, ["G=S10 + 3mm"], 3.0).rois[0]
    zs = sorted({round(float(c.points[0, 2]), 6) for c in grown.contours})
    # S10 has planes -9 .. 9 mm; the 13 mm sphere reaches the planes at +-12 mm
    assert zs == [float(z) for z in range(-12, 13, 3)]


def test_sample_plan_identities():
    # PTV30 of the sample plan excludes PTV40 (a shell around it): their
    # intersection is empty (the hole is PTV40 + 5 mm), so PTV40 + 8 mm stands in
    # for an overlapping B
    derive = {"B": "PTV40 + 8mm", "Union": "PTV30 | B", "Inter": "PTV30 & B",
              "Ring": "PTV30 - B", "Empty": "PTV30 & PTV40", "Rest": "PTV30 - PTV40",
              "Kidneys": "kidney_l | Kidney_R"}
    plan = compute_dvhs([SAMPLE], derive=derive, metrics=["Dmax"])
    v = volumes(plan)
    assert 0 < v["Inter"] < v["B"]
    assert v["Union"] + v["Inter"] == pytest.approx(v["PTV30"] + v["B"], rel=1e-4)
    assert v["Ring"] == pytest.approx(v["PTV30"] - v["Inter"], rel=1e-4)
    assert plan.structure("Empty").status == "empty"
    assert v["Rest"] == pytest.approx(v["PTV30"], rel=1e-6)
    assert v["Kidneys"] == pytest.approx(v["Kidney_L"] + v["Kidney_R"], rel=1e-4)
    assert plan.structure("Ring").type == "PTV"


def test_missing_operand_gives_an_empty_structure_with_a_warning():
    plan = compute_dvhs([SAMPLE], derive=["Both=PTV30 | NoSuchROI", "Void=PTV30 | Duodenum"],
                        structures=["Both", "Void", "PTV30"], metrics=["Dmax"])
    both, void = plan.structure("Both"), plan.structure("Void")
    assert both.status == "empty" and both.volume_cc is None
    assert any("'NoSuchROI' is not in the structure set" in w for w in both.warnings)
    assert void.status == "empty"
    assert any("'Duodenum' has no closed contours" in w for w in void.warnings)
    assert plan.structure("PTV30").status == "ok"


def test_derived_name_clashing_with_an_roi_is_refused():
    with pytest.raises(DerivationError, match="already used by ROI 'PTV30'"):
        compute_dvhs([SAMPLE], derive=["ptv30=PTV40 + 1mm"], metrics=["Dmax"])


@pytest.mark.parametrize("text, pos, words", [
    ("PTV30 - (PTV40 + 2mm", 20, "expected ')'"),
    ("A | B - C", 6, "mixing '|' and '-' needs parentheses"),
    ("A - B + 2mm", 6, "ambiguous margin"),
    ("A + 3", 4, "needs its unit"),
    ("A + 3cm", 4, "in mm, not 'cm'"),
    ("A + 60mm", 4, "at most 50 mm"),
    ("A + B", 4, "expected a margin such as 3mm"),
    ("A + (3,-1,2)mm", 7, "distances >= 0"),
    ("A | ", 4, "expression ends"),
    ("A )", 2, "')' without '('"),
    ('A | "Niere li', 4, "unterminated quoted name"),
    ("3mm | A", 0, "expected a structure name"),
    ("A ; B", 2, "expected an operator"),
])
def test_parser_errors_point_at_the_position(text, pos, words):
    with pytest.raises(DerivationError) as info:
        parse_expression(text)
    assert info.value.position == pos, str(info.value)
    assert words in str(info.value)
    assert info.value.caret.splitlines()[1] == " " * pos + "^"


def test_parser_bounds():
    with pytest.raises(DerivationError, match="at most 500"):
        parse_expression("A | " * 200 + "A")
    with pytest.raises(DerivationError, match="nested deeper than 20"):
        parse_expression("(" * 25 + "A" + ")" * 25)
    with pytest.raises(DerivationError, match="needs a name"):
        parse_derivation("=A | B")
    with pytest.raises(DerivationError, match="NAME=EXPRESSION"):
        parse_derivation("A | B")


def test_parser_accepts_the_documented_forms():
    d = parse_derivation("PTV30_eval=PTV30 - (PTV40 + 2mm)")
    assert (d.name, d.expression) == ("PTV30_eval", "PTV30 - (PTV40 + 2mm)")
    tree = parse_expression('"Niere li" | \'Niere re\'')
    assert (tree.op, tree.left.name, tree.right.name) == ("|", "Niere li", "Niere re")
    m = parse_expression("Cord + (2, 2.5, 5) mm - 1mm")
    assert (m.mm, m.grow, m.operand.mm, m.operand.grow) == ((1, 1, 1), False, (2, 2.5, 5), True)
    assert parse_expression("A - B - C").left.op == "-"


def test_write_rtstruct_round_trip(tmp_path):
    from dvheval.engine.derive import derive_structures, write_derived_rtstruct

    plan = tmp_path / "plan"
    shutil.copytree(SAMPLE, plan)
    sset = read_structure_set(plan / "RTSTRUCT.dcm")
    built = derive_structures(sset, ["Cord_PRV=SpinalCord + 3mm", "Ring=PTV30 - PTV40"],
                              sset.slice_thickness())
    out = tmp_path / "derived.dcm"
    with pytest.raises(Exception, match="refusing to overwrite"):
        write_derived_rtstruct(plan / "RTSTRUCT.dcm", built.rois, plan / "RTSTRUCT.dcm")
    uid = write_derived_rtstruct(plan / "RTSTRUCT.dcm", built.rois, out)
    src = pydicom.dcmread(plan / "RTSTRUCT.dcm")
    new = pydicom.dcmread(out)
    assert new.SOPInstanceUID == uid != src.SOPInstanceUID
    for kw in ("PatientID", "PatientName", "StudyInstanceUID"):
        assert str(new.get(kw)) == str(src.get(kw)), kw
    f_new, f_src = new.ReferencedFrameOfReferenceSequence[0], \
        src.ReferencedFrameOfReferenceSequence[0]
    assert f_new.FrameOfReferenceUID == f_src.FrameOfReferenceUID
    series = lambda f: f.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]  # noqa: E731
    assert series(f_new).SeriesInstanceUID == series(f_src).SeriesInstanceUID
    # read back as the plan's only structure set: same volumes
    (plan / "RTSTRUCT.dcm").rename(tmp_path / "original.dcm")
    shutil.copy(out, plan / "RTSTRUCT.dcm")
    back = volumes(compute_dvhs([plan], metrics=["Dmax"]))
    shutil.copy(tmp_path / "original.dcm", plan / "RTSTRUCT.dcm")
    live = volumes(compute_dvhs([plan], derive=["Cord_PRV=SpinalCord + 3mm",
                                                "Ring=PTV30 - PTV40"], metrics=["Dmax"]))
    for name in ("Cord_PRV", "Ring"):
        assert back[name] == pytest.approx(live[name], rel=1e-4)
    assert live["Cord_PRV"] > 2 * live["SpinalCord"]


# ------------------------------------------------------------ protocol and CLI
PROTOCOL = """\
format_version: 1
name: derived-test
title: Derived structures
version: "1"
date: "2026-01-01"
sources:
  ref:
    short: Ref 2020
    reference: A reference to a published paper, volume and pages.
fractions: 10
prescriptions:
  PTV30: {dose_gy: 30}
derived:
  Kidneys: "Kidney_L | Kidney_R"
  PTV40_PRV: PTV40 + 3mm
structures:
  - name: Kidneys
    constraints:
      - {check: Mean <= 12 Gy, source: ref}
  - name: PTV40_PRV
    constraints:
      - {check: Dmax <= 45 Gy, source: ref}
"""


def _run(*args):
    from typer.testing import CliRunner

    from dvheval.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_protocol_derived_section_is_checked(tmp_path):
    import json

    path = tmp_path / "derived-test.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    res = _run("check", SAMPLE, "-p", path, "-f", "json")
    doc = json.loads(res.stdout)
    rows = {c["structure"]: c for c in doc["constraints"]}
    assert rows["Kidneys"]["verdict"] == "PASS"
    kidneys = volumes(compute_dvhs([SAMPLE], structures=["Kidney_L", "Kidney_R"],
                                   metrics=["Mean"]))
    assert rows["Kidneys"]["value"] == pytest.approx(
        (3.88 * kidneys["Kidney_L"] + 3.78 * kidneys["Kidney_R"]) / sum(kidneys.values()),
        abs=0.02)
    # a missing operand: the derived structure is empty and the gate closes
    res = _run("check", SAMPLE, "-p", path, "-f", "json", "--derive", "X=Kidney_L | Nope")
    assert res.exit_code == 0, res.output
    broken = PROTOCOL.replace("Kidney_L | Kidney_R", "Kidney_L | Kidney_X")
    path.write_text(broken, encoding="utf-8")
    res = _run("check", SAMPLE, "-p", path, "-f", "json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    row = next(c for c in doc["constraints"] if c["structure"] == "Kidneys")
    assert row["verdict"] == "NOT_EVALUATED"


def test_protocol_derived_errors_are_located(tmp_path):
    from dvheval.protocol import validate_protocol_file

    bad = PROTOCOL.replace('"Kidney_L | Kidney_R"', '"Kidney_L | Kidney_R - Liver"')
    path = tmp_path / "derived-test.yaml"
    path.write_text(bad, encoding="utf-8")
    errors = [str(e) for e in validate_protocol_file(path)]
    assert len(errors) == 1
    line = bad.splitlines().index('  Kidneys: "Kidney_L | Kidney_R - Liver"') + 1
    assert f"derived-test.yaml:{line}: derived.Kidneys: mixing '|' and '-'" in errors[0]
    assert "at character 21" in errors[0]


def test_cli_derive_and_write_rtstruct(tmp_path):
    import json

    out = tmp_path / "derived.dcm"
    res = _run("dvh", SAMPLE, "--derive", "Kidneys=Kidney_L | Kidney_R", "-s", "Kidneys",
               "-m", "Mean", "-f", "json", "--write-rtstruct", out)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["structures"][0]["name"] == "Kidneys"
    assert read_structure_set(out).rois[0].name == "Kidneys"
    res = _run("dvh", SAMPLE, "--derive", "K=Kidney_L | (Kidney_R")
    assert res.exit_code == 2
    assert "error: derived structure 'K': expected ')'" in res.output
    res = _run("dvh", SAMPLE, "--derive", "K=Kidney_L", "--write-rtstruct",
               SAMPLE / "RTSTRUCT.dcm")
    assert res.exit_code == 2
    assert "refusing to overwrite an input file" in res.output
