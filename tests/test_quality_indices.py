"""Plan-quality indices on analytic phantoms, against closed-form values.

The phantom: a spherical target of radius r inside a cylindrical BODY, and a
spherically symmetric dose falling linearly with the distance rho from a
centre, ``D = 60 Gy - 2 Gy/mm * rho`` (0 beyond 30 mm). The isodose of level
L is then a sphere of radius ``R(L) = (60 - L) / 2`` mm, so

* PIV = 4/3 pi R^3, TV = 4/3 pi r^3, TV_PIV = the overlap of two spheres;
* Paddick CI = TV_PIV^2 / (TV PIV), RTOG CI = PIV / TV;
* GI = (R(L/2) / R(L))^3;
* for a concentric target, the fraction of its volume above D is
  (rho(D) / r)^3, so Dx% = 60 - 2 r (x/100)^(1/3) and
  HI = (D2% - D98%) / D50%.

Tolerances: volumes are within 1 % (README, Accuracy) and the target is a
stack of 1 mm slabs (its volume is 0.3 % below the sphere's), so a ratio of
volumes is held to 2 %, one with a squared volume to 3 %; doses to 1 % or
0.2 Gy, which gives HI to 0.01.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest

from dvheval import compute_dvhs
from dvheval.check import check_plan
from dvheval.engine.metrics import parse_metric
from dvheval.engine.quality import find_external
from dvheval.errors import MetricError
from dvheval.protocol import load_protocol
from dvheval.protocol.problems import ProtocolError
from dvheval.vocab import Verdict

from .phantoms import PhantomGrid, Shape, cylinder, sphere

D0, SLOPE = 60.0, 2.0  # Gy at the centre, Gy per mm
GRID = PhantomGrid(origin=(-40.0, -40.0, -40.0), spacing=(1.0, 1.0, 1.0), shape=(81, 81, 81))


def radial_dose(floor=0.0, d0=D0, slope=SLOPE):
    def dose(x, y, z):
        return np.maximum(d0 - slope * np.sqrt(x * x + y * y + z * z), floor)

    return dose


def radius(level, d0=D0, slope=SLOPE):
    return (d0 - level) / slope


def ball(r):
    return 4.0 / 3.0 * math.pi * r**3


def lens(r, big_r, d):
    """Volume of the intersection of spheres of radii r and big_r, centres d apart."""
    if d >= r + big_r:
        return 0.0
    if d <= abs(big_r - r):
        return ball(min(r, big_r))
    return (math.pi * (big_r + r - d) ** 2
            * (d * d + 2 * d * r - 3 * r * r + 2 * d * big_r + 6 * r * big_r - 3 * big_r**2)
            / (12 * d))


def body(z0=-36.0, z1=36.0, interpreted_type="EXTERNAL", name="BODY"):
    shape = cylinder(name, 36.0, z0, z1, 1.0)  # the same slice thickness as the target
    shape.interpreted_type = interpreted_type
    return shape


def target(r, cx=0.0):
    shape = sphere("PTV", r, 1.0, cx=cx)
    shape.interpreted_type = "PTV"
    return shape


INDICES = ["PaddickCI", "RTOGCI", "GI", "HI", "IsodoseVolume", "PaddickCI(36Gy)",
           "GI(60%)", "IsodoseVolume(3600cGy)"]


def plan_of(tmp_path, write, shapes, dose=None, rx=36.0, metrics=INDICES, grid=GRID):
    folder = write(tmp_path, shapes, dose or radial_dose(), grid=grid,
                   prescriptions=[("PTV", rx)], fractions=1)
    return compute_dvhs([folder], metrics=metrics)


# ------------------------------------------------------------------ grammar
@pytest.mark.parametrize(("name", "kind", "value", "unit", "out"), [
    ("PaddickCI", "paddick_ci", None, None, "1"),
    ("paddick ci(30Gy)", "paddick_ci", 30.0, "Gy", "1"),
    ("RTOGCI(95%)", "rtog_ci", 95.0, "%", "1"),
    ("GI(2000cGy)", "gradient_index", 2000.0, "cGy", "1"),
    ("HI", "homogeneity_index", None, None, "1"),
    ("IsodoseVolume(40Gy)", "isodose_volume", 40.0, "Gy", "cc"),
    ("IsodoseVolume(40Gy)[cc]", "isodose_volume", 40.0, "Gy", "cc"),
])
def test_index_names_parse(name, kind, value, unit, out):
    m = parse_metric(name)
    assert (m.kind, m.value, m.value_unit, m.output_unit) == (kind, value, unit, out)
    assert not m.is_dose
    assert m.is_index == (out == "1")
    assert m.needs_prescription == (kind != "homogeneity_index" and unit in (None, "%"))


@pytest.mark.parametrize("name", ["PaddickCI[%]", "GI[EQD2, a/b=2]", "HI(30Gy)", "RTOGCI(0Gy)",
                                  "IsodoseVolume(40Gy)[%]", "PaddickCI(30cc)", "CI"])
def test_bad_index_names_are_refused(name):
    with pytest.raises(MetricError):
        parse_metric(name)


def test_external_is_found_by_type_then_by_name():
    assert find_external([("Patient", "EXTERNAL"), ("Body", "ORGAN")]) == ("Patient", None)
    assert find_external([("PTV", "PTV"), ("External", "")]) == ("External", None)
    # a Skin ROI is often a shell under the surface: never taken for the external
    name, problem = find_external([("PTV", "PTV"), ("Skin", "ORGAN")])
    assert name is None and "no external contour" in problem
    name, problem = find_external([("BODY", ""), ("Outline", "")])
    assert name is None and "ambiguous" in problem


# --------------------------------------------------------------- phantoms
@pytest.mark.parametrize(("r", "level"), [(10.0, 36.0), (12.0, 40.0)], ids=["R>r", "R<r"])
def test_concentric_sphere_indices(tmp_path, write, r, level):
    plan = plan_of(tmp_path, write, [body(), target(r)], rx=level)
    res = plan["PTV"].metrics
    big_r = radius(level)
    tv, piv = ball(r), ball(big_r)
    inside = ball(min(r, big_r))
    assert res["IsodoseVolume"] == pytest.approx(piv / 1000, rel=0.01)
    assert res["PaddickCI"] == pytest.approx(inside**2 / (tv * piv), rel=0.03)
    assert res["RTOGCI"] == pytest.approx(piv / tv, rel=0.02)
    assert res["GI"] == pytest.approx((radius(level / 2) / big_r) ** 3, rel=0.02)
    # GI(60%) of the prescription: levels 0.6 and 0.3 of it
    gi60 = (radius(0.3 * level) / radius(0.6 * level)) ** 3
    assert res["GI(60%)"] == pytest.approx(gi60, rel=0.02)


def test_default_level_is_the_prescription(tmp_path, write):
    res = plan_of(tmp_path, write, [body(), target(10.0)])["PTV"].metrics
    assert res["PaddickCI(36Gy)"] == pytest.approx(res["PaddickCI"], rel=1e-12)
    assert res["IsodoseVolume(3600cGy)"] == pytest.approx(res["IsodoseVolume"], rel=1e-12)


def test_offset_sphere_overlap_is_the_lens(tmp_path, write):
    # target r = 10 mm centred 8 mm from the dose centre; 36 Gy isodose R = 12 mm
    r, d, big_r = 10.0, 8.0, radius(36.0)
    plan = plan_of(tmp_path, write, [body(), target(r, cx=d)])
    res = plan["PTV"].metrics
    overlap = lens(r, big_r, d)
    assert 0.3 < overlap / ball(r) < 0.9  # a real partial overlap
    assert res["PaddickCI"] == pytest.approx(overlap**2 / (ball(r) * ball(big_r)), rel=0.03)
    assert res["RTOGCI"] == pytest.approx(ball(big_r) / ball(r), rel=0.02)


def test_homogeneity_index_of_a_linear_radial_dose(tmp_path, write):
    r = 10.0
    res = plan_of(tmp_path, write, [body(), target(r)])["PTV"].metrics

    def dx(x):
        return D0 - SLOPE * r * (x / 100.0) ** (1.0 / 3.0)

    assert res["HI"] == pytest.approx((dx(2) - dx(98)) / dx(50), abs=0.01)


def test_uniform_target_dose_has_zero_homogeneity_index(tmp_path, write):
    res = plan_of(tmp_path, write, [body(), target(8.0)], dose=lambda x, y, z: 0 * x + 20.0,
                  rx=20.0, metrics=["HI"])["PTV"].metrics
    assert res["HI"] == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------- the external and the grid
def test_external_past_the_grid_with_low_boundary_dose_is_used(tmp_path, write):
    # BODY runs to z = 60 mm, the grid ends at 40.5 mm where the dose is 0
    plan = plan_of(tmp_path, write, [body(z1=60.0), target(10.0)])
    assert plan["BODY"].status == "partial"
    note = next(w for w in plan.warnings if w.startswith("quality indices"))
    assert "'BODY'" in note and "taken as 0 for levels above 0 Gy" in note
    res = plan["PTV"].metrics
    assert res["PaddickCI"] == pytest.approx(ball(10.0) / ball(12.0), rel=0.03)


def test_external_past_the_grid_with_boundary_dose_at_the_level_is_not_computable(
        tmp_path, write):
    # a 20 Gy floor everywhere: the 36 Gy isodose ends inside the grid, the 18 Gy
    # one (half the level, for GI) may go on beyond it
    plan = plan_of(tmp_path, write, [body(z1=60.0), target(10.0)],
                   dose=radial_dose(floor=20.0))
    ptv = plan["PTV"]
    assert ptv.metrics["PaddickCI"] == pytest.approx(ball(10.0) / ball(12.0), rel=0.03)
    assert ptv.metrics["GI"] is None
    assert "outside the dose grid" in ptv.metric_errors["GI"]
    assert "BODY" in ptv.metric_errors["GI"]


def test_unknown_doses_in_the_grid_bound_nothing():
    from dvheval.engine.quality import External, boundary_max

    dose = np.zeros((4, 4, 4))
    assert boundary_max(dose) == 0.0
    dose[2, 2, 2] = np.nan
    assert boundary_max(dose) == math.inf
    assert "unknown" in External("BODY", None, 0.8, math.inf).describe()


def test_external_only_by_name(tmp_path, write):
    plan = plan_of(tmp_path, write, [body(interpreted_type="ORGAN", name="Body"), target(10.0)])
    assert plan["PTV"].metrics["RTOGCI"] == pytest.approx(ball(12.0) / ball(10.0), rel=0.02)


def test_no_external_means_not_computable_with_the_reason(tmp_path, write):
    plan = plan_of(tmp_path, write, [target(10.0)])
    ptv = plan["PTV"]
    assert ptv.metrics["PaddickCI"] is None
    assert "no external contour" in ptv.metric_errors["PaddickCI"]
    # HI needs only the target
    assert ptv.metrics["HI"] is not None


def test_two_externals_are_ambiguous(tmp_path, write):
    plan = plan_of(tmp_path, write, [body(), body(name="BODY2"), target(10.0)])
    assert "ambiguous" in plan["PTV"].metric_errors["GI"]


def test_selected_structures_still_read_the_external(tmp_path, write):
    folder = write(tmp_path, [body(), target(10.0)], radial_dose(),
                   grid=GRID, prescriptions=[("PTV", 36.0)], fractions=1)
    plan = compute_dvhs([folder], structures=["PTV"], metrics=["RTOGCI"])
    assert [s.name for s in plan.structures] == ["PTV"]
    assert plan["PTV"].metrics["RTOGCI"] == pytest.approx(ball(12.0) / ball(10.0), rel=0.02)


def test_no_level_and_no_prescription(tmp_path, write):
    folder = write(tmp_path, [body(), target(10.0)], radial_dose(), grid=GRID)
    ptv = compute_dvhs([folder], metrics=["PaddickCI", "PaddickCI(36Gy)"])["PTV"]
    assert ptv.metrics["PaddickCI"] is None
    assert "needs a dose level" in ptv.metric_errors["PaddickCI"]
    assert ptv.metrics["PaddickCI(36Gy)"] == pytest.approx(ball(10) / ball(12), rel=0.03)


def test_level_from_the_rtplan_prescription_named_like_the_structure(tmp_path, write):
    # two RTPLAN levels: no single prescription, but one is named like the target
    folder = write(tmp_path, [body(), target(10.0)], radial_dose(), grid=GRID,
                   prescriptions=[("PTV", 36.0), ("PTV_Low", 30.0)], fractions=1)
    ptv = compute_dvhs([folder], metrics=["RTOGCI", "V95%"])["PTV"]
    assert ptv.metrics["RTOGCI"] == pytest.approx(ball(12.0) / ball(10.0), rel=0.02)
    assert ptv.metrics["V95%"] is None  # the other relative metrics keep their rule


def test_partly_covered_target_is_not_computable(tmp_path, write):
    shape = Shape("PTV", [(float(z), [(0.0, 0.0, 8.0, 1)]) for z in range(30, 52, 2)], 2.0,
                  "PTV")
    plan = plan_of(tmp_path, write, [body(z1=60.0), shape])
    assert "partly outside the dose grid" in plan["PTV"].metric_errors["PaddickCI"]


# ------------------------------------------------------------- protocols
# the protocol's plan: a dose maximum within 150 % of the prescription (the
# plausibility check), 54 - 1.5 rho Gy with 37 Gy prescribed: R(37) = 11.33 mm,
# R(18.5) = 23.67 mm, GI = 9.11
SRS_D0, SRS_SLOPE, SRS_RX = 54.0, 1.5, 37.0

SRS = """\
format_version: 1
name: srs-test
title: "SRS test"
version: "1"
date: "2026-12-01"
sources:
  paddick: {short: "Paddick 2000", reference: "J Neurosurg 93 Suppl 3:219-222"}
