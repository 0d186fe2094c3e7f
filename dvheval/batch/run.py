"""One batch run: discover, hash, skip what the database holds, evaluate, store.

``run_batch`` finds the plans (:mod:`dvheval.dicom.discover`), skips those the
database already holds with the same inputs, protocol, dvheval version and
options (:mod:`dvheval.batch.store`), evaluates the rest in worker processes
(:mod:`dvheval.batch.runner`) and writes each plan's rows in one transaction
as soon as its worker returns.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dvheval.batch.model import (
    DEFAULT_TIMEOUT,
    BatchSummary,
    BatchUsageError,
    EvalOptions,
    Evaluator,
    PlanTask,
    ProgressSink,
    WorkerResult,
    failed_result,
)
from dvheval.batch.runner import default_jobs, import_distributed, run_dask, run_local
from dvheval.batch.store import (
    Fingerprint,
    ResultStore,
    StoreError,
    input_digest,
    now,
    options_digest,
)
from dvheval.batch.worker import evaluate_plan

if TYPE_CHECKING:
    from dvheval.dicom.discover import Discovery, PlanGroup
    from dvheval.protocol import Protocol as DoseProtocol


def parse_rx(values: Sequence[str] | None, protocol: DoseProtocol) -> tuple[tuple[str, float], ...]:
    """Parse ``--rx`` values as ``dvheval check`` does: ``LEVEL=GY``, or ``GY`` alone.

    Parameters
    ----------
    values : sequence of str
    protocol : dvheval.protocol.Protocol

    Returns
    -------
    tuple of (level, dose in Gy)
        Sorted by level.

    Raises
    ------
    dvheval.check.CheckError
        Unknown level, bad number, or a bare number for a multi-level protocol.
    """
    from dvheval.check import parse_rx as parse_levels

    return tuple(sorted(parse_levels(list(values or ()), protocol).items()))


def check_conditions(values: Sequence[str] | None, protocol: DoseProtocol) -> tuple[str, ...]:
    """Validate ``--condition`` values against the protocol's declared conditions.

    Raises
    ------
    BatchUsageError
        A condition the protocol does not declare.
    """
    given = tuple(sorted(set(values or ())))
    unknown = [c for c in given if c not in protocol.conditions]
    if unknown:
        declared = ", ".join(protocol.conditions) or "none"
        raise BatchUsageError(f"unknown condition(s) {', '.join(unknown)} for protocol "
                              f"{protocol.name} (declared: {declared})")
    return given


def _sha256_or_error(path: str) -> tuple[str | None, str | None]:
    from dvheval.dicom import sha256_of
    from dvheval.dicom.discover import regular_file_stat
    from dvheval.errors import InputError

    try:
        regular_file_stat(path)  # replaced by a FIFO since discovery: never open it
        return sha256_of(path), None
    except InputError as exc:
        return None, f"{path}: {exc.message}"
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror or exc})"


def _hash_files(store: ResultStore, groups: Sequence[PlanGroup], threads: int
                ) -> tuple[dict[str, str], dict[str, str]]:
    """SHA-256 of every file of the plans (cached by path, size and mtime).

    Returns
    -------
    hashes : dict
        path -> SHA-256.
    unreadable : dict
        path -> reason, for files that could not be read (removed, no permission).
    """
    files = {str(f.path): (f.size, f.mtime_ns) for g in groups for f in g.files}
    known = store.cached_hashes((p, s, m) for p, (s, m) in files.items())
    missing = [p for p in files if p not in known]
    unreadable: dict[str, str] = {}
    if missing:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            results = list(pool.map(_sha256_or_error, missing))
        fresh = {p: d for p, (d, _) in zip(missing, results, strict=True) if d is not None}
        unreadable = {p: e for p, (_, e) in zip(missing, results, strict=True) if e is not None}
        store.remember_hashes((p, *files[p], d) for p, d in fresh.items())
        known.update(fresh)
    return known, unreadable


@dataclass
class _Job:
    group: PlanGroup
    fingerprint: Fingerprint
    files: list[tuple[str, str, str, str, int]]


def run_batch(
    roots: str | Path | Sequence[str | Path],
    protocol: DoseProtocol,
    db: str | Path,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    options: EvalOptions | None = None,
    force: bool = False,
    progress: ProgressSink | None = None,
    command: str | None = None,
    evaluator: Evaluator = evaluate_plan,
    discovery: Discovery | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> BatchSummary:
    """Evaluate every plan below ``roots`` and store the results in ``db``.

    Parameters
    ----------
    roots : str, Path or sequence of them
        Archive folder(s).
    protocol : dvheval.protocol.Protocol
        A loaded protocol.
    db : str or Path
        SQLite file (created when missing).
    jobs : int, optional
        Worker processes (local pool); default the number of usable CPUs.
    scheduler : str, optional
        Dask scheduler address; when given the plans run on that cluster.
    options : EvalOptions, optional
        Prescription overrides, fractions, end caps.
    force : bool
        Evaluate plans the database already holds.
    progress : ProgressSink, optional
        Receives start/advance/stop events.
    command : str, optional
        Command line stored with the run.
    evaluator : callable
        Worker function; default :func:`evaluate_plan`.
    discovery : Discovery, optional
        A discovery of ``roots`` already made (it is not repeated).
    timeout : float, optional
        Time limit of one plan in seconds (local workers; see the module
        notes for Dask); None or 0: no limit.

    Returns
    -------
    BatchSummary

    Raises
    ------
    BatchUsageError
        A root is not a folder or file, or the scheduler is unusable.
    dvheval.batch.store.StoreError
        The database cannot be used, or failed during the run (the run is
        marked ``failed`` when that is still possible).
    KeyboardInterrupt
        After recording the run as interrupted (also :class:`Terminated`
        for SIGTERM, when a handler raises it); finished plans stay written
        and the worker processes are terminated.
    """
    from dvheval import __version__
    from dvheval.dicom.discover import discover

    roots = [roots] if isinstance(roots, str | Path) else list(roots)
    for r in roots:
        if not Path(r).exists():
            raise BatchUsageError(f"{r}: no such folder")
    options = options or EvalOptions()
    jobs = jobs or default_jobs()
    proto = {k: v for k, v in protocol.identity().items() if k in ("name", "version", "sha256",
                                                                     "file")}
    if scheduler:
        import_distributed()
    store = ResultStore(db)
    with closing(store):
        run_id = store.start_run(roots=[str(r) for r in roots], protocol=proto,
                                 options=options.as_dict(), command=command, jobs=jobs,
                                 scheduler=scheduler)
        summary = BatchSummary(run_id, Path(db), proto)
        try:
            try:
                _execute(store, summary, protocol, options, jobs, scheduler, force, progress,
                         evaluator, discovery or discover(roots), __version__, timeout)
            finally:
                if progress is not None:
                    progress.stop()
            _finish(store, summary, "completed")
        except KeyboardInterrupt:
            summary.interrupted = True
            _finish_quietly(store, summary, "interrupted")
            raise
        except sqlite3.Error as exc:
            _finish_quietly(store, summary, "failed")
            raise StoreError(f"{db}: database error during the run ({exc}); the plans "
                             "finished before are stored") from exc
        except BaseException:
            _finish_quietly(store, summary, "failed")
            raise
    return summary


def _finish_quietly(store: ResultStore, summary: BatchSummary, status: str) -> None:
    """:func:`_finish` after a failure; a database error here must not hide the first one."""
    try:
        _finish(store, summary, status)
    except sqlite3.Error:
        pass


def _execute(store: ResultStore, summary: BatchSummary, protocol: DoseProtocol,
             options: EvalOptions, jobs: int, scheduler: str | None, force: bool,
             progress: ProgressSink | None, evaluator: Evaluator, found: Discovery,
             version: str, timeout: float | None = None) -> None:
    """Record the discovery, skip the plans already stored, evaluate and store the rest."""
    _record_discovery(store, summary, found)
    work = _jobs(store, summary, found, options, version, min(8, 2 * jobs))
    done = {} if force else store.completed(j.fingerprint for j in work)
    store.link(summary.run_id, done.values(), "skipped")
    summary.skipped = len(done)
    todo = {j.group.key: j for j in work if j.group.key not in done}
    if progress is not None:
        progress.start(len(todo))

    tasks = [PlanTask(j.group.key, tuple(j.group.paths)) for j in todo.values()]
    t0 = time.perf_counter()
    if scheduler:
        results = run_dask(tasks, protocol, options, scheduler, evaluator)
    else:
        results = run_local(tasks, protocol, options, min(jobs, max(1, len(tasks))), evaluator,
                            timeout)
    with closing(results):
        for res in results:
            outcome = _store_result(store, summary, todo[res.key], res)
            if progress is not None:
                progress.advance(outcome)
    summary.evaluation_seconds = time.perf_counter() - t0


def _record_discovery(store: ResultStore, summary: BatchSummary, found: Discovery) -> None:
    """Store the discovery's problems and counts with the run, and in the summary."""
    summary.problems = list(found.problems)
    summary.files = dict(found.counts)
    summary.discovery_seconds = found.seconds
    summary.found = len(found.groups)
    store.write_problems(summary.run_id, found.problems)
    store.update_run(summary.run_id, files_seen=found.counts.get("files", 0),
                     discovery_seconds=found.seconds, n_found=summary.found,
                     n_problems=len(found.problems))


