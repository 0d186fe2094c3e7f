"""Progress of ``dvheval batch`` outside a terminal, and the end summary's list of plans.

When stderr is not a terminal (CI, cron, ``nohup``), the run writes plain
progress lines at a fixed interval and one at the end. The plans not passed
are listed worst first (FAIL, NOT_EVALUATED, ACCEPTABLE, as everywhere
else), each with its folder, so that two plans of one patient can be told
apart.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from dvheval.batch import (
    BatchSummary,
    PlainProgress,
    PlanTask,
    WorkerResult,
    batch_command,
    evaluate_plan,
    format_progress,
    format_summary,
)
from dvheval.batch.store import Fingerprint, NotPassed, ResultStore, input_digest, plan_folder

from .test_batch_hostile import PROTOCOL_YAML, _plan

LINE = re.compile(r"^batch: (\d+)/(\d+) plans, (--|\d+\.\d) plans/min, (\d+) errors, "
                  r"(\d+) not passed, (\d\d:\d\d|\d+:\d\d:\d\d) elapsed$")


# ------------------------------------------------------------ progress lines
def test_progress_line_format():
    assert format_progress(120, 480, 2, 5, 2322.6) == (
        "batch: 120/480 plans, 3.1 plans/min, 2 errors, 5 not passed, 38:42 elapsed")
    assert format_progress(0, 7, 0, 0, 0.0) == (
        "batch: 0/7 plans, -- plans/min, 0 errors, 0 not passed, 00:00 elapsed")
    assert format_progress(1, 1, 0, 0, 3725.0).endswith(" 1:02:05 elapsed")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_counts_outcomes_and_always_writes_a_last_line():
    out, clock = io.StringIO(), _Clock()
    sink = PlainProgress(out, interval=0, clock=clock)
    sink.start(4)
    for outcome in ("PASS", "FAIL", "ERROR", "ACCEPTABLE"):
        clock.now += 15.0
        sink.advance(outcome)
    assert out.getvalue() == ""  # no interval: only the line at the end
    sink.stop()
    sink.stop()  # once
    assert out.getvalue() == (
        "batch: 4/4 plans, 4.0 plans/min, 1 errors, 1 not passed, 01:00 elapsed\n")


def test_plain_progress_writes_at_its_interval():
    out = io.StringIO()
    sink = PlainProgress(out, interval=0.02)
    sink.start(3)
    sink.advance("NOT_EVALUATED")
    time.sleep(0.2)
    sink.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(LINE.match(ln) for ln in lines)
    assert lines[-1].startswith("batch: 1/3 plans, ") and ", 1 not passed, " in lines[-1]


def test_plain_progress_stopped_before_starting_writes_nothing():
    out = io.StringIO()
    PlainProgress(out, interval=0.01).stop()
    assert out.getvalue() == ""


# -------------------------------------------------- plans not passed: order
def _record(verdict: str, reasons: list[tuple[str, str, str]]) -> dict:
    plan = {"verdict": verdict, "exit_code": int(verdict != "PASS"), "rtplan_uid": None,
            "rtplan_label": "L1", "structure_set_label": None, "frame_of_reference_uid": None,
            "dose_summation": "PLAN", "fractions": 10, "fractions_source": "protocol",
            "prescriptions": [], "summary": {}, "warnings": [], "settings": {},
            "unmatched_rois": []}
    verdicts = [{"constraint_id": f"c{i}", "protocol_structure": st, "roi_number": 1,
                 "roi_name": st, "metric": metric, "priority": "hard", "operator": "<=",
                 "limit_value": 1.0, "limit_unit": "Gy", "limit_text": "1 Gy",
                 "acceptable_limit": None, "value": 2.0, "unit": "Gy", "margin": -1.0,
                 "verdict": v, "reason": None, "prescription": None, "prescription_gy": None,
                 "alternative": None, "citation": None}
                for i, (st, metric, v) in enumerate(reasons)]
    return {"plan": plan, "structures": [], "metrics": [], "verdicts": verdicts,
            "protocol_structures": [], "findings": []}


def _store_plan(store: ResultStore, run_id: int, key: str, patient: str, folder: str,
                verdict: str, reasons: list[tuple[str, str, str]]) -> None:
    files = [(role, f"{folder}/{role}.dcm", f"sha-{key}-{role}", f"uid-{key}-{role}", 1)
             for role in ("RTDOSE", "RTPLAN", "RTSTRUCT")]
    fp = Fingerprint(key, input_digest((r, s) for r, _, s, _, _ in files), "p", "v", "o")
    store.write_plan(run_id, fp, protocol={"name": "t", "version": "1"}, patient_id=patient,
                     key_source="rtplan", structure_set_by="reference", discovery_notes=[],
                     files=files, record=_record(verdict, reasons))


def test_not_passed_follows_the_verdict_severity_order_and_names_each_plan_folder(tmp_path):
    root = str(tmp_path / "archive")
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(roots=[root], protocol={"name": "t", "sha256": "p"},
                                 options={})
        # patients and keys sort in the opposite order of the verdicts' severity
        _store_plan(store, run_id, "k1", "A", f"{root}/A/plan1", "ACCEPTABLE",
                    [("PTV", "D98%", "ACCEPTABLE")])
        _store_plan(store, run_id, "k2", "B", f"{root}/B/plan1", "NOT_EVALUATED",
                    [("Cord", "Dmax", "NOT_EVALUATED")])
        _store_plan(store, run_id, "k3", "C", f"{root}/C/plan1", "FAIL",
                    [("Cord", "Dmax", "FAIL"), ("PTV", "D98%", "PASS")])
        _store_plan(store, run_id, "k4", "C", f"{root}/C/plan2", "FAIL",
                    [("Bowel", "D2cc", "FAIL")])
        _store_plan(store, run_id, "k0", "0", f"{root}/0/plan", "PASS", [])
        rows = store.not_passed(run_id)
    assert rows == [
        NotPassed("k3", "C", "L1", "FAIL", "Cord Dmax FAIL", "C/plan1"),
        NotPassed("k4", "C", "L1", "FAIL", "Bowel D2cc FAIL", "C/plan2"),
        NotPassed("k2", "B", "L1", "NOT_EVALUATED", "Cord Dmax NOT_EVALUATED", "B/plan1"),
        NotPassed("k1", "A", "L1", "ACCEPTABLE", "PTV D98% ACCEPTABLE", "A/plan1"),
    ]
    summary = BatchSummary(run_id, tmp_path / "r.sqlite",
                           {"name": "t", "version": "1", "sha256": "p" * 12},
                           not_passed=rows)
    listed = format_summary(summary).split("plans not passed:\n", 1)[1].splitlines()
    assert listed == [
        "  FAIL          C L1 (C/plan1): Cord Dmax FAIL",
        "  FAIL          C L1 (C/plan2): Bowel D2cc FAIL",
        "  NOT_EVALUATED B L1 (B/plan1): Cord Dmax NOT_EVALUATED",
        "  ACCEPTABLE    A L1 (A/plan1): PTV D98% ACCEPTABLE",
    ]


def test_plan_folder_is_relative_to_the_most_specific_root():
    files = ["/data/arch/P1/a/RD.dcm", "/data/arch/P1/a/RP.dcm"]
    assert plan_folder(files, ["/data/arch"]) == "P1/a"
    assert plan_folder(files, ["/data", "/data/arch/P1"]) == "a"
    assert plan_folder(["/data/arch/P1/a/RD.dcm", "/data/arch/P1/b/RS.dcm"],
                       ["/data/arch"]) == "P1"
    assert plan_folder(["/data/arch/RD.dcm"], ["/data/arch"]) == "."
    assert plan_folder(files, ["/elsewhere"]) == "/data/arch/P1/a"
    assert plan_folder([], ["/data/arch"]) == ""


# ---------------------------------------------------------- a whole run
def _slow(task: PlanTask, protocol, options) -> WorkerResult:
    """Worker function: evaluate after a pause, so progress lines fall between plans."""
    time.sleep(0.3)
    return evaluate_plan(task, protocol, options)


def test_batch_outside_a_terminal_writes_progress_lines_and_lists_plan_folders(tmp_path,
                                                                               capsys):
    root = tmp_path / "archive"
    for folder in ("P1/first", "P1/second"):  # two FAIL plans of one patient
        _plan(root / folder, peak=60.0, patient="P1")
    proto = tmp_path / "hostile-test.yaml"
    proto.write_text(PROTOCOL_YAML)
    code = batch_command(root, str(proto), db=tmp_path / "r.sqlite", jobs=1,
                         evaluator=_slow, progress_interval=0.05)
    captured = capsys.readouterr()
    assert code == 1, captured.err
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("batch: ")]
    assert len(lines) >= 2 and all(LINE.match(ln) for ln in lines), captured.err
    assert lines[-1].startswith("batch: 2/2 plans, ")
    assert lines[-1].endswith(" 0 errors, 2 not passed, " + lines[-1].rsplit(", ", 1)[1])
    listed = captured.out.split("plans not passed:\n", 1)[1].splitlines()[:2]
    assert sorted(ln.split(" (", 1)[1].split(")", 1)[0] for ln in listed) == [
        "P1/first", "P1/second"]
    assert all(ln.startswith("  FAIL          P1 ") for ln in listed)


def test_summary_without_folder_keeps_the_former_line():
    summary = BatchSummary(1, Path("r.sqlite"), {"name": "t", "version": "1", "sha256": "0" * 12},
                           not_passed=[NotPassed("k", "", "", "FAIL", "Cord Dmax FAIL", "")])
    assert "  FAIL          no patient id k: Cord Dmax FAIL" in format_summary(summary)
