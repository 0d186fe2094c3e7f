"""``dvheval batch`` against hostile archives, hangs, signals and broken databases.

Small phantom archives (three plans each) are written per module; plans are
made to fail in every way a plan can (bad input, an exception, ``sys.exit``,
a worker crash, rows the database refuses, a file gone after discovery, a
hang past the time limit) and the run must record each as an error of that
plan and go on. Special files (FIFOs, sockets, devices, broken links) must
be reported and never opened; SIGTERM and SIGINT must leave the database
marked ``interrupted`` and resumable; broken databases and unwritable export
paths must end with one ``error:`` line and exit code 2; names from DICOM
must reach the terminal escaped and the CSV export guarded against formulas.
"""

from __future__ import annotations

import csv
import errno
import functools
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
import pytest

from dvheval.batch import (
    PlanTask,
    WorkerResult,
    batch_command,
    evaluate_plan,
    format_summary,
    run_batch,
)
from dvheval.batch.export import csv_cell, export_run
from dvheval.dicom.discover import discover
from dvheval.protocol import load_protocol
from dvheval.sanitize import for_terminal

from .phantoms import cylinder, sphere, write_phantom

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.filterwarnings("ignore:The value length:UserWarning"),
              pytest.mark.filterwarnings("ignore:Found unknown escape sequence:UserWarning")]

PROTOCOL_YAML = """\
format_version: 1
name: hostile-test
title: "Hostile input test protocol"
version: "1.0"
date: "2026-01-01"
sources:
  test: {short: "test", reference: "Synthetic limits for the tests."}
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
  - name: SpinalCord
    type: oar
    constraints:
      - id: cord-dmax
        check: Dmax <= 34 Gy
        source: test
  - name: Kidney_L
    type: oar
    required: false
    constraints:
      - check: Mean <= 12 Gy
        source: test
"""

#: Hostile names: ANSI colour / screen-clear / title sequences, CR, LF, formula starts.
EVIL_PATIENT = "=1+2\x1b[2J\x1b[31mEVIL\r\nPAT"
EVIL_LABEL = "@SUM(1)\x1b]0;pwned\x07 [bold]x[/bold]"
EVIL_ROI = "-2+3\x1b[5mKIDNEY"


def _dose(peak: float):
    def dose(x, y, z):
        return peak * np.exp(-(x * x + y * y + z * z) / (2 * 20.0**2))
    return dose


def _plan(folder: Path, peak: float = 34.0, patient: str | None = None,
          label: str | None = None, rename: dict[str, str] | None = None) -> str:
    """A phantom plan (PTV30, SpinalCord, Kidney_L, RTPLAN, PLAN dose); return its plan key."""
    ptv = sphere("PTV30", 8.0, 2.5)
    ptv.interpreted_type = "PTV"
    shapes = [ptv, cylinder("SpinalCord", 5.0, -20.0, 20.0, 2.5, cy=25.0),
              cylinder("Kidney_L", 5.0, -10.0, 10.0, 2.5, cx=32.0)]
    write_phantom(folder, shapes, _dose(peak), prescriptions=[("PTV30", 30.0)])
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        if patient is not None:
            ds.PatientID = patient
        if label is not None and f.name == "rp.dcm":
            ds.RTPlanLabel = label
        if rename and f.name == "rs.dcm":
            for roi in ds.StructureSetROISequence:
                roi.ROIName = rename.get(roi.ROIName, roi.ROIName)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hostile values exceed their VR on purpose
            ds.save_as(f)
    return str(pydicom.dcmread(folder / "rp.dcm", stop_before_pixels=True).SOPInstanceUID)


