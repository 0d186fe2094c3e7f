"""Discovery: grouping DICOM-RT files into plans by their UIDs, and reporting the mess."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dvheval.dicom import RTDOSE_SOP, RTSTRUCT_SOP
from dvheval.dicom.discover import discover, read_header
from dvheval.errors import InputError
from dvheval.testing.synthetic import new_uid

RTPLAN_SOP = "1.2.840.10008.5.1.4.1.1.481.5"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
_CLASS = {"RTDOSE": RTDOSE_SOP, "RTSTRUCT": RTSTRUCT_SOP, "RTPLAN": RTPLAN_SOP, "CT": CT_SOP}


def _ref(keyword: str, uid: str) -> Dataset:
    item = Dataset()
    setattr(item, keyword, uid)
    return item


def header(path: Path, kind: str, uid: str | None = None, *, patient: str = "P1",
           for_uid: str = "", ref_plan: str | None = None, ref_ss: str | None = None,
           summation: str = "PLAN", note: str = "") -> str:
    """Write a header-only DICOM file of the given kind; return its SOPInstanceUID."""
    uid = uid or new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _CLASS[kind]
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _CLASS[kind]
    ds.SOPInstanceUID = uid
    ds.Modality = kind
    ds.PatientID = patient
    if note:
        ds.SeriesDescription = note
    if kind == "RTSTRUCT":
        ds.StructureSetLabel = "SS"
        if for_uid:
            ds.ReferencedFrameOfReferenceSequence = [_ref("FrameOfReferenceUID", for_uid)]
    elif for_uid:
        ds.FrameOfReferenceUID = for_uid
    if kind == "RTPLAN" and ref_ss:
        ds.ReferencedStructureSetSequence = [_ref("ReferencedSOPInstanceUID", ref_ss)]
    if kind == "RTDOSE":
        ds.DoseSummationType = summation
        if ref_plan:
            ds.ReferencedRTPlanSequence = [_ref("ReferencedSOPInstanceUID", ref_plan)]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return uid


def plan_files(folder: Path, *, patient: str = "P1", for_uid: str | None = None,
               doses: tuple[str, ...] = ("PLAN",)) -> dict[str, str]:
    """A structure set, an RTPLAN referencing it and doses referencing the RTPLAN."""
    for_uid = for_uid or new_uid()
    ss = header(folder / "x1", "RTSTRUCT", patient=patient, for_uid=for_uid)
    plan = header(folder / "deep" / "x2", "RTPLAN", patient=patient, for_uid=for_uid, ref_ss=ss)
    uids = {"ss": ss, "plan": plan, "for": for_uid}
    for i, kind in enumerate(doses):
        uids[f"dose{i}"] = header(folder / "deeper" / "still" / f"{i}.bin", "RTDOSE",
                                  patient=patient, for_uid=for_uid, ref_plan=plan,
                                  summation=kind)
    return uids


def test_plan_found_by_references_in_any_layout(tmp_path):
    uids = plan_files(tmp_path / "a")
    found = discover(tmp_path)
    assert len(found.groups) == 1 and found.problems == []
    g = found.groups[0]
    assert (g.key, g.key_source, g.structure_set_by) == (uids["plan"], "rtplan", "reference")
    assert [f.kind for f in g.files] == ["RTSTRUCT", "RTPLAN", "RTDOSE"]
    assert g.patient_id == "P1" and g.paths[0].endswith("x1")
    assert found.counts["files"] == 3 and found.counts["rt"] == 3 and found.counts["plans"] == 1


def test_beam_doses_of_one_plan_form_one_entry(tmp_path):
    uids = plan_files(tmp_path, doses=("BEAM", "BEAM", "BEAM"))
    (g,) = discover(tmp_path).groups
    assert g.key == uids["plan"] and len(g.doses) == 3
    assert {d.summation_type for d in g.doses} == {"BEAM"}


def test_plan_dose_is_used_and_beam_doses_of_the_same_plan_are_reported(tmp_path):
    uids = plan_files(tmp_path, doses=("BEAM", "PLAN", "BEAM"))
    found = discover(tmp_path)
    (g,) = found.groups
    assert [d.sop_instance_uid for d in g.doses] == [uids["dose1"]]
    (p,) = found.problems
    assert p.kind == "superseded_dose" and p.severity == "info" and len(p.files) == 2


def test_two_plan_doses_of_one_rtplan_are_a_conflict(tmp_path):
    plan_files(tmp_path, doses=("PLAN", "PLAN"))
    found = discover(tmp_path)
    assert found.groups == []
    assert [p.kind for p in found.problems] == ["conflict"]
    assert found.problems[0].severity == "error" and len(found.problems[0].files) == 4


def test_structure_set_by_frame_of_reference_when_references_are_missing(tmp_path):
    for_uid = new_uid()
    ss = header(tmp_path / "ss.dcm", "RTSTRUCT", for_uid=for_uid)
    lone = header(tmp_path / "d1.dcm", "RTDOSE", for_uid=for_uid)
    missing_plan = new_uid()
    header(tmp_path / "d2.dcm", "RTDOSE", for_uid=for_uid, ref_plan=missing_plan)
    found = discover(tmp_path)
    assert found.problems == []
    groups = {g.key: g for g in found.groups}
    assert set(groups) == {lone, missing_plan}
    assert groups[lone].key_source == "rtdose"
    assert groups[missing_plan].key_source == "rtplan_reference"
    assert "not in the archive" in groups[missing_plan].notes[0]
    for g in groups.values():
        assert g.structure_set.sop_instance_uid == ss
        assert g.structure_set_by == "frame_of_reference" and g.plan is None


def test_rtplan_naming_an_absent_structure_set_falls_back_to_frame_of_reference(tmp_path):
    for_uid = new_uid()
    ss = header(tmp_path / "ss", "RTSTRUCT", for_uid=for_uid)
    plan = header(tmp_path / "rp", "RTPLAN", for_uid=for_uid, ref_ss=new_uid())
    header(tmp_path / "rd", "RTDOSE", for_uid=for_uid, ref_plan=plan)
    (g,) = discover(tmp_path).groups
    assert g.structure_set.sop_instance_uid == ss and g.plan is not None
    assert g.structure_set_by == "frame_of_reference"
    assert any("not in the archive" in n for n in g.notes)


def test_frame_of_reference_matching_two_structure_sets_is_a_conflict(tmp_path):
    for_uid = new_uid()
    header(tmp_path / "ss1", "RTSTRUCT", for_uid=for_uid)
    header(tmp_path / "ss2", "RTSTRUCT", for_uid=for_uid)
    header(tmp_path / "rd", "RTDOSE", for_uid=for_uid)
    found = discover(tmp_path)
    assert found.groups == []
    (p,) = found.problems  # the structure sets are named in the conflict, not orphans
    assert p.kind == "conflict" and len(p.files) == 3 and "2 structure sets" in p.reason


def test_frame_of_reference_fallback_needs_the_same_patient(tmp_path):
    for_uid = new_uid()
    header(tmp_path / "ss", "RTSTRUCT", for_uid=for_uid, patient="A")
    header(tmp_path / "rd", "RTDOSE", for_uid=for_uid, patient="B")
    found = discover(tmp_path)
    assert found.groups == []
    assert sorted(p.kind for p in found.problems) == ["orphan_dose", "orphan_structure_set"]


def test_orphans_are_reported_never_guessed(tmp_path):
    ss = header(tmp_path / "a" / "ss", "RTSTRUCT", for_uid=new_uid())
    header(tmp_path / "b" / "rp", "RTPLAN", for_uid=new_uid(), ref_ss=ss)
    header(tmp_path / "c" / "rd", "RTDOSE", for_uid=new_uid())
    found = discover(tmp_path)
    assert found.groups == []
    kinds = {p.kind: p for p in found.problems}
    assert set(kinds) == {"orphan_structure_set", "orphan_plan", "orphan_dose"}
    assert kinds["orphan_dose"].severity == "error"
    assert kinds["orphan_plan"].severity == "warning"
    assert found.problem_counts() == {"orphan_structure_set": 1, "orphan_plan": 1,
                                      "orphan_dose": 1}


def test_beam_dose_without_plan_reference_is_not_guessed(tmp_path):
    for_uid = new_uid()
    header(tmp_path / "ss", "RTSTRUCT", for_uid=for_uid)
    header(tmp_path / "rd", "RTDOSE", for_uid=for_uid, summation="BEAM")
    found = discover(tmp_path)
    assert found.groups == []
    assert [p.kind for p in found.problems] == ["unpaired_beam_dose", "orphan_structure_set"]


def test_identical_copies_are_used_once(tmp_path):
    uids = plan_files(tmp_path / "original")
    shutil.copytree(tmp_path / "original", tmp_path / "backup")
    found = discover(tmp_path)
    (g,) = found.groups
    assert g.key == uids["plan"] and all("backup" in p for p in g.paths)  # sorted first
    dups = [p for p in found.problems if p.kind == "duplicate"]
    assert len(dups) == 3 and all(len(p.files) == 2 for p in dups)
    assert found.counts["duplicates"] == 3 and found.counts["rt"] == 3


def test_one_uid_with_different_contents_is_a_conflict(tmp_path):
    uids = plan_files(tmp_path / "a")
    header(tmp_path / "b" / "other", "RTSTRUCT", uids["ss"], for_uid=uids["for"], note="edited")
    found = discover(tmp_path)
    assert found.groups == []
    assert [p.kind for p in found.problems] == ["conflict", "conflict"]
    assert "different files" in found.problems[0].reason
    assert "conflicting copies" in found.problems[1].reason


def test_non_dicom_unreadable_hidden_and_other_files(tmp_path):
    plan_files(tmp_path / "plan")
    (tmp_path / "readme.txt").write_text("not DICOM")
    full = (tmp_path / "plan" / "x1").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(full[:140])
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 10)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x").write_text("skip me")
    header(tmp_path / "ct" / "1.dcm", "CT")
    found = discover(tmp_path)
    assert len(found.groups) == 1
    assert found.counts == {"files": 6, "dicom": 4, "rt": 3, "other_dicom": 1, "non_dicom": 1,
                            "unreadable": 1, "duplicates": 0, "plans": 1}
    kinds = {p.kind: p for p in found.problems}
    assert set(kinds) == {"non_dicom", "unreadable"}
    assert kinds["non_dicom"].files == (str(tmp_path / "readme.txt"),)
    assert kinds["unreadable"].files == (str(tmp_path / "cut.dcm"),)


def test_several_plans_per_patient(tmp_path):
    for_uid = new_uid()
    a = plan_files(tmp_path / "p1", for_uid=for_uid)
    b = plan_files(tmp_path / "p2", for_uid=for_uid, doses=("BEAM", "BEAM"))
    c = plan_files(tmp_path / "other", patient="P2")
    found = discover(tmp_path)
    assert found.problems == []
    assert [(g.patient_id, g.key) for g in found.groups] == sorted(
        [("P1", a["plan"]), ("P1", b["plan"]), ("P2", c["plan"])])


def test_read_header_and_missing_root(tmp_path):
    uid = header(tmp_path / "rd", "RTDOSE", for_uid="1.2.3", ref_plan="1.2.4",
                 summation="BEAM")
    h = read_header(tmp_path / "rd")
    assert (h.kind, h.sop_instance_uid, h.frame_of_reference_uid) == ("RTDOSE", uid, "1.2.3")
    assert (h.referenced_plan_uids, h.summation_type) == (("1.2.4",), "BEAM")
    assert h.size == (tmp_path / "rd").stat().st_size
    with pytest.raises(InputError, match="no such folder"):
        discover(tmp_path / "nope")
