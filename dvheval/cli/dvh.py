"""``dvheval dvh``: DVHs and metrics of every structure of a plan."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dvheval.cli.common import (
    Derive,
    EndCaps,
    Fractions,
    PlanPaths,
    Rx,
    check_rx_level,
    emit,
    fail,
    make_console,
    single_rx,
    structure_progress,
)
from dvheval.errors import DvhevalError

if TYPE_CHECKING:
    from dvheval.engine.results import PlanDVHs


class DvhFormat(str, Enum):
    """Output formats of ``dvheval dvh``."""

    table = "table"
    json = "json"
    csv = "csv"


def dvh_command(
    paths: PlanPaths,
    structure: Annotated[list[str] | None, typer.Option(
        "--structure", "-s", help="Only this ROI (repeatable). Default: all.")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", "-m",
        help="Metric to report (repeatable), e.g. D98%, D0.03cc, V20Gy[%], Mean, gEUD(a=-10). "
             "Default: Dmax Dmin Dmean D98% D50% D2% D0.03cc D0.5cc (+ gEUD(a=-10) for "
             "targets).")] = None,
    fmt: Annotated[DvhFormat, typer.Option(
        "--format", "-f", help="Output format.")] = DvhFormat.table,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write to this file.")] = None,
    end_caps: EndCaps = True,
    rx: Rx = None,
    fractions: Fractions = None,
    derive: Derive = None,
    write_rtstruct: Annotated[Path | None, typer.Option(
        "--write-rtstruct", metavar="OUT.dcm",
        help="Also write the derived structures as a new RT Structure Set (same patient, "
             "study and Frame of Reference; never an input file).")] = None,
) -> None:
    """Compute DVHs and metrics for every structure of a plan.

    Examples:

        dvheval dvh sample_dicom/sample_plan

        dvheval dvh plan/ -s PTV30 -s SpinalCord -m D98% -m D2% -m "Dmax[EQD2, a/b=2]"

        dvheval dvh rtss.dcm rtdose.dcm --format json --output dvh.json

        dvheval dvh plan/ --derive "Kidneys=Kidney_L | Kidney_R" --derive "PRV=SpinalCord + 3mm"

        dvheval dvh plan/ --derive "PTV30_eval=PTV30 - (PTV40 + 2mm)" --write-rtstruct derived.dcm
    """
    if write_rtstruct is not None and not derive:
        fail("--write-rtstruct needs at least one --derive")
    level, dose, raw = single_rx(rx)
    plan = _compute(paths, structure, metric, end_caps, dose, fractions, derive, write_rtstruct)
    check_rx_level(level, raw, [p.name for p in plan.plan.prescriptions] if plan.plan else [])
    if write_rtstruct is not None:
        _write_derived(paths, derive or [], write_rtstruct, plan, end_caps)
    if fmt is DvhFormat.table:
        from dvheval.reports.dvh_table import render_table

        render_table(plan, make_console(output))
    elif fmt is DvhFormat.json:
        from dvheval.reports.dvh_table import to_json

        emit(to_json(plan), output)
    else:
        from dvheval.reports.dvh_table import to_csv

        emit(to_csv(plan), output)


def _compute(paths: list[Path], structure: list[str] | None, metric: list[str] | None,
             end_caps: bool, rx_gy: float | None, fractions: int | None,
             derive: list[str] | None, write_rtstruct: Path | None) -> PlanDVHs:
    """The plan's DVHs, after refusing a ``write_rtstruct`` that is an input file.

    Unusable input is printed and ends the command with exit code 2.
    """
    from dvheval.engine.compute import compute_dvhs

    try:
        if write_rtstruct is not None:
            from dvheval.dicom import expand_paths
            from dvheval.engine.derive import refuse_input_target

            refuse_input_target(write_rtstruct, expand_paths(paths))
        with structure_progress() as progress:
            plan = compute_dvhs(paths, structures=structure or None, metrics=metric or None,
                                end_caps=end_caps, prescription_gy=rx_gy, fractions=fractions,
                                derive=derive or None, progress=progress)
    except (DvhevalError, ValueError) as exc:
        fail(exc)
    return plan


def _write_derived(paths: list[Path], derive: list[str], out: Path, plan: PlanDVHs,
                   end_caps: bool) -> None:
    """Write the derived structures of ``--derive`` as a new RT Structure Set."""
    from dvheval.engine.derive import write_derived_for_plan

    try:
        write_derived_for_plan(paths, derive, out, plan.settings["slice_thickness_mm"],
                               end_caps)
    except (DvhevalError, ValueError) as exc:
        fail(exc)
