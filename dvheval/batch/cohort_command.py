"""``dvheval cohort``: metrics, tables and figures of a run from its stored DVH curves.

:func:`cohort_command` is what the command line calls; it prints a summary
(one line per structure and metric: plans with a value, median, quartiles,
range) to stdout, writes the files asked for, and returns the exit code: 0
done, 2 a database, run, structure, metric or output path that cannot be used
(the message says which and why). No DICOM file is read.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from dvheval.batch.cohort import (
    DEFAULT_COHORT_METRICS,
    Cohort,
    CohortError,
    box_groups,
    check_metrics,
    load_cohort,
    metric_rows,
    population_panels,
    write_table,
)
from dvheval.batch.plots import draw_boxplots, draw_population
from dvheval.sanitize import for_terminal, print_error


def cohort_command(
    db: Path,
    *,
    run: int | None = None,
    structures: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    export: Path | None = None,
    plot: Path | None = None,
    boxplots: Path | None = None,
    absolute: bool = False,
    lines: bool = False,
    out: IO[str] | None = None,
) -> int:
    """Analyse one run of a batch database from its stored DVH curves.

    Parameters
    ----------
    db : Path
        The batch results database (read only).
    run : int, optional
        The run; default the latest.
    structures : sequence of str, optional
        Protocol structure names; default all the run's plans have.
    metrics : sequence of str, optional
        Metrics of the grammar; default :data:`DEFAULT_COHORT_METRICS`.
    export : Path, optional
        ``.csv`` or ``.parquet``: one row per plan x structure x metric.
    plot : Path, optional
        Population DVH figure (PNG).
    boxplots : Path, optional
        Box plots of the limited metrics and of ``metrics`` (PNG).
    absolute : bool
        Population DVH volumes in cm³ instead of %.
    lines : bool
        Draw every plan's curve in the population DVH.
    out : file, optional
        Where the summary goes (default stdout).

    Returns
    -------
    int
        0, or 2 when the analysis cannot be done.
    """
    out = out or sys.stdout
    try:
        for p in (export, plot, boxplots):
            if p is not None and p.is_dir():
                raise CohortError(f"{p}: is a folder; give a file name")
        if export is not None and export.suffix.lower() not in (".csv", ".parquet"):
            raise CohortError(f"{export}: the export must end in .csv or .parquet")
        names = check_metrics(metrics or DEFAULT_COHORT_METRICS)
        cohort = load_cohort(db, run, structures)
        rows = metric_rows(cohort, names)
        print(format_cohort(cohort, names, rows), file=out)
        written = []
        if export is not None:
            written.append(write_table(export, rows))
        if plot is not None:
            written.append(_population_figure(cohort, plot, absolute, lines))
        if boxplots is not None:
            written += _box_figure(cohort, boxplots, list(metrics or ()))
    except (CohortError, OSError, ImportError) as exc:
        print_error(exc)
        return 2
    if written:
        print("written: " + ", ".join(for_terminal(str(p)) for p in written), file=out)
    return 0


def _population_figure(cohort: Cohort, path: Path, absolute: bool, lines: bool) -> Path:
    panels = population_panels(cohort, relative=not absolute)
    if not panels:
        raise CohortError(f"{path}: no structure has a curve fully inside the dose grid to plot")
    path.parent.mkdir(parents=True, exist_ok=True)
    return draw_population(panels, path, relative=not absolute, lines=lines,
                           title=f"Population DVH: {cohort.title}")


def _box_figure(cohort: Cohort, path: Path, metrics: list[str]) -> list[Path]:
    groups = box_groups(cohort, metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = draw_boxplots(groups, [path], cohort.title)
    if not written:
        raise CohortError(f"{path}: no metric has a value to plot (the protocol limits none of "
                          "these structures; add --metric)")
    return written


def format_cohort(cohort: Cohort, metrics: Sequence[str], rows: Sequence[tuple[object, ...]]
                  ) -> str:
    """The text summary: run, plans, and per structure and metric n, median, IQR, range."""
    lines = [f"run {cohort.run_id} of {for_terminal(str(cohort.db))}: "
             f"{for_terminal(cohort.title)}"]
    missing = cohort.without_curves
    if missing:
        lines.append(f"  {len(missing)} plan(s) have no stored DVH curves (evaluated by a "
                     "dvheval that did not store them; run the batch again to add them): "
                     + ", ".join(for_terminal(p.plan_key) for p in missing[:5]))
    lines.append(f"{'structure':<14} {'metric':<20} {'n':>4} {'median':>9} {'q25':>9} "
                 f"{'q75':>9} {'min':>9} {'max':>9}  unit")
    values: dict[tuple[str, str], list[float]] = {}
    units: dict[tuple[str, str], str] = {}
    for row in rows:
        s, m, v, u = str(row[12]), str(row[16]), row[17], row[18]
        values.setdefault((s, m), [])
        units[(s, m)] = str(u or "")
        if isinstance(v, float):
            values[(s, m)].append(v)
    for (s, m), v in values.items():
        n_all = len(cohort.plans)
        head = f"{for_terminal(s)[:14]:<14} {for_terminal(m)[:20]:<20} {len(v):>4}"
        if not v:
            lines.append(f"{head} {'-':>9} {'-':>9} {'-':>9} {'-':>9} {'-':>9}  "
                         f"(no value in {n_all} plans)")
            continue
        a = np.asarray(v)
        q25, med, q75 = np.percentile(a, [25, 50, 75])
        lines.append(f"{head} {med:9.2f} {q25:9.2f} {q75:9.2f} {a.min():9.2f} "
                     f"{a.max():9.2f}  {units[(s, m)]}")
    return "\n".join(lines)
