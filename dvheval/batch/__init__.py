"""Evaluate every plan of a DICOM archive against a protocol.

``run_batch`` finds the plans (:mod:`dvheval.dicom.discover`), skips those the
database already holds with the same inputs, protocol, dvheval version and
options (:mod:`dvheval.batch.store`), evaluates the rest in worker processes and
writes each plan's rows in one transaction as soon as its worker returns.

Workers
-------
Locally the plans run in a :class:`concurrent.futures.ProcessPoolExecutor`
started with ``forkserver`` (``spawn`` where that is unavailable). The
worker function :func:`evaluate_plan` is a module-level function of plain,
picklable arguments, and returns plain rows (never DVH arrays). Any
exception inside it becomes an error record of that plan. When a worker
process dies (crash, out of memory, killed), the plans that were in flight
are run again one at a time in a fresh process; the one that kills its
process again is recorded as an error (``worker_died``) and the others are
evaluated normally. Workers ignore Ctrl-C (the parent stops the run) and
exit when the parent process is gone.

Time limit
----------
Each plan may run at most ``timeout`` seconds (default
:data:`DEFAULT_TIMEOUT`, counted from the moment a worker starts it). A plan
over the limit is recorded as an error of kind ``timeout``; its worker
process is killed, which ends the pool, so the plans that were running beside
it are put back in the queue and evaluated again in a fresh pool (at most
``jobs - 1`` plans of work are redone per timeout). ``timeout`` None or 0
means no limit.

With a Dask scheduler address (``tcp://host:port``) the same function runs
on the cluster's workers (which must see the archive at the same paths and
have dvheval installed); results still come back to this process, which
alone writes the database. Dask cannot stop a task once it runs, so the time
limit is not applied there: a plan that hangs keeps its worker thread busy
and the run waits for it. Use the cluster's own limits (for instance
``dask worker --lifetime``); a plan whose worker dies is recorded as
``worker_died``.

Interruption
------------
Ctrl-C (SIGINT) and SIGTERM stop the run the same way: nothing more is
submitted, the worker processes are terminated, the run is marked
``interrupted`` in the database and ``dvheval batch`` exits with 130
(SIGINT) or 143 (SIGTERM). Every plan finished before is stored, so the same
command resumes.

Exit code of a run
------------------
0 when every plan found was evaluated (now or before) with exit code 0 (PASS,
or ACCEPTABLE) and discovery found no dose it could not use; 1 otherwise
(a plan FAIL or NOT_EVALUATED, an evaluation error, an orphan or conflicting
dose); 2 for usage errors (raised as :class:`BatchUsageError`), a database
that cannot be used or an export that cannot be written; 130 / 143 when
interrupted by SIGINT / SIGTERM.

Output
------
Names and messages in the summary come from DICOM headers and file names;
control characters in them (ANSI escape sequences, CR, LF...) are shown as
``\\xNN`` escapes (:func:`printable`), the database keeps them unchanged.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import resource
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dvheval.batch.store import (
    FINDING_COLUMNS,
    METRIC_COLUMNS,
    PROTOCOL_STRUCTURE_COLUMNS,
    STRUCTURE_COLUMNS,
    VERDICT_COLUMNS,
    Fingerprint,
    ResultStore,
    StoreError,
    input_digest,
    options_digest,
)
from dvheval.errors import DvhevalError
from dvheval.sanitize import print_error

if TYPE_CHECKING:
    from dvheval.check import CheckResult
    from dvheval.dicom.discover import Discovery, PlanGroup, Problem
    from dvheval.protocol import Protocol as DoseProtocol

#: Verdicts reported per plan, in the order shown.
PLAN_VERDICTS = ("PASS", "ACCEPTABLE", "FAIL", "NOT_EVALUATED")

#: Default time limit of one plan's evaluation, in seconds.
DEFAULT_TIMEOUT = 600.0


class BatchUsageError(DvhevalError):
    """The batch cannot start: bad folder, protocol, option or scheduler."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the run stops as on Ctrl-C (exit code 143 instead of 130)."""


def printable(text: object) -> str:
    """``text`` with every non-printable character shown as an escape.

    Control characters (ESC of ANSI sequences, CR, LF, tab, DEL, C1 codes),
    format characters such as bidirectional overrides and other characters
    :meth:`str.isprintable` rejects become ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``; printable text, accented letters and CJK included, is
    unchanged.

    Parameters
    ----------
    text : object
        Converted with ``str``.

    Returns
    -------
    str
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape_char(c) for c in s)


def _escape_char(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


# --------------------------------------------------------------- tasks
@dataclass(frozen=True)
class EvalOptions:
    """Options of the evaluation that enter the resume fingerprint.

    Attributes
    ----------
    rx_overrides : tuple of (str, float)
        Prescription dose (Gy) per protocol level, instead of the protocol's.
    fractions : int or None
        Number of fractions instead of the protocol's.
    end_caps : bool
        Extend each structure half a slice beyond its end contours.
    conditions : tuple of str
        Protocol conditions asserted for every plan (activate alternatives).
    acceptable_fails_gate : bool
        An ACCEPTABLE plan gets exit code 1 (counts as failing).
    strict : tuple of str
        Integrity check ids whose warnings close the gate (``"all"``: every one).
    """

    rx_overrides: tuple[tuple[str, float], ...] = ()
    fractions: int | None = None
    end_caps: bool = True
    conditions: tuple[str, ...] = ()
    acceptable_fails_gate: bool = False
    strict: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON form (stored with the run, hashed into the fingerprint)."""
        out: dict[str, Any] = {"rx": dict(self.rx_overrides), "fractions": self.fractions,
                               "end_caps": self.end_caps, "conditions": sorted(self.conditions),
                               "acceptable_fails_gate": self.acceptable_fails_gate}
        if self.strict:  # left out when empty: fingerprints of earlier runs stay valid
            out["strict"] = sorted(self.strict)
        return out


