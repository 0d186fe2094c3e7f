"""Command-line interface: ``dvheval dvh``, ``check``, ``protocol``, ``batch``,
``cohort`` and ``compare-tps``.

Each command lives in its own module (:mod:`dvheval.cli.dvh`,
:mod:`~dvheval.cli.check`, :mod:`~dvheval.cli.protocol`,
:mod:`~dvheval.cli.batch`, :mod:`~dvheval.cli.cohort`,
:mod:`~dvheval.cli.compare_tps`); the options they share, the exit codes and the
error printer in :mod:`dvheval.cli.common`. Heavy modules (DICOM reading, the
report formats, pandas, matplotlib, dask) are imported inside the commands
that need them, so ``dvheval --help`` stays fast.
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated, TextIO

import typer

from dvheval.cli.batch import batch_command
from dvheval.cli.check import check_command
from dvheval.cli.cohort import cohort_command
from dvheval.cli.common import EXIT_INPUT
from dvheval.cli.compare_tps import compare_tps_command
from dvheval.cli.dvh import dvh_command
from dvheval.cli.protocol import protocol_app

__all__ = ["EXIT_INPUT", "app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Check radiotherapy plans (DICOM-RT) against dose-volume protocols.",
)


def _print_version(value: bool) -> None:
    """Print ``dvheval VERSION`` and exit 0 when ``--version`` is given."""
    if value:
        from dvheval import __version__

        typer.echo(f"dvheval {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Check radiotherapy plans (DICOM-RT) against dose-volume protocols.

    Exit codes: 0 success (`check`: every hard constraint passed; `compare-tps`:
    every stored DVH agrees), 1 a hard constraint failed or could not be
    evaluated (`compare-tps`: a DVH disagrees or none could be compared),
    2 unusable input or command line.
    """


app.command("dvh")(dvh_command)
app.command("check")(check_command)
app.add_typer(protocol_app, name="protocol")
app.command("batch")(batch_command)
app.command("cohort")(cohort_command)
app.command("compare-tps")(compare_tps_command)


def main() -> None:
    """Console-script entry point."""
    warnings.showwarning = _show_warning
    app()


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    """A library's warning (e.g. pydicom on a value it could not decode) as one plain line.

    Python's default names the library's source file and line, which says
    nothing to the reader; the message itself is kept, with control
    characters made visible.
    """
    from dvheval.sanitize import visible

    origin = "pydicom" if "pydicom" in filename else category.__name__
    print(f"warning: {origin}: {visible(str(message))}", file=file or sys.stderr)


if __name__ == "__main__":
    main()
