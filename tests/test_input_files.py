"""Which files of a plan folder are read: never a named pipe, socket or hidden file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvheval.dicom import expand_paths, find_inputs
from dvheval.errors import InputError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"


@pytest.fixture
def plan(tmp_path):
    folder = tmp_path / "plan"
    shutil.copytree(SAMPLE, folder)
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_named_pipe_in_a_plan_folder_is_skipped_not_opened(plan):
    os.mkfifo(plan / "pipe.dcm")
    # a subprocess with a time limit: opening the pipe would block for ever
    code = ("import sys; from dvheval.dicom import find_inputs; "
            "s = find_inputs([sys.argv[1]]); print(len(s.doses)); "
            "print([str(p) + ': ' + why for p, why in s.ignored])")
    res = subprocess.run([sys.executable, "-c", code, str(plan)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "1"
    assert "pipe.dcm: a named pipe (FIFO): skipped" in res.stdout
    with pytest.raises(InputError, match="named pipe") as err:
        expand_paths([plan / "pipe.dcm"])
    assert err.value.path == plan / "pipe.dcm"


def test_broken_links_and_hidden_entries_are_not_read(plan):
    (plan / "gone.dcm").symlink_to(plan / "no-such-file")
    hidden = plan / ".snapshot"
    hidden.mkdir()
    shutil.copy(SAMPLE / "RTSTRUCT.dcm", hidden / "RTSTRUCT.dcm")  # would be a 2nd RTSTRUCT
    skipped: list = []
    files = expand_paths([plan], skipped)
    assert sorted(f.name for f in files) == ["RTDOSE.dcm", "RTPLAN.dcm", "RTSTRUCT.dcm"]
    assert skipped == [(plan / "gone.dcm", "a broken symbolic link or a link loop: skipped")]
    assert find_inputs([plan]).structure_set.path == plan / "RTSTRUCT.dcm"


def test_a_single_path_string_is_one_path_not_its_characters(plan):
    inputs = find_inputs(str(plan))
    assert inputs.structure_set.path == plan / "RTSTRUCT.dcm"
    assert find_inputs(plan).plan.path == plan / "RTPLAN.dcm"


def test_a_truncated_dicom_file_in_a_plan_folder_is_an_error_not_skipped(plan):
    data = (plan / "RTPLAN.dcm").read_bytes()
    (plan / "RTPLAN.dcm").write_bytes(data[:200])  # the DICM marker survives, the plan not
    with pytest.raises(InputError) as err:
        find_inputs([plan])
    assert err.value.path == plan / "RTPLAN.dcm"
    # a file that is not DICOM at all is still only listed
    (plan / "RTPLAN.dcm").write_bytes(data)
    (plan / "notes.txt").write_text("plan approved by Dr X")
    ignored = dict(find_inputs([plan]).ignored)
    assert "no DICM header" in ignored[plan / "notes.txt"]


def test_a_contour_without_geometric_type_is_refused(plan):
    import pydicom

    from dvheval.dicom import read_structure_set

    ds = pydicom.dcmread(plan / "RTSTRUCT.dcm")
    del ds.ROIContourSequence[5].ContourSequence[3].ContourGeometricType
    ds.save_as(plan / "RTSTRUCT.dcm")
    with pytest.raises(InputError, match="ContourGeometricType") as err:
        read_structure_set(plan / "RTSTRUCT.dcm")
    assert err.value.attribute == "ContourGeometricType" and "SpinalCord" in str(err.value)


def test_a_blank_study_uid_in_one_file_is_a_study_mismatch(plan):
    import pydicom

    from dvheval.engine.compute import read_headers
    from dvheval.integrity import header_findings

    ds = pydicom.dcmread(plan / "RTDOSE.dcm")
    ds.StudyInstanceUID = ""
    ds.save_as(plan / "RTDOSE.dcm")
    found = header_findings(*read_headers(find_inputs([plan]))[1])
    assert [f.check for f in found if f.closes] == ["study-mismatch"]


@pytest.mark.parametrize("blank", ["", " "])
def test_a_structure_set_without_frame_of_reference_is_refused(tmp_path, blank):
    """Contours with no Frame of Reference cannot be placed in the dose's coordinates."""


    import pydicom
    from typer.testing import CliRunner

    from dvheval.cli import app

    sample = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"
    plan = tmp_path / "plan"
    shutil.copytree(sample, plan)
    ds = pydicom.dcmread(plan / "RTSTRUCT.dcm")
    for item in ds.ReferencedFrameOfReferenceSequence:
        item.FrameOfReferenceUID = blank
    for item in ds.StructureSetROISequence:
        item.ReferencedFrameOfReferenceUID = blank
    ds.save_as(plan / "RTSTRUCT.dcm")
    res = CliRunner().invoke(app, ["check", str(plan), "-p", "bone-sib-30-40-10fx"])
    assert res.exit_code == 2
    assert "RTSTRUCT.dcm" in res.output and "names no Frame of Reference" in res.output
