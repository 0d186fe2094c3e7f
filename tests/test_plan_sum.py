"""Plan sums: several RTPLANs with their RTDOSEs, refused without --sum, added with it."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from dvheval.cli import app
from dvheval.engine.compute import compute_dvhs
from dvheval.errors import InputError

from .sums_support import SAMPLE, copy_plan, uniform_plan

DOSE_METRICS = ["Dmax", "Dmin", "Dmean", "D98%", "D50%", "D2%", "D0.03cc", "D0.5cc"]
ROIS = ["PTV30", "PTV40", "SpinalCord", "Kidney_L"]


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def two_plans(tmp_path_factory):
    """The sample plan and a copy of it as a second plan (new RTPLAN and RTDOSE UIDs)."""
    root = tmp_path_factory.mktemp("sum")
    copy_plan(SAMPLE, root / "boost", label="Boost")
    return SAMPLE, root / "boost"


@pytest.fixture(scope="module")
def single_and_sum(two_plans):
    metrics = [*DOSE_METRICS, "V20Gy", "V40Gy", "V30Gy[%]", "V60Gy[%]"]
    one = compute_dvhs(two_plans[0], structures=ROIS, metrics=metrics)
    both = compute_dvhs(list(two_plans), structures=ROIS, metrics=metrics, sum_plans=True)
    return one, both


@pytest.mark.parametrize("roi", ROIS)
@pytest.mark.parametrize("metric", DOSE_METRICS)
def test_a_plan_summed_with_itself_doubles_every_dose_metric(single_and_sum, roi, metric):
    one, both = single_and_sum
    single = one[roi].metrics[metric]
    assert single is not None and single > 0
    # the same grid, so the sum is exactly twice the dose (float32 storage aside)
    assert both[roi].metrics[metric] == pytest.approx(2.0 * single, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("roi", ROIS)
@pytest.mark.parametrize(("single", "summed"), [("V20Gy", "V40Gy"), ("V30Gy[%]", "V60Gy[%]")])
def test_volumes_at_the_doubled_dose_are_unchanged(single_and_sum, roi, single, summed):
    one, both = single_and_sum
    assert both[roi].metrics[summed] == pytest.approx(one[roi].metrics[single], rel=1e-4,
                                                      abs=1e-4)
    assert both[roi].volume_cc == pytest.approx(one[roi].volume_cc, rel=1e-12)


def test_the_sum_says_what_it_is(single_and_sum, two_plans):
    _, both = single_and_sum
    assert both.plan.fractions == 10
    assert {p.name: p.dose_gy for p in both.plan.prescriptions} == {"PTV40": 80.0, "PTV30": 60.0}
    doc = both.to_dict(include_dvh=False)
    dose = doc["dose"]
    assert dose["quantity"] == "physical" and dose["summed"] is True
    assert [c["label"] for c in dose["components"]] == ["L1 SIB 30/40", "Boost"]
    assert dose["summation"].startswith("sum of 2 plans")
    assert len(dose["files"]) == 2


def test_every_file_of_a_sum_has_the_digest_of_its_bytes(two_plans, monkeypatch):
    # the RTPLANs' digests are of the bytes their prescriptions were read from: no
    # RTPLAN of the sum is read a second time to be hashed (by any module but the one
    # that finds the inputs, which hashes files of several plans sharing a UID to tell
    # identical copies apart)
    import sys

    import dvheval.engine.combine  # noqa: F401 - (sums only: imported to be patched too)
    from dvheval.dicom.files import sha256_of

    hashed: list[str] = []

    def recorded(path):
        hashed.append(str(path))
        return sha256_of(path)

    for name, module in list(sys.modules.items()):
        if (name.startswith("dvheval") and name != "dvheval.dicom.files"
                and getattr(module, "sha256_of", None) is sha256_of):
            monkeypatch.setattr(module, "sha256_of", recorded)
    both = compute_dvhs(list(two_plans), structures=["SpinalCord"], metrics=["Dmax"],
                        sum_plans=True)
    assert not [p for p in hashed if p.endswith("RTPLAN.dcm")]
    # (the second folder's structure set is a copy of the first: it is not used)
    files = [*sorted(two_plans[0].iterdir()), two_plans[1] / "RTPLAN.dcm",
             two_plans[1] / "RTDOSE.dcm"]
    assert both.dose.sha256 == {str(f): hashlib.sha256(f.read_bytes()).hexdigest()
                                for f in files}


def test_the_sum_json_follows_the_schema(single_and_sum):
    from importlib import resources

    import jsonschema

    _, both = single_and_sum
    schema = json.loads(resources.files("dvheval.schemas").joinpath("dvh.schema.json")
                        .read_text())
    jsonschema.Draft202012Validator(schema).validate(both.to_dict(include_dvh=False))


def test_without_sum_several_plans_are_refused_with_their_list(two_plans):
    res = run("dvh", *two_plans, "-s", "PTV30")
    assert res.exit_code == 2
    err = res.stderr
    assert "2 RT plans found" in err and "--sum" in err
    for label, path in (("L1 SIB 30/40", two_plans[0] / "RTPLAN.dcm"),
                        ("Boost", two_plans[1] / "RTPLAN.dcm")):
        assert f"RTPLAN '{label}': PTV40 40 Gy, PTV30 30 Gy in 10 fractions ({path})" in err
    assert run("check", *two_plans, "-p", "bone-sib-30-40-10fx").exit_code == 2


def test_sum_from_the_command_line_doubles_the_table(two_plans):
    one = json.loads(run("dvh", two_plans[0], "-s", "SpinalCord", "-m", "Dmax",
                         "-f", "json").stdout)
    res = run("dvh", *two_plans, "--sum", "-s", "SpinalCord", "-m", "Dmax", "-f", "json")
    assert res.exit_code == 0, res.stderr
    both = json.loads(res.stdout)
    assert both["structures"][0]["metrics"]["Dmax"] == pytest.approx(
        2 * one["structures"][0]["metrics"]["Dmax"], rel=1e-5)
    table = run("dvh", *two_plans, "--sum", "-s", "SpinalCord").stdout
    assert "sum of 2 plans" in table and "plan 2: RTPLAN 'Boost'" in table


def test_plans_in_different_frames_of_reference_are_refused(tmp_path):
    copy_plan(SAMPLE, tmp_path / "other", frame_of_reference_uid="1.2.3.4.5.6")
    with pytest.raises(InputError, match="Frame of Reference") as exc:
        compute_dvhs([SAMPLE, tmp_path / "other"], sum_plans=True)
    assert "1.2.3.4.5.6" in str(exc.value) and "cannot be added" in str(exc.value)


def test_two_structure_sets_are_refused(tmp_path):
    import pydicom

    from dvheval.testing.synthetic import new_uid

    copy_plan(SAMPLE, tmp_path / "other")
    ss = pydicom.dcmread(tmp_path / "other" / "RTSTRUCT.dcm")
    ss.SOPInstanceUID = new_uid()
    ss.save_as(tmp_path / "other" / "RTSTRUCT.dcm")
    with pytest.raises(InputError, match="2 structure sets") as exc:
        compute_dvhs([SAMPLE, tmp_path / "other"], sum_plans=True)
    assert str(tmp_path / "other" / "RTSTRUCT.dcm") in str(exc.value)


def test_a_dose_of_none_of_the_plans_is_refused(tmp_path):
    import pydicom

    copy_plan(SAMPLE, tmp_path / "other")
    dose = pydicom.dcmread(tmp_path / "other" / "RTDOSE.dcm")
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = "1.2.3.999"
    dose.save_as(tmp_path / "other" / "RTDOSE.dcm")
    with pytest.raises(InputError, match="references none of the RTPLANs"):
        compute_dvhs([SAMPLE, tmp_path / "other"], sum_plans=True)


def test_a_plan_on_another_grid_is_resampled(tmp_path):
    """Uniform doses on two different grids: the sum is the sum of the two doses, exactly."""
    import pydicom

    from .sums_support import join_structure_set

    uniform_plan(tmp_path / "a", 20.0, 10)
    uniform_plan(tmp_path / "b", 10.0, 10)
    join_structure_set(tmp_path / "a", tmp_path / "b")
    dose = pydicom.dcmread(tmp_path / "b" / "rd0.dcm")  # plan b's grid shifted by 1.1 mm
    dose.ImagePositionPatient = [float(v) + 1.1 for v in dose.ImagePositionPatient]
    dose.save_as(tmp_path / "b" / "rd0.dcm")
    res = compute_dvhs([tmp_path / "a", tmp_path / "b"], sum_plans=True,
                       metrics=["Dmax", "Dmin", "Dmean"], structures=["PTV", "Cord"])
    assert res.dose.resampled_files == [str(tmp_path / "b" / "rd0.dcm")]
    for roi in ("PTV", "Cord"):
        for m in ("Dmax", "Dmin", "Dmean"):
            assert res[roi].metrics[m] == pytest.approx(30.0, abs=1e-4)
    assert not any(f.closes for f in res.findings)


def test_different_fraction_counts_leave_eqd2_undefined(tmp_path):
    copy_plan(SAMPLE, tmp_path / "five", label="Five", fractions=5)
    res = compute_dvhs([SAMPLE, tmp_path / "five"], sum_plans=True, structures=["SpinalCord"],
                       metrics=["Dmax", "Dmax[EQD2, a/b=2]"])
    cord = res["SpinalCord"]
    assert cord.metrics["Dmax"] is not None and cord.metrics["Dmax[EQD2, a/b=2]"] is None
    assert "different or unknown fraction counts" in cord.metric_errors["Dmax[EQD2, a/b=2]"]
    assert res.plan.fractions is None
    with pytest.raises(InputError, match="--course"):
        compute_dvhs([SAMPLE, tmp_path / "five"], sum_plans=True, fractions=15)


def test_different_fraction_counts_close_the_gate(tmp_path):
    copy_plan(SAMPLE, tmp_path / "five", label="Five", fractions=5)
    res = run("check", SAMPLE, tmp_path / "five", "--sum", "-p", "bone-sib-30-40-10fx",
              "--condition", "lumbosacral", "--rx", "PTV30=60", "--rx", "PTV40=80",
              "-f", "json")
    assert res.exit_code == 1, res.stderr
    doc = json.loads(res.stdout)
    assert "plan-sum-fractions" in doc["gate"]["closed_by"]
    eqd2 = [c for c in doc["constraints"] if c["metric"] == "Dmax[EQD2, a/b=2]"
            and c["structure"] == "SpinalCord"]
    assert eqd2 and eqd2[0]["verdict"] == "NOT_EVALUATED" and eqd2[0]["value"] is None
    assert [c["label"] for c in doc["plan"]["dose"]["components"]] == ["L1 SIB 30/40", "Five"]
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("dvheval.schemas").joinpath("check.schema.json")
                        .read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_one_plan_is_not_a_sum(two_plans):
    res = run("dvh", two_plans[0], "--sum", "-s", "PTV30")
    assert res.exit_code == 2 and "needs two or more RTPLANs" in res.stderr


def test_only_files_whose_uid_repeats_are_hashed_to_find_copies(two_plans, monkeypatch):
    # the two folders share the structure set (one UID, the same bytes): it is hashed
    # to be recognised as a copy; the RTPLANs and RTDOSEs (UIDs of their own) are not
    from dvheval.dicom import files

    hashed: list[str] = []
    real = files.sha256_of

    def recorded(path):
        hashed.append(str(path))
        return real(path)

    monkeypatch.setattr(files, "sha256_of", recorded)
    inputs = files.find_inputs(list(two_plans), several_plans=True)
    assert sorted(hashed) == sorted(str(folder / "RTSTRUCT.dcm") for folder in two_plans)
    assert [str(f.path) for f in inputs.copies] == [str(two_plans[1] / "RTSTRUCT.dcm")]
    assert len(inputs.plans) == 2 and len(inputs.doses) == 2


def test_a_plan_given_twice_is_added_twice_and_said_so():
    single = compute_dvhs(SAMPLE, metrics=DOSE_METRICS)
    twice = compute_dvhs([SAMPLE, SAMPLE], metrics=DOSE_METRICS, sum_plans=True)
    for s in single.structures:
        if s.dvh is None:
            continue
        for m in DOSE_METRICS:  # (doses are float32)
            assert twice[s.name].metrics[m] == pytest.approx(2 * s.metrics[m], rel=1e-6)
    assert [p["label"] for p in twice.dose.components] == ["L1 SIB 30/40"] * 2
    assert any("given 2 times" in w for w in twice.warnings)


def test_a_plan_whose_files_are_given_unequally_often_is_refused(tmp_path):
    # the RTPLAN twice but its dose once: how often the plan counts is unknown
    res = run("dvh", SAMPLE, SAMPLE / "RTPLAN.dcm", "--sum", "-s", "PTV30")
    assert res.exit_code == 2 and "given 2 time(s) but its RTDOSE" in res.stderr


def test_check_reports_say_the_dose_is_a_sum(two_plans):
    res = run("check", *two_plans, "--sum", "-p", "bone-sib-30-40-10fx", "--rx", "PTV30=60",
              "--rx", "PTV40=80", "-f", "markdown")
    assert res.exit_code in (0, 1), res.stderr
    assert "physical sum of 2 plans" in res.stdout
    assert f"plan 2: RTPLAN 'Boost': PTV40 40 Gy, PTV30 30 Gy in 10 fractions " \
           f"({two_plans[1] / 'RTPLAN.dcm'})" in res.stdout


def test_beam_doses_are_summed_per_plan_and_checked_against_their_plan(tmp_path):
    """Plan a: 20 Gy as one PLAN dose; plan b: 10 Gy as two BEAM doses of 5 Gy. The sum is
    30 Gy everywhere; plan b without one of its beams is refused, naming the beam."""
    import numpy as np

    from .phantoms import cylinder, write_phantom
    from .sums_support import join_structure_set

    shapes = [cylinder("PTV", 10.0, -10.0, 10.0, 2.0)]
    uniform_plan(tmp_path / "a", 20.0, 10)
    write_phantom(tmp_path / "b", shapes, lambda x, y, z: np.full_like(x, 10.0),
                  prescriptions=[("PTV", 10.0)], fractions=10,
                  dose_files=(("BEAM", 0.5), ("BEAM", 0.5)))
    join_structure_set(tmp_path / "a", tmp_path / "b")
    res = compute_dvhs([tmp_path / "a", tmp_path / "b"], sum_plans=True, structures=["PTV"],
                       metrics=["Dmax", "Dmin"])
    assert [res["PTV"].metrics["Dmax"], res["PTV"].metrics["Dmin"]] == pytest.approx(
        [30.0, 30.0], abs=1e-4)
    assert res.dose.summation_types == ["PLAN", "BEAM", "BEAM"]
    (tmp_path / "b" / "rd1.dcm").unlink()
    with pytest.raises(InputError, match="beam"):
        compute_dvhs([tmp_path / "a", tmp_path / "b"], sum_plans=True)


def test_two_plans_in_one_folder(tmp_path, two_plans):
    import shutil

    folder = tmp_path / "both"
    shutil.copytree(two_plans[0], folder)
    shutil.copy(two_plans[1] / "RTPLAN.dcm", folder / "RP_boost.dcm")
    shutil.copy(two_plans[1] / "RTDOSE.dcm", folder / "RD_boost.dcm")
    refused = run("dvh", folder, "-s", "PTV40")
    assert refused.exit_code == 2 and "2 RT plans found" in refused.stderr
    assert str(folder / "RP_boost.dcm") in refused.stderr
    one = compute_dvhs(two_plans[0], structures=["PTV40"], metrics=["Dmax", "D98%"])
    both = compute_dvhs(folder, sum_plans=True, structures=["PTV40"], metrics=["Dmax", "D98%"])
    for m in ("Dmax", "D98%"):
        assert both["PTV40"].metrics[m] == pytest.approx(2 * one["PTV40"].metrics[m], rel=1e-5)


def test_a_plan_of_another_patient_in_a_sum_closes_the_gate(tmp_path):
    import pydicom

    other = copy_plan(SAMPLE, tmp_path / "other")
    for name in ("RTPLAN.dcm", "RTDOSE.dcm"):
        ds = pydicom.dcmread(other / name)
        ds.PatientID = "ANOTHER-PATIENT"
        ds.save_as(other / name)
    res = run("check", SAMPLE, other, "--sum", "-p", "bone-sib-30-40-10fx", "--rx", "PTV40=80",
              "--rx", "PTV30=60", "-f", "json")
    assert res.exit_code == 1
    assert "patient-id-mismatch" in json.loads(res.stdout)["gate"]["closed_by"]