fractions: 1
prescriptions:
  PTV: {dose_gy: 37}
structures:
  - name: PTV
    type: target
    prescription: PTV
    constraints:
      - check: "PaddickCI >= 0.5"
        priority: objective
        unacceptable: "< 0.3"
        source: paddick
      - check: "GI <= 9"
        priority: objective
        acceptable: 10
        source: paddick
    report: [PaddickCI, RTOGCI, HI, IsodoseVolume(18Gy)]
"""


def srs_check(tmp_path, write, shapes):
    path = tmp_path / "srs.yaml"
    path.write_text(SRS, encoding="utf-8")
    folder = write(tmp_path, shapes, radial_dose(d0=SRS_D0, slope=SRS_SLOPE), grid=GRID,
                   prescriptions=[("PTV", SRS_RX)], fractions=1)
    return check_plan(compute_dvhs([folder]), load_protocol(path))


def test_protocol_with_indices_is_judged(tmp_path, write):
    res = srs_check(tmp_path, write, [body(), target(10.0)])
    by_metric = {(r.constraint.metric_name, r.constraint.is_report): r for r in res.results}
    ci = by_metric[("PaddickCI", False)]
    assert ci.verdict == Verdict.PASS and ci.unit == "1"
    big_r = radius(SRS_RX, SRS_D0, SRS_SLOPE)
    assert ci.value == pytest.approx(ball(10) / ball(big_r), rel=0.03)
    # GI = 9.11: beyond 9, within the acceptable 10
    gi = by_metric[("GI", False)]
    assert gi.verdict == Verdict.ACCEPTABLE
    assert gi.value == pytest.approx((radius(SRS_RX / 2, SRS_D0, SRS_SLOPE) / big_r) ** 3,
                                     rel=0.01)
    assert by_metric[("IsodoseVolume(18Gy)", True)].value == pytest.approx(
        ball(radius(18.0, SRS_D0, SRS_SLOPE)) / 1000, rel=0.01)
    assert res.verdict == Verdict.ACCEPTABLE and res.exit_code == 0
    assert "quality indices: the external contour is 'BODY', wholly inside the dose grid" \
        in res.warnings


def test_missing_external_closes_the_gate(tmp_path, write):
    res = srs_check(tmp_path, write, [target(10.0)])
    gating = [r for r in res.results if not r.constraint.is_report]
    assert {r.verdict for r in gating} == {Verdict.NOT_EVALUATED}
    assert all("no external contour" in r.reason for r in gating)
    reports = [r for r in res.results if r.constraint.metric_name == "PaddickCI"
               and r.constraint.is_report]
    assert reports[0].verdict == Verdict.REPORT
    assert res.verdict == Verdict.NOT_EVALUATED and res.exit_code == 1


@pytest.mark.parametrize(("check", "message"), [
    ("PaddickCI >= 0.7 Gy", "without unit"),
    ("IsodoseVolume(18Gy) <= 30", "needs a unit"),
    ("PaddickCI >= 2000", "index limit"),
])
def test_protocol_index_limits_are_validated(tmp_path, check, message):
    path = tmp_path / "bad.yaml"
    path.write_text(SRS.replace("PaddickCI >= 0.5", check), encoding="utf-8")
    with pytest.raises(ProtocolError, match=message):
        load_protocol(path)


def test_reports_of_indices_render_and_validate(tmp_path, write):
    import jsonschema

    from dvheval.reports import render

    res = srs_check(tmp_path, write, [body(), target(10.0)])
    doc = json.loads(render(res, "json"))
    schema = json.loads(resources.files("dvheval.schemas").joinpath("check.schema.json")
                        .read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(doc)
    ci = next(c for c in doc["constraints"] if c["metric"] == "PaddickCI" and c["operator"])
    assert ci["limit_unit"] == "1" and ci["limit"] == 0.5
    shown = f"{ci['value']:.2f}"
    for fmt in ("text", "junit", "markdown", "html"):
        out = render(res, fmt)
        assert shown in out, fmt
        # an index is printed without unit
        assert f"{shown} 1" not in out and "0.5 1" not in out, fmt
    assert render(res, "pdf").startswith(b"%PDF")


def test_batch_database_stores_indices(tmp_path, write):
    import sqlite3

    from dvheval.batch import run_batch

    path = tmp_path / "srs.yaml"
    path.write_text(SRS, encoding="utf-8")
    archive = tmp_path / "archive"
    write(archive, [body(), target(10.0)], radial_dose(d0=SRS_D0, slope=SRS_SLOPE), grid=GRID,
          prescriptions=[("PTV", SRS_RX)], fractions=1)
    db = tmp_path / "results.sqlite"
    run_batch(archive, load_protocol(path), db, jobs=1)
    conn = sqlite3.connect(db)
    try:
        verdicts = dict(((m, lu), (v, verdict)) for m, lu, v, verdict in conn.execute(
            "SELECT metric, limit_unit, value, verdict FROM verdicts WHERE operator IS NOT NULL"))
        metrics = dict(((m, u), v) for m, u, v in conn.execute(
            "SELECT metric, unit, value FROM metrics WHERE in_protocol = 1"))
    finally:
        conn.close()
    big_r = radius(SRS_RX, SRS_D0, SRS_SLOPE)
    value, verdict = verdicts[("PaddickCI", "1")]
    assert verdict == "PASS" and value == pytest.approx(ball(10) / ball(big_r), rel=0.03)
    assert verdicts[("GI", "1")][1] == "ACCEPTABLE"
    assert metrics[("HI", "1")] is not None
    assert metrics[("IsodoseVolume(18Gy)", "cc")] == pytest.approx(
        ball(radius(18.0, SRS_D0, SRS_SLOPE)) / 1000, rel=0.01)


def test_readme_index_constraints_are_valid(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "PaddickCI" in b)
    text = SRS.split("structures:")[0].replace(
        "sources:\n", "sources:\n  local: {short: local, reference: local choice}\n")
    text += "structures:\n  - name: PTV\n    type: target\n    prescription: PTV\n" + block
    path = tmp_path / "srs-test.yaml"
    path.write_text(text, encoding="utf-8")
    protocol = load_protocol(path)
    checks = {c.metric_name: c.limit.value for c in protocol.constraints() if c.limit}
    assert checks == {"PaddickCI": 0.7, "GI(20Gy)": 3.0}


def test_dvh_json_with_indices_validates(tmp_path, write):
    import jsonschema

    plan = plan_of(tmp_path, write, [body(), target(10.0)], metrics=["PaddickCI", "HI"])
    doc = json.loads(json.dumps(plan.to_dict(include_dvh=False)))
    schema = json.loads(resources.files("dvheval.schemas").joinpath("dvh.schema.json")
                        .read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(doc)
    ptv = next(s for s in doc["structures"] if s["name"] == "PTV")
    assert ptv["metrics"]["PaddickCI"] == pytest.approx(ball(10) / ball(12), rel=0.03)
    assert any(w.startswith("quality indices: the external contour is 'BODY'")
               for w in doc["warnings"])
