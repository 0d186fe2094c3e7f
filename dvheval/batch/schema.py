"""The layout of the batch-results database: tables, views and row types.

Tables
------
``runs``                one row per ``dvheval batch`` invocation.
``plans``               one row per evaluated plan (plan verdict, identity).
``plan_files``          the files of each plan, with SHA-256.
``structures``          every ROI of each plan, with its protocol match.
``metrics``             long format: one row per plan x ROI x metric.
``verdicts``            one row per plan x protocol constraint (and report metric).
``protocol_structures`` how each protocol structure was found in each plan.
``findings``            integrity findings of each plan (check id, severity, message).
``dvh_curves``          every ROI's cumulative DVH (see :mod:`dvheval.batch.curves`).
``errors``              plans that could not be evaluated, with the reason.
``problems``            discovery problems of each run (orphans, conflicts...).
``run_plans``           which plans each run evaluated or skipped.
``file_hashes``         SHA-256 cache keyed by path, size and modification time.

Views ``v_metrics`` and ``v_verdicts`` join the result rows with their plan,
protocol and tool version.

The rows the evaluation of a plan fills are typed dicts keyed by column
name (:class:`StructureRow`, :class:`MetricRow` ...); the column lists
(:data:`STRUCTURE_COLUMNS` ...) are their keys, in table order, and
:mod:`dvheval.batch.store` inserts them by name.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import Any, TypedDict

#: Version of the table layout written by this module.
SCHEMA_VERSION = 1

class StructureRow(TypedDict):
    """A row of table ``structures`` (without ``plan_id``): one ROI of a plan."""

    roi_number: int | None
    roi_name: str
    roi_type: str | None
    status: str | None
    volume_cc: float | None
    coverage: float | None
    protocol_structure: str | None
    matched_by: str | None
    warnings: str | None


class MetricRow(TypedDict):
    """A row of table ``metrics``: one metric of one ROI of a plan."""

    roi_number: int | None
    roi_name: str
    protocol_structure: str | None
    metric: str
    value: float | None
    unit: str | None
    in_protocol: int
    error: str | None


class VerdictRow(TypedDict):
    """A row of table ``verdicts``: one protocol constraint (or report metric) of a plan."""

    constraint_id: str
    protocol_structure: str
    roi_number: int | None
    roi_name: str | None
    metric: str
    priority: str
    operator: str | None
    limit_value: float | None
    limit_unit: str | None
    limit_text: str | None
    acceptable_limit: float | None
    value: float | None
    unit: str | None
    margin: float | None
    verdict: str
    reason: str | None
    prescription: str | None
    prescription_gy: float | None
    alternative: str | None
    citation: str | None


class ProtocolStructureRow(TypedDict):
    """A row of table ``protocol_structures``: how one protocol structure was found."""

    structure: str
    type: str | None
    required: int
    match: str
    roi_name: str | None
    matched_by: str | None
    roi_status: str | None
    reason: str | None


class FindingRow(TypedDict):
    """A row of table ``findings``: one integrity finding of a plan."""

    check_id: str
    severity: str
    message: str
    file: str | None


class CurveRow(TypedDict):
    """A row of table ``dvh_curves`` (without ``plan_id``): one ROI's cumulative DVH.

    ``curve_cc`` is None for a ROI without a DVH (no contours, only points,
    wholly outside the dose grid); ``status`` says which.
    """

    roi_number: int | None
    roi_name: str
    protocol_structure: str | None
    status: str | None
    total_cc: float | None
    covered_cc: float | None
    min_gy: float | None
    max_gy: float | None
    mean_gy: float | None
    prescription_gy: float | None
    dose_start_gy: float | None
    dose_step_gy: float | None
    n_points: int | None
    curve_cc: bytes | None


class PlanResult(TypedDict):
    """The evaluation's columns of table ``plans`` (dicts and lists are stored as JSON)."""

    verdict: str
    exit_code: int
    rtplan_uid: str | None
    rtplan_label: str | None
    structure_set_label: str | None
    frame_of_reference_uid: str | None
    dose_summation: str | None
    fractions: int | None
    fractions_source: str | None
    prescriptions: list[dict[str, Any]]
    summary: dict[str, Any]
    warnings: list[str]
    settings: dict[str, Any]
    unmatched_rois: list[str]


class PlanRecord(TypedDict):
    """Everything the evaluation of one plan writes: its ``plans`` columns and child rows."""

    plan: PlanResult
    structures: list[StructureRow]
    metrics: list[MetricRow]
    verdicts: list[VerdictRow]
    protocol_structures: list[ProtocolStructureRow]
    findings: list[FindingRow]
    dvh_curves: list[CurveRow]