def _rows(db: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def simple(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """Three plans that PASS; the one of patient ZZZ sorts last."""
    base = tmp_path_factory.mktemp("simple")
    root = base / "archive"
    keys = {"a": _plan(root / "a", patient="AAA"), "b": _plan(root / "b", patient="BBB"),
            "z": _plan(root / "z", patient="ZZZ")}
    proto = base / "hostile-test.yaml"
    proto.write_text(PROTOCOL_YAML)
    return root, proto, keys


# ------------------------------------------------------------- worker hooks
def _chaos(modes: dict[str, str], task: PlanTask, protocol, options) -> WorkerResult:
    """Worker function failing in the way ``modes[task.key]`` names (else evaluate normally)."""
    from dvheval.integrity import Finding, Severity

    mode = modes.get(task.key, "")
    if mode == "crash":
        os._exit(3)
    if mode in ("exception", "exit"):
        exc = RuntimeError("boom in the DVH engine") if mode == "exception" else SystemExit(7)

        def broken(*args, **kw):
            raise exc

        with mock.patch("dvheval.engine.compute.compute_dvhs", broken):
            return evaluate_plan(task, protocol, options)
    if mode == "finding":
        import dvheval.check

        real = dvheval.check.check_plan

        def with_finding(*args, **kw):
            result = real(*args, **kw)
            result.findings.append(Finding("test-id", Severity.WARN, "odd\x1b[31m header",
                                           task.paths[0]))
            return result

        with mock.patch("dvheval.check.check_plan", with_finding):
            return evaluate_plan(task, protocol, options)
    res = evaluate_plan(task, protocol, options)
    if mode == "store" and res.ok:
        res.record["structures"][0]["roi_name"] = None  # NOT NULL column: refused
    return res


def _hang_on(key: str, marker: str, task: PlanTask, protocol, options) -> WorkerResult:
    """Worker function that hangs on the plan ``key`` (after writing its pid to ``marker``)."""
    if task.key == key:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(300)
    return evaluate_plan(task, protocol, options)


# ------------------------------------------------------------ special files
def test_fifo_socket_device_and_broken_links_are_reported_never_opened(simple, tmp_path):
    src, _, keys = simple
    root = tmp_path / "archive"
    shutil.copytree(src, root)
    fifo = root / "a" / "pipe.dcm"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "b" / "sock"))
    (root / "null.dcm").symlink_to("/dev/null")
    (root / "broken.dcm").symlink_to(root / "nowhere")
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")

    box: dict[str, object] = {}
    walker = threading.Thread(target=lambda: box.update(found=discover(root)), daemon=True)
    walker.start()
    walker.join(30)
    blocked = walker.is_alive()
    if blocked:  # release the reader stuck on the FIFO
        with open(fifo, "wb"):
            pass
        walker.join(10)
    sock.close()
    assert not blocked, "discovery blocked on the FIFO"

    found = box["found"]
    assert sorted(g.key for g in found.groups) == sorted(keys.values())
    by_file = {Path(p.files[0]).name: p for p in found.problems}
    assert (by_file["pipe.dcm"].kind, by_file["sock"].kind, by_file["null.dcm"].kind) == (
        "not_a_file", "not_a_file", "not_a_file")
    assert "FIFO" in by_file["pipe.dcm"].reason and "socket" in by_file["sock"].reason
    assert "character device" in by_file["null.dcm"].reason
    assert by_file["broken.dcm"].kind == "unreadable"
    assert "broken symbolic link" in by_file["broken.dcm"].reason
    assert {by_file["loop1"].kind, by_file["loop2"].kind} == {"unreadable"}
    assert "loop" in by_file["loop1"].reason
    assert found.counts["not_a_file"] == 3 and found.counts["unreadable"] == 3
    assert found.counts["files"] == 9 + 6


# ------------------------------------------------------------- time limit
def test_a_plan_over_the_time_limit_is_killed_and_the_rest_go_on(simple, tmp_path):
    root, proto, keys = simple
    db = tmp_path / "timeout.sqlite"
    marker = tmp_path / "hung.pid"
    # one worker: the hanging plan (sorted first) blocks the only process; the limit is
    # far above the second or so a phantom plan takes, even on a loaded machine
    summary = run_batch(root, load_protocol(proto), db, jobs=1, timeout=8.0,
                        evaluator=functools.partial(_hang_on, keys["a"], str(marker)))
    assert [(k, "time limit" in m) for k, _, m in summary.errors] == [(keys["a"], True)]
    assert summary.evaluated == 2 and summary.exit_code == 1
    assert _rows(db, "SELECT plan_key, kind FROM errors") == [(keys["a"], "timeout")]
    assert sorted(r[0] for r in _rows(db, "SELECT plan_key FROM plans")) == sorted(
        [keys["b"], keys["z"]])
    assert _rows(db, "SELECT status FROM runs") == [("completed",)]
    assert not _alive(int(marker.read_text())), "the hung worker is still running"


