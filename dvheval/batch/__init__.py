"""Evaluate every plan of a DICOM archive against a protocol.

``run_batch`` finds the plans (:mod:`dvheval.dicom.discover`), skips those the
database already holds with the same inputs, protocol, dvheval version and
options (:mod:`dvheval.batch.store`), evaluates the rest in worker processes and
writes each plan's rows in one transaction as soon as its worker returns.

Modules
-------
:mod:`~dvheval.batch.model`     options, tasks, worker results, the run summary.
:mod:`~dvheval.batch.worker`    the worker function :func:`evaluate_plan`.
:mod:`~dvheval.batch.records`   a checked plan as database rows.
:mod:`~dvheval.batch.runner`    local process pool, Dask, time limits, signals.
:mod:`~dvheval.batch.run`       one run: :func:`run_batch`.
:mod:`~dvheval.batch.progress`  progress display and the end summary.
:mod:`~dvheval.batch.command`   ``dvheval batch``: :func:`batch_command`.
:mod:`~dvheval.batch.store`     the SQLite database: every table and every query.
:mod:`~dvheval.batch.export`    CSV/Parquet tables and box plots of a run.
:mod:`~dvheval.batch.curves`    each ROI's cumulative DVH as a compact BLOB, and back.
:mod:`~dvheval.batch.cohort`    metrics, population DVHs and box plots from stored curves.
:mod:`~dvheval.batch.plots`     the cohort figures (box plots, population DVHs).
:mod:`~dvheval.batch.cohort_command` ``dvheval cohort``: :func:`cohort_command`.

Workers
-------
Locally the plans run in a :class:`concurrent.futures.ProcessPoolExecutor`
started with ``forkserver`` (``spawn`` where that is unavailable). The
worker function :func:`evaluate_plan` is a module-level function of plain,
picklable arguments, and returns plain rows (DVH curves as compact BLOBs). Any
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
Progress goes to stderr: a progress bar on a terminal, one plain line every
few seconds otherwise. Names and messages in the summary come from DICOM
headers and file names; control characters in them (ANSI escape sequences,
CR, LF...) are shown as escapes (:func:`dvheval.sanitize.for_terminal`), the
database keeps them unchanged.
"""

from __future__ import annotations

from dvheval.batch.command import batch_command
from dvheval.batch.model import (
    DEFAULT_TIMEOUT,
    BatchSummary,
    BatchUsageError,
    EvalOptions,
    Evaluator,
    PlanTask,
    ProgressSink,
    Terminated,
    WorkerResult,
)
from dvheval.batch.progress import (
    PLAIN_PROGRESS_INTERVAL,
    PlainProgress,
    RichProgress,
    format_progress,
    format_summary,
)
from dvheval.batch.records import build_record
from dvheval.batch.run import check_conditions, parse_rx, run_batch
from dvheval.batch.runner import default_jobs, run_dask, run_local, stop_signals
from dvheval.batch.worker import evaluate_plan, single_threaded_blas

__all__ = [
    "DEFAULT_TIMEOUT",
    "PLAIN_PROGRESS_INTERVAL",
    "BatchSummary",
    "BatchUsageError",
    "EvalOptions",
    "Evaluator",
    "PlainProgress",
    "PlanTask",
    "ProgressSink",
    "RichProgress",
    "Terminated",
    "WorkerResult",
    "batch_command",
    "build_record",
    "check_conditions",
    "default_jobs",
    "evaluate_plan",
    "format_progress",
    "format_summary",
    "parse_rx",
    "run_batch",
    "run_dask",
    "run_local",
    "single_threaded_blas",
    "stop_signals",
]
