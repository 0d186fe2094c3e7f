"""Headers edited after planning: each contradiction or missing required
attribute closes the gate (exit 1, naming the check) or is an input error
(exit 2, naming the file and attribute); none leaves it open.

The variants are copies of the shipped sample plan with one attribute
changed by pydicom, so the dose, the contours and every constraint value
stay those of the sample (which passes: ``test_the_sample_plan_passes``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

from dvheval.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"
PROTOCOL = "bone-sib-30-40-10fx"
runner = CliRunner()


def edited(tmp_path: Path, name: str, edit: Callable[[Dataset], None]) -> Path:
    """A copy of the sample plan with ``edit`` applied to its file ``name``."""
    plan = tmp_path / "plan"
    shutil.copytree(SAMPLE, plan)
    ds = pydicom.dcmread(plan / name)
    edit(ds)
    ds.save_as(plan / name)
    return plan


def check(plan: Path, *args: str):
    return runner.invoke(app, ["check", str(plan), "-p", PROTOCOL, "-f", "json", *args])


def closed_by(plan: Path, *args: str) -> set[str]:
    res = check(plan, *args)
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "NOT_EVALUATED"
    return {f["check"] for f in doc["integrity"] if f["severity"] == "close"}


def test_the_sample_plan_passes():
    res = check(SAMPLE)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["integrity"] == []


# ------------------------------------------------------------ RTDOSE headers
def _drop(keyword: str) -> Callable[[Dataset], None]:
    return lambda ds: delattr(ds, keyword)


def _set(keyword: str, value) -> Callable[[Dataset], None]:
    return lambda ds: setattr(ds, keyword, value)


@pytest.mark.parametrize("edit, check_id", [
    (_drop("ReferencedRTPlanSequence"), "dose-plan-reference"),
    (_drop("DoseSummationType"), "dose-summation"),
])
def test_a_dose_that_cannot_be_tied_to_the_plan_closes_the_gate(tmp_path, edit, check_id):
    assert check_id in closed_by(edited(tmp_path, "RTDOSE.dcm", edit))


def test_a_multi_plan_dose_holding_another_plan_closes_the_gate(tmp_path):
    def edit(ds):
        ds.DoseSummationType = "MULTI_PLAN"
        other = Dataset()
        other.ReferencedSOPClassUID = ds.ReferencedRTPlanSequence[0].ReferencedSOPClassUID
        other.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.ReferencedRTPlanSequence.append(other)

    assert "dose-summation" in closed_by(edited(tmp_path, "RTDOSE.dcm", edit))


def test_a_multi_plan_dose_of_another_plan_closes_the_gate(tmp_path):
    def edit(ds):
        ds.DoseSummationType = "MULTI_PLAN"
        ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"

    assert "dose-plan-reference" in closed_by(edited(tmp_path, "RTDOSE.dcm", edit))


@pytest.mark.parametrize("beams", ["named", "none"])
def test_a_beam_dose_whose_beams_cannot_be_checked_is_refused(tmp_path, beams):
    """One beam's dose must name its beam, and the RTPLAN must list the beams, so that a
    missing beam (a dose too low everywhere) cannot pass."""
    plan = edited(tmp_path, "RTDOSE.dcm", _set("DoseSummationType", "BEAM"))
    if beams == "none":
        ds = pydicom.dcmread(plan / "RTPLAN.dcm")
        del ds.BeamSequence
        ds.FractionGroupSequence[0].ReferencedBeamSequence = Sequence()
        ds.FractionGroupSequence[0].NumberOfBeams = 0
        ds.save_as(plan / "RTPLAN.dcm")
    res = check(plan)
    assert res.exit_code == 2
    assert "RTDOSE.dcm" in res.stderr
    assert "lists no treatment beams" in res.stderr or "must name its beam" in res.stderr


def test_absolute_frame_positions_that_contradict_the_image_position_are_refused(tmp_path):
    """Frame positions written as absolute z (first value not 0) must start at the z of
    ImagePositionPatient; 3 mm apart, the dose would be placed 3 mm off either way."""
    def edit(ds):
        z0 = float(ds.ImagePositionPatient[2])
        ds.GridFrameOffsetVector = [z0 - 3.0 + float(v) for v in ds.GridFrameOffsetVector]

    sample = pydicom.dcmread(SAMPLE / "RTDOSE.dcm")
    assert float(sample.GridFrameOffsetVector[0]) == 0.0  # the sample's offsets are relative
    res = check(edited(tmp_path, "RTDOSE.dcm", edit))
    assert res.exit_code == 2
    assert "GridFrameOffsetVector" in res.stderr and "ImagePositionPatient" in res.stderr


def test_absolute_frame_positions_that_agree_give_the_sample_values(tmp_path):
    def edit(ds):
        z0 = float(ds.ImagePositionPatient[2])
        ds.GridFrameOffsetVector = [z0 + float(v) for v in ds.GridFrameOffsetVector]

    res = check(edited(tmp_path, "RTDOSE.dcm", edit))
    assert res.exit_code == 0, res.output
    same = json.loads(check(SAMPLE).stdout)["constraints"]
    assert [c["value"] for c in json.loads(res.stdout)["constraints"]] == \
        [c["value"] for c in same]


# ------------------------------------------------------------ RTPLAN headers
def test_a_rejected_plan_closes_the_gate(tmp_path):
    plan = edited(tmp_path, "RTPLAN.dcm", _set("ApprovalStatus", "REJECTED"))
    assert closed_by(plan) == {"plan-rejected"}


def test_a_second_fraction_group_closes_the_gate(tmp_path):
    def edit(ds):
        group = Dataset()
        group.FractionGroupNumber = 2
        group.NumberOfFractionsPlanned = 5
        group.NumberOfBeams = 0
        group.NumberOfBrachyApplicationSetups = 0
        ds.FractionGroupSequence.append(group)

    assert "fraction-groups" in closed_by(edited(tmp_path, "RTPLAN.dcm", edit))


def test_a_plan_without_its_structure_set_reference_closes_the_gate(tmp_path):
    plan = edited(tmp_path, "RTPLAN.dcm", _drop("ReferencedStructureSetSequence"))
    assert "plan-structure-set-reference" in closed_by(plan)


def test_a_plan_in_another_frame_of_reference_closes_the_gate(tmp_path):
    plan = edited(tmp_path, "RTPLAN.dcm",
                  _set("FrameOfReferenceUID", "1.2.826.0.1.3680043.8.498.2"))
    assert "plan-frame-of-reference" in closed_by(plan)


@pytest.mark.parametrize("damage", ["missing", "empty", "not DICOM"])
def test_require_approved_needs_a_readable_rtplan(tmp_path, damage):
    """--require-approved cannot be passed by removing or damaging the RTPLAN."""
    plan = tmp_path / "plan"
    shutil.copytree(SAMPLE, plan)
    rtplan = plan / "RTPLAN.dcm"
    if damage == "missing":
        rtplan.unlink()
        assert closed_by(plan, "--require-approved") == {"no-rtplan"}
        return
    rtplan.write_bytes(b"" if damage == "empty" else b"not a plan\n" * 20)
    res = check(plan, "--require-approved")
    assert res.exit_code == 2
    assert "RTPLAN.dcm" in res.stderr and "damaged part of the plan" in res.stderr


def test_a_file_not_named_dicom_that_is_not_dicom_is_ignored(tmp_path):
    plan = tmp_path / "plan"
    shutil.copytree(SAMPLE, plan)
    (plan / "notes.txt").write_text("planning notes\n")
    res = check(plan)
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------- RTSTRUCT headers
def test_an_roi_in_another_frame_of_reference_is_refused(tmp_path):
    def edit(ds):
        cord = next(r for r in ds.StructureSetROISequence if r.ROIName == "SpinalCord")
        cord.ReferencedFrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.3"

    res = check(edited(tmp_path, "RTSTRUCT.dcm", edit))
    assert res.exit_code == 2
    assert "SpinalCord" in res.stderr and "ReferencedFrameOfReferenceUID" in res.stderr


def test_an_undeclared_frame_of_reference_is_refused(tmp_path):
    """The structure set declares another Frame of Reference than its ROIs use."""
    def edit(ds):
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = \
            "1.2.826.0.1.3680043.8.498.4"

    res = check(edited(tmp_path, "RTSTRUCT.dcm", edit))
    assert res.exit_code == 2
    assert "does not declare" in res.stderr


def test_an_roi_contoured_in_another_declared_frame_is_refused(tmp_path):
    """Two Frames of Reference declared (a registered image): an ROI contoured in the
    second one is not in the dose's coordinate system."""
    other = "1.2.826.0.1.3680043.8.498.5"

    def edit(ds):
        frame = Dataset()
        frame.FrameOfReferenceUID = other
        ds.ReferencedFrameOfReferenceSequence.append(frame)
        cord = next(r for r in ds.StructureSetROISequence if r.ROIName == "SpinalCord")
        cord.ReferencedFrameOfReferenceUID = other

    res = check(edited(tmp_path, "RTSTRUCT.dcm", edit))
    assert res.exit_code == 2
    assert "'SpinalCord'" in res.stderr and "another Frame of Reference" in res.stderr


