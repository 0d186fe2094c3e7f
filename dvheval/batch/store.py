"""SQLite store of batch results.

One database holds any number of runs. Every result row leads back, through
``plan_id``, to the plan's files (paths and SHA-256), the protocol (name,
version, SHA-256), the dvheval version and the run that wrote it.

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
``errors``              plans that could not be evaluated, with the reason.
``problems``            discovery problems of each run (orphans, conflicts...).
``run_plans``           which plans each run evaluated or skipped.
``file_hashes``         SHA-256 cache keyed by path, size and modification time.

Views ``v_metrics`` and ``v_verdicts`` join the result rows with their plan,
protocol and tool version.

Writing
-------
The database is in WAL mode. Each plan's rows are written in one
transaction, so an interrupted run keeps every plan it finished and loses
none of them half-written.

Resume rule
-----------
A plan is skipped when the database holds a successful evaluation with the
same fingerprint: plan key, SHA-256 of its input files, protocol SHA-256,
dvheval version and evaluation options. Errors are not remembered as done:
plans that errored are retried on the next run (a later success marks the
old error rows resolved).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from itertools import groupby, repeat
from pathlib import Path
from typing import Any

from dvheval.errors import DvhevalError

#: Version of the table layout written by this module.
SCHEMA_VERSION = 1

#: Columns the evaluation fills for each child table (``plan_id`` is added on write).
STRUCTURE_COLUMNS = ("roi_number", "roi_name", "roi_type", "status", "volume_cc", "coverage",
                     "protocol_structure", "matched_by", "warnings")
METRIC_COLUMNS = ("roi_number", "roi_name", "protocol_structure", "metric", "value", "unit",
                  "in_protocol", "error")
VERDICT_COLUMNS = ("constraint_id", "protocol_structure", "roi_number", "roi_name", "metric",
                   "priority", "operator", "limit_value", "limit_unit", "limit_text",
                   "acceptable_limit", "value", "unit", "margin", "verdict", "reason",
                   "prescription", "prescription_gy", "alternative", "citation")
PROTOCOL_STRUCTURE_COLUMNS = ("structure", "type", "required", "match", "roi_name",
                              "matched_by", "roi_status", "reason")
FINDING_COLUMNS = ("check_id", "severity", "message", "file")
PLAN_RESULT_COLUMNS = ("verdict", "exit_code", "rtplan_uid", "rtplan_label",
                       "structure_set_label", "frame_of_reference_uid", "dose_summation",
                       "fractions", "fractions_source", "prescriptions", "summary", "warnings",
                       "settings", "unmatched_rois")

_SCHEMA = """
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


class StoreError(DvhevalError):
    """The database cannot be used (wrong file, newer layout, damaged, read-only)."""


