"""``dvheval batch``: the command line of :func:`dvheval.batch.batch_command`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dvheval.cli.common import (
    AcceptableFails,
    Condition,
    EndCaps,
    Fractions,
    RequireApproved,
    Rx,
    Strict,
    strict_ids,
)


def batch_command(
    root: Annotated[Path | None, typer.Argument(
        help="Archive folder, searched recursively for DICOM-RT plans. Leave out to "
             "export from --db only.", show_default=False)] = None,
    protocol: Annotated[str | None, typer.Option(
        "--protocol", "-p", help="Shipped protocol name or YAML file.",
        show_default=False)] = None,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", help="Worker processes. Default: the number of CPUs.",
        show_default=False)] = None,
    db: Annotated[Path, typer.Option(
        "--db", help="SQLite results database.")] = Path("dvheval.sqlite"),
    export: Annotated[Path | None, typer.Option(
        "--export", help="Write the tidy results table (.csv or .parquet) "
                         "and next to it STEM_summary.csv and STEM_boxplots.png/.svg.",
        show_default=False)] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Dask scheduler address (tcp://host:port) to evaluate on a "
                            "cluster; needs dvheval[dask].", show_default=False)] = None,
    rx: Rx = None,
    fractions: Fractions = None,
    condition: Condition = None,
    acceptable_fails: AcceptableFails = False,
    end_caps: EndCaps = True,
    force: Annotated[bool, typer.Option(
        "--force", help="Evaluate again plans the database already holds.")] = False,
    strict: Strict = None,
    require_approved: RequireApproved = False,
    run: Annotated[int | None, typer.Option(
        "--run", help="Without ROOT: the run to export (default the latest).",
        show_default=False)] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0, help="Time limit of one plan in seconds (0: none); a plan "
                                 "over it is recorded as an error and its worker "
                                 "killed. Not applied with --scheduler.")] = 600.0,
) -> None:
    """Evaluate every plan in an archive folder against a protocol.

    Plans are found by their DICOM UIDs (any folder layout or file names),
    evaluated in parallel and stored in SQLite (one transaction per plan).
    Running the same command again resumes: plans already stored with the
    same files, protocol, dvheval version and options are skipped; plans
    that errored are retried.

    Exit code: 0 every plan evaluated and passed (PASS, or ACCEPTABLE without
    --acceptable-fails); 1 a plan failed, was not evaluable, errored, or a
    dose could not be paired; 2 bad folder, protocol, option, database or
    export path; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

    Examples:

        dvheval batch archive/ --protocol bone-sib-30-40-10fx --jobs 8 --export cohort.csv

        dvheval batch --db dvheval.sqlite --export cohort.parquet

    \f
    Longer than 60 lines because typer reads the options from the signature,
    one parameter each, and the help above from this docstring; the work is
    done by :func:`dvheval.batch.batch_command`.
    """
    from dvheval.batch import batch_command as run_batch_command

    code = run_batch_command(root, protocol, jobs=jobs, db=db, export=export,
                             scheduler=scheduler, rx=rx or None, fractions=fractions,
                             conditions=condition or None, acceptable_fails=acceptable_fails,
                             end_caps=end_caps, force=force, run=run,
                             command=" ".join(sys.argv), timeout=timeout,
                             strict=strict_ids(strict, require_approved))
    raise typer.Exit(code)