def test_a_structure_set_without_roi_observations_is_refused(tmp_path):
    """Cut before its last element, a structure set loses every ROI's type."""
    res = check(edited(tmp_path, "RTSTRUCT.dcm", _drop("RTROIObservationsSequence")))
    assert res.exit_code == 2
    assert "RTROIObservationsSequence" in res.stderr


def test_an_empty_roi_observations_sequence_is_refused(tmp_path):
    res = check(edited(tmp_path, "RTSTRUCT.dcm",
                       _set("RTROIObservationsSequence", Sequence())))
    assert res.exit_code == 2
    assert "RTROIObservationsSequence" in res.stderr


# ------------------------------------------------------------- prescriptions
def _relabel(name: str, dose: float) -> Callable[[Dataset], None]:
    def edit(ds):
        ds.DoseReferenceSequence[0].DoseReferenceDescription = name
        ds.DoseReferenceSequence[0].TargetPrescriptionDose = dose
    return edit


def test_a_prescription_of_a_dose_the_protocol_does_not_know_closes_the_gate(tmp_path):
    """PTV40's 40 Gy raised to 48 Gy and renamed so that no level matches it by name."""
    plan = edited(tmp_path, "RTPLAN.dcm", _relabel("Boost", 48.0))
    assert closed_by(plan) == {"prescription-mismatch"}


