"""Batch evaluation of an archive: database rows, resume, interruption, Dask, export.

The archive is built once per module from the sample plan and small
phantoms, with the mess of real exports: nested folders, odd file names,
duplicate copies, a plan of three BEAM doses, a plan found only by its
Frame of Reference, a truncated dose, a truncated header, a non-DICOM file,
an orphan dose and a plan whose structure set lacks the spinal cord.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dvheval.batch import (
    EvalOptions,
    PlanTask,
    WorkerResult,
    evaluate_plan,
    format_summary,
    run_batch,
)
from dvheval.dicom.discover import discover
from dvheval.engine.metrics import DEFAULT_METRICS, DEFAULT_TARGET_METRICS
from dvheval.protocol import load_protocol
from dvheval.testing.synthetic import new_uid

from .phantoms import cylinder, sphere, write_phantom

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom" / "sample_plan"

PROTOCOL_YAML = """\
format_version: 1
name: batch-test
title: "Batch test protocol"
version: "1.0"
date: "2026-01-01"
sources:
  test: {short: "test", reference: "Synthetic limits for the batch tests."}
fractions: 10
prescriptions:
  PTV30: {dose_gy: 30}
structures:
  - name: PTV_Low
    type: target
    aliases: [PTV30]
    prescription: PTV30
    constraints:
      - check: D98% >= 90%
        priority: objective
        source: test
    report: [Volume, D2%]
  - name: SpinalCord
    type: oar
    constraints:
      - id: cord-dmax
        check: Dmax <= 34 Gy
        source: test
    report: [D0.5cc]
  - name: Kidney_L
    type: oar
    required: false
    constraints:
      - check: Mean <= 12 Gy
        source: test