def _jobs(store: ResultStore, summary: BatchSummary, found: Discovery, options: EvalOptions,
          version: str, threads: int) -> list[_Job]:
    """The plans that can be evaluated, with their fingerprints.

    A plan with a file that cannot be read is stored as an ``unreadable``
    error instead.
    """
    hashes, unreadable = _hash_files(store, found.groups, threads)
    opt_sha = options_digest(options.as_dict())
    ready = []
    for g in found.groups:
        files = [(f.kind, str(f.path), hashes.get(str(f.path), ""), f.sop_instance_uid, f.size)
                 for f in g.files]
        fp = Fingerprint(g.key, input_digest((r, s) for r, _, s, _, _ in files),
                         summary.protocol["sha256"], version, opt_sha)
        job = _Job(g, fp, files)
        why = [unreadable[p] for p in g.paths if p in unreadable]
        if why:
            _store_result(store, summary, job, WorkerResult(
                g.key, False, error_kind="unreadable", error_type="OSError",
                message="; ".join(why)))
        else:
            ready.append(job)
    return ready


def _store_result(store: ResultStore, summary: BatchSummary, job: _Job,
                  res: WorkerResult) -> str:
    """Write a worker's result (rows or error); return the plan verdict or ``"ERROR"``."""
    g = job.group
    if res.maxrss_kb is not None and res.worker:
        summary.worker_peak_kb[res.worker] = max(res.maxrss_kb,
                                                 summary.worker_peak_kb.get(res.worker, 0))
    if res.ok:
        changed = [p for _, p, sha, _, _ in job.files if res.sha256.get(p, sha) != sha]
        if changed:
            res = WorkerResult(res.key, False, error_kind="changed", error_type="FileChanged",
                               message="file(s) changed during the run: " + ", ".join(changed))
    if res.ok:
        refused = _write_plan(store, summary, job, res)
        if refused is None:
            summary.evaluated += 1
            assert res.record is not None
            return str(res.record["plan"]["verdict"])
        res = refused
    store.write_error(summary.run_id, job.fingerprint, patient_id=g.patient_id,
                      kind=res.error_kind or "exception", message=res.message or "unknown error",
                      files=[(p, sha) for _, p, sha, _, _ in job.files],
                      error_type=res.error_type, traceback=res.traceback)
    summary.errors.append((g.key, g.patient_id, res.message or "unknown error"))
    return "ERROR"