def test_a_renamed_prescription_of_a_protocol_dose_only_warns(tmp_path):
    res = check(edited(tmp_path, "RTPLAN.dcm", _relabel("Boost", 40.0)))
    assert res.exit_code == 0, res.output
    assert any("'Boost' (40 Gy) matches no prescription level" in w
               for w in json.loads(res.stdout)["warnings"])


def test_disagreeing_dose_references_of_one_level_close_the_gate(tmp_path):
    def edit(ds):
        extra = Dataset()
        extra.DoseReferenceNumber = 3
        extra.DoseReferenceStructureType = "VOLUME"
        extra.DoseReferenceDescription = "PTV40"
        extra.DoseReferenceType = "TARGET"
        extra.TargetPrescriptionDose = 50.0
        ds.DoseReferenceSequence.append(extra)

    assert closed_by(edited(tmp_path, "RTPLAN.dcm", edit)) == {"prescription-mismatch"}


# ------------------------------------------------------------ contour planes
def _without_cord_planes(z_lo: float, z_hi: float) -> Callable[[Dataset], None]:
    def edit(ds):
        number = next(r.ROINumber for r in ds.StructureSetROISequence
                      if r.ROIName == "SpinalCord")
        item = next(r for r in ds.ROIContourSequence if r.ReferencedROINumber == number)
        item.ContourSequence = Sequence(
            [c for c in item.ContourSequence if not z_lo <= float(c.ContourData[2]) <= z_hi])
    return edit


def test_cord_contours_missing_where_the_dose_is_highest_close_the_gate(tmp_path):
    """The sample's cord (3 mm planes) without its planes from z = -21 to 21 mm: the cord
    Dmax would be read from the rest of the cord only."""
    res = check(edited(tmp_path, "RTSTRUCT.dcm", _without_cord_planes(-21.0, 21.0)))
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert "structure-unmeasurable" in {f["check"] for f in doc["integrity"]
                                        if f["severity"] == "close"}
    cord = next(c for c in doc["constraints"] if c["structure"] == "SpinalCord"
                and c["metric"] == "Dmax")
    assert cord["verdict"] == "NOT_EVALUATED"
    assert any("no contours between z = -24 and 24 mm (15 planes missing)" in f["message"]
               for f in doc["integrity"])