"""

#: ROIs of the sample plan: 11, of which 4 targets (CTV30, PTV30, GTV40, PTV40).
SAMPLE_ROIS, SAMPLE_TARGETS = 11, 4
#: Metric rows of one ROI: its volume and the default metrics (+ target extras).
OAR_ROWS = 1 + len(DEFAULT_METRICS)
TARGET_ROWS = OAR_ROWS + len(DEFAULT_TARGET_METRICS)
#: Protocol metrics that are not default metrics: Kidney_L Mean.
EXTRA_ROWS = 1


def _phantom_dose(peak: float):
    def dose(x, y, z):
        return peak * np.exp(-(x * x + y * y + z * z) / (2 * 20.0**2))
    return dose


def _phantom(folder: Path, peak: float, **kw) -> Path:
    """PTV30 (r 8 mm sphere at the dose peak), SpinalCord (y = 25 mm) and Kidney_L (x = 32 mm)."""
    ptv = sphere("PTV30", 8.0, 2.5)
    ptv.interpreted_type = "PTV"
    shapes = [ptv, cylinder("SpinalCord", 5.0, -20.0, 20.0, 2.5, cy=25.0),
              cylinder("Kidney_L", 5.0, -10.0, 10.0, 2.5, cx=32.0)]
    return write_phantom(folder, shapes, _phantom_dose(peak), **kw)


def _copy_without_cord(dest: Path) -> dict[str, str]:
    """The sample plan with SpinalCord removed, as new objects (new UIDs) referencing each other."""
    ss = pydicom.dcmread(SAMPLE / "RTSTRUCT.dcm")
    number = next(r.ROINumber for r in ss.StructureSetROISequence if r.ROIName == "SpinalCord")
    ss.StructureSetROISequence = [r for r in ss.StructureSetROISequence
                                  if r.ROINumber != number]
    ss.ROIContourSequence = [r for r in ss.ROIContourSequence
                             if r.ReferencedROINumber != number]
    ss.RTROIObservationsSequence = [r for r in ss.RTROIObservationsSequence
                                    if r.ReferencedROINumber != number]
    plan = pydicom.dcmread(SAMPLE / "RTPLAN.dcm")
    dose = pydicom.dcmread(SAMPLE / "RTDOSE.dcm")
    uids = {}
    for role, ds in (("ss", ss), ("plan", plan), ("dose", dose)):
        uids[role] = ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = uids["ss"]
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = uids["plan"]
    dest.mkdir(parents=True, exist_ok=True)
    ss.save_as(dest / "struct_nocord.dcm")
    plan.save_as(dest / "RP.replan")
    dose.save_as(dest / "dose-1")
    return uids


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def build_archive(root: Path, scratch: Path) -> dict[str, str]:
    """Write the archive; return the plan key of each plan by role."""
    keys = {}
    # A1: the sample plan, renamed, nested; and an identical backup copy (3 duplicates)
    a1 = root / "site1" / "PAT01" / "2019-03" / "RT"
    a1.mkdir(parents=True)
    for src, name in (("RTSTRUCT", "a"), ("RTPLAN", "b.DCM"), ("RTDOSE", "c.dcm")):
        shutil.copy(SAMPLE / f"{src}.dcm", a1 / name)
    shutil.copytree(a1, root / "backup" / "copy of RT")
    keys["A1"] = _uid(SAMPLE / "RTPLAN.dcm")
    # A2: same patient, re-plan whose structure set lacks the cord (NOT_EVALUATED)
    keys["A2"] = _copy_without_cord(root / "site1" / "PAT01" / "2020-replan")["plan"]
    # B1: phantom without RTPLAN, paired by Frame of Reference (PASS)
    b1 = _phantom(scratch / "b1", 34.0)
    keys["B1"] = str(pydicom.dcmread(b1 / "rd0.dcm").ReferencedRTPlanSequence[0]
                     .ReferencedSOPInstanceUID)
    (root / "site2" / "ph").mkdir(parents=True)
    shutil.copy(b1 / "rs.dcm", root / "site2" / "ph" / "structures.dcm")
    shutil.copy(b1 / "rd0.dcm", root / "site2" / "ph" / "dose")
    # B2: phantom with RTPLAN and a hot cord (FAIL)
    b2 = _phantom(scratch / "b2", 60.0, prescriptions=[("PTV30", 30.0)])
    shutil.copytree(b2, root / "site2" / "ph" / "plan 2")
    keys["B2"] = _uid(b2 / "rp.dcm")
    # B3: phantom with RTPLAN and three BEAM doses (PASS, one plan entry)
    b3 = _phantom(scratch / "b3", 34.0, prescriptions=[("PTV30", 30.0)],
                  dose_files=(("BEAM", 1 / 3),) * 3)
    shutil.copytree(b3, root / "site3" / "beams")
    keys["B3"] = _uid(b3 / "rp.dcm")
    # C: phantom whose dose file is truncated inside its pixel data (an evaluation error)
    c = _phantom(scratch / "c", 34.0, prescriptions=[("PTV30", 30.0)])
    dest = root / "site3" / "broken"
    shutil.copytree(c, dest)
    data = (c / "rd0.dcm").read_bytes()
    (dest / "rd0.dcm").write_bytes(data[: len(data) // 2])
    keys["C"] = _uid(c / "rp.dcm")
    # an orphan dose (its structure set is not in the archive)
    orphan = _phantom(scratch / "orphan", 34.0)
    shutil.copy(orphan / "rd0.dcm", root / "site3" / "lost_dose.dcm")
    # a truncated header and a non-DICOM file
    (root / "site3" / "cut.dcm").write_bytes((SAMPLE / "RTSTRUCT.dcm").read_bytes()[:300])
    (root / "notes.txt").write_text("exported 2024-01-01\n")
    return keys


EXPECTED_METRICS = {
    "A1": SAMPLE_ROIS * OAR_ROWS + SAMPLE_TARGETS * (TARGET_ROWS - OAR_ROWS) + EXTRA_ROWS,
    "A2": (SAMPLE_ROIS - 1) * OAR_ROWS + SAMPLE_TARGETS * (TARGET_ROWS - OAR_ROWS) + EXTRA_ROWS,
    # phantoms: PTV30 (a target), SpinalCord, Kidney_L
    "B1": TARGET_ROWS + 2 * OAR_ROWS + EXTRA_ROWS,
    "B2": TARGET_ROWS + 2 * OAR_ROWS + EXTRA_ROWS,
    "B3": TARGET_ROWS + 2 * OAR_ROWS + EXTRA_ROWS,
}
#: Verdict rows per plan: 3 constraints + 3 report metrics of the protocol.
VERDICT_ROWS = 6
EXPECTED_VERDICT = {"A1": "PASS", "A2": "NOT_EVALUATED", "B1": "PASS", "B2": "FAIL",
                    "B3": "PASS"}
EXPECTED_FILES = {"A1": 3, "A2": 3, "B1": 2, "B2": 3, "B3": 5}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    base = tmp_path_factory.mktemp("batch")
    root = base / "archive"
    keys = build_archive(root, base / "scratch")
    proto = base / "batch-test.yaml"
    proto.write_text(PROTOCOL_YAML)
    return root, keys, proto


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory) -> tuple[Path, object]:
    """An uninterrupted run with two local workers."""
    root, _, proto = archive
    db = tmp_path_factory.mktemp("ref") / "ref.sqlite"
    summary = run_batch(root, load_protocol(proto), db, jobs=2)
    return db, summary


def _rows(db: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _count(db: Path, table: str) -> int:
    return _rows(db, f"SELECT count(*) FROM {table}")[0][0]


def _content(db: Path) -> dict[str, list[tuple]]:
    """Result rows without ids, run numbers or timestamps, for comparing databases."""
    return {
        "plans": _rows(db, "SELECT plan_key, patient_id, input_sha256, protocol_sha256, "
                           "tool_version, verdict, exit_code, fractions, prescriptions, summary "
                           "FROM plans ORDER BY plan_key"),
        "metrics": _rows(db, "SELECT p.plan_key, m.roi_number, m.roi_name, m.protocol_structure, "
                             "m.metric, m.value, m.unit, m.in_protocol, m.error FROM metrics m "
                             "JOIN plans p USING (plan_id) ORDER BY 1, 2, 5"),
        "verdicts": _rows(db, "SELECT p.plan_key, v.constraint_id, v.roi_name, v.metric, "
                              "v.value, v.limit_value, v.margin, v.verdict, v.reason "
                              "FROM verdicts v JOIN plans p USING (plan_id) ORDER BY 1, 2"),
        "structures": _rows(db, "SELECT p.plan_key, s.roi_number, s.roi_name, s.status, "
                                "s.volume_cc, s.protocol_structure FROM structures s "
                                "JOIN plans p USING (plan_id) ORDER BY 1, 2"),
    }


# ------------------------------------------------------------------ tests
def test_discovery_of_the_archive(archive):
    root, keys, _ = archive
    found = discover(root)
    assert sorted(g.key for g in found.groups) == sorted(keys.values())
    by_key = {g.key: g for g in found.groups}
    assert len(by_key[keys["B3"]].doses) == 3
    assert by_key[keys["B1"]].structure_set_by == "frame_of_reference"
    assert by_key[keys["A1"]].structure_set_by == "reference"
    assert found.problem_counts() == {"duplicate": 3, "orphan_dose": 1, "unreadable": 1,
                                      "non_dicom": 1}
    assert found.counts["files"] == 3 + 3 + 3 + 2 + 3 + 5 + 3 + 1 + 1 + 1


def test_batch_database_rows(archive, reference):
    _, keys, _ = archive
    db, summary = reference
    assert summary.found == 6 and summary.evaluated == 5 and summary.skipped == 0
    assert [e[0] for e in summary.errors] == [keys["C"]]
    assert summary.verdicts == {"PASS": 3, "FAIL": 1, "NOT_EVALUATED": 1}
    assert summary.exit_code == 1
    name = {v: k for k, v in keys.items()}

    plans = _rows(db, "SELECT plan_key, verdict, protocol_name, tool_version FROM plans")
    assert {name[k]: v for k, v, _, _ in plans} == EXPECTED_VERDICT
    assert {(p, t) for _, _, p, t in plans} == {("batch-test", "0.1.0")}
    metrics = dict(_rows(db, "SELECT plan_key, count(*) FROM metrics JOIN plans USING (plan_id) "
                             "GROUP BY plan_key"))
    assert {name[k]: n for k, n in metrics.items()} == EXPECTED_METRICS
    assert _count(db, "verdicts") == VERDICT_ROWS * 5
    assert _count(db, "protocol_structures") == 3 * 5
    assert _count(db, "structures") == SAMPLE_ROIS + (SAMPLE_ROIS - 1) + 3 * 3
    files = dict(_rows(db, "SELECT plan_key, count(*) FROM plan_files JOIN plans "
                           "USING (plan_id) GROUP BY plan_key"))
    assert {name[k]: n for k, n in files.items()} == EXPECTED_FILES
    assert _rows(db, "SELECT count(*) FROM plan_files WHERE length(sha256) != 64") == [(0,)]

    errors = _rows(db, "SELECT plan_key, kind, message FROM errors")
    assert len(errors) == 1 and errors[0][0] == keys["C"] and errors[0][1] == "input"
    assert "PixelData" in errors[0][2] and "rd0.dcm" in errors[0][2]
    problems = dict(_rows(db, "SELECT kind, count(*) FROM problems GROUP BY kind"))
    assert problems == {"duplicate": 3, "orphan_dose": 1, "unreadable": 1, "non_dicom": 1}
    run = _rows(db, "SELECT status, n_found, n_evaluated, n_skipped, n_errors, protocol_sha256 "
                    "FROM runs")
    assert run == [("completed", 6, 5, 0, 1, load_protocol(archive[2]).sha256)]

    verdict = dict(_rows(db, "SELECT p.plan_key || ' ' || v.constraint_id, v.verdict "
                             "FROM verdicts v JOIN plans p USING (plan_id) "
                             "WHERE v.constraint_id = 'cord-dmax'"))
    assert verdict[f"{keys['A2']} cord-dmax"] == "NOT_EVALUATED"
    assert verdict[f"{keys['B2']} cord-dmax"] == "FAIL"
    # the BEAM doses are summed: same dose as B1, same cord maximum
    dmax = dict(_rows(db, "SELECT p.plan_key, v.value FROM verdicts v JOIN plans p "
                          "USING (plan_id) WHERE v.constraint_id = 'cord-dmax'"))
    assert dmax[keys["B3"]] == pytest.approx(dmax[keys["B1"]], rel=1e-5)
    assert dmax[keys["A1"]] == pytest.approx(31.06, abs=0.05)

    # the end-of-run report names every plan that did not pass and why
    not_passed = {n.plan_key: (n.verdict, n.reasons) for n in summary.not_passed}
    assert set(not_passed) == {keys["A2"], keys["B2"]}
    assert not_passed[keys["A2"]] == ("NOT_EVALUATED", "SpinalCord Dmax NOT_EVALUATED")
    assert not_passed[keys["B2"]][0] == "FAIL"
    assert "SpinalCord Dmax FAIL" in not_passed[keys["B2"]][1]
    assert "plans not passed:" in format_summary(summary)


def test_second_run_skips_everything(archive, reference, tmp_path):
    root, keys, proto = archive
    db = tmp_path / "again.sqlite"
    shutil.copy(reference[0], db)
    before = _content(db)
    summary = run_batch(root, load_protocol(proto), db, jobs=2)
    assert (summary.found, summary.evaluated, summary.skipped) == (6, 0, 5)
    assert [e[0] for e in summary.errors] == [keys["C"]]  # errors are retried
    assert summary.verdicts == {"PASS": 3, "FAIL": 1, "NOT_EVALUATED": 1}
    assert _content(db) == before
    assert _rows(db, "SELECT action, count(*) FROM run_plans WHERE run_id = 2 "
                     "GROUP BY action") == [("skipped", 5)]
    # other options are another evaluation
    summary = run_batch(root, load_protocol(proto), db, jobs=1,
                        options=EvalOptions(fractions=5))
    assert summary.skipped == 0 and summary.evaluated == 5


def _crash_on(key: str, task: PlanTask, protocol, options) -> WorkerResult:
    """Worker function that kills its own process on the plan ``key``."""
    if task.key == key:
        os._exit(3)
    return evaluate_plan(task, protocol, options)


def test_worker_death_is_an_error_and_resume_completes(archive, reference, tmp_path):
    root, keys, proto = archive
    db = tmp_path / "crash.sqlite"
    protocol = load_protocol(proto)
    summary = run_batch(root, protocol, db, jobs=2,
                        evaluator=functools.partial(_crash_on, keys["B2"]))
    died = [e for e in summary.errors if e[0] == keys["B2"]]
    assert len(died) == 1 and "worker process died" in died[0][2]
    assert summary.evaluated == 4 and summary.exit_code == 1
    assert _rows(db, "SELECT kind FROM errors WHERE plan_key = ?", keys["B2"]) == [
        ("worker_died",)]

    resumed = run_batch(root, protocol, db, jobs=2)
    assert (resumed.evaluated, resumed.skipped) == (1, 4)
    assert _content(db) == _content(reference[0])
    assert _rows(db, "SELECT resolved_by_plan_id IS NOT NULL FROM errors "
                     "WHERE plan_key = ?", keys["B2"]) == [(1,)]


def test_killed_run_resumes_to_the_same_database(archive, reference, tmp_path):
    root, _, proto = archive
    db = tmp_path / "killed.sqlite"
    cmd = [sys.executable, "-m", "dvheval.cli", "batch", str(root), "--protocol", str(proto),
           "--db", str(db), "--jobs", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    written = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    written = _count(db, "plans")
                except sqlite3.OperationalError:
                    written = 0
                if written >= 1:
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    written = _count(db, "plans")
    assert 1 <= written < 5, "the run was not killed midway"
    assert _rows(db, "SELECT status FROM runs") == [("running",)]

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"skipped       {written}" in done.stdout
    assert _content(db) == _content(reference[0])


def test_dask_cluster_gives_the_same_results(archive, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    root, _, proto = archive
    db = tmp_path / "dask.sqlite"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        summary = run_batch(root, load_protocol(proto), db, scheduler=cluster.scheduler_address)
    assert (summary.evaluated, len(summary.errors)) == (5, 1)
    assert _content(db) == _content(reference[0])
    assert _rows(db, "SELECT scheduler FROM runs") == [(cluster.scheduler_address,)]


def test_export_csv_parquet_summary_and_plots(archive, reference, tmp_path):
    import csv

    from dvheval.batch.export import TIDY_COLUMNS, export_run

    _, keys, _ = archive
    db, summary = reference
    written = export_run(db, tmp_path / "out" / "cohort.csv", summary.run_id)
    names = sorted(p.name for p in written)
    assert names == ["cohort.csv", "cohort_boxplots.png", "cohort_boxplots.svg",
                     "cohort_summary.csv"]
    with open(tmp_path / "out" / "cohort.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # every metric row, plus the cord limit of A2 whose structure is missing
    assert len(rows) == sum(EXPECTED_METRICS.values()) + 1
    assert tuple(rows[0]) == TIDY_COLUMNS
    missing = [r for r in rows if r["structure"] == ""]
    assert [(r["plan_key"], r["protocol_structure"], r["verdict"]) for r in missing] == [
        (keys["A2"], "SpinalCord", "NOT_EVALUATED")]
    cord = {r["plan_key"]: r for r in rows if r["structure"] == "SpinalCord"
            and r["metric"] == "Dmax"}
    assert cord[keys["B2"]]["verdict"] == "FAIL" and cord[keys["B2"]]["constraint_ids"] == (
        "cord-dmax")
    assert cord[keys["B1"]]["verdict"] == "PASS"
    assert all(r["verdict"] == "" for r in rows if r["metric"] == "D50%")

    with open(tmp_path / "out" / "cohort_summary.csv", newline="") as fh:
        stats = {r["constraint_id"]: r for r in csv.DictReader(fh)}
    assert set(stats) == {"PTV_Low: D98% >= 90%", "cord-dmax", "Kidney_L: Mean <= 12 Gy"}
    c = stats["cord-dmax"]
    assert (c["plans"], c["PASS"], c["FAIL"], c["NOT_EVALUATED"]) == ("5", "3", "1", "1")
    assert float(c["pass_rate"]) == pytest.approx(3 / 4)
    assert float(c["pass_rate_all"]) == pytest.approx(3 / 5)
    assert (tmp_path / "out" / "cohort_boxplots.png").stat().st_size > 1000

    pq = pytest.importorskip("pyarrow.parquet")
    export_run(db, tmp_path / "cohort.parquet", summary.run_id, plots=False)
    table = pq.read_table(tmp_path / "cohort.parquet")
    assert table.num_rows == len(rows) and tuple(table.column_names) == TIDY_COLUMNS


def test_cli_usage_errors_and_export_only(archive, reference, tmp_path):
    from typer.testing import CliRunner

    from dvheval.cli import app

    root, _, proto = archive
    runner = CliRunner()
    res = runner.invoke(app, ["batch", str(tmp_path / "nope"), "--protocol", str(proto)])
    assert res.exit_code == 2
    res = runner.invoke(app, ["batch", str(root), "--protocol", "no-such-protocol",
                              "--db", str(tmp_path / "x.sqlite")])
    assert res.exit_code == 2 and not (tmp_path / "x.sqlite").exists()
    res = runner.invoke(app, ["batch", str(root), "--protocol", str(proto), "--rx", "PTV99=3",
                              "--db", str(tmp_path / "x.sqlite")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["batch", str(root), "--protocol", str(proto), "--condition",
                              "lumbosacral", "--db", str(tmp_path / "x.sqlite")])
    assert res.exit_code == 2 and "unknown condition" in res.output
    out = tmp_path / "only.csv"
    res = runner.invoke(app, ["batch", "--db", str(reference[0]), "--export", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and (tmp_path / "only_summary.csv").is_file()
