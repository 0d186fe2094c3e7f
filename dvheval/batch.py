"""Evaluate every plan of a DICOM archive against a protocol.

``run_batch`` finds the plans (:mod:`dvheval.discover`), skips those the
database already holds with the same inputs, protocol, dvheval version and
options (:mod:`dvheval.store`), evaluates the rest in worker processes and
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

With a Dask scheduler address (``tcp://host:port``) the same function runs
on the cluster's workers (which must see the archive at the same paths and
have dvheval installed); results still come back to this process, which
alone writes the database.

Exit code of a run
------------------
0 when every plan found was evaluated (now or before) with exit code 0 (PASS,
or ACCEPTABLE) and discovery found no dose it could not use; 1 otherwise
(a plan FAIL or NOT_EVALUATED, an evaluation error, an orphan or conflicting
dose); 2 for usage errors (raised as :class:`BatchUsageError`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import DvhevalError
from .store import (
    METRIC_COLUMNS,
    PROTOCOL_STRUCTURE_COLUMNS,
    STRUCTURE_COLUMNS,
    VERDICT_COLUMNS,
    Fingerprint,
    ResultStore,
    input_digest,
    options_digest,
)

if TYPE_CHECKING:
    from .check import CheckResult
    from .discover import Discovery, PlanGroup, Problem
    from .protocol import Protocol as DoseProtocol

#: Verdicts reported per plan, in the order shown.
PLAN_VERDICTS = ("PASS", "ACCEPTABLE", "FAIL", "NOT_EVALUATED")


class BatchUsageError(DvhevalError):
    """The batch cannot start: bad folder, protocol, option or scheduler."""


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
    """

    rx_overrides: tuple[tuple[str, float], ...] = ()
    fractions: int | None = None
    end_caps: bool = True
    conditions: tuple[str, ...] = ()
    acceptable_fails_gate: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON form (stored with the run, hashed into the fingerprint)."""
        return {"rx": dict(self.rx_overrides), "fractions": self.fractions,
                "end_caps": self.end_caps, "conditions": sorted(self.conditions),
                "acceptable_fails_gate": self.acceptable_fails_gate}


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
        Rows for :meth:`dvheval.store.ResultStore.write_plan` when ``ok``.
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
    from .calc import compute_dvhs
    from .check import check_plan

    single_threaded_blas()
    t0 = time.perf_counter()
    try:
        plan = compute_dvhs(list(task.paths), end_caps=options.end_caps,
                            fractions=options.fractions)
        result = check_plan(plan, protocol, rx_overrides=dict(options.rx_overrides) or None,
                            fractions=options.fractions,
                            acceptable_fails_gate=options.acceptable_fails_gate,
                            conditions=options.conditions or None)
        record = build_record(result)
        out = WorkerResult(task.key, True, record, dict(plan.dose.sha256))
    except DvhevalError as exc:
        out = WorkerResult(task.key, False, error_kind="input", error_type=type(exc).__name__,
                           message=str(exc))
    except Exception as exc:  # any failure of one plan must not stop the batch
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
    from .metrics import parse_metric

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
        ``plan`` (:data:`~dvheval.store.PLAN_RESULT_COLUMNS`) and, as
        column lists, ``structures``, ``metrics``, ``verdicts`` and
        ``protocol_structures``.

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
    }


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


def _init_worker(parent_pid: int) -> None:
    """Worker start-up: leave Ctrl-C to the parent; exit if the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="dvheval-parent-watch").start()


def _mp_context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["dvheval.batch", "dvheval.calc", "dvheval.check"])
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
) -> Iterator[WorkerResult]:
    """Evaluate tasks in a local process pool, yielding results as they finish.

    A plan whose worker process dies is retried alone in a new process; if
    it kills that process too, its result is a ``worker_died`` error.

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

    Yields
    ------
    WorkerResult
    """
    ctx = _mp_context()
    pending: deque[PlanTask] = deque(tasks)
    suspects: deque[PlanTask] = deque()
    parent = os.getpid()
    pool: ProcessPoolExecutor | None = None
    try:
        while pending or suspects:
            solo = bool(suspects)
            queue = suspects if solo else pending
            width = 1 if solo else max(1, workers)
            ahead = 1 if solo else 2 * width
            pool = ProcessPoolExecutor(width, mp_context=ctx, initializer=_init_worker,
                                       initargs=(parent,))
            inflight: dict[Any, PlanTask] = {}
            broken = False
            while (queue or inflight) and not broken:
                while queue and len(inflight) < ahead:
                    task = queue.popleft()
                    try:
                        inflight[pool.submit(evaluator, task, protocol, options)] = task
                    except BrokenProcessPool:
                        queue.appendleft(task)
                        broken = True
                        break
                if not inflight:
                    break
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = inflight.pop(fut)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        if solo:
                            yield _died(task)
                        else:
                            suspects.append(task)
                        continue
                    except Exception as exc:  # e.g. a result that cannot be pickled
                        res = _failed(task, exc)
                    yield res
            suspects.extend(inflight.values())
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


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
        :meth:`dvheval.store.ResultStore.not_passed`).
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
    from .check_report import parse_rx as parse_levels

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