def _write_plan(store: ResultStore, summary: BatchSummary, job: _Job,
                res: WorkerResult) -> WorkerResult | None:
    """Write a plan's rows; None when written, a ``store`` error when the database refused them.

    Rows the database refuses are rolled back with the rest of the plan.
    """
    g = job.group
    assert res.record is not None
    try:
        store.write_plan(summary.run_id, job.fingerprint, protocol=summary.protocol,
                         patient_id=g.patient_id, key_source=g.key_source,
                         structure_set_by=g.structure_set_by, discovery_notes=g.notes,
                         files=job.files, record=res.record, seconds=res.seconds,
                         worker=res.worker, worker_maxrss_kb=res.maxrss_kb)
    except (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
            KeyError, TypeError, ValueError) as exc:  # rows of this plan only; rolled back
        return failed_result(PlanTask(g.key, ()), exc, "store")
    return None


def _finish(store: ResultStore, summary: BatchSummary, status: str) -> None:
    """Read the run's outcome into the summary and mark the run ``status``."""
    summary.verdicts, summary.failing_plans = store.run_verdicts(summary.run_id)
    summary.not_passed = store.not_passed(summary.run_id)
    store.update_run(summary.run_id, status=status, finished_at=now(),
                     n_evaluated=summary.evaluated, n_skipped=summary.skipped,
                     n_errors=len(summary.errors))