def test_one_missing_cord_plane_is_bridged_with_a_warning(tmp_path):
    res = check(edited(tmp_path, "RTSTRUCT.dcm", _without_cord_planes(0.0, 0.0)))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    text = json.dumps(doc)
    assert "one contour plane missing between z = -3 and 3 mm" in text


# ------------------------------------------------------- organs off the patient
def _shift_roi(name: str, dx: float) -> Callable[[Dataset], None]:
    def edit(ds):
        number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == name)
        item = next(r for r in ds.ROIContourSequence if r.ReferencedROINumber == number)
        for c in item.ContourSequence:
            values = [float(v) for v in c.ContourData]
            values[0::3] = [x + dx for x in values[0::3]]
            c.ContourData = [f"{v:.2f}" for v in values]
    return edit


def test_a_cord_moved_off_the_patient_closes_the_gate(tmp_path):
    """The cord moved 162 mm sideways, out of the BODY but inside the dose grid: its Dmax
    would read about 1 Gy and pass."""
    res = check(edited(tmp_path, "RTSTRUCT.dcm", _shift_roi("SpinalCord", 162.0)))
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert any("100 % of its contoured area lies outside the external contour 'BODY'"
               in f["message"] for f in doc["integrity"])
    cord = next(c for c in doc["constraints"] if c["structure"] == "SpinalCord"
                and c["metric"] == "Dmax")
    assert cord["verdict"] == "NOT_EVALUATED"


@pytest.mark.parametrize("workers", [1, 2])
def test_the_outside_body_defect_is_found_however_the_structures_are_shared(tmp_path, workers):
    from dvheval import compute_dvhs

    plan = compute_dvhs(edited(tmp_path, "RTSTRUCT.dcm", _shift_roi("SpinalCord", 162.0)),
                        workers=workers)
    text = "100 % of its contoured area lies outside the external contour 'BODY'"
    assert plan["SpinalCord"].defects == [text]
    assert text in plan["SpinalCord"].warnings
    assert not any("outside the external" in w for s in plan.structures if s.name != "SpinalCord"
                   for w in s.warnings)


def _square(x0: float, y0: float, side: float, z: float):
    from types import SimpleNamespace

    import numpy as np

    pts = np.array([[x0, y0, z], [x0 + side, y0, z], [x0 + side, y0 + side, z],
                    [x0, y0 + side, z]])
    return SimpleNamespace(geometric_type="CLOSED_PLANAR", points=pts)


def test_the_share_outside_the_body_is_the_area_outside():
    """Body: 100 mm squares on planes z = 0, 3, 6. An organ of 20 mm squares half across
    the body's edge on z = 0 and 3 and wholly inside on z = 6: (200 + 200) / 1200 outside;
    a plane 9 mm away from every body plane lies wholly outside."""
    import numpy as np
    import shapely

    from dvheval.engine.external import outside_fraction, plane_regions_of

    body_z, regions = plane_regions_of([_square(0, 0, 100, z) for z in (0.0, 3.0, 6.0)])
    body = np.array(regions, dtype=object)
    shapely.prepare(body)
    organ = [_square(90, 40, 20, 0.0), _square(90, 40, 20, 3.0), _square(40, 40, 20, 6.0)]
    assert outside_fraction(organ, body_z, body, 3.0) == pytest.approx(400 / 1200)
    inside = [_square(40, 40, 20, z) for z in (0.0, 3.0, 6.0)]
    assert outside_fraction(inside, body_z, body, 3.0) == 0.0
    beyond = [*inside, _square(40, 40, 20, 15.0)]
    assert outside_fraction(beyond, body_z, body, 3.0) == pytest.approx(400 / 1600)


