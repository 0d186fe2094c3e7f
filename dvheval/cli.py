"""Command-line interface: ``dvheval dvh``, ``dvheval check``, ``dvheval protocol``."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from .errors import DvhevalError

#: Exit code for unusable input or a bad command line.
EXIT_INPUT = 2

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Check radiotherapy plans (DICOM-RT) against dose-volume protocols.",
)


@app.callback()
def _root() -> None:
    """Check radiotherapy plans (DICOM-RT) against dose-volume protocols.

    Exit codes: 0 success (for `check`: every hard constraint passed), 1 a hard
    constraint failed or could not be evaluated, 2 unusable input or command line.
    """


class DvhFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def _console(output: Path | None) -> Console:
    if output is not None:
        return Console(file=open(output, "w", encoding="utf-8"), no_color=True, width=200,
                       force_terminal=False)
    if sys.stdout.isatty():
        return Console()
    return Console(no_color=True, width=200, force_terminal=False)


def _fail(exc: Exception) -> None:
    Console(stderr=True).print(f"[bold red]error:[/bold red] {exc}", highlight=False)
    raise typer.Exit(EXIT_INPUT)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.write_text(text, encoding="utf-8")


@app.command("dvh")
def dvh_command(
    paths: list[Path] = typer.Argument(
        ..., help="DICOM files and/or folders of one plan (RTSTRUCT, RTDOSE, optional RTPLAN).",
        show_default=False),
    structure: list[str] = typer.Option(
        None, "--structure", "-s", help="Only this ROI (repeatable). Default: all."),
    metric: list[str] = typer.Option(
        None, "--metric", "-m",
        help="Metric to report (repeatable), e.g. D98%, D0.03cc, V20Gy[%], Mean, gEUD(a=-10). "
             "Default: Dmax Dmin Dmean D98% D50% D2% D0.03cc D0.5cc (+ gEUD(a=-10) for "
             "targets)."),
    fmt: DvhFormat = typer.Option(DvhFormat.table, "--format", "-f", help="Output format."),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file."),
    end_caps: bool = typer.Option(
        True, "--end-caps/--no-end-caps",
        help="Extend each structure half a slice beyond its first and last contour."),
    rx: float = typer.Option(
        None, "--rx", help="Prescription dose (Gy) for relative metrics and RELATIVE dose files."),
    fractions: int = typer.Option(None, "--fractions", help="Number of fractions (EQD2/BED)."),
) -> None:
    """Compute DVHs and metrics for every structure of a plan.

    Examples:

        dvheval dvh sample_dicom/sample_plan

        dvheval dvh plan/ -s PTV30 -s SpinalCord -m D98% -m D2% -m "Dmax[EQD2, a/b=2]"

        dvheval dvh rtss.dcm rtdose.dcm --format json --output dvh.json
    """
    from .calc import compute_dvhs
    from .report import render_table, to_csv, to_json

    try:
        plan = compute_dvhs(paths, structures=structure or None, metrics=metric or None,
                            end_caps=end_caps, prescription_gy=rx, fractions=fractions)
    except (DvhevalError, ValueError) as exc:
        _fail(exc)
    if fmt is DvhFormat.json:
        _emit(to_json(plan), output)
    elif fmt is DvhFormat.csv:
        _emit(to_csv(plan), output)
    else:
        console = _console(output)
        render_table(plan, console)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