def _hash_files(store: ResultStore, groups: Sequence[PlanGroup], threads: int) -> dict[str, str]:
    from .dicomio import sha256_of

    files = {str(f.path): (f.size, f.mtime_ns) for g in groups for f in g.files}
    known = store.cached_hashes((p, s, m) for p, (s, m) in files.items())
    missing = [p for p in files if p not in known]
    if missing:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            digests = list(pool.map(sha256_of, missing))
        store.remember_hashes((p, *files[p], d) for p, d in zip(missing, digests, strict=True))
        known.update(zip(missing, digests, strict=True))
    return known


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

    Returns
    -------
    BatchSummary

    Raises
    ------
    BatchUsageError
        A root is not a folder or file, or the scheduler is unusable.
    KeyboardInterrupt
        After recording the run as interrupted; finished plans stay written.
    """
    from . import __version__
    from .discover import discover

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
            _execute(store, summary, protocol, options, jobs, scheduler, force, progress,
                     evaluator, discovery or discover(roots), __version__)
        except KeyboardInterrupt:
            summary.interrupted = True
            _finish(store, summary, "interrupted")
            raise
        except BaseException:
            _finish(store, summary, "failed")
            raise
        finally:
            if progress is not None:
                progress.stop()
        _finish(store, summary, "completed")
    return summary


def _execute(store: ResultStore, summary: BatchSummary, protocol: DoseProtocol,
             options: EvalOptions, jobs: int, scheduler: str | None, force: bool,
             progress: ProgressSink | None, evaluator: Evaluator, found: Discovery,
             version: str) -> None:
    summary.problems = list(found.problems)
    summary.files = dict(found.counts)
    summary.discovery_seconds = found.seconds
    summary.found = len(found.groups)
    store.write_problems(summary.run_id, found.problems)
    store.update_run(summary.run_id, files_seen=found.counts.get("files", 0),
                     discovery_seconds=found.seconds, n_found=summary.found,
                     n_problems=len(found.problems))

    hashes = _hash_files(store, found.groups, min(8, 2 * jobs))
    opt_sha = options_digest(options.as_dict())
    work: dict[str, _Job] = {}
    for g in found.groups:
        files = [(f.kind, str(f.path), hashes[str(f.path)], f.sop_instance_uid, f.size)
                 for f in g.files]
        fp = Fingerprint(g.key, input_digest((r, s) for r, _, s, _, _ in files),
                         summary.protocol["sha256"], version, opt_sha)
        work[g.key] = _Job(g, fp, files)
    done = {} if force else store.completed(j.fingerprint for j in work.values())
    store.link(summary.run_id, done.values(), "skipped")
    summary.skipped = len(done)
    todo = [j for k, j in work.items() if k not in done]
    if progress is not None:
        progress.start(len(todo))

    tasks = [PlanTask(j.group.key, tuple(j.group.paths)) for j in todo]
    t0 = time.perf_counter()
    if scheduler:
        results = run_dask(tasks, protocol, options, scheduler, evaluator)
    else:
        results = run_local(tasks, protocol, options, min(jobs, max(1, len(tasks))), evaluator)
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
        store.write_plan(summary.run_id, job.fingerprint, protocol=summary.protocol,
                         patient_id=g.patient_id, key_source=g.key_source,
                         structure_set_by=g.structure_set_by, discovery_notes=g.notes,
                         files=job.files, record=res.record, seconds=res.seconds,
                         worker=res.worker, worker_maxrss_kb=res.maxrss_kb)
        summary.evaluated += 1
        return str(res.record["plan"]["verdict"])
    store.write_error(summary.run_id, job.fingerprint, patient_id=g.patient_id,
                      kind=res.error_kind or "exception", message=res.message or "unknown error",
                      files=[(p, sha) for _, p, sha, _, _ in job.files],
                      error_type=res.error_type, traceback=res.traceback)
    summary.errors.append((g.key, g.patient_id, res.message or "unknown error"))
    return "ERROR"


def _finish(store: ResultStore, summary: BatchSummary, status: str) -> None:
    from .store import now

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
    """
    f = summary.files
    p = summary.protocol
    rate = (60.0 * summary.evaluated / summary.evaluation_seconds
            if summary.evaluation_seconds > 0 and summary.evaluated else 0.0)
    peak = max(summary.worker_peak_kb.values(), default=0) / 1024
    lines = [
        f"run {summary.run_id} -> {summary.db}  (protocol {p['name']} {p.get('version') or ''}, "
        f"sha256 {p['sha256'][:12]})",
        f"  files         {f.get('files', 0)} ({f.get('dicom', 0)} DICOM, "
        f"{f.get('other_dicom', 0)} non-RT DICOM, {f.get('non_dicom', 0)} not DICOM, "
        f"{f.get('unreadable', 0)} unreadable, {f.get('duplicates', 0)} duplicate copies)",
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
        lines += [f"  {key} ({pid or 'no patient id'}): {msg}"
                  for key, pid, msg in summary.errors[:max_lines]]
        if len(summary.errors) > max_lines:
            lines.append(f"  ... {len(summary.errors) - max_lines} more (table errors)")
    if summary.not_passed:
        lines.append("plans not passed:")
        lines += [f"  {verdict:<13} {pid or 'no patient id'} {label or key}: {why}"
                  for key, pid, label, verdict, why in summary.not_passed[:max_lines]]
        if len(summary.not_passed) > max_lines:
            lines.append(f"  ... {len(summary.not_passed) - max_lines} more (view v_verdicts)")
    shown = [pr for pr in summary.problems if pr.severity != "info"]
    if shown:
        lines.append("problems:")
        lines += [f"  {pr.kind}: {pr.reason}: {', '.join(pr.files)}" for pr in shown[:max_lines]]
        if len(shown) > max_lines:
            lines.append(f"  ... {len(shown) - max_lines} more (table problems)")
    return "\n".join(lines)


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
) -> int:
    """Everything ``dvheval batch`` does; returns the exit code.

    Without ``root`` nothing is evaluated: the results of run ``run`` (default
    the latest, of ``protocol_name`` when given) are exported from ``db``.

    Returns
    -------
    int
        0, 1 (see :class:`BatchSummary`), 2 usage error, 130 interrupted.
    """
    from rich.console import Console

    err = Console(stderr=True)
    out = Console() if sys.stdout.isatty() else Console(no_color=True, width=200,
                                                        force_terminal=False)

    def usage(msg: str) -> int:
        err.print(f"[bold red]error:[/bold red] {msg}", highlight=False, soft_wrap=True)
        return 2

    if root is None:
        return _export_only(db, export, protocol_name, run, out, usage)
    if protocol_name is None:
        return usage("--protocol is required to evaluate plans")
    if not root.is_dir():
        return usage(f"{root}: no such folder")
    if jobs is not None and jobs < 1:
        return usage("--jobs must be at least 1")
    from .protocol import load_protocol

    try:
        protocol = load_protocol(protocol_name)
        options = EvalOptions(parse_rx(rx, protocol), fractions, end_caps,
                              check_conditions(conditions, protocol), acceptable_fails)
    except DvhevalError as exc:
        return usage(str(exc))
    sink = RichProgress(err) if err.is_terminal else None
    try:
        summary = run_batch(root, protocol, db, jobs=jobs, scheduler=scheduler, options=options,
                            force=force, progress=sink, command=command)
    except KeyboardInterrupt:
        err.print("interrupted: finished plans are stored in "
                  f"{db}; run the same command to resume", highlight=False)
        return 130
    except DvhevalError as exc:  # includes StoreError: a file that is not our database
        return usage(str(exc))
    out.print(format_summary(summary), highlight=False, markup=False, soft_wrap=True)
    if export is not None:
        from .export import export_run

        written = export_run(db, export, summary.run_id)
        out.print("exported: " + ", ".join(str(p) for p in written), highlight=False,
                  markup=False)
    return summary.exit_code


def _export_only(db: Path, export: Path | None, protocol_name: str | None, run: int | None,
                 out: Any, usage: Callable[[str], int]) -> int:
    from .export import export_run

    if export is None:
        return usage("give ROOT to evaluate plans, or --export FILE to export from --db")
    if not db.is_file():
        return usage(f"{db}: no such database")
    try:
        with closing(ResultStore(db)) as store:
            run_id = run if run is not None else store.latest_run(protocol_name)
        if run_id is None:
            return usage(f"{db} holds no run" + (f" of protocol {protocol_name}"
                                                 if protocol_name else ""))
        written = export_run(db, export, run_id)
    except (DvhevalError, ValueError) as exc:
        return usage(str(exc))
    out.print("exported: " + ", ".join(str(p) for p in written), highlight=False, markup=False)
    return 0
