"""``dvheval batch``: arguments checked, the run, its summary and the export.

:func:`batch_command` is what the command line calls; it returns the exit
code: 0 when every plan found was evaluated (now or before) with exit code 0
(PASS, or ACCEPTABLE) and discovery found no dose it could not use; 1
otherwise (a plan FAIL or NOT_EVALUATED, an evaluation error, an orphan or
conflicting dose); 2 for usage errors, a database that cannot be used or an
export that cannot be written; 130 / 143 when interrupted by SIGINT /
SIGTERM.

Progress goes to stderr: a progress bar on a terminal, otherwise one plain
line every :data:`~dvheval.batch.progress.PLAIN_PROGRESS_INTERVAL` seconds
and one at the end. The summary goes to stdout.
"""

from __future__ import annotations

import math
import sqlite3
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from dvheval.batch.model import DEFAULT_TIMEOUT, EvalOptions, Evaluator, ProgressSink, Terminated
from dvheval.batch.progress import (
    PLAIN_PROGRESS_INTERVAL,
    PlainProgress,
    RichProgress,
    format_summary,
)
from dvheval.batch.run import check_conditions, parse_rx, run_batch
from dvheval.batch.runner import stop_signals
from dvheval.batch.store import ResultStore
from dvheval.batch.worker import evaluate_plan
from dvheval.errors import DvhevalError
from dvheval.sanitize import for_terminal, print_error


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
    progress_interval: float = PLAIN_PROGRESS_INTERVAL,
) -> int:
    """Everything ``dvheval batch`` does; returns the exit code.

    Without ``root`` nothing is evaluated: the results of run ``run`` (default
    the latest, of ``protocol_name`` when given) are exported from ``db``.
    ``timeout`` is the time limit of one plan in seconds (None or 0: none);
    ``evaluator`` the worker function (see :func:`~dvheval.batch.run.run_batch`);
    ``progress_interval`` the seconds between two plain progress lines when
    stderr is not a terminal.

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
                          evaluator=evaluator, strict=tuple(strict),
                          progress_interval=progress_interval)
        except KeyboardInterrupt as exc:
            err.print(f"interrupted: finished plans are stored in {for_terminal(db)}; run the "
                      "same command to resume", highlight=False, markup=False, soft_wrap=True)
            return 143 if isinstance(exc, Terminated) else 130


def _batch(root: Path, protocol_name: str | None, usage: Callable[[str | Exception], int], err: Any,
           out: Any, *, jobs: int | None, db: Path, export: Path | None, scheduler: str | None,
           rx: Sequence[str] | None, fractions: int | None, conditions: Sequence[str] | None,
           acceptable_fails: bool, end_caps: bool, force: bool, command: str | None,
           timeout: float | None, evaluator: Evaluator, strict: tuple[str, ...] = (),
           progress_interval: float = PLAIN_PROGRESS_INTERVAL) -> int:
    """Check the arguments, run the batch, print the summary, export; return the exit code."""
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
    sink: ProgressSink = (RichProgress(err) if err.is_terminal
                          else PlainProgress(interval=progress_interval))
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
            err.print(f"the results are stored in {for_terminal(db)}; export them with: "
                      f"dvheval batch --db {for_terminal(db)} --export FILE --run "
                      f"{summary.run_id}", highlight=False, markup=False, soft_wrap=True)
            return 2
        out.print("exported: " + ", ".join(for_terminal(p) for p in written), highlight=False,
                  markup=False)
    return summary.exit_code


def _export_only(db: Path, export: Path | None, protocol_name: str | None, run: int | None,
                 out: Any, usage: Callable[[str | Exception], int]) -> int:
    """Export run ``run`` (default the latest, of ``protocol_name`` when given) from ``db``."""
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
    out.print("exported: " + ", ".join(for_terminal(p) for p in written), highlight=False,
              markup=False)
    return 0