#: Columns the evaluation fills for each child table (``plan_id`` is added on
#: write), in table order: the keys of the row types above.
STRUCTURE_COLUMNS: tuple[str, ...] = tuple(StructureRow.__annotations__)
METRIC_COLUMNS: tuple[str, ...] = tuple(MetricRow.__annotations__)
VERDICT_COLUMNS: tuple[str, ...] = tuple(VerdictRow.__annotations__)
PROTOCOL_STRUCTURE_COLUMNS: tuple[str, ...] = tuple(ProtocolStructureRow.__annotations__)
FINDING_COLUMNS: tuple[str, ...] = tuple(FindingRow.__annotations__)
CURVE_COLUMNS: tuple[str, ...] = tuple(CurveRow.__annotations__)
PLAN_RESULT_COLUMNS: tuple[str, ...] = tuple(PlanResult.__annotations__)

#: Child tables of a plan and their columns, in the order they are written.
CHILD_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("structures", STRUCTURE_COLUMNS),
    ("metrics", METRIC_COLUMNS),
    ("verdicts", VERDICT_COLUMNS),
    ("protocol_structures", PROTOCOL_STRUCTURE_COLUMNS),
    ("findings", FINDING_COLUMNS),
    ("dvh_curves", CURVE_COLUMNS),
)

#: The tables, indexes and views, created when missing.
SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,             -- running, completed, interrupted, failed
    roots TEXT NOT NULL,              -- JSON list of folders
    command TEXT,
    tool_version TEXT NOT NULL,
    protocol_name TEXT NOT NULL,
    protocol_version TEXT,
    protocol_sha256 TEXT NOT NULL,
    protocol_file TEXT,
    options TEXT NOT NULL,            -- JSON: prescriptions, fractions, end caps
    options_sha256 TEXT NOT NULL,
    jobs INTEGER,
    scheduler TEXT,
    files_seen INTEGER,
    discovery_seconds REAL,
    n_found INTEGER,
    n_evaluated INTEGER,
    n_skipped INTEGER,
    n_errors INTEGER,
    n_problems INTEGER
);
CREATE TABLE IF NOT EXISTS plans (
    plan_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    plan_key TEXT NOT NULL,
    key_source TEXT NOT NULL,
    patient_id TEXT,
    input_sha256 TEXT NOT NULL,
    protocol_name TEXT NOT NULL,
    protocol_version TEXT,
    protocol_sha256 TEXT NOT NULL,
    tool_version TEXT NOT NULL,
    options_sha256 TEXT NOT NULL,
    structure_set_by TEXT,
    discovery_notes TEXT,             -- JSON list
    verdict TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    rtplan_uid TEXT,
    rtplan_label TEXT,
    structure_set_label TEXT,
    frame_of_reference_uid TEXT,
    dose_summation TEXT,
    fractions INTEGER,
    fractions_source TEXT,
    prescriptions TEXT,               -- JSON
    summary TEXT,                     -- JSON: verdict counts per priority
    warnings TEXT,                    -- JSON list
    settings TEXT,                    -- JSON
    unmatched_rois TEXT,              -- JSON list
    evaluated_at TEXT NOT NULL,
    seconds REAL,
    worker TEXT,
    worker_maxrss_kb INTEGER
);
CREATE INDEX IF NOT EXISTS plans_fingerprint
    ON plans (plan_key, input_sha256, protocol_sha256, tool_version, options_sha256);