# ---------------------------------------------------------------- signals
@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_marks_the_run_interrupted_kills_workers_and_resumes(simple, tmp_path, sig,
                                                                    code):
    root, proto, keys = simple
    db = tmp_path / "sig.sqlite"
    marker = tmp_path / "hung.pid"
    driver = (
        "import functools, sys\n"
        "from pathlib import Path\n"
        "from dvheval.batch import batch_command\n"
        "from tests.test_batch_hostile import _hang_on\n"
        f"hook = functools.partial(_hang_on, {keys['z']!r}, {str(marker)!r})\n"
        f"sys.exit(batch_command(Path({str(root)!r}), {str(proto)!r}, db=Path({str(db)!r}), "
        "jobs=1, timeout=0, evaluator=hook))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO, env=env,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and not (
                marker.exists() and marker.read_text() and db.exists()
                and _rows(db, "SELECT count(*) FROM plans") == [(2,)]):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        assert marker.exists(), "the last plan never started"
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    assert _rows(db, "SELECT status FROM runs") == [("interrupted",)]
    assert _rows(db, "SELECT count(*) FROM plans") == [(2,)]
    assert not _alive(int(marker.read_text())), "the worker survived the interruption"

    again = subprocess.run([sys.executable, "-m", "dvheval.cli", "batch", str(root),
                            "--protocol", str(proto), "--db", str(db), "--jobs", "1"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "skipped       2" in again.stdout and "evaluated     1" in again.stdout
    assert _rows(db, "SELECT status FROM runs ORDER BY run_id") == [("interrupted",),
                                                                     ("completed",)]


# -------------------------------------------------------------- databases
def _app_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()


def _other_layout_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("CREATE TABLE runs (run_id INTEGER PRIMARY KEY, note TEXT)")
    conn.commit()
    conn.close()


def _bad_version_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', 'one')")
    conn.commit()
    conn.close()


def _truncated_db(path: Path) -> None:
    from dvheval.batch.store import ResultStore

    with ResultStore(path) as store:
        store.remember_hashes((f"/x/{i}", i, i, "0" * 64) for i in range(3000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for tail in ("-wal", "-shm"):
        Path(str(path) + tail).unlink(missing_ok=True)


@pytest.mark.parametrize(("make", "says"), [
    (lambda p: p.write_bytes(np.random.default_rng(1).bytes(8192)), "not a usable SQLite"),
    (_truncated_db, "malformed"),
    (lambda p: p.mkdir(), "is a folder"),
    (_app_db, "not a dvheval results database"),
    (_other_layout_db, "table runs lacks"),
    (_bad_version_db, "layout version 'one'"),
], ids=["random-bytes", "truncated", "folder", "other-program", "other-layout", "bad-version"])
def test_unusable_database_is_one_error_line_and_exit_2(simple, tmp_path, capsys, make, says):
    root, proto, _ = simple
    db = tmp_path / "results.sqlite"
    make(db)
    before = db.read_bytes() if db.is_file() else None
    code = batch_command(root, str(proto), db=db, jobs=1)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {db}: ") and says in err and "Traceback" not in err
    assert err.count("error:") == 1
    if before is not None:
        assert db.read_bytes() == before, "the database was modified"


def test_read_only_database_fails_before_any_evaluation(simple, tmp_path, capsys, monkeypatch):
    root, proto, _ = simple
    db = tmp_path / "ro.sqlite"
    from dvheval.batch.store import ResultStore

    keeper = ResultStore(db)  # keeps the WAL index open, as a reader elsewhere would
    real = sqlite3.connect

    def read_only(path, *args, **kw):  # as a read-only file or mount behaves, also for root
        if Path(path) != db:
            return real(path, *args, **kw)
        kw.pop("uri", None)
        return real(db.resolve().as_uri() + "?mode=ro", *args, uri=True, **kw)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    called = []
    try:
        code = batch_command(root, str(proto), db=db, jobs=1,
                             evaluator=lambda *a: called.append(a))  # never reached
    finally:
        monkeypatch.undo()
        keeper.close()
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {db}: ") and "readonly" in err, err
    assert err.count("error:") == 1 and called == []
    assert _rows(db, "SELECT count(*) FROM runs") == [(0,)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_database_file(simple, tmp_path, capsys):
    root, proto, _ = simple
    db = tmp_path / "ro.sqlite"
    from dvheval.batch.store import ResultStore

    ResultStore(db).close()
    db.chmod(0o444)
    assert batch_command(root, str(proto), db=db, jobs=1) == 2
    assert capsys.readouterr().err.startswith(f"error: {db}: ")


def _messages(err: str) -> str:
    """stderr without the plain progress lines (stderr is not a terminal under pytest)."""
    return "".join(ln for ln in err.splitlines(keepends=True) if not ln.startswith("batch: "))


def _drop_metrics(db: str, task: PlanTask, protocol, options) -> WorkerResult:
    """Worker function that breaks the database under the running batch."""
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("DROP TABLE IF EXISTS metrics")
    conn.commit()
    conn.close()
    return evaluate_plan(task, protocol, options)


def test_database_failing_during_the_run_is_a_clean_exit_2(simple, tmp_path, capsys):
    root, proto, _ = simple
    db = tmp_path / "dropped.sqlite"
    code = batch_command(root, str(proto), db=db, jobs=1,
                         evaluator=functools.partial(_drop_metrics, str(db)))
    err = _messages(capsys.readouterr().err)
    assert code == 2 and err.startswith(f"error: {db}: database error during the run"), err
    assert "no such table: metrics" in err
    assert _rows(db, "SELECT status FROM runs") == [("failed",)]


# ----------------------------------------------------------------- export
def test_unwritable_export_is_refused_before_evaluating(simple, tmp_path, capsys):
    root, proto, _ = simple
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "taken.csv").mkdir()
    (tmp_path / "side_summary.csv").mkdir()
    for export, says in ((tmp_path / "a_file" / "sub" / "out.csv", "is not a folder"),
                         (tmp_path / "taken.csv", "is a folder"),
                         (tmp_path / "side.csv", "side_summary.csv: is a folder"),
                         (tmp_path / "out.xlsx", "must end in .csv or .parquet")):
        db = tmp_path / "never.sqlite"
        code = batch_command(root, str(proto), db=db, jobs=1, export=export)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and says in err, err
        assert not db.exists(), "evaluation started before the export path was checked"


def test_export_failing_at_the_end_is_exit_2_and_results_stay(simple, tmp_path, capsys,
                                                               monkeypatch):
    import dvheval.batch.export

    root, proto, keys = simple
    db = tmp_path / "kept.sqlite"
    out = tmp_path / "cohort.csv"

    def full_disk(path, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(dvheval.batch.export, "_write_csv", full_disk)
    code = batch_command(root, str(proto), db=db, jobs=1, export=out)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert _messages(captured.err).startswith(
        f"error: {out}: cannot write the export (No space left")
    assert f"dvheval batch --db {db} --export FILE --run 1" in captured.err
    assert "Traceback" not in captured.err and "verdicts      PASS 3" in captured.out
    assert sorted(r[0] for r in _rows(db, "SELECT plan_key FROM plans")) == sorted(
        keys.values())


# ------------------------------------------------------- every plan failure
@pytest.fixture(scope="module")
def chaos(tmp_path_factory) -> dict:
    """One run over plans that fail in every way, a hostile-named FAIL plan and a good one."""
    base = tmp_path_factory.mktemp("chaos")
    root = base / "archive"
    keys = {mode: _plan(root / mode, patient=f"P-{mode}")
            for mode in ("finding", "input", "exception", "exit", "crash", "store", "gone")}
    keys["evil"] = _plan(root / "evil", peak=60.0, patient=EVIL_PATIENT, label=EVIL_LABEL,
                         rename={"Kidney_L": EVIL_ROI})
    data = (root / "input" / "rd0.dcm").read_bytes()
    (root / "input" / "rd0.dcm").write_bytes(data[: len(data) // 2])  # cut in the pixel data
    odd = root / "lost\x1b[31m\n[bold]dose"
    odd.mkdir()
    _plan(base / "orphan")
    shutil.copy(base / "orphan" / "rd0.dcm", odd / "rd.dcm")
    proto = base / "hostile-test.yaml"
    proto.write_text(PROTOCOL_YAML)

    found = discover(root)
    (root / "gone" / "rp.dcm").unlink()  # vanishes between discovery and evaluation
    db = base / "chaos.sqlite"
    modes = {keys[m]: m for m in keys}
    summary = run_batch(root, load_protocol(proto), db, jobs=1, discovery=found,
                        evaluator=functools.partial(_chaos, modes))
    return {"root": root, "keys": keys, "db": db, "summary": summary, "base": base}


@pytest.mark.slow  # the fixture's run: eight plans, a crash and its solo retries
def test_every_kind_of_plan_failure_is_an_error_of_that_plan_only(chaos):
    keys, db, summary = chaos["keys"], chaos["db"], chaos["summary"]
    kinds = dict(_rows(db, "SELECT plan_key, kind FROM errors"))
    name = {v: k for k, v in keys.items()}
    assert {name[k]: v for k, v in kinds.items()} == {
        "input": "input", "exception": "exception", "exit": "exception",
        "crash": "worker_died", "store": "store", "gone": "unreadable"}
    messages = dict(_rows(db, "SELECT plan_key, message FROM errors"))
    assert "boom in the DVH engine" in messages[keys["exception"]]
    assert messages[keys["exit"]] == "SystemExit: 7"
    assert "rp.dcm" in messages[keys["gone"]]
    stored = dict(_rows(db, "SELECT plan_key, verdict FROM plans"))
    assert stored == {keys["finding"]: "PASS", keys["evil"]: "FAIL"}
    # the refused rows of the "store" plan left nothing behind
    assert _rows(db, "SELECT count(*) FROM structures") == [(3 + 3,)]
    assert summary.evaluated == 2 and len(summary.errors) == 6 and summary.exit_code == 1
    assert _rows(db, "SELECT status FROM runs") == [("completed",)]


def test_integrity_findings_are_stored_per_plan(chaos):
    keys, db = chaos["keys"], chaos["db"]
    rows = _rows(db, "SELECT p.plan_key, f.check_id, f.severity, f.message, f.file "
                     "FROM findings f JOIN plans p USING (plan_id) WHERE f.check_id = 'test-id'")
    assert rows == [(keys["finding"], "test-id", "warn", "odd\x1b[31m header",
                     str(chaos["root"] / "finding" / "rs.dcm"))]


def test_names_from_dicom_reach_the_terminal_escaped_and_the_database_unchanged(chaos):
    keys, db, summary = chaos["keys"], chaos["db"], chaos["summary"]
    text = format_summary(summary)
    assert not any(c in text for c in "\x1b\x07\r")
    lines = text.split("\n")
    evil = [ln for ln in lines if "EVIL" in ln]
    assert evil == [f"  FAIL          {for_terminal(EVIL_PATIENT)} {for_terminal(EVIL_LABEL)} "
                    "(evil): SpinalCord Dmax FAIL"]
    assert "=1+2\\x1b[2J\\x1b[31mEVIL\\r\\nPAT" in evil[0]
    orphan = [ln for ln in lines if ln.startswith("  orphan_dose:")]
    assert len(orphan) == 1 and "lost\\x1b[31m\\n[bold]dose" in orphan[0]
    assert _rows(db, "SELECT patient_id, rtplan_label FROM plans WHERE plan_key = ?",
                 keys["evil"]) == [(EVIL_PATIENT, EVIL_LABEL)]
    assert _rows(db, "SELECT count(*) FROM structures WHERE roi_name = ?", EVIL_ROI) == [(1,)]


def test_csv_export_guards_text_cells_against_formulas_not_numbers(chaos, tmp_path):
    keys, db, summary = chaos["keys"], chaos["db"], chaos["summary"]
    export_run(db, tmp_path / "cohort.csv", summary.run_id, plots=False)
    with open(tmp_path / "cohort.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["plan_key"] == keys["evil"]]
    assert {r["patient_id"] for r in rows} == {"'" + EVIL_PATIENT}
    assert {r["rtplan_label"] for r in rows} == {"'" + EVIL_LABEL}
    kidney = [r for r in rows if r["structure"].endswith("KIDNEY")]
    assert kidney and {r["structure"] for r in kidney} == {"'" + EVIL_ROI}
    volume = next(r for r in kidney if r["metric"] == "Volume")
    assert float(volume["value"]) > 0 and not volume["value"].startswith("'")
    assert csv_cell(-1.5) == -1.5 and csv_cell(0) == 0 and csv_cell(None) is None
    assert [csv_cell(s) for s in ("=A1", "+1", "-x", "@f", "\tx", "\rx", "PTV", "a=b")] == [
        "'=A1", "'+1", "'-x", "'@f", "'\tx", "'\rx", "PTV", "a=b"]


def test_rich_markup_in_paths_is_printed_literally(tmp_path, capsys):
    missing = tmp_path / "archive [/bold] [red]x"
    assert batch_command(missing, "whatever", db=tmp_path / "x.sqlite") == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {missing}: no such folder"


def test_terminal_text_escapes_control_characters_only():
    assert for_terminal("PTV 40 Gy, Müller, 肝臓") == "PTV 40 Gy, Müller, 肝臓"
    assert for_terminal("a\x1b[31mb\r\nc\x7f\x9b\u202e") == "a\\x1b[31mb\\r\\nc\\x7f\\x9b\\u202e"