@lru_cache(maxsize=1)
def _expected_columns() -> dict[str, frozenset[str]]:
    """Table -> column names of the layout this module writes."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: frozenset(r[1] for r in conn.execute(f"PRAGMA table_info({t})"))
                for t in tables}
    finally:
        conn.close()


@dataclass(frozen=True)
class Fingerprint:
    """What makes two evaluations of a plan the same.

    Attributes
    ----------
    plan_key : str
    input_sha256 : str
        See :func:`input_digest`.
    protocol_sha256 : str
    tool_version : str
    options_sha256 : str
        See :func:`options_digest`.
    """

    plan_key: str
    input_sha256: str
    protocol_sha256: str
    tool_version: str
    options_sha256: str


def input_digest(file_hashes: Iterable[tuple[str, str]]) -> str:
    """SHA-256 over the (role, file SHA-256) pairs of a plan, in sorted order.

    Paths do not enter, so moving or renaming an archive keeps the digest.
    """
    text = "\n".join(sorted(f"{role}:{sha}" for role, sha in file_hashes))
    return hashlib.sha256(text.encode()).hexdigest()


def options_digest(options: Mapping[str, Any]) -> str:
    """SHA-256 of the evaluation options as canonical JSON."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")  # noqa: UP017


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class ResultStore:
    """A batch-results database.

    Parameters
    ----------
    path : str or Path
        The SQLite file; created with its tables when missing.
    writable : bool
        False opens an existing database read-only (for reading results
        only; nothing is created or checked for writing).

    Raises
    ------
    StoreError
        If the path is a folder, the file is not an SQLite database, is
        damaged, cannot be written, is another program's database (tables
        but no dvheval layout), or has a newer or different layout. Nothing
        is written to such a file.
    """

    def __init__(self, path: str | Path, writable: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a database file")
        if not writable and not self.path.is_file():
            raise StoreError(f"{self.path}: no such database")
        try:
            if writable:
                self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            else:
                self.conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                                            isolation_level=None, timeout=30.0)
            version = self._schema_version()
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: database layout {version} is newer than this "
                                 f"dvheval reads ({SCHEMA_VERSION})")
            if not writable:
                if version is None:
                    raise StoreError(f"{self.path}: not a dvheval results database")
                return
            self._check_layout()
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(_SCHEMA)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                              (str(SCHEMA_VERSION),))
            self._check_writable()
        except sqlite3.Error as exc:
            self._close_quietly()
            raise StoreError(f"{self.path}: not a usable SQLite database ({exc})") from exc
        except StoreError:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing a broken handle
                pass

    def _schema_version(self) -> int | None:
        tables = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise StoreError(f"{self.path}: not a dvheval results database (it holds "
                                 f"tables {', '.join(sorted(tables)[:5])}); give another --db")
            return None
        try:
            row = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: not a dvheval results database (table meta: "
                             f"{exc})") from exc
        if row is None:
            if tables - {"meta"}:
                raise StoreError(f"{self.path}: not a dvheval results database (no layout "
                                 "version in table meta)")
            return None
        try:
            return int(row[0])
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self.path}: not a dvheval results database (layout version "
                             f"{row[0]!r})") from exc

    def _check_layout(self) -> None:
        """Every table of the layout that exists has every column this module writes.

        Tables that do not exist yet are created afterwards (a database of an
        earlier dvheval gains the tables added since).
        """
        for table, want in _expected_columns().items():
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            missing = sorted(want - have) if have else []
            if missing:
                raise StoreError(f"{self.path}: not a dvheval results database of this layout "
                                 f"(table {table} lacks {', '.join(missing[:5])})")

    def _check_writable(self) -> None:
        """Take and release the write lock, so a read-only file fails before any work."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
        self.conn.execute("ROLLBACK")

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    # ------------------------------------------------------------------ runs
    def start_run(
        self,
        *,
        roots: Sequence[str],
        protocol: Mapping[str, Any],
        options: Mapping[str, Any],
        command: str | None = None,
        jobs: int | None = None,
        scheduler: str | None = None,
    ) -> int:
        """Record the start of a run.

        Parameters
        ----------
        roots : sequence of str
            The folders searched.
        protocol : mapping
            ``name``, ``version``, ``sha256`` and ``file`` of the protocol.
        options : mapping
            Evaluation options (JSON-serialisable); their digest enters the
            resume fingerprint.
        command : str, optional
            The command line.
        jobs : int, optional
        scheduler : str, optional

        Returns
        -------
        int
            The new ``run_id``.
        """
        from dvheval import __version__

        with self._transaction():
            cur = self.conn.execute(
                "INSERT INTO runs (started_at, status, roots, command, tool_version, "
                "protocol_name, protocol_version, protocol_sha256, protocol_file, options, "
                "options_sha256, jobs, scheduler) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?)",
                (now(), _json(list(roots)), command, __version__, protocol["name"],
                 protocol.get("version"), protocol["sha256"], protocol.get("file"),
                 _json(dict(options)), options_digest(options), jobs, scheduler),
            )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def update_run(self, run_id: int, **values: Any) -> None:
        """Set columns of a run (e.g. ``status``, ``n_found``, ``finished_at``)."""
        if not values:
            return
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._transaction():
            self.conn.execute(f"UPDATE runs SET {cols} WHERE run_id = ?",
                              (*values.values(), run_id))

    def latest_run(self, protocol_name: str | None = None) -> int | None:
        """The id of the most recent run (of that protocol), or None."""
        if protocol_name is None:
            row = self.conn.execute("SELECT max(run_id) FROM runs").fetchone()
        else:
            row = self.conn.execute("SELECT max(run_id) FROM runs WHERE protocol_name = ?",
                                    (protocol_name,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # --------------------------------------------------------------- hashes
    def cached_hashes(self, files: Iterable[tuple[str, int, int]]) -> dict[str, str]:
        """SHA-256 of files whose path, size and modification time are unchanged.

        Parameters
        ----------
        files : iterable of (path, size, mtime_ns)

        Returns
        -------
        dict
            path -> sha256 for the files found in the cache.
        """
        with self._transaction():
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS want_files "
                              "(path TEXT, size INTEGER, mtime_ns INTEGER)")
            self.conn.execute("DELETE FROM want_files")
            self.conn.executemany("INSERT INTO want_files VALUES (?, ?, ?)", files)
            rows = self.conn.execute(
                "SELECT w.path, h.sha256 FROM want_files w JOIN file_hashes h "
                "ON h.path = w.path AND h.size = w.size AND h.mtime_ns = w.mtime_ns"
            ).fetchall()
        return dict(rows)

    def remember_hashes(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        """Cache (path, size, mtime_ns, sha256) rows."""
        with self._transaction():
            self.conn.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", rows)

    # ---------------------------------------------------------------- resume
    def completed(self, fingerprints: Iterable[Fingerprint]) -> dict[str, int]:
        """Plans already evaluated with the same fingerprint.

        Returns
        -------
        dict
            plan_key -> plan_id of the latest matching evaluation.
        """
        with self._transaction():
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS want_plans (plan_key TEXT, "
                              "input_sha256 TEXT, protocol_sha256 TEXT, tool_version TEXT, "
                              "options_sha256 TEXT)")
            self.conn.execute("DELETE FROM want_plans")
            self.conn.executemany(
                "INSERT INTO want_plans VALUES (?, ?, ?, ?, ?)",
                ((f.plan_key, f.input_sha256, f.protocol_sha256, f.tool_version,
                  f.options_sha256) for f in fingerprints),
            )
            rows = self.conn.execute(
                "SELECT p.plan_key, max(p.plan_id) FROM want_plans w JOIN plans p "
                "USING (plan_key, input_sha256, protocol_sha256, tool_version, options_sha256) "
                "GROUP BY p.plan_key"
            ).fetchall()
        return {k: int(v) for k, v in rows}

    def link(self, run_id: int, plan_ids: Iterable[int], action: str) -> None:
        """Record that a run evaluated or skipped these plans."""
        with self._transaction():
            self.conn.executemany("INSERT OR REPLACE INTO run_plans VALUES (?, ?, ?)",
                                  zip(repeat(run_id), plan_ids, repeat(action)))

    # -------------------------------------------------------------- outcome
    def run_verdicts(self, run_id: int) -> tuple[dict[str, int], int]:
        """Plan verdict counts of a run's plans (evaluated or skipped).

        Returns
        -------
        counts : dict
            verdict -> number of plans.
        failing : int
            Plans with a non-zero exit code.
        """
        rows = self.conn.execute(
            "SELECT p.verdict, count(*), sum(p.exit_code != 0) FROM run_plans r "
            "JOIN plans p USING (plan_id) WHERE r.run_id = ? GROUP BY p.verdict",
            (run_id,)).fetchall()
        return {v: int(n) for v, n, _ in rows}, sum(int(f or 0) for _, _, f in rows)

    def not_passed(self, run_id: int) -> list[tuple[str, str, str, str, str]]:
        """A run's plans whose verdict is not PASS, with the constraints that stopped them.

        Returns
        -------
        list of (plan key, patient id, RT plan label, verdict, reasons)
            NOT_EVALUATED first, then FAIL, then ACCEPTABLE, each by patient
            and plan key; ``reasons`` lists the constraints (not report-only
            rows) that were not met, e.g. ``"SpinalCord Dmax FAIL"``.
        """
        rows = self.conn.execute(
            "SELECT p.plan_id, p.plan_key, p.patient_id, p.rtplan_label, p.verdict, "
            "v.protocol_structure, v.metric, v.verdict FROM run_plans r "
            "JOIN plans p USING (plan_id) "
            "LEFT JOIN verdicts v ON v.plan_id = p.plan_id AND v.priority != 'report' "
            "AND v.verdict IN ('FAIL', 'NOT_EVALUATED', 'ACCEPTABLE') "
            "WHERE r.run_id = ? AND p.verdict != 'PASS' "
            "ORDER BY CASE p.verdict WHEN 'NOT_EVALUATED' THEN 0 WHEN 'FAIL' THEN 1 "
            "WHEN 'ACCEPTABLE' THEN 2 ELSE 3 END, p.patient_id, p.plan_key, v.rowid",
            (run_id,)).fetchall()
        out = []
        for _, group in groupby(rows, key=lambda r: r[0]):
            group = list(group)
            _, key, patient, label, verdict = group[0][:5]
            why = ", ".join(f"{st} {m} {v}" for *_, st, m, v in group if v is not None)
            out.append((key, patient or "", label or "", verdict,
                        why or "see table protocol_structures"))
        return out

    # ---------------------------------------------------------------- writes
    def write_plan(
        self,
        run_id: int,
        fingerprint: Fingerprint,
        *,
        protocol: Mapping[str, Any],
        patient_id: str,
        key_source: str,
        structure_set_by: str,
        discovery_notes: Sequence[str],
        files: Sequence[tuple[str, str, str, str, int]],
        record: Mapping[str, Any],
        seconds: float | None = None,
        worker: str | None = None,
        worker_maxrss_kb: int | None = None,
    ) -> int:
        """Write one evaluated plan and all its rows in one transaction.

        Parameters
        ----------
        run_id : int
        fingerprint : Fingerprint
        protocol : mapping
            ``name``, ``version`` of the protocol (its SHA-256 is in the fingerprint).
        patient_id, key_source, structure_set_by : str
            From discovery.
        discovery_notes : sequence of str
        files : sequence of (role, path, sha256, sop_instance_uid, size)
        record : mapping
            ``plan`` (mapping with :data:`PLAN_RESULT_COLUMNS`), and
            ``structures``, ``metrics``, ``verdicts``, ``protocol_structures``
            and (optional) ``findings``, each a mapping of column name to a
            list of values (:data:`STRUCTURE_COLUMNS` ...).
        seconds : float, optional
            Evaluation time.
        worker : str, optional
            Where it ran (host:pid).
        worker_maxrss_kb : int, optional
            Peak resident memory of the worker process so far.

        Returns
        -------
        int
            The new ``plan_id``.
        """
        plan = record["plan"]
        fp = fingerprint
        with self._transaction():
            cur = self.conn.execute(
                "INSERT INTO plans (run_id, plan_key, key_source, patient_id, input_sha256, "
                "protocol_name, protocol_version, protocol_sha256, tool_version, options_sha256, "
                "structure_set_by, discovery_notes, evaluated_at, seconds, worker, "
                f"worker_maxrss_kb, {', '.join(PLAN_RESULT_COLUMNS)}) VALUES "
                f"({', '.join(['?'] * (16 + len(PLAN_RESULT_COLUMNS)))})",
                (run_id, fp.plan_key, key_source, patient_id, fp.input_sha256, protocol["name"],
                 protocol.get("version"), fp.protocol_sha256, fp.tool_version,
                 fp.options_sha256, structure_set_by, _json(list(discovery_notes)), now(),
                 seconds, worker, worker_maxrss_kb,
                 *(_json(v) if isinstance(v, dict | list) else v
                   for v in (plan[c] for c in PLAN_RESULT_COLUMNS))),
            )
            plan_id = int(cur.lastrowid or 0)
            self.conn.executemany("INSERT INTO plan_files VALUES (?, ?, ?, ?, ?, ?)",
                                  zip(repeat(plan_id), *zip(*files, strict=True)))
            for table, columns in (("structures", STRUCTURE_COLUMNS),
                                   ("metrics", METRIC_COLUMNS),
                                   ("verdicts", VERDICT_COLUMNS),
                                   ("protocol_structures", PROTOCOL_STRUCTURE_COLUMNS),
                                   ("findings", FINDING_COLUMNS)):
                data = record.get(table)
                if data is None:
                    continue
                self.conn.executemany(
                    f"INSERT INTO {table} (plan_id, {', '.join(columns)}) "
                    f"VALUES ({', '.join(['?'] * (len(columns) + 1))})",
                    zip(repeat(plan_id), *(data[c] for c in columns)),
                )
            self.conn.execute("INSERT INTO run_plans VALUES (?, ?, 'evaluated')",
                              (run_id, plan_id))
            self.conn.execute("UPDATE errors SET resolved_by_plan_id = ? WHERE plan_key = ? "
                              "AND resolved_by_plan_id IS NULL", (plan_id, fp.plan_key))
        return plan_id

    def write_error(
        self,
        run_id: int,
        fingerprint: Fingerprint,
        *,
        patient_id: str,
        kind: str,
        message: str,
        files: Sequence[tuple[str, str]],
        error_type: str | None = None,
        traceback: str | None = None,
    ) -> int:
        """Record a plan that could not be evaluated.

        Parameters
        ----------
        run_id : int
        fingerprint : Fingerprint
        patient_id : str
        kind : str
            ``input`` (the files cannot be used), ``exception`` (unexpected
            error), ``worker_died``, ``timeout`` (over the per-plan time
            limit; its worker was killed), ``changed`` (a file changed during
            the run), ``unreadable`` (a file could not be read for hashing) or
            ``store`` (the plan's rows could not be written).
        message : str
        files : sequence of (path, sha256)
        error_type : str, optional
            The exception class.
        traceback : str, optional

        Returns
        -------
        int
            The new ``error_id``.
        """
        fp = fingerprint
        with self._transaction():
            cur = self.conn.execute(
                "INSERT INTO errors (run_id, plan_key, patient_id, input_sha256, "
                "protocol_sha256, tool_version, options_sha256, kind, error_type, message, "
                "traceback, files, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, fp.plan_key, patient_id, fp.input_sha256, fp.protocol_sha256,
                 fp.tool_version, fp.options_sha256, kind, error_type, message, traceback,
                 _json([list(f) for f in files]), now()),
            )
        return int(cur.lastrowid or 0)

    def write_problems(self, run_id: int, problems: Iterable[Any]) -> None:
        """Record discovery problems (objects with kind, severity, reason, patient_id, files)."""
        with self._transaction():
            self.conn.executemany(
                "INSERT INTO problems (run_id, kind, severity, reason, patient_id, files) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ((run_id, p.kind, p.severity, p.reason, p.patient_id, _json(list(p.files)))
                 for p in problems),
            )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on an exception (incl. Ctrl-C)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        if self.conn.in_transaction:  # left open by an interruption between BEGIN and COMMIT
            self.conn.execute("ROLLBACK")
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