def test_a_library_warning_is_one_plain_line(tmp_path):
    """pydicom's warning on a character set it does not know reaches the reader as one
    line, without the library's source path."""
    import subprocess
    import sys

    plan = edited(tmp_path, "RTSTRUCT.dcm", _set("SpecificCharacterSet", "ISO_IR 999"))
    res = subprocess.run([sys.executable, "-m", "dvheval.cli", "check", str(plan), "-p",
                          PROTOCOL], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "warning: pydicom: Unknown encoding 'ISO_IR 999'" in res.stderr
    assert "site-packages" not in res.stderr and ".py:" not in res.stderr


@pytest.mark.parametrize("summation", ["RECORD", "MULTI_PLAN"])
def test_a_dose_that_is_not_this_plans_alone_closes_the_gate(tmp_path, summation):
    """A RECORD dose is what was delivered so far (a few fractions pass any limit); a
    MULTI_PLAN dose naming only this plan holds plans no file names."""
    plan = edited(tmp_path, "RTDOSE.dcm", _set("DoseSummationType", summation))
    assert closed_by(plan) == {"dose-summation"}


def test_an_external_without_area_judges_no_organ():
    """An external contour of points only cannot tell what lies outside it: nothing is
    flagged (rather than every organ as 100 % outside)."""
    from types import SimpleNamespace

    import numpy as np

    from dvheval.engine.external import body_outline, outside_notes

    point = SimpleNamespace(geometric_type="POINT", points=np.array([[0.0, 0.0, 0.0]]))
    body = SimpleNamespace(name="BODY", number=1, interpreted_type="EXTERNAL",
                           contours=(point,))
    cord = SimpleNamespace(name="Cord", number=2, interpreted_type="ORGAN",
                           contours=(_square(0, 0, 10, 0.0),))
    assert outside_notes(cord, body_outline(body), 3.0) is None
    body.contours = (_square(100, 100, 10, 0.0),)
    assert outside_notes(cord, body_outline(body), 3.0)[1] == [
        "100 % of its contoured area lies outside the external contour 'BODY'"]



# ---------------------------------------- the RTPLAN read once, isocentres from its bytes
BREAST_PLAN = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "dicompyler-core"


def _pydicom_isocenters(path: Path) -> list[tuple[float, float, float]]:
    """Every distinct isocentre of the treatment beams' control points, by pydicom."""
    ds = pydicom.dcmread(path)
    found: list[tuple[float, float, float]] = []
    for beams, points in (("BeamSequence", "ControlPointSequence"),
                          ("IonBeamSequence", "IonControlPointSequence")):
        for beam in ds.get(beams, []):
            if beam.get("TreatmentDeliveryType", "") == "SETUP":
                continue
            for cp in beam.get(points, []):
                if "IsocenterPosition" in cp:
                    xyz = tuple(float(v) for v in cp.IsocenterPosition)
                    found += [xyz] if xyz not in found else []
    return found


def _read_plan_from_bytes(path: Path, monkeypatch):
    """read_plan_file, failing if the isocentres were read through pydicom's dataset."""
    import dvheval.dicom.identity as identity
    from dvheval.dicom.plan import read_plan_file

    def through_pydicom(ds):
        raise AssertionError("the isocentres were read through pydicom")
    monkeypatch.setattr(identity, "_isocenters", through_pydicom)
    return read_plan_file(path)


@pytest.mark.parametrize("encoding", ["explicit", "implicit", "big", "undefined"])
def test_the_plan_read_whole_gives_the_header_read_alone(tmp_path, monkeypatch, encoding):
    # the plan is read once, whole, for its prescription and its header, and
    # the isocentres come from the walk over its bytes; the header must be what
    # reading only the header's own tags gives, in every encoding
    import hashlib

    from dvheval.dicom.identity import read_identity

    from .test_structure_reading import _write

    source = BREAST_PLAN / "rtplan.dcm"
    if not source.exists():
        pytest.skip("shared test data not present")
    path = _write(pydicom.dcmread(source), tmp_path / "rtplan.dcm", encoding)
    plan, header = _read_plan_from_bytes(path, monkeypatch)
    monkeypatch.undo()
    assert header == read_identity(str(path), "RTPLAN")
    assert plan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert list(header.isocenters_mm) == _pydicom_isocenters(path)
    assert len(header.isocenters_mm) == 1  # one isocentre, repeated in 384 control points


def _two_isocenters(ds: Dataset) -> None:
    """The sample plan with a second treatment beam at another isocentre, and a
    setup beam at a third one (which is not a treatment isocentre)."""
    import copy

    beam = ds.BeamSequence[0]
    moved = copy.deepcopy(beam)
    moved.BeamNumber = 2
    moved.ControlPointSequence[0].IsocenterPosition = [10.0, -20.5, 31.25]
    setup = copy.deepcopy(beam)
    setup.BeamNumber = 3
    setup.TreatmentDeliveryType = "SETUP"
    setup.ControlPointSequence[0].IsocenterPosition = [99.0, 99.0, 99.0]
    ds.BeamSequence = Sequence([beam, moved, setup])


def _ion(ds: Dataset) -> None:
    """The plan of :func:`_two_isocenters` as an RT Ion Plan (ion beams, ion control points)."""
    _two_isocenters(ds)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.8"
    beams = ds.BeamSequence
    del ds.BeamSequence
    for beam in beams:
        points = beam.ControlPointSequence
        del beam.ControlPointSequence
        beam.IonControlPointSequence = points
    ds.IonBeamSequence = beams


@pytest.mark.parametrize("edit", [_two_isocenters, _ion])
def test_every_treatment_isocenter_of_photon_and_ion_plans(tmp_path, monkeypatch, edit):
    from dvheval.dicom.identity import read_identity

    path = edited(tmp_path, "RTPLAN.dcm", edit) / "RTPLAN.dcm"
    iso = tuple(float(v) for v in pydicom.dcmread(SAMPLE / "RTPLAN.dcm")
                .BeamSequence[0].ControlPointSequence[0].IsocenterPosition)
    expected = (iso, (10.0, -20.5, 31.25))  # the setup beam's is left out
    _, header = _read_plan_from_bytes(path, monkeypatch)
    monkeypatch.undo()
    assert header.isocenters_mm == expected
    assert read_identity(str(path), "RTPLAN").isocenters_mm == expected


@pytest.mark.parametrize("value", ["abc\\1\\2", "1\\2", "", "nan\\1\\2", "1\\2\\3\\4"])
def test_an_odd_isocenter_is_read_as_pydicom_reads_it(tmp_path, value):
    # what the bytes cannot plainly give is left to pydicom: the plan read
    # whole and the header read alone agree (both refuse, or both skip the value)
    from pydicom.dataelem import RawDataElement

    from dvheval.dicom.identity import read_identity
    from dvheval.dicom.plan import read_plan_file
    from dvheval.errors import InputError

    def edit(ds: Dataset) -> None:
        _two_isocenters(ds)
        cp = ds.BeamSequence[1].ControlPointSequence[0]
        raw = value.encode() + (b" " if len(value) % 2 else b"")
        cp[0x300A012C] = RawDataElement(pydicom.tag.Tag(0x300A012C), "DS", len(raw), raw, 0,
                                        False, True)

    path = edited(tmp_path, "RTPLAN.dcm", edit) / "RTPLAN.dcm"
    outcomes = []
    for read in (lambda: read_plan_file(path)[1], lambda: read_identity(str(path), "RTPLAN")):
        try:
            outcomes.append(read().isocenters_mm)
        except InputError as exc:
            outcomes.append(("refused", exc.attribute))
    assert outcomes[0] == outcomes[1]


def test_an_ion_beam_with_photon_control_points_is_read_alike_by_both_paths(tmp_path,
                                                                          monkeypatch):
    # a malformed ion plan: its second beam's control points are filed under the
    # photon ControlPointSequence; neither path takes an isocentre from there
    from dvheval.dicom.identity import read_identity

    def edit(ds: Dataset) -> None:
        _ion(ds)
        beam = ds.IonBeamSequence[1]
        points = beam.IonControlPointSequence
        del beam.IonControlPointSequence
        beam.ControlPointSequence = points

    path = edited(tmp_path, "RTPLAN.dcm", edit) / "RTPLAN.dcm"
    _, header = _read_plan_from_bytes(path, monkeypatch)
    monkeypatch.undo()
    assert len(header.isocenters_mm) == 1  # the first beam's only
    assert header.isocenters_mm == read_identity(str(path), "RTPLAN").isocenters_mm
