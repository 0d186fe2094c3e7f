"""``dvheval compare-tps``: dvheval's DVHs against those the planning system stored."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dvheval.cli.common import EndCaps, PlanPaths, emit, fail
from dvheval.errors import DvhevalError
from dvheval.sanitize import visible


class CompareFormat(str, Enum):
    """Output formats of ``dvheval compare-tps``."""

    text = "text"
    json = "json"
    csv = "csv"
    markdown = "markdown"


def compare_tps_command(
    paths: PlanPaths,
    end_caps: EndCaps = True,
    dose_tol: Annotated[float, typer.Option(
        "--dose-tol", metavar="GY", min=0.0,
        help="Largest difference of Dmean, D98%, D50% and D2% (Gy).")] = 0.5,
    dose_tol_pct: Annotated[float | None, typer.Option(
        "--dose-tol-pct", metavar="PCT", min=0.0, show_default=False,
        help="Also accept a dose difference up to this % of the RTPLAN's highest "
             "prescription (without an RTPLAN prescription: of the ROI's maximum dose in "
             "the stored DVH).")] = None,
    volume_tol_pct: Annotated[float, typer.Option(
        "--volume-tol-pct", metavar="PCT", min=0.0,
        help="Largest volume difference, in % of the stored volume.")] = 3.0,
    curve_tol_pct: Annotated[float, typer.Option(
        "--curve-tol-pct", metavar="PCT", min=0.0,
        help="Largest difference of the cumulative DVHs (% of each ROI's volume) once each "
             "point may move by the dose tolerance.")] = 5.0,
    small_cc: Annotated[float, typer.Option(
        "--small-cc", metavar="CC", min=0.0,
        help="ROIs whose stored volume is below this are reported, but their volume is not "
             "judged (their doses and curve are).")] = 1.0,
    fmt: Annotated[CompareFormat, typer.Option(
        "--format", "-f", help="Output format.")] = CompareFormat.text,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Compare dvheval's DVHs with the DVHs the planning system stored in the RTDOSE.

    For every ROI with a stored DVH: volume, Dmean, D98%, D50%, D2% and the
    largest difference of the cumulative curves, side by side, with a
    verdict per ROI. Exit 0 when every stored DVH agrees within the
    tolerances, 1 when one disagrees or cannot be compared (also when the
    RTDOSE holds no DVH Sequence), 2 on unusable input.

    Examples:

        dvheval compare-tps plan/ --no-end-caps

        dvheval compare-tps rtss.dcm rtdose.dcm --dose-tol 0.2 --volume-tol-pct 2 --format csv
    """
    from dvheval.engine.forked import available_workers
    from dvheval.engine.tps_compare import Tolerances, compare_with_tps
    from dvheval.reports import tps_table

    try:
        tol = Tolerances(dose_gy=dose_tol, dose_pct=dose_tol_pct, volume_pct=volume_tol_pct,
                         curve_pct=curve_tol_pct, small_cc=small_cc)
        comparison = compare_with_tps(paths, end_caps=end_caps, tolerances=tol,
                                      workers=available_workers())
    except (DvhevalError, ValueError) as exc:
        fail(exc)
    render = {CompareFormat.text: tps_table.to_text, CompareFormat.json: tps_table.to_json,
              CompareFormat.csv: tps_table.to_csv,
              CompareFormat.markdown: tps_table.to_markdown}[fmt]
    emit(render(comparison), output)
    if comparison.exit_code and (fmt is not CompareFormat.text or output is not None):
        typer.echo(visible(comparison.message), err=True)
    raise typer.Exit(comparison.exit_code)
