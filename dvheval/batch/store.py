"""SQLite store of batch results.

(About 550 lines: the store's writes, transactions and migrations stay in
one place; the read queries are in :mod:`dvheval.batch.queries` and the
tables in :mod:`dvheval.batch.schema`.)

One database holds any number of runs. Every result row leads back, through
``plan_id``, to the plan's files (paths and SHA-256), the protocol (name,
version, SHA-256), the dvheval version and the run that wrote it.

The tables and views are listed, with their columns, in
:mod:`dvheval.batch.schema`.

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
old error rows resolved). A plan stored by a dvheval that kept no DVH
curves (rows in ``structures`` but none in ``dvh_curves``) is not done
either: it is evaluated again, so that its curves are stored.

Databases of earlier versions
-----------------------------
Tables added since (``dvh_curves``) are created when a database is opened
for writing; the rows already there stay as they are.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import repeat
from pathlib import Path
from typing import Any

from dvheval.batch.queries import (
    SUMMARY_COLUMNS,
    TIDY_COLUMNS,
    NotPassed,
    ResultQueries,
    plan_folder,
)
from dvheval.batch.schema import (
    CHILD_TABLES,
    FINDING_COLUMNS,
    METRIC_COLUMNS,
    PLAN_RESULT_COLUMNS,
    PROTOCOL_STRUCTURE_COLUMNS,
    SCHEMA_SQL,
    SCHEMA_VERSION,
    STRUCTURE_COLUMNS,
    VERDICT_COLUMNS,
    FindingRow,
    MetricRow,
    PlanRecord,
    PlanResult,
    ProtocolStructureRow,
    StructureRow,
    VerdictRow,
    expected_columns,
)
from dvheval.errors import DvhevalError

__all__ = [
    "CHILD_TABLES", "FINDING_COLUMNS", "METRIC_COLUMNS", "PLAN_RESULT_COLUMNS",
    "PROTOCOL_STRUCTURE_COLUMNS", "SCHEMA_VERSION", "STRUCTURE_COLUMNS", "SUMMARY_COLUMNS",
    "TIDY_COLUMNS", "VERDICT_COLUMNS", "FindingRow", "Fingerprint", "MetricRow", "NotPassed",
    "PlanRecord", "PlanResult", "ProtocolStructureRow", "ResultStore", "StoreError",
    "StructureRow", "VerdictRow", "input_digest", "now", "options_digest", "plan_folder",
]


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    """``INSERT INTO table (a, b) VALUES (:a, :b)``: rows are bound by column name."""
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})")


class StoreError(DvhevalError):
    """The database cannot be used (wrong file, newer layout, damaged, read-only)."""


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


class ResultStore(ResultQueries):
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
            self.conn.executescript(SCHEMA_SQL)
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
        for table, want in expected_columns().items():
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
        """Plans already evaluated with the same fingerprint (and their DVH curves stored).

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
                "WHERE EXISTS (SELECT 1 FROM dvh_curves c WHERE c.plan_id = p.plan_id) "
                "OR NOT EXISTS (SELECT 1 FROM structures s WHERE s.plan_id = p.plan_id) "
                "GROUP BY p.plan_key"
            ).fetchall()
        return {k: int(v) for k, v in rows}

    def link(self, run_id: int, plan_ids: Iterable[int], action: str) -> None:
        """Record that a run evaluated or skipped these plans."""
        with self._transaction():
            self.conn.executemany("INSERT OR REPLACE INTO run_plans VALUES (?, ?, ?)",
                                  zip(repeat(run_id), plan_ids, repeat(action)))

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
        record : PlanRecord
            ``plan`` (:class:`PlanResult`), and ``structures``, ``metrics``,
            ``verdicts``, ``protocol_structures`` and (optional) ``findings``,
            each a list of rows keyed by column name (:class:`StructureRow`
            ...).
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
        fp = fingerprint
        plan_row = {
            "run_id": run_id, "plan_key": fp.plan_key, "key_source": key_source,
            "patient_id": patient_id, "input_sha256": fp.input_sha256,
            "protocol_name": protocol["name"], "protocol_version": protocol.get("version"),
            "protocol_sha256": fp.protocol_sha256, "tool_version": fp.tool_version,
            "options_sha256": fp.options_sha256, "structure_set_by": structure_set_by,
            "discovery_notes": _json(list(discovery_notes)), "evaluated_at": now(),
            "seconds": seconds, "worker": worker, "worker_maxrss_kb": worker_maxrss_kb,
            **{c: _json(v) if isinstance(v, dict | list) else v
               for c, v in ((c, record["plan"][c]) for c in PLAN_RESULT_COLUMNS)},
        }
        with self._transaction():
            cur = self.conn.execute(_insert_sql("plans", tuple(plan_row)), plan_row)
            plan_id = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT INTO plan_files VALUES (:plan_id, :role, :path, :sha256, "
                ":sop_instance_uid, :size)",
                ({"plan_id": plan_id, "role": role, "path": path, "sha256": sha,
                  "sop_instance_uid": uid, "size": size}
                 for role, path, sha, uid, size in files))
            for table, columns in CHILD_TABLES:
                rows = record.get(table)
                if rows is None:
                    continue
                self.conn.executemany(_insert_sql(table, ("plan_id", *columns)),
                                      ({"plan_id": plan_id, **row} for row in rows))
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
