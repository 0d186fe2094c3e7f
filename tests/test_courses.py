"""Treatment courses: the cumulative EQD2/BED, each course at its own fraction count."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dvheval.cli import app
from dvheval.engine.combine import Course
from dvheval.engine.compute import compute_dvhs
from dvheval.engine.courses import compute_course_dvhs
from dvheval.errors import InputError

from .sums_support import SAMPLE, copy_plan, uniform_plan

D_METRICS = ["Dmax", "Dmin", "Dmean", "D98%", "D50%", "D2%", "D0.03cc"]


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def hand_eqd2(total_gy: float, fractions: int, ab: float) -> float:
    """EQD2 = D (D/n + a/b) / (2 + a/b), written out independently of the product."""
    return total_gy * (total_gy / fractions + ab) / (2.0 + ab)


@pytest.fixture(scope="module")
def uniform(tmp_path_factory):
    """A uniform 30 Gy plan in 10 fractions and a copy of it as a second course."""
    root = tmp_path_factory.mktemp("courses")
    first = uniform_plan(root / "first", 30.0, 10)
    second = root / "second"
    second.mkdir()
    import pydicom

    from dvheval.testing.synthetic import new_uid

    plan = pydicom.dcmread(first / "rp.dcm")
    dose = pydicom.dcmread(first / "rd0.dcm")
    plan.SOPInstanceUID = new_uid()
    dose.SOPInstanceUID = new_uid()
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan.SOPInstanceUID
    plan.save_as(second / "rp.dcm")
    dose.save_as(second / "rd0.dcm")
    return first, second, plan, dose


def _second_course(uniform, folder, scale=1.0, fractions=None):
    """Another course of the uniform phantom: dose x ``scale`` in ``fractions``."""
    from dvheval.testing.synthetic import new_uid

    _, _, plan, dose = uniform
    plan, dose = plan.copy(), dose.copy()
    folder.mkdir()
    plan.SOPInstanceUID = new_uid()
    dose.SOPInstanceUID = new_uid()
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan.SOPInstanceUID
    dose.DoseGridScaling = float(dose.DoseGridScaling) * scale
    if fractions is not None:
        plan.FractionGroupSequence[0].NumberOfFractionsPlanned = fractions
    plan.save_as(folder / "rp.dcm")
    dose.save_as(folder / "rd0.dcm")
    return folder


def _all_metrics(plan, roi):
    return [plan[roi].metrics[m] for m in D_METRICS]


def test_two_identical_10_fraction_courses_are_20_fractions_of_the_same_dose(uniform):
    first, second = uniform[:2]
    res = compute_dvhs(courses=[first, second], metrics=D_METRICS, alpha_beta=3.0)
    # 2 x 30 Gy at 3 Gy per fraction = 60 Gy in 20 fractions: 60 (3 + 3) / 5 = 72 Gy EQD2
    truth = hand_eqd2(60.0, 20, 3.0)
    assert truth == pytest.approx(72.0)
    for roi in ("PTV", "Cord"):
        assert _all_metrics(res, roi) == pytest.approx([truth] * len(D_METRICS), abs=1e-3)


def test_bed_of_two_courses(uniform):
    first, second = uniform[:2]
    res = compute_dvhs(courses=[first, second], metrics=["Dmax", "Dmean"], alpha_beta=3.0,
                       dose_model="BED")
    # BED = D (1 + d / (a/b)) = 30 (1 + 3/3) = 60 Gy per course
    assert [res["PTV"].metrics["Dmax"], res["PTV"].metrics["Dmean"]] == pytest.approx(
        [120.0, 120.0], abs=1e-3)
    assert res.dose.quantity == "BED, a/b=3 Gy"


def test_recovery_factor_half_on_the_first_course(uniform):
    first, second = uniform[:2]
    res = compute_dvhs(courses=[f"{first}:0.5", str(second)], metrics=D_METRICS,
                       alpha_beta=3.0)
    truth = 0.5 * hand_eqd2(30.0, 10, 3.0) + hand_eqd2(30.0, 10, 3.0)  # 18 + 36 = 54 Gy
    assert truth == pytest.approx(54.0)
    assert _all_metrics(res, "PTV") == pytest.approx([truth] * len(D_METRICS), abs=1e-3)
    assert [c["recovery"] for c in res.dose.components] == [0.5, 1.0]


def test_courses_of_different_fractionation(uniform, tmp_path):
    first = uniform[0]
    boost = _second_course(uniform, tmp_path / "boost", scale=20.0 / 30.0, fractions=5)
    res = compute_dvhs(courses=[first, boost], metrics=["Dmax", "Dmin"], alpha_beta=2.0)
    # 30 Gy / 10 fx at a/b 2: 30 (3 + 2) / 4 = 37.5; 20 Gy / 5 fx: 20 (4 + 2) / 4 = 30
    truth = hand_eqd2(30.0, 10, 2.0) + hand_eqd2(20.0, 5, 2.0)
    assert truth == pytest.approx(67.5)
    assert [res["Cord"].metrics["Dmax"], res["Cord"].metrics["Dmin"]] == pytest.approx(
        [truth, truth], abs=1e-3)


def test_courses_equal_the_eqd2_metric_of_one_plan_of_20_fractions(tmp_path):
    """On the sample plan: two identical 10-fraction courses against the plan summed with
    itself read with [EQD2, a/b=x] at 20 fractions, and against the closed form applied to
    the physical metric (a D-metric of a monotonic transform is the transform of the
    D-metric). The courses apply the formula voxel by voxel before interpolation, the metric
    after it: equal within interpolation."""
    second = copy_plan(SAMPLE, tmp_path / "again", label="Again")
    ab = 2.0
    rois = ["SpinalCord", "PTV30", "Kidney_L"]
    names = ["Dmax", "D2%", "D50%", "D98%", "D0.03cc"]
    courses = compute_dvhs(courses=[SAMPLE, second], structures=rois, alpha_beta=ab,
                           metrics=names)
    summed = compute_dvhs([SAMPLE, second], sum_plans=True, structures=rois, fractions=20,
                          metrics=[*names, *(f"{m}[EQD2, a/b={ab:g}]" for m in names)])
    for roi in rois:
        for m in names:
            physical = summed[roi].metrics[m]
            closed_form = hand_eqd2(physical, 20, ab)
            assert summed[roi].metrics[f"{m}[EQD2, a/b={ab:g}]"] == pytest.approx(
                closed_form, rel=1e-6)
            assert courses[roi].metrics[m] == pytest.approx(closed_form, rel=0.01, abs=0.05)


def test_protocol_limits_on_cumulative_eqd2(uniform, tmp_path):
    first, second = uniform[:2]
    proto = tmp_path / "reirr.yaml"
    proto.write_text(
        "format_version: 1\nname: reirr\ntitle: Re-irradiation\nversion: '1'\n"
        "date: '2026-12-01'\nsources:\n  s: {short: test, reference: test}\nfractions: 10\n"
        "prescriptions:\n  PTV: {dose_gy: 30}\nstructures:\n"
        "  - name: PTV\n    type: target\n    prescription: PTV\n    constraints:\n"
        "      - {check: 'Dmean[EQD2, a/b=10] >= 80 Gy', priority: objective, source: s}\n"
        "  - name: Cord\n    alpha_beta: 2\n    constraints:\n"
        "      - {check: 'Dmax[EQD2] <= 80 Gy', priority: hard, source: s}\n"
        "      - {check: 'Dmax <= 70 Gy', priority: hard, source: s}\n")
    res = run("check", "--course", first, "--course", second, "-p", proto, "-f", "json")
    doc = json.loads(res.stdout)
    by = {(c["structure"], c["metric"]): c for c in doc["constraints"]}
    cord = by[("Cord", "Dmax[EQD2, a/b=2]")]
    # 2 x 30 Gy / 10 fx at a/b 2: 2 x 37.5 = 75 Gy EQD2 <= 80
    assert cord["value"] == pytest.approx(2 * hand_eqd2(30.0, 10, 2.0), abs=1e-3)
    assert cord["verdict"] == "PASS"
    ptv = by[("PTV", "Dmean[EQD2, a/b=10]")]
    # 2 x 30 (3 + 10) / 12 = 65 Gy EQD2 < 80: the objective is missed
    assert ptv["value"] == pytest.approx(2 * hand_eqd2(30.0, 10, 10.0), abs=1e-3)
    assert ptv["verdict"] != "PASS"
    physical = by[("Cord", "Dmax")]
    assert physical["verdict"] == "NOT_EVALUATED" and physical["value"] is None
    assert "physical-dose limit" in physical["reason"]
    assert res.exit_code == 1  # a hard limit not evaluated closes the gate
    assert doc["fractions"]["source"] == "courses"
    assert doc["plan"]["dose"]["quantity"] == "EQD2, a/b=10 Gy; EQD2, a/b=2 Gy"


def test_a_course_without_fraction_count_is_refused(uniform, tmp_path):
    import pydicom

    first = uniform[0]
    second = _second_course(uniform, tmp_path / "nofx")
    plan = pydicom.dcmread(second / "rp.dcm")
    del plan.FractionGroupSequence[0].NumberOfFractionsPlanned
    plan.save_as(second / "rp.dcm")
    res = run("dvh", "--course", first, "--course", second)
    assert res.exit_code == 2
    assert "Number of Fractions Planned" in res.stderr and str(second) in res.stderr


def test_courses_in_different_frames_of_reference_are_refused(tmp_path):
    other = copy_plan(SAMPLE, tmp_path / "other", frame_of_reference_uid="1.2.3.4.5.6",
                      fractions=5)
    with pytest.raises(InputError, match="Frame of Reference"):
        compute_dvhs(courses=[SAMPLE, other])


def test_a_course_with_two_plans_is_refused(tmp_path):
    a = copy_plan(SAMPLE, tmp_path / "c" / "a")
    copy_plan(SAMPLE, tmp_path / "c" / "b")
    with pytest.raises(InputError, match="2 RTPLANs found; a course is one plan"):
        compute_dvhs(courses=[tmp_path / "c", a])


@pytest.mark.parametrize("text", ["c1/:1.5", "c1/:-0.1", "c1/:nan", "c1/:half"])
def test_bad_recovery_factors_are_refused(text):
    res = run("dvh", "--course", text)
    assert res.exit_code == 2 and "recovery factor" in res.stderr


def test_course_parsing():
    assert Course.parse("c1/:0.5").recovery == 0.5
    assert Course.parse("c1/").recovery == 1.0
    assert str(Course.parse("c1/:0").paths[0]) == "c1" and Course.parse("c1/:0").recovery == 0


def test_courses_refuse_models_rx_and_paths(uniform):
    first, second = uniform[:2]
    with pytest.raises(InputError, match="already cumulative"):
        compute_course_dvhs([first, second], [("EQD2", 3.0)], metrics=["Dmax[EQD2, a/b=3]"])
    with pytest.raises(InputError, match="do not apply to courses"):
        compute_dvhs(courses=[first, second], fractions=10)
    assert run("dvh", first, "--course", second).exit_code == 2
    assert run("dvh", first, "--alpha-beta", "2").exit_code == 2


def test_cli_courses_state_the_unit_and_the_courses(uniform):
    first, second = uniform[:2]
    res = run("dvh", "--course", f"{first}:0.5", "--course", second, "--alpha-beta", "2",
              "-s", "Cord", "-m", "Dmax")
    assert res.exit_code == 0, res.stderr
    assert "doses in Gy EQD2, a/b=2 Gy" in res.stdout
    assert "course 1: RTPLAN" in res.stdout and "recovery 0.5" in res.stdout
    res = run("dvh", "--course", first, "--course", second, "-f", "json", "-s", "Cord",
              "-m", "Dmax")
    doc = json.loads(res.stdout)
    assert doc["dose"]["quantity"] == "EQD2, a/b=3 Gy"  # the documented default a/b
    assert doc["structures"][0]["metrics"]["Dmax"] == pytest.approx(2 * hand_eqd2(30, 10, 3),
                                                                    abs=1e-3)


def test_default_alpha_beta_is_the_same_in_cli_and_library():
    from dvheval.cli.common import DEFAULT_ALPHA_BETA_GY
    from dvheval.engine.combine import DEFAULT_ALPHA_BETA

    assert DEFAULT_ALPHA_BETA_GY == DEFAULT_ALPHA_BETA


def test_the_same_plan_given_as_two_courses_counts_twice(uniform):
    first = uniform[0]
    res = compute_dvhs(courses=[first, first], metrics=["Dmax", "Dmin"], alpha_beta=3.0)
    assert [res["PTV"].metrics["Dmax"], res["PTV"].metrics["Dmin"]] == pytest.approx(
        [hand_eqd2(60.0, 20, 3.0)] * 2, abs=1e-3)


def test_course_check_json_follows_the_schema(uniform):
    from importlib import resources

    import jsonschema

    first, second = uniform[:2]
    res = run("check", "--course", first, "--course", second, "-p", "bone-sib-30-40-10fx",
              "-f", "json")
    doc = json.loads(res.stdout)
    schema = json.loads(resources.files("dvheval.schemas").joinpath("check.schema.json")
                        .read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    # physical limits are not evaluated on a cumulative EQD2: the gate stays closed
    assert res.exit_code == 1 and doc["verdict"] == "NOT_EVALUATED"


def test_check_text_names_the_courses_and_their_fractions(uniform, tmp_path):
    first = uniform[0]
    boost = _second_course(uniform, tmp_path / "boost", scale=0.5, fractions=5)
    res = run("check", "--course", f"{first}:0.5", "--course", boost, "-p",
              "bone-sib-30-40-10fx")
    assert "each course its own: 10, 5 (RTPLANs); protocol 10" in res.stdout
    assert "course 1: RTPLAN" in res.stdout and "recovery 0.5" in res.stdout
    assert "cumulative EQD2, a/b=" in res.stdout


def test_course_plot_is_labelled_with_the_cumulative_quantity_and_has_no_limit_markers(uniform):
    from dvheval.check.courses import check_courses
    from dvheval.protocol import load_protocol
    from dvheval.reports.plot import _dose_axis_label, _limit_marks

    first, second = uniform[:2]
    result = check_courses([first, second], load_protocol("bone-sib-30-40-10fx"))
    assert _dose_axis_label(result).startswith("Cumulative dose (Gy EQD2, a/b=")
    assert _limit_marks(result, {}) == []


def test_course_csv_names_the_unit(uniform):
    first, second = uniform[:2]
    res = run("dvh", "--course", first, "--course", second, "--alpha-beta", "2", "-s", "Cord",
              "-m", "Dmax", "-m", "V70Gy", "-f", "csv")
    assert res.exit_code == 0, res.stderr
    import csv

    rows = list(csv.reader(res.stdout.splitlines()))[1:]
    assert [r[7] for r in rows] == ["Dmax", "V70Gy"]
    assert float(rows[0][8]) == pytest.approx(2 * hand_eqd2(30.0, 10, 2.0), abs=1e-3)
    assert rows[0][9] == "Gy EQD2, a/b=2 Gy" and rows[1][9] == "cc"


def test_course_dvh_json_follows_the_schema(uniform):
    from importlib import resources

    import jsonschema

    first, second = uniform[:2]
    res = run("dvh", "--course", f"{first}:0.25", "--course", second, "-f", "json")
    schema = json.loads(resources.files("dvheval.schemas").joinpath("dvh.schema.json")
                        .read_text())
    doc = json.loads(res.stdout)
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["settings"]["fractions"] is None and doc["plan"]["fractions"] is None


def test_quality_indices_are_not_read_on_a_cumulative_eqd2(uniform):
    # conformity and gradient indices compare physical isodose volumes; on a
    # cumulative EQD2 they have no meaning and are not computed
    first, second = uniform[:2]
    res = compute_dvhs(courses=[first, second], metrics=["Dmax", "PaddickCI(30Gy)", "HI"],
                       alpha_beta=3.0)
    for name in ("PaddickCI(30Gy)", "HI"):
        assert res["PTV"].metrics[name] is None
        assert "physical dose" in res["PTV"].metric_errors[name]
    assert res["PTV"].metrics["Dmax"] == pytest.approx(hand_eqd2(60.0, 20, 3.0), abs=1e-3)