@dataclass(frozen=True)
class PlanTask:
    """What a worker needs to evaluate one plan: its key and files."""

    key: str
    paths: tuple[str, ...]


@dataclass
class WorkerResult:
    """What a worker sends back for one plan.

    Attributes
    ----------
    key : str
    ok : bool
    record : dict or None
        Rows for :meth:`dvheval.batch.store.ResultStore.write_plan` when ``ok``.
    sha256 : dict
        path -> SHA-256 of the files the worker read.
    error_kind, error_type, message, traceback : str or None
        Why the plan could not be evaluated when not ``ok``.
    seconds : float
    worker : str
        ``host:pid``.
    maxrss_kb : int or None
        Peak resident memory of the worker process so far (kB).
    """

    key: str
    ok: bool
    record: dict[str, Any] | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    error_kind: str | None = None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    worker: str = ""
    maxrss_kb: int | None = None


def _maxrss_kb() -> int | None:
    try:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (AttributeError, OSError):  # pragma: no cover - platforms without getrusage
        return None
    return int(rss // 1024) if sys.platform == "darwin" else int(rss)


def _where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_single_threaded_done = False


def single_threaded_blas() -> bool:
    """Limit BLAS/OpenMP thread pools of this process to one thread (once).

    Worker processes already run in parallel; one BLAS thread each avoids
    oversubscribing the CPUs and makes sums (``np.dot``) independent of the
    machine's core count, so a plan gives bit-identical results on a laptop,
    in a local pool or on a cluster. Needs ``threadpoolctl``.

    Returns
    -------
    bool
        True when the limit is in place.
    """
    global _single_threaded_done
    if not _single_threaded_done:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return False
        threadpool_limits(1)
        _single_threaded_done = True
    return True


def evaluate_plan(task: PlanTask, protocol: DoseProtocol, options: EvalOptions) -> WorkerResult:
    """Compute a plan's DVHs, check them against the protocol, return the rows.

    This is the worker function: it never raises for a problem with the
    plan; any exception becomes a ``WorkerResult`` with ``ok`` False. BLAS
    runs single-threaded in the calling process (see
    :func:`single_threaded_blas`).

    Parameters
    ----------
    task : PlanTask
    protocol : dvheval.protocol.Protocol
    options : EvalOptions

    Returns
    -------
    WorkerResult
    """
    from dvheval.check import check_plan
    from dvheval.engine.compute import compute_dvhs

    single_threaded_blas()
    t0 = time.perf_counter()
    try:
        derived = [f"{k}={v}" for k, v in getattr(protocol, "derived", {}).items()]
        plan = compute_dvhs(list(task.paths), end_caps=options.end_caps,
                            fractions=options.fractions, derive=derived or None)
        result = check_plan(plan, protocol, rx_overrides=dict(options.rx_overrides) or None,
                            fractions=options.fractions,
                            acceptable_fails_gate=options.acceptable_fails_gate,
                            conditions=options.conditions or None,
                            strict=options.strict)
        record = build_record(result)
        out = WorkerResult(task.key, True, record, dict(plan.dose.sha256))
    except DvhevalError as exc:
        out = WorkerResult(task.key, False, error_kind="input", error_type=type(exc).__name__,
                           message=str(exc))
    except (Exception, SystemExit) as exc:  # any failure of one plan must not stop the batch
        out = _failed(task, exc)
    out.seconds = time.perf_counter() - t0
    out.worker = _where()
    out.maxrss_kb = _maxrss_kb()
    return out


# ------------------------------------------------------------ record rows
def _float(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@lru_cache(maxsize=512)
def _metric_unit(name: str) -> str | None:
    from dvheval.engine.metrics import parse_metric

    if name == "Volume":
        return "cc"
    try:
        m = parse_metric(name)
    except DvhevalError:
        return None
    if m.is_dose and m.output_unit == "%":
        return "%Rx"
    return m.output_unit


def _columns(rows: list[tuple], names: Sequence[str]) -> dict[str, list]:
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return {n: list(c) for n, c in zip(names, cols, strict=True)}


def build_record(result: CheckResult) -> dict[str, Any]:
    """The database rows of a checked plan.

    Parameters
    ----------
    result : dvheval.check.CheckResult

    Returns
    -------
    dict
        ``plan`` (:data:`~dvheval.batch.store.PLAN_RESULT_COLUMNS`) and, as
        column lists, ``structures``, ``metrics``, ``verdicts``,
        ``protocol_structures`` and ``findings`` (the integrity findings of
        ``result.findings``, when it has them).

    Notes
    -----
    ``metrics`` holds, for every ROI, its volume, the default DVH metrics and
    every metric the protocol reports or limits for it; a metric that is in
    both appears once with ``in_protocol`` 1 and the protocol's value.
    """
    plan = result.plan
    protocol = result.protocol
    matched = {m.index: m for m in result.matching.matched.values()}
    structures, metrics = [], {}
    for i, s in enumerate(plan.structures):
        m = matched.get(i)
        ps, how = (m.structure, f"{m.how} {m.by!r}") if m else (None, None)
        structures.append((s.number, s.name, s.type, s.status, _float(s.volume_cc),
                           _float(s.coverage), ps, how, _json_list(s.warnings)))
        metrics[(i, "Volume")] = [s.number, s.name, ps, "Volume", _float(s.volume_cc), "cc", 0,
                                  None if s.volume_cc is not None else "volume unknown"]
        for name, value in s.metrics.items():
            metrics[(i, name)] = [s.number, s.name, ps, name, _float(value), _metric_unit(name),
                                  0, s.metric_errors.get(name)]
    verdicts = []
    for r in result.results:
        c = r.constraint
        m = result.matching.matched.get(c.structure) if r.roi is not None else None
        number = plan.structures[m.index].number if m else None
        verdicts.append((
            c.id, c.structure, number, r.roi, c.metric_name, c.priority, c.operator,
            _float(r.limit), r.unit if c.operator else None, c.limit.text if c.limit else None,
            _float(r.acceptable_limit), _float(r.value), r.unit, _float(r.margin),
            r.verdict.value, r.reason, c.prescription, _float(r.prescription_gy),
            c.alternative, c.citation,
        ))
        if m is None or r.verdict.value == "NOT_APPLICABLE":
            continue
        row = metrics.get((m.index, c.metric_name))
        if row is None:
            sr = plan.structures[m.index]
            row = metrics[(m.index, c.metric_name)] = [
                sr.number, sr.name, c.structure, c.metric_name, None,
                _metric_unit(c.metric_name), 1, None]
        row[6] = 1
        if r.value is not None:
            row[4], row[5], row[7] = _float(r.value), r.unit, None
        elif row[4] is None:
            row[7] = r.reason or row[7]
    outcomes = []
    for o in result.structures:
        spec = protocol.structure(o.structure)
        outcomes.append((o.structure, spec.type if spec else None, int(o.required), o.status,
                         o.roi, f"{o.how} {o.by!r}" if o.how else None, o.roi_status, o.reason))
    info = plan.plan
    return {
        "plan": {
            "verdict": result.verdict.value,
            "exit_code": result.exit_code,
            "rtplan_uid": info.sop_instance_uid if info else None,
            "rtplan_label": info.label if info else None,
            "structure_set_label": plan.structure_set_label,
            "frame_of_reference_uid": plan.frame_of_reference_uid,
            "dose_summation": plan.dose.summation,
            "fractions": result.fractions.fractions,
            "fractions_source": result.fractions.source,
            "prescriptions": [p.to_dict() for p in result.prescriptions.values()],
            "summary": result.summary(),
            "warnings": [*plan.warnings, *result.warnings],
            "settings": dict(plan.settings),
            "unmatched_rois": list(result.matching.unmatched),
        },
        "structures": _columns(structures, STRUCTURE_COLUMNS),
        "metrics": _columns([tuple(v) for v in metrics.values()], METRIC_COLUMNS),
        "verdicts": _columns(verdicts, VERDICT_COLUMNS),
        "protocol_structures": _columns(outcomes, PROTOCOL_STRUCTURE_COLUMNS),
        "findings": _columns(_finding_rows(getattr(result, "findings", None) or ()),
                             FINDING_COLUMNS),
    }


def _finding_rows(findings: Iterable[Any]) -> list[tuple]:
    """(check id, severity, message, file) of integrity findings."""
    rows = []
    for f in findings:
        severity = getattr(f, "severity", "")
        rows.append((str(getattr(f, "check", "")), str(getattr(severity, "value", severity)),
                     str(getattr(f, "message", "")), getattr(f, "file", None)))
    return rows


def _json_list(values: Sequence[str]) -> str | None:
    import json

    return json.dumps(list(values), ensure_ascii=False) if values else None


# --------------------------------------------------------------- workers
def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # pragma: no cover - pid reused by another user
            os._exit(1)


#: Worker side: where a worker announces (token, pid, start time) of each task.
_started_queue: Any = None


def _init_worker(parent_pid: int, started: Any = None) -> None:
    """Worker start-up: leave Ctrl-C to the parent; exit if the parent dies.

    SIGTERM keeps its default action (the parent terminates its workers with
    it). ``started`` is the queue on which :func:`_run_task` announces each
    task it starts (when a time limit applies).
    """
    global _started_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _started_queue = started
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="dvheval-parent-watch").start()


def _run_task(token: int, evaluator: Evaluator, task: PlanTask, protocol: Any,
              options: EvalOptions) -> WorkerResult:
    """Worker side: announce the start of a task, then evaluate it."""
    if _started_queue is not None:
        _started_queue.put((token, os.getpid(), time.monotonic()))
    return evaluator(task, protocol, options)


def _mp_context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["dvheval.batch", "dvheval.engine.compute", "dvheval.check"])
        return ctx
    return multiprocessing.get_context("spawn")


