"""Where plans run: a local process pool or a Dask cluster; time limits and signals.

Locally the plans run in a :class:`concurrent.futures.ProcessPoolExecutor`
started with ``forkserver`` (``spawn`` where that is unavailable). When a
worker process dies (crash, out of memory, killed), the plans that were in
flight are run again one at a time in a fresh process; the one that kills
its process again is recorded as an error (``worker_died``) and the others
are evaluated normally. Workers ignore Ctrl-C (the parent stops the run) and
exit when the parent process is gone.

A plan over the time limit is recorded as an error of kind ``timeout``; its
worker process is killed, which ends the pool, so the plans that were
running beside it are put back in the queue and evaluated again in a fresh
pool. On Dask the time limit is not applied (a running task cannot be
stopped).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dvheval.batch.model import (
    BatchUsageError,
    EvalOptions,
    Evaluator,
    PlanTask,
    Terminated,
    WorkerResult,
    died_result,
    failed_result,
    timeout_result,
)
from dvheval.batch.worker import evaluate_plan
from dvheval.engine.forked import with_stack_room

if TYPE_CHECKING:
    from dvheval.protocol import Protocol as DoseProtocol

#: Modules the forkserver imports once, so that each worker starts with them loaded.
FORKSERVER_PRELOAD = ("dvheval.batch.worker", "dvheval.engine.compute", "dvheval.check")


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
    """Worker side: announce the start of a task, then evaluate it (where the
    interpreter's frame stack has room: :func:`~dvheval.engine.forked.with_stack_room`)."""
    if _started_queue is not None:
        _started_queue.put((token, os.getpid(), time.monotonic()))
    return with_stack_room(lambda: evaluator(task, protocol, options))


def _mp_context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        return ctx
    return multiprocessing.get_context("spawn")


def default_jobs() -> int:
    """Number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)



@dataclass
class _Queues:
    """Plans waiting for a pool: ``pending`` normally, ``suspects`` one at a time."""

    pending: deque[PlanTask]
    suspects: deque[PlanTask] = field(default_factory=deque)


@dataclass
class _Round:
    """One pool's worth of work: what it runs and what it has seen.

    Attributes
    ----------
    call : tuple
        ``(evaluator, protocol, options)`` passed to every task.
    solo : bool
        The pool runs suspects, one at a time.
    ahead : int
        Tasks submitted at most at once.
    limit : float or None
        Time limit of one plan, seconds.
    inflight : dict
        Future -> (token, task) of the tasks submitted and not yet done.
    running : dict
        Token -> (pid, start) of tasks a worker announced as started.
    killed : set of int
        Tokens whose worker was killed for the time limit.
    """

    call: tuple[Evaluator, Any, EvalOptions]
    solo: bool
    ahead: int
    limit: float | None
    inflight: dict[Future[WorkerResult], tuple[int, PlanTask]] = field(default_factory=dict)
    running: dict[int, tuple[int, float]] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)


def run_local(
    tasks: Iterable[PlanTask],
    protocol: DoseProtocol,
    options: EvalOptions,
    workers: int,
    evaluator: Evaluator = evaluate_plan,
    timeout: float | None = None,
) -> Generator[WorkerResult, None, None]:
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
        :func:`~dvheval.batch.worker.evaluate_plan`.
    timeout : float, optional
        Time limit of one plan in seconds, from the moment a worker starts
        it; None or 0: no limit.

    Yields
    ------
    WorkerResult
    """
    ctx = _mp_context()
    limit = timeout if timeout is not None and timeout > 0 else None
    queues = _Queues(deque(tasks))
    parent = os.getpid()
    started: Any = None
    tokens = itertools.count()
    pool: ProcessPoolExecutor | None = None
    try:
        while queues.pending or queues.suspects:
            solo = bool(queues.suspects)
            width = 1 if solo else max(1, workers)
            if limit is not None:
                # one queue per pool (a killed worker cannot leave its lock held for the
                # next); SimpleQueue writes at once, with no feeder thread that a task
                # holding the GIL could starve, so the start of a plan that hangs is seen
                if started is not None:
                    started.close()
                started = ctx.SimpleQueue()
            pool = ProcessPoolExecutor(width, mp_context=ctx, initializer=_init_worker,
                                       initargs=(parent, started))
            work = _Round((evaluator, protocol, options), solo, 1 if solo else 2 * width, limit)
            yield from _run_round(pool, work, queues, tokens, started)
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
    finally:
        if pool is not None:
            _terminate_pool(pool)
        if started is not None:
            started.close()


def _run_round(pool: ProcessPoolExecutor, work: _Round, queues: _Queues,
               tokens: Iterator[int], started: Any) -> Iterator[WorkerResult]:
    """Feed one pool until its queue is empty or the pool breaks; yield the results."""
    queue = queues.suspects if work.solo else queues.pending
    broken = False
    while (queue or work.inflight) and not broken:
        broken = _submit(pool, work, queue, tokens)
        if not work.inflight:
            break
        done, _ = wait(work.inflight, timeout=_poll_seconds(work.running, work.limit),
                       return_when=FIRST_COMPLETED)
        for fut in done:
            token, task = work.inflight.pop(fut)
            work.running.pop(token, None)
            try:
                res: WorkerResult | None = fut.result()
            except BrokenProcessPool:
                broken = True
                res = _after_break(work, token, task, queues, work.solo)
            except (Exception, SystemExit) as exc:  # e.g. a result that cannot be pickled
                res = failed_result(task, exc)
            if res is not None:
                yield res
        if work.limit is not None and not broken:
            _note_started(started, work.running, {t for t, _ in work.inflight.values()})
            work.killed |= _kill_overdue(work.running, work.limit)
    for token, task in work.inflight.values():
        res = _after_break(work, token, task, queues, solo=False)
        if res is not None:
            yield res


def _submit(pool: ProcessPoolExecutor, work: _Round, queue: deque[PlanTask],
            tokens: Iterator[int]) -> bool:
    """Submit tasks until ``work.ahead`` are in flight; True when the pool is broken."""
    while queue and len(work.inflight) < work.ahead:
        task = queue.popleft()
        token = next(tokens)
        try:
            fut = pool.submit(_run_task, token, work.call[0], task, work.call[1], work.call[2])
        except BrokenProcessPool:
            queue.appendleft(task)
            return True
        work.inflight[fut] = (token, task)
    return False


def _after_break(work: _Round, token: int, task: PlanTask, queues: _Queues,
                 solo: bool) -> WorkerResult | None:
    """What becomes of a task of a broken pool: an error, or back in a queue (None).

    Killed for the time limit: a ``timeout`` error. Beside a killed task:
    queued again at the front. Alone when its process died (``solo``): a
    ``worker_died`` error. Otherwise: a suspect, to be run alone.
    """
    if token in work.killed:
        return timeout_result(task, work.limit or 0.0)
    if work.killed:  # the pool ended because another plan was killed
        queues.pending.appendleft(task)
    elif solo:
        return died_result(task)
    else:
        queues.suspects.append(task)
    return None


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




def import_distributed() -> Any:
    """The ``distributed`` module; :class:`BatchUsageError` when Dask is not installed."""
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
) -> Generator[WorkerResult, None, None]:
    """Evaluate tasks on a Dask distributed cluster, yielding results as they finish.

    Parameters
    ----------
    tasks : iterable of PlanTask
    protocol : dvheval.protocol.Protocol
    options : EvalOptions
    address : str
        Scheduler address, e.g. ``tcp://10.0.0.5:8786``.
    evaluator : callable
        The worker function; default :func:`~dvheval.batch.worker.evaluate_plan`.

    Yields
    ------
    WorkerResult

    Raises
    ------
    BatchUsageError
        Dask is not installed or the scheduler cannot be reached.
    """
    distributed = import_distributed()
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
                res = failed_result(task, exc, "worker_died")
            except Exception as exc:
                res = failed_result(task, exc)
            fut.release()
            yield res
    finally:
        if futures:
            client.cancel(list(futures))
        client.close()



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

