"""Export batch results: a tidy table, a per-constraint summary and cohort box plots.

The tidy table has one row per plan x structure x metric (long format)::

    plan_key, patient_id, rtplan_label, plan_verdict, structure, protocol_structure,
    structure_status, metric, value, unit, verdict, constraint_ids, protocol_name,
    protocol_version, protocol_sha256, tool_version, input_sha256, plan_id

``verdict`` is set where a limit of the protocol applies to that metric of
that structure (the worst one when several do: FAIL, NOT_EVALUATED,
ACCEPTABLE, PASS). Limits on a protocol structure that no ROI matched give a
row with an empty ``structure`` and value. It is written as CSV or, for a
``.parquet`` name, as Parquet (needs pyarrow).

Next to it, ``<stem>_summary.csv`` lists for each constraint how many plans
passed, were acceptable, failed, could not be evaluated or were not
applicable, with ``pass_rate`` = PASS / (PASS + ACCEPTABLE + FAIL) and
``pass_rate_all`` = PASS / (all plans it applied to, NOT_EVALUATED included).
``<stem>_boxplots.png`` and ``.svg`` show the distribution over the plans of
each metric the protocol reports or limits, one axis per structure and
metric with its own unit (EQD2/BED named), every plan as a dot, the limits
as dashed lines and n under each box, from structures fully inside the dose
grid (:mod:`dvheval.batch.plots`).

Text cells of the CSV files that a spreadsheet would read as a formula
(starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, e.g.
a ROI or plan label taken from DICOM) are written with a leading ``'``;
numbers are written as they are. Parquet keeps the text unchanged.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import warnings
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from dvheval.batch.plots import BoxGroup, axis_unit, draw_boxplots
from dvheval.batch.store import SUMMARY_COLUMNS, TIDY_COLUMNS, ResultStore, StoreError
from dvheval.errors import DvhevalError
from dvheval.sanitize import FORMULA_START

__all__ = ["SUMMARY_COLUMNS", "TIDY_COLUMNS", "ExportError", "box_groups", "check_export_path",
           "csv_cell", "export_run", "output_paths", "plot_cohort", "write_csv", "write_parquet"]

class ExportError(DvhevalError):
    """The export cannot be written (unknown format, missing run, missing library, path)."""


#: First characters that make a spreadsheet read a text cell as a formula.
FORMULA_PREFIXES = FORMULA_START


def csv_cell(value: object) -> object:
    """A value safe to open in a spreadsheet: text that starts like a formula gets a ``'``.

    Numbers (and None) are returned unchanged, so their values stay numeric.

    Parameters
    ----------
    value : object

    Returns
    -------
    object
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def output_paths(path: str | Path) -> list[Path]:
    """Every file an export to ``path`` may write: table, summary, PNG and SVG plots."""
    path = Path(path)
    stem = path.with_suffix("")
    return [path, *(stem.with_name(stem.name + tail)
                    for tail in ("_summary.csv", "_boxplots.png", "_boxplots.svg"))]


def check_export_path(path: str | Path) -> None:
    """Refuse, before any work, an export that cannot be written.

    Checks the extension (and pyarrow for Parquet), that none of the files of
    :func:`output_paths` is a folder or a read-only file, and that the
    nearest existing folder above them is a folder this process may write in
    (missing folders below it are created by :func:`export_run`).

    Raises
    ------
    ExportError
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ExportError(f"{path}: the export must end in .csv or .parquet")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ExportError(f"{path}: a .parquet export needs pyarrow: pip install "
                              "'dvheval[parquet]'") from exc
    for out in output_paths(path):
        if out.is_dir():
            raise ExportError(f"{out}: is a folder; give a file name for --export")
        if out.exists() and not os.access(out, os.W_OK):
            raise ExportError(f"{out}: exists and cannot be overwritten (no permission)")
    folder = path.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ExportError(f"{path}: cannot create the folder: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"{path}: cannot write in {folder} (no permission)")


def _open(db: str | Path) -> ResultStore:
    """The database, read-only; an unusable one is an :class:`ExportError`."""
    try:
        return ResultStore(db, writable=False)
    except StoreError as exc:
        raise ExportError(str(exc)) from exc


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """Write rows as CSV with a header, text cells guarded by :func:`csv_cell`."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows([csv_cell(v) for v in row] for row in rows)


#: The writer the tidy export and its summary call (looked up at call time).
_write_csv = write_csv