CREATE TABLE IF NOT EXISTS plan_files (
    plan_id INTEGER NOT NULL REFERENCES plans(plan_id),
    role TEXT NOT NULL,               -- RTSTRUCT, RTPLAN, RTDOSE
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    sop_instance_uid TEXT,
    size INTEGER
);
CREATE INDEX IF NOT EXISTS plan_files_plan ON plan_files (plan_id);
CREATE TABLE IF NOT EXISTS structures (
    plan_id INTEGER NOT NULL REFERENCES plans(plan_id),
    roi_number INTEGER,
    roi_name TEXT NOT NULL,
    roi_type TEXT,
    status TEXT,
    volume_cc REAL,
    coverage REAL,
    protocol_structure TEXT,
    matched_by TEXT,
    warnings TEXT
);
CREATE INDEX IF NOT EXISTS structures_plan ON structures (plan_id);
CREATE TABLE IF NOT EXISTS metrics (
    plan_id INTEGER NOT NULL REFERENCES plans(plan_id),
    roi_number INTEGER,
    roi_name TEXT NOT NULL,
    protocol_structure TEXT,
    metric TEXT NOT NULL,
    value REAL,
    unit TEXT,
    in_protocol INTEGER NOT NULL,     -- 1 when the protocol reports or limits it
    error TEXT
);
CREATE INDEX IF NOT EXISTS metrics_plan ON metrics (plan_id);
CREATE TABLE IF NOT EXISTS verdicts (
    plan_id INTEGER NOT NULL REFERENCES plans(plan_id),
    constraint_id TEXT NOT NULL,
    protocol_structure TEXT NOT NULL,
    roi_number INTEGER,
    roi_name TEXT,
    metric TEXT NOT NULL,
    priority TEXT NOT NULL,           -- hard, objective, report
    operator TEXT,
    limit_value REAL,
    limit_unit TEXT,
    limit_text TEXT,
    acceptable_limit REAL,
    value REAL,
    unit TEXT,
    margin REAL,
    verdict TEXT NOT NULL,
    reason TEXT,
    prescription TEXT,
    prescription_gy REAL,
    alternative TEXT,
    citation TEXT
);
CREATE INDEX IF NOT EXISTS verdicts_plan ON verdicts (plan_id);
CREATE TABLE IF NOT EXISTS protocol_structures (
    plan_id INTEGER NOT NULL REFERENCES plans(plan_id),
    structure TEXT NOT NULL,
    type TEXT,
    required INTEGER,
    match TEXT,                       -- matched, missing, ambiguous
    roi_name TEXT,
    matched_by TEXT,
    roi_status TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS protocol_structures_plan ON protocol_structures (plan_id);
CREATE TABLE IF NOT EXISTS findings (
    plan_id INTEGER NOT NULL REFERENCES plans(plan_id),
    check_id TEXT NOT NULL,           -- stable id of the integrity check
    severity TEXT NOT NULL,           -- close (gate closed), warn
    message TEXT NOT NULL,
    file TEXT
);
CREATE INDEX IF NOT EXISTS findings_plan ON findings (plan_id);
CREATE TABLE IF NOT EXISTS dvh_curves (
    plan_id INTEGER NOT NULL REFERENCES plans(plan_id),
    roi_number INTEGER,
    roi_name TEXT NOT NULL,
    protocol_structure TEXT,
    status TEXT,
    total_cc REAL,
    covered_cc REAL,
    min_gy REAL,
    max_gy REAL,
    mean_gy REAL,
    prescription_gy REAL,             -- the dose a bare % of this ROI refers to
    dose_start_gy REAL,               -- dose of the first curve value
    dose_step_gy REAL,
    n_points INTEGER,
    curve_cc BLOB                     -- float32 little-endian cumulative volumes (cc)
);
CREATE INDEX IF NOT EXISTS dvh_curves_plan ON dvh_curves (plan_id);
CREATE TABLE IF NOT EXISTS errors (
    error_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    plan_key TEXT NOT NULL,
    patient_id TEXT,
    input_sha256 TEXT,
    protocol_sha256 TEXT,
    tool_version TEXT,
    options_sha256 TEXT,
    kind TEXT NOT NULL,               -- input, exception, worker_died, timeout, changed,
                                      -- unreadable, store
    error_type TEXT,
    message TEXT NOT NULL,
    traceback TEXT,
    files TEXT,                       -- JSON list of [path, sha256]
    occurred_at TEXT NOT NULL,
    resolved_by_plan_id INTEGER REFERENCES plans(plan_id)
);
CREATE INDEX IF NOT EXISTS errors_key ON errors (plan_key);
CREATE TABLE IF NOT EXISTS problems (
    problem_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    patient_id TEXT,
    files TEXT                        -- JSON list
);
CREATE TABLE IF NOT EXISTS run_plans (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    plan_id INTEGER NOT NULL REFERENCES plans(plan_id),
    action TEXT NOT NULL,             -- evaluated, skipped
    PRIMARY KEY (run_id, plan_id)
);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS v_metrics AS
    SELECT p.run_id, p.plan_id, p.plan_key, p.patient_id, p.verdict AS plan_verdict,
           p.protocol_name, p.protocol_version, p.protocol_sha256, p.tool_version,
           p.input_sha256, m.roi_number, m.roi_name, m.protocol_structure, m.metric,
           m.value, m.unit, m.in_protocol, m.error
    FROM metrics m JOIN plans p USING (plan_id);
CREATE VIEW IF NOT EXISTS v_verdicts AS
    SELECT p.run_id, p.plan_id, p.plan_key, p.patient_id, p.verdict AS plan_verdict,
           p.protocol_name, p.protocol_version, p.protocol_sha256, p.tool_version,
           p.input_sha256, v.*
    FROM verdicts v JOIN plans p USING (plan_id);
"""


@lru_cache(maxsize=1)
def expected_columns() -> dict[str, frozenset[str]]:
    """Table -> column names of the layout :data:`SCHEMA_SQL` creates."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA_SQL)
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: frozenset(r[1] for r in conn.execute(f"PRAGMA table_info({t})"))
                for t in tables}
    finally:
        conn.close()