def default_jobs() -> int:
    """Number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


Evaluator = Callable[[PlanTask, Any, EvalOptions], WorkerResult]


def _died(task: PlanTask) -> WorkerResult:
    return WorkerResult(task.key, False, error_kind="worker_died", error_type="BrokenProcessPool",
                        message="the worker process died while evaluating this plan (crash, "
                                "out of memory or killed); it died again when run alone")


def _timed_out(task: PlanTask, limit: float) -> WorkerResult:
    return WorkerResult(task.key, False, error_kind="timeout", error_type="Timeout",
                        message=f"the evaluation took longer than the time limit of {limit:g} s "
                                "(--timeout); its worker process was killed")


def _failed(task: PlanTask, exc: BaseException, kind: str = "exception") -> WorkerResult:
    return WorkerResult(task.key, False, error_kind=kind, error_type=type(exc).__name__,
                        message=f"{type(exc).__name__}: {exc}",
                        traceback="".join(traceback.format_exception(exc)))


def run_local(
    tasks: Iterable[PlanTask],
    protocol: DoseProtocol,
    options: EvalOptions,
    workers: int,
    evaluator: Evaluator = evaluate_plan,
    timeout: float | None = None,
) -> Iterator[WorkerResult]:
    """Evaluate tasks in a local process pool, yielding results as they finish.

    A plan whose worker process dies is retried alone in a new process; if
    it kills that process too, its result is a ``worker_died`` error. A plan
    running longer than ``timeout`` seconds is a ``timeout`` error: its worker
    is killed and the plans running beside it are evaluated again in a new
    pool. When the generator is closed early (an interruption), the worker
    processes are terminated.

    Parameters
    ----------
    tasks : iterable of PlanTask
    protocol : dvheval.protocol.Protocol
    options : EvalOptions
    workers : int
        Number of worker processes.
    evaluator : callable
        The worker function (module-level, picklable); default
        :func:`evaluate_plan`.
    timeout : float, optional
        Time limit of one plan in seconds, from the moment a worker starts
        it; None or 0: no limit.

    Yields
    ------
    WorkerResult
    """
    ctx = _mp_context()
    limit = timeout if timeout is not None and timeout > 0 else None
    pending: deque[PlanTask] = deque(tasks)
    suspects: deque[PlanTask] = deque()
    parent = os.getpid()
    started: Any = None
    tokens = itertools.count()
    pool: ProcessPoolExecutor | None = None
    try:
        while pending or suspects:
            solo = bool(suspects)
            queue = suspects if solo else pending
            width = 1 if solo else max(1, workers)
            ahead = 1 if solo else 2 * width
            if limit is not None:
                # one queue per pool (a killed worker cannot leave its lock held for the
                # next); SimpleQueue writes at once, with no feeder thread that a task
                # holding the GIL could starve, so the start of a plan that hangs is seen
                if started is not None:
                    started.close()
                started = ctx.SimpleQueue()
            pool = ProcessPoolExecutor(width, mp_context=ctx, initializer=_init_worker,
                                       initargs=(parent, started))
            inflight: dict[Any, tuple[int, PlanTask]] = {}
            running: dict[int, tuple[int, float]] = {}  # token -> (pid, start)
            killed: set[int] = set()  # tokens whose worker was killed for the time limit
            broken = False
            while (queue or inflight) and not broken:
                while queue and len(inflight) < ahead:
                    task = queue.popleft()
                    token = next(tokens)
                    try:
                        fut = pool.submit(_run_task, token, evaluator, task, protocol, options)
                    except BrokenProcessPool:
                        queue.appendleft(task)
                        broken = True
                        break
                    inflight[fut] = (token, task)
                if not inflight:
                    break
                done, _ = wait(inflight, timeout=_poll_seconds(running, limit),
                               return_when=FIRST_COMPLETED)
                for fut in done:
                    token, task = inflight.pop(fut)
                    running.pop(token, None)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        if token in killed:
                            yield _timed_out(task, limit or 0.0)
                        elif killed:  # the pool ended because another plan was killed
                            pending.appendleft(task)
                        elif solo:
                            yield _died(task)
                        else:
                            suspects.append(task)
                        continue
                    except (Exception, SystemExit) as exc:  # e.g. a result that cannot be pickled
                        res = _failed(task, exc)
                    yield res
                if limit is not None and not broken:
                    _note_started(started, running, {t for t, _ in inflight.values()})
                    killed |= _kill_overdue(running, limit)
            for token, task in inflight.values():
                if token in killed:
                    yield _timed_out(task, limit or 0.0)
                elif killed:
                    pending.appendleft(task)
                else:
                    suspects.append(task)
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
    finally:
        if pool is not None:
            _terminate_pool(pool)
        if started is not None:
            started.close()


def _poll_seconds(running: dict[int, tuple[int, float]], limit: float | None) -> float | None:
    """How long to wait for results before looking at the clock again."""
    if limit is None:
        return None
    if not running:
        return min(0.25, limit)
    first = min(t0 for _, t0 in running.values())
    return min(1.0, max(0.05, first + limit - time.monotonic()))


def _note_started(started: Any, running: dict[int, tuple[int, float]],
                  inflight: set[int]) -> None:
    """Read the workers' start announcements of tasks still in flight."""
    now = time.monotonic()
    while not started.empty():
        token, pid, t0 = started.get()
        if token in inflight:
            running[token] = (pid, min(t0, now))


