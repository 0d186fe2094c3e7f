"""The worker function: evaluate one plan and return its database rows.

:func:`evaluate_plan` runs in a worker process (local pool or Dask worker).
It is a module-level function of plain, picklable arguments and returns
plain rows (DVH curves as compact BLOBs); any exception inside it becomes an error
result of that plan.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from typing import TYPE_CHECKING

from dvheval.batch.model import EvalOptions, PlanTask, WorkerResult, failed_result
from dvheval.batch.records import build_record
from dvheval.errors import DvhevalError

if TYPE_CHECKING:
    from dvheval.protocol import Protocol as DoseProtocol


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
        out = failed_result(task, exc)
    out.seconds = time.perf_counter() - t0
    out.worker = _where()
    out.maxrss_kb = _maxrss_kb()
    return out

