"""What a batch run shows: progress while it runs and the summary at the end.

On a terminal, :class:`RichProgress` draws a progress bar on stderr. When
stderr is not a terminal (CI, cron, ``nohup``), :class:`PlainProgress`
writes one plain line every few seconds and one at the end::

    batch: 120/480 plans, 3.1 plans/min, 2 errors, 5 not passed, 00:38 elapsed

Names and messages in the summary come from DICOM headers and file names;
control characters in them (ANSI escape sequences, CR, LF...) are shown as
escapes (:func:`dvheval.sanitize.for_terminal`); the database keeps them
unchanged.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from dvheval.batch.model import BatchSummary
from dvheval.sanitize import for_terminal
from dvheval.vocab import PLAN_VERDICTS, Verdict

#: Seconds between two plain progress lines.
PLAIN_PROGRESS_INTERVAL = 10.0

#: Outcomes that count as "not passed" while the run goes on (the gate is closed).
_GATE_CLOSED = (Verdict.FAIL.value, Verdict.NOT_EVALUATED.value)


class _Tally:
    """Plans done, errors and plans not passed so far."""

    def __init__(self) -> None:
        self.done = self.failed = self.errors = 0

    def count(self, outcome: str) -> None:
        self.done += 1
        if outcome == "ERROR":
            self.errors += 1
        elif outcome in _GATE_CLOSED:
            self.failed += 1


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
        self.tally = _Tally()

    def start(self, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("plans", total=total, failed=0, errors=0)

    def advance(self, outcome: str) -> None:
        self.tally.count(outcome)
        self.progress.update(self.task, advance=1, failed=self.tally.failed,
                             errors=self.tally.errors)

    def stop(self) -> None:
        self.progress.stop()



def format_elapsed(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from one hour on.

    Examples
    --------
    >>> format_elapsed(38.4), format_elapsed(3725)
    ('00:38', '1:02:05')
    """
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_progress(done: int, total: int, errors: int, not_passed: int,
                    elapsed: float) -> str:
    """One plain progress line.

    Examples
    --------
    >>> format_progress(120, 480, 2, 5, 2322.6)
    'batch: 120/480 plans, 3.1 plans/min, 2 errors, 5 not passed, 38:42 elapsed'
    """
    rate = f"{60.0 * done / elapsed:.1f}" if done and elapsed > 0 else "--"
    return (f"batch: {done}/{total} plans, {rate} plans/min, {errors} errors, "
            f"{not_passed} not passed, {format_elapsed(elapsed)} elapsed")


class PlainProgress:
    """Plain progress lines on stderr, for logs: one every ``interval`` seconds and one at the end.

    Parameters
    ----------
    stream : text stream, optional
        Where to write; ``sys.stderr`` (looked up at each line) by default.
    interval : float
        Seconds between two lines while plans run; 0 or less: only the line
        at the end.
    clock : callable
        Monotonic time in seconds (for tests).
    """

    def __init__(self, stream: IO[str] | None = None, interval: float = PLAIN_PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.tally = _Tally()
        self.total = 0
        self.t0: float | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self, total: int) -> None:
        self.total = total
        self.t0 = self.clock()
        if self.interval > 0:
            self._ticker = threading.Thread(target=self._tick, daemon=True,
                                            name="dvheval-batch-progress")
            self._ticker.start()

    def advance(self, outcome: str) -> None:
        with self._lock:
            self.tally.count(outcome)

    def stop(self) -> None:
        if self.t0 is None or self._stopped.is_set():
            return
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.join()
        self._write_line()

    def _tick(self) -> None:
        while not self._stopped.wait(self.interval):
            self._write_line()

    def line(self) -> str:
        """The progress line now."""
        with self._lock:
            t = self.tally
            return format_progress(t.done, self.total, t.errors, t.failed,
                                   self.clock() - (self.t0 or 0.0))

    def _write_line(self) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(self.line() + "\n")
        stream.flush()


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
        pass through :func:`~dvheval.sanitize.for_terminal`, so no control
        character of a DICOM header or file name reaches the terminal. Each
        plan not passed shows its folder relative to the archive root, so
        two plans of one patient can be told apart.
    """
    return "\n".join([*_count_lines(summary), *_list_lines(summary, max_lines)])


def _count_lines(summary: BatchSummary) -> list[str]:
    """The run's identity and counts: files, plans, verdicts, problems."""
    f = summary.files
    p = {k: for_terminal(v) if isinstance(v, str) else v for k, v in summary.protocol.items()}
    rate = (60.0 * summary.evaluated / summary.evaluation_seconds
            if summary.evaluation_seconds > 0 and summary.evaluated else 0.0)
    peak = max(summary.worker_peak_kb.values(), default=0) / 1024
    lines = [
        f"run {summary.run_id} -> {for_terminal(summary.db)}  (protocol {p['name']} "
        f"{p.get('version') or ''}, sha256 {p['sha256'][:12]})",
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
        "  verdicts      " + "  ".join(f"{v.value} {summary.verdicts.get(v.value, 0)}"
                                       for v in PLAN_VERDICTS),
    ]
    counts: dict[str, int] = {}
    for pr in summary.problems:
        counts[pr.kind] = counts.get(pr.kind, 0) + 1
    if counts:
        lines.append("  problems      " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    if summary.interrupted:
        lines.append("  INTERRUPTED: finished plans are stored; run the same command to resume")
    return lines


def _list_lines(summary: BatchSummary, max_lines: int) -> list[str]:
    """The errors, the plans not passed and the discovery problems, ``max_lines`` each."""
    q = for_terminal
    lines: list[str] = []
    if summary.errors:
        lines.append("errors:")
        lines += [f"  {q(key)} ({q(pid or 'no patient id')}): {q(msg)}"
                  for key, pid, msg in summary.errors[:max_lines]]
        if len(summary.errors) > max_lines:
            lines.append(f"  ... {len(summary.errors) - max_lines} more (table errors)")
    if summary.not_passed:
        lines.append("plans not passed:")
        lines += [f"  {n.verdict:<13} {q(n.patient_id or 'no patient id')} "
                  f"{q(n.rtplan_label or n.plan_key)}"
                  + (f" ({q(n.folder)})" if n.folder else "") + f": {q(n.reasons)}"
                  for n in summary.not_passed[:max_lines]]
        if len(summary.not_passed) > max_lines:
            lines.append(f"  ... {len(summary.not_passed) - max_lines} more (view v_verdicts)")
    shown = [pr for pr in summary.problems if pr.severity != "info"]
    if shown:
        lines.append("problems:")
        lines += [f"  {pr.kind}: {q(pr.reason)}: {q(', '.join(pr.files))}"
                  for pr in shown[:max_lines]]
        if len(shown) > max_lines:
            lines.append(f"  ... {len(shown) - max_lines} more (table problems)")
    return lines