def _kill_overdue(running: dict[int, tuple[int, float]], limit: float) -> set[int]:
    """Kill the worker of every task running longer than ``limit``; return their tokens."""
    now = time.monotonic()
    killed = set()
    for token, (pid, t0) in list(running.items()):
        if now - t0 > limit:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # already gone
                pass
            killed.add(token)
            del running[token]
    return killed


def _terminate_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: terminate its worker processes instead of letting them finish."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        try:
            proc.terminate()
        except (OSError, ValueError, AttributeError):  # already gone or closed
            pass
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + 5.0
    for proc in procs:
        try:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        except (OSError, ValueError, AttributeError):
            pass


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise BatchUsageError(
            "--scheduler needs Dask distributed, which is not installed; install it with "
            "pip install 'dvheval[dask]' (or pip install 'dask[distributed]')"
        ) from exc
    return distributed


def run_dask(
    tasks: Iterable[PlanTask],
    protocol: DoseProtocol,
    options: EvalOptions,
    address: str,
    evaluator: Evaluator = evaluate_plan,
) -> Iterator[WorkerResult]:
    """Evaluate tasks on a Dask distributed cluster, yielding results as they finish.

    Parameters
    ----------
    tasks : iterable of PlanTask
    protocol : dvheval.protocol.Protocol
    options : EvalOptions
    address : str
        Scheduler address, e.g. ``tcp://10.0.0.5:8786``.
    evaluator : callable
        The worker function; default :func:`evaluate_plan`.

    Yields
    ------
    WorkerResult

    Raises
    ------
    BatchUsageError
        Dask is not installed or the scheduler cannot be reached.
    """
    distributed = _import_distributed()
    try:
        client = distributed.Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise BatchUsageError(f"cannot connect to the Dask scheduler {address}: {exc}") from exc
    futures: dict[Any, PlanTask] = {}
    try:
        try:
            client.wait_for_workers(1, timeout=120)
        except TimeoutError as exc:
            raise BatchUsageError(f"the Dask scheduler {address} has no workers") from exc
        shared = client.scatter(protocol, broadcast=True, hash=False)
        for task in tasks:
            futures[client.submit(evaluator, task, shared, options, pure=False)] = task
        for fut in distributed.as_completed(list(futures), loop=client.loop):
            task = futures.pop(fut)
            try:
                res = fut.result()
            except distributed.KilledWorker as exc:
                res = _failed(task, exc, "worker_died")
            except Exception as exc:
                res = _failed(task, exc)
            fut.release()
            yield res
    finally:
        if futures:
            client.cancel(list(futures))
        client.close()