def write_parquet(path: Path, columns: Sequence[str], rows: Sequence[tuple[Any, ...]],
                  types: dict[str, str] | None = None) -> None:
    """Write rows as Parquet (needs pyarrow).

    Parameters
    ----------
    path : Path
    columns : sequence of str
    rows : sequence of tuple
    types : dict, optional
        column -> ``"int"`` or ``"float"``; other columns are text.

    Raises
    ------
    ExportError
        When pyarrow is missing.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ExportError("a .parquet export needs pyarrow: pip install 'dvheval[parquet]'"
                          ) from exc
    kinds = {"int": pa.int64(), "float": pa.float64()}
    schema = pa.schema([(c, kinds[(types or {}).get(c, "")] if (types or {}).get(c) in kinds
                         else pa.string()) for c in columns])
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    table = pa.Table.from_arrays(
        [pa.array(list(col), type=schema.field(i).type) for i, col in enumerate(cols)],
        schema=schema)
    pq.write_table(table, path)


def box_groups(store: ResultStore, run_id: int) -> list[BoxGroup]:
    """One box per metric the protocol reports or limits, with its limits.

    Targets first (doses, then volumes), then organs at risk, each structure
    in the protocol's order; values of ROIs fully inside the dose grid.
    """
    rows = store.plot_rows(run_id)
    n_plans = store.run_plan_count(run_id)
    limits: dict[tuple[str, str, str], list[tuple[str, float]]] = {}
    for s, metric, op, limit, unit, _, _ in store.run_limits(run_id):
        limits.setdefault((s, metric, unit), []).append((op, float(limit)))
    values: dict[tuple[str, str, str], list[float]] = {}
    for _, s, metric, unit, value, _ in rows:
        values.setdefault((s, metric, unit), []).append(float(value))
    return [BoxGroup(s, metric, axis_unit(metric, unit), np.asarray(v),
                     list(dict.fromkeys(limits.get((s, metric, unit), []))),
                     max(0, n_plans - len(v)))
            for (s, metric, unit), v in values.items()]


def plot_cohort(store: ResultStore, run_id: int, stem: Path) -> list[Path]:
    """Box plots of every protocol metric over the run's plans (PNG and SVG).

    One axis per protocol structure and metric (:func:`box_groups`), each with
    its own unit (EQD2/BED named on the axis), every plan as a dot, the
    protocol's limits as dashed lines and the number of plans under the box.
    Only structures fully inside the dose grid count.

    Parameters
    ----------
    store : ResultStore
    run_id : int
    stem : Path
        ``<stem>_boxplots.png`` and ``<stem>_boxplots.svg`` are written.

    Returns
    -------
    list of Path
        The files written (none when there is nothing to plot).
    """
    proto = store.run_protocol(run_id)
    n_plans = store.run_plan_count(run_id)
    title = f"{proto[0]} {proto[1] or ''}: {n_plans} plans" if proto else f"{n_plans} plans"
    out = [stem.with_name(stem.name + "_boxplots.png"), stem.with_name(stem.name + "_boxplots.svg")]
    return draw_boxplots(box_groups(store, run_id), out, title)


def export_run(db: str | Path, path: str | Path, run_id: int, plots: bool = True) -> list[Path]:
    """Export one run's results: tidy table, constraint summary and box plots.

    Parameters
    ----------
    db : str or Path
        The batch database.
    path : str or Path
        ``.csv`` or ``.parquet`` file for the tidy table; the summary and the
        plots are written next to it (``<stem>_summary.csv``,
        ``<stem>_boxplots.png``/``.svg``).
    run_id : int
        The run whose plans (evaluated or skipped) are exported.
    plots : bool
        Draw the box plots (needs matplotlib; skipped when it is missing).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ExportError
        Unknown extension, no such run, pyarrow missing for Parquet, a path
        that cannot be written (see :func:`check_export_path`; also when
        writing fails midway, e.g. a full disk), or a database that cannot
        be read.
    """
    path = Path(path)
    check_export_path(path)
    try:
        with closing(_open(db)) as store:
            if not store.has_run(run_id):
                raise ExportError(f"{db}: no run {run_id}")
            return _export(store, path, run_id, plots)
    except OSError as exc:
        where = exc.filename or path
        raise ExportError(f"{where}: cannot write the export ({exc.strerror or exc})") from exc
    except sqlite3.Error as exc:
        raise ExportError(f"{db}: cannot read the results database ({exc})") from exc


def _export(store: ResultStore, path: Path, run_id: int, plots: bool) -> list[Path]:
    rows = store.tidy_rows(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        _write_csv(path, TIDY_COLUMNS, rows)
    else:
        write_parquet(path, TIDY_COLUMNS, rows, {"value": "float", "plan_id": "int"})
    stem = path.with_suffix("")
    summary = stem.with_name(stem.name + "_summary.csv")
    _write_csv(summary, SUMMARY_COLUMNS, store.summary_rows(run_id))
    written = [path, summary]
    if plots:
        try:
            written += plot_cohort(store, run_id, stem)
        except ImportError as exc:
            warnings.warn(f"box plots not drawn: {exc}", stacklevel=2)
    return written
