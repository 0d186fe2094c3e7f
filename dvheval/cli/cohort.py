"""``dvheval cohort``: the command line of :func:`dvheval.batch.cohort_command.cohort_command`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def cohort_command(
    db: Annotated[Path, typer.Argument(
        help="Batch results database (dvheval batch --db).", show_default=False)],
    run: Annotated[int | None, typer.Option(
        "--run", help="The run to analyse (default the latest).", show_default=False)] = None,
    structure: Annotated[list[str] | None, typer.Option(
        "--structure", "-s", help="Protocol structure name, as matched (repeatable). "
                                  "Default: every one the plans have.",
        show_default=False)] = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", "-m", help="Metric of the grammar, e.g. D1cc, V20Gy[%], "
                               "'Dmax[EQD2, a/b=2]' (repeatable). Default: Dmax Dmean D98% "
                               "D2% D0.03cc.", show_default=False)] = None,
    export: Annotated[Path | None, typer.Option(
        "--export", help="Write one row per plan x structure x metric (.csv or .parquet).",
        show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write the population DVH (median and inter-quartile band) per "
                       "structure as PNG.", show_default=False)] = None,
    boxplots: Annotated[Path | None, typer.Option(
        "--boxplots", help="Write a box plot per limited metric (and per --metric) as PNG.",
        show_default=False)] = None,
    absolute: Annotated[bool, typer.Option(
        "--absolute", help="Population DVH volumes in cm³ instead of %.")] = False,
    lines: Annotated[bool, typer.Option(
        "--lines", help="Draw every plan's DVH thin under the population band.")] = False,
) -> None:
    """Cohort metrics and figures from the DVH curves a batch run stored.

    No DICOM file is read again: metrics are evaluated on the stored
    cumulative DVHs (doses within 0.01 Gy of the full DVH; Dmax, Dmin and
    Dmean exact). Prints per structure and metric the number of plans, the
    median, quartiles and range.

    Exit code: 0 done; 2 unusable database, no such run, a run without stored
    curves, unknown structure, malformed metric or unwritable output.

    Examples:

        dvheval cohort dvheval.sqlite -s SpinalCord -m D0.03cc -m "Dmax[EQD2, a/b=0.87]"

        dvheval cohort dvheval.sqlite --export cohort.parquet --plot pop.png --boxplots box.png

    \f
    Longer than 60 lines because typer reads the options from the signature,
    one parameter each; the work is done by
    :func:`dvheval.batch.cohort_command.cohort_command`.
    """
    from dvheval.batch.cohort_command import cohort_command as run_cohort_command

    raise typer.Exit(run_cohort_command(
        db, run=run, structures=structure or None, metrics=metric or None, export=export,
        plot=plot, boxplots=boxplots, absolute=absolute, lines=lines))