# ----------------------------------------------------------------- batch
class ProgressSink(Protocol):
    """Receives progress events of a batch run."""

    def start(self, total: int) -> None:
        """Evaluation of ``total`` plans begins."""

    def advance(self, outcome: str) -> None:
        """One plan finished; ``outcome`` is its verdict or ``"ERROR"``."""

    def stop(self) -> None:
        """The run ended."""


@dataclass
class BatchSummary:
    """What a batch run did.

    Attributes
    ----------
    run_id : int
    db : Path
    protocol : dict
        Name, version, SHA-256 and file of the protocol.
    found : int
        Plans discovered.
    evaluated : int
        Plans evaluated in this run.
    skipped : int
        Plans skipped because the database already held them.
    errors : list of (plan key, patient id, message)
        Plans that could not be evaluated in this run.
    verdicts : dict
        Plan verdict -> number of plans, over evaluated and skipped plans.
    failing_plans : int
        Evaluated or skipped plans with a non-zero exit code.
    problems : list of Problem
        Discovery problems.
    files : dict
        Discovery file counts.
    discovery_seconds, evaluation_seconds : float
    worker_peak_kb : dict
        Worker (``host:pid``) -> peak resident memory in kB.
    interrupted : bool
    not_passed : list of (plan key, patient id, RT plan label, verdict, reasons)
        Plans whose verdict is not PASS (see
        :meth:`dvheval.batch.store.ResultStore.not_passed`).
    """

    run_id: int
    db: Path
    protocol: dict[str, Any]
    found: int = 0
    evaluated: int = 0
    skipped: int = 0
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    failing_plans: int = 0
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)
    discovery_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    worker_peak_kb: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    not_passed: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    @property
    def blocking_problems(self) -> list[Problem]:
        """Discovery problems of severity ``error`` (doses that could not be evaluated)."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def exit_code(self) -> int:
        """0 when every plan passed the gate and no dose was left out; else 1."""
        if self.interrupted or self.errors or self.failing_plans or self.blocking_problems:
            return 1
        return 0


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
    from dvheval.reports import parse_rx as parse_levels

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
        _import_distributed()
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
    summary.problems = list(found.problems)
    summary.files = dict(found.counts)
    summary.discovery_seconds = found.seconds
    summary.found = len(found.groups)
    store.write_problems(summary.run_id, found.problems)
    store.update_run(summary.run_id, files_seen=found.counts.get("files", 0),
                     discovery_seconds=found.seconds, n_found=summary.found,
                     n_problems=len(found.problems))

    hashes, unreadable = _hash_files(store, found.groups, min(8, 2 * jobs))
    opt_sha = options_digest(options.as_dict())
    work: dict[str, _Job] = {}
    for g in found.groups:
        files = [(f.kind, str(f.path), hashes.get(str(f.path), ""), f.sop_instance_uid, f.size)
                 for f in g.files]
        fp = Fingerprint(g.key, input_digest((r, s) for r, _, s, _, _ in files),
                         summary.protocol["sha256"], version, opt_sha)
        work[g.key] = _Job(g, fp, files)
    blocked = {k: [unreadable[p] for p in j.group.paths if p in unreadable]
               for k, j in work.items()}
    blocked = {k: why for k, why in blocked.items() if why}
    for key, why in blocked.items():
        _store_result(store, summary, work[key], WorkerResult(
            key, False, error_kind="unreadable", error_type="OSError",
            message="; ".join(why)))
    ready = [j for k, j in work.items() if k not in blocked]
    done = {} if force else store.completed(j.fingerprint for j in ready)
    store.link(summary.run_id, done.values(), "skipped")
    summary.skipped = len(done)
    todo = [j for j in ready if j.group.key not in done]
    if progress is not None:
        progress.start(len(todo))

    tasks = [PlanTask(j.group.key, tuple(j.group.paths)) for j in todo]
    t0 = time.perf_counter()
    if scheduler:
        results = run_dask(tasks, protocol, options, scheduler, evaluator)
    else:
        results = run_local(tasks, protocol, options, min(jobs, max(1, len(tasks))), evaluator,
                            timeout)
    with closing(results):
        for res in results:
            outcome = _store_result(store, summary, work[res.key], res)
            if progress is not None:
                progress.advance(outcome)
    summary.evaluation_seconds = time.perf_counter() - t0


def _store_result(store: ResultStore, summary: BatchSummary, job: _Job,
                  res: WorkerResult) -> str:
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
        assert res.record is not None
        try:
            store.write_plan(summary.run_id, job.fingerprint, protocol=summary.protocol,
                             patient_id=g.patient_id, key_source=g.key_source,
                             structure_set_by=g.structure_set_by, discovery_notes=g.notes,
                             files=job.files, record=res.record, seconds=res.seconds,
                             worker=res.worker, worker_maxrss_kb=res.maxrss_kb)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                KeyError, TypeError, ValueError) as exc:  # rows of this plan only; rolled back
            res = _failed(PlanTask(g.key, ()), exc, "store")
        else:
            summary.evaluated += 1
            return str(res.record["plan"]["verdict"])
    store.write_error(summary.run_id, job.fingerprint, patient_id=g.patient_id,
                      kind=res.error_kind or "exception", message=res.message or "unknown error",
                      files=[(p, sha) for _, p, sha, _, _ in job.files],
                      error_type=res.error_type, traceback=res.traceback)
    summary.errors.append((g.key, g.patient_id, res.message or "unknown error"))
    return "ERROR"


def _finish(store: ResultStore, summary: BatchSummary, status: str) -> None:
    from dvheval.batch.store import now

    summary.verdicts, summary.failing_plans = store.run_verdicts(summary.run_id)
    summary.not_passed = store.not_passed(summary.run_id)
    store.update_run(summary.run_id, status=status, finished_at=now(),
                     n_evaluated=summary.evaluated, n_skipped=summary.skipped,
                     n_errors=len(summary.errors))


# ------------------------------------------------------------------ CLI
class RichProgress:
    """A rich progress bar on stderr: plans done, failures, rate and ETA."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class _Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text("-- plans/min" if not speed else f"{60 * speed:.1f} plans/min")

        self.progress = Progress(
            TextColumn("[bold]plans"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} not passed, {task.fields[errors]} errors"), _Rate(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, speed_estimate_period=120.0,
        )
        self.task: Any = None
        self.failed = self.errors = 0

    def start(self, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("plans", total=total, failed=0, errors=0)

    def advance(self, outcome: str) -> None:
        if outcome == "ERROR":
            self.errors += 1
        elif outcome in ("FAIL", "NOT_EVALUATED"):
            self.failed += 1
        self.progress.update(self.task, advance=1, failed=self.failed, errors=self.errors)

    def stop(self) -> None:
        self.progress.stop()


def format_summary(summary: BatchSummary, max_lines: int = 20) -> str:
    """The end-of-run report as plain text.

    Parameters
    ----------
    summary : BatchSummary
    max_lines : int
        At most this many plans not passed, errors and problems are listed each.

    Returns
    -------
    str
        Plain text (print it without markup); names, paths and messages
        pass through :func:`printable`, so no control character of a DICOM
        header or file name reaches the terminal.
    """
    f = summary.files
    p = {k: printable(v) if isinstance(v, str) else v for k, v in summary.protocol.items()}
    q = printable
    rate = (60.0 * summary.evaluated / summary.evaluation_seconds
            if summary.evaluation_seconds > 0 and summary.evaluated else 0.0)
    peak = max(summary.worker_peak_kb.values(), default=0) / 1024
    lines = [
        f"run {summary.run_id} -> {q(summary.db)}  (protocol {p['name']} {p.get('version') or ''}, "
        f"sha256 {p['sha256'][:12]})",
        f"  files         {f.get('files', 0)} ({f.get('dicom', 0)} DICOM, "
        f"{f.get('other_dicom', 0)} non-RT DICOM, {f.get('non_dicom', 0)} not DICOM, "
        f"{f.get('unreadable', 0)} unreadable, "
        + (f"{f['not_a_file']} not regular files, " if f.get("not_a_file") else "")
        + f"{f.get('duplicates', 0)} duplicate copies)",
        f"  plans found   {summary.found}  (discovery {summary.discovery_seconds:.2f} s)",
        f"  evaluated     {summary.evaluated}"
        + (f"  ({summary.evaluation_seconds:.1f} s, {rate:.1f} plans/min, peak worker memory "
           f"{peak:.0f} MB)" if summary.evaluated else ""),
        f"  skipped       {summary.skipped}  (already in the database)",
        f"  errors        {len(summary.errors)}",
        "  verdicts      " + "  ".join(f"{v} {summary.verdicts.get(v, 0)}"
                                       for v in PLAN_VERDICTS),
    ]
    counts: dict[str, int] = {}
    for pr in summary.problems:
        counts[pr.kind] = counts.get(pr.kind, 0) + 1
    if counts:
        lines.append("  problems      " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    if summary.interrupted:
        lines.append("  INTERRUPTED: finished plans are stored; run the same command to resume")
    if summary.errors:
        lines.append("errors:")
        lines += [f"  {q(key)} ({q(pid or 'no patient id')}): {q(msg)}"
                  for key, pid, msg in summary.errors[:max_lines]]
        if len(summary.errors) > max_lines:
            lines.append(f"  ... {len(summary.errors) - max_lines} more (table errors)")
    if summary.not_passed:
        lines.append("plans not passed:")
        lines += [f"  {verdict:<13} {q(pid or 'no patient id')} {q(label or key)}: {q(why)}"
                  for key, pid, label, verdict, why in summary.not_passed[:max_lines]]
        if len(summary.not_passed) > max_lines:
            lines.append(f"  ... {len(summary.not_passed) - max_lines} more (view v_verdicts)")
    shown = [pr for pr in summary.problems if pr.severity != "info"]
    if shown:
        lines.append("problems:")
        lines += [f"  {pr.kind}: {q(pr.reason)}: {q(', '.join(pr.files))}"
                  for pr in shown[:max_lines]]
        if len(shown) > max_lines:
            lines.append(f"  ... {len(shown) - max_lines} more (table problems)")
    return "\n".join(lines)


@contextmanager
def stop_signals() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` and SIGINT into KeyboardInterrupt, once.

    Only the first signal raises; later ones (during the clean-up that the
    first one starts: terminating workers, marking the run interrupted) are
    ignored. The previous handlers are restored on exit. Outside the main
    thread nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if fired:
            return
        fired.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def batch_command(
    root: Path | None,
    protocol_name: str | None,
    *,
    jobs: int | None = None,
    db: Path = Path("dvheval.sqlite"),
    export: Path | None = None,
    scheduler: str | None = None,
    rx: Sequence[str] | None = None,
    fractions: int | None = None,
    conditions: Sequence[str] | None = None,
    acceptable_fails: bool = False,
    end_caps: bool = True,
    force: bool = False,
    run: int | None = None,
    command: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    evaluator: Evaluator = evaluate_plan,
    strict: Sequence[str] = (),
) -> int:
    """Everything ``dvheval batch`` does; returns the exit code.

    Without ``root`` nothing is evaluated: the results of run ``run`` (default
    the latest, of ``protocol_name`` when given) are exported from ``db``.
    ``timeout`` is the time limit of one plan in seconds (None or 0: none);
    ``evaluator`` the worker function (see :func:`run_batch`).

    Returns
    -------
    int
        0, 1 (see :class:`BatchSummary`), 2 usage, database or export error,
        130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM.
    """
    from rich.console import Console

    err = Console(stderr=True)
    out = Console() if sys.stdout.isatty() else Console(no_color=True, width=200,
                                                        force_terminal=False)

    def usage(msg: str | Exception) -> int:
        print_error(msg)
        return 2

    with stop_signals():
        try:
            if root is None:
                return _export_only(db, export, protocol_name, run, out, usage)
            return _batch(root, protocol_name, usage, err, out, jobs=jobs, db=db,
                          export=export, scheduler=scheduler, rx=rx, fractions=fractions,
                          conditions=conditions, acceptable_fails=acceptable_fails,
                          end_caps=end_caps, force=force, command=command, timeout=timeout,
                          evaluator=evaluator, strict=tuple(strict))
        except KeyboardInterrupt as exc:
            err.print(f"interrupted: finished plans are stored in {_markup_safe(db)}; run the "
                      "same command to resume", highlight=False, soft_wrap=True)
            return 143 if isinstance(exc, Terminated) else 130


def _markup_safe(text: object) -> str:
    """Text for a rich ``print`` with markup: control characters and ``[`` escaped."""
    from rich.markup import escape

    return escape(printable(text))


def _batch(root: Path, protocol_name: str | None, usage: Callable[[str], int], err: Any,
           out: Any, *, jobs: int | None, db: Path, export: Path | None, scheduler: str | None,
           rx: Sequence[str] | None, fractions: int | None, conditions: Sequence[str] | None,
           acceptable_fails: bool, end_caps: bool, force: bool, command: str | None,
           timeout: float | None, evaluator: Evaluator, strict: tuple[str, ...] = ()) -> int:
    from dvheval.batch.export import check_export_path, export_run

    if protocol_name is None:
        return usage("--protocol is required to evaluate plans")
    if not root.is_dir():
        return usage(f"{root}: no such folder")
    if jobs is not None and jobs < 1:
        return usage("--jobs must be at least 1")
    if timeout is not None and not (timeout >= 0 and math.isfinite(timeout)):
        return usage("--timeout must be a number of seconds, 0 for no limit")
    from dvheval.protocol import load_protocol

    try:
        protocol = load_protocol(protocol_name)
        options = EvalOptions(parse_rx(rx, protocol), fractions, end_caps,
                              check_conditions(conditions, protocol), acceptable_fails,
                              strict)
        if export is not None:
            check_export_path(export)
    except DvhevalError as exc:
        return usage(exc)
    sink = RichProgress(err) if err.is_terminal else None
    try:
        summary = run_batch(root, protocol, db, jobs=jobs, scheduler=scheduler, options=options,
                            force=force, progress=sink, command=command, evaluator=evaluator,
                            timeout=timeout)
    except DvhevalError as exc:  # includes StoreError: a file that is not our database
        return usage(exc)
    except sqlite3.Error as exc:
        return usage(f"{db}: database error ({exc})")
    out.print(format_summary(summary), highlight=False, markup=False, soft_wrap=True)
    if export is not None:
        try:
            written = export_run(db, export, summary.run_id)
        except DvhevalError as exc:
            usage(exc)
            err.print(f"the results are stored in {_markup_safe(db)}; export them with: "
                      f"dvheval batch --db {_markup_safe(db)} --export FILE --run "
                      f"{summary.run_id}", highlight=False, soft_wrap=True)
            return 2
        out.print("exported: " + ", ".join(printable(p) for p in written), highlight=False,
                  markup=False)
    return summary.exit_code


def _export_only(db: Path, export: Path | None, protocol_name: str | None, run: int | None,
                 out: Any, usage: Callable[[str], int]) -> int:
    from dvheval.batch.export import export_run

    if export is None:
        return usage("give ROOT to evaluate plans, or --export FILE to export from --db")
    if not db.is_file():
        return usage(f"{db}: no such database")
    try:
        with closing(ResultStore(db, writable=False)) as store:
            run_id = run if run is not None else store.latest_run(protocol_name)
        if run_id is None:
            return usage(f"{db} holds no run" + (f" of protocol {protocol_name}"
                                                 if protocol_name else ""))
        written = export_run(db, export, run_id)
    except (DvhevalError, ValueError) as exc:
        return usage(exc)
    except sqlite3.Error as exc:
        return usage(f"{db}: database error ({exc})")
    out.print("exported: " + ", ".join(printable(p) for p in written), highlight=False,
              markup=False)
    return 0
