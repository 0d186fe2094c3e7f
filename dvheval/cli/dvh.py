"""``dvheval dvh``: DVHs and metrics of every structure of a plan."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer

from dvheval.cli.common import (
    AlphaBeta,
    Courses,
    Derive,
    DoseModel,
    EndCaps,
    Fractions,
    Model,
    PlanPathsOrCourses,
    Rx,
    SumPlans,
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
    paths: PlanPathsOrCourses = None,
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
    sum_plans: SumPlans = False,
    course: Courses = None,
    alpha_beta: AlphaBeta = None,
    dose_model: Model = DoseModel.EQD2,
) -> None:
    """Compute DVHs and metrics for every structure of a plan.

    Examples:

        dvheval dvh sample_dicom/sample_plan

        dvheval dvh plan/ -s PTV30 -s SpinalCord -m D98% -m D2% -m "Dmax[EQD2, a/b=2]"

        dvheval dvh rtss.dcm rtdose.dcm --format json --output dvh.json

        dvheval dvh plan/ --derive "Kidneys=Kidney_L | Kidney_R" --derive "PRV=SpinalCord + 3mm"

        dvheval dvh plan/ --derive "PTV30_eval=PTV30 - (PTV40 + 2mm)" --write-rtstruct derived.dcm

        dvheval dvh primary/ boost/ --sum

        dvheval dvh --course first/:0.5 --course second/ --alpha-beta 2 -s SpinalCord
    """
    if write_rtstruct is not None and not derive:
        fail("--write-rtstruct needs at least one --derive")
    if not paths and not course:
        fail("give the files or folders of a plan (PATH...), or --course PATH for each course")
    if course and (paths or sum_plans or write_rtstruct is not None):
        fail("--course replaces PATH...: give each course with --course (the structure set "
             "in any of them), without PATH, --sum or --write-rtstruct")
    if (alpha_beta is not None or dose_model is not DoseModel.EQD2) and not course:
        fail("--alpha-beta and --dose-model set the cumulative dose of --course; for one plan "
             "ask the metric with its model, e.g. -m \"Dmax[EQD2, a/b=2]\"")
    level, dose, raw = single_rx(rx)
    combine = _Combine(sum_plans, course or [], alpha_beta, dose_model.value)
    plan = _compute(paths or [], structure, metric, end_caps, dose, fractions, derive,
                    write_rtstruct, combine)
    check_rx_level(level, raw, [p.name for p in plan.plan.prescriptions] if plan.plan else [])
    if write_rtstruct is not None:
        _write_derived(paths or [], derive or [], write_rtstruct, plan, end_caps)
    if fmt is DvhFormat.table:
        from dvheval.reports.dvh_table import render_table

        console = make_console(output)
        try:
            render_table(plan, console)
        finally:
            if output is not None:
                console.file.close()
    elif fmt is DvhFormat.json:
        from dvheval.reports.dvh_table import to_json

        emit(to_json(plan), output)
    else:
        from dvheval.reports.dvh_table import to_csv

        emit(to_csv(plan), output)


class _Combine(NamedTuple):
    """How plans are combined: ``--sum``, ``--course``, ``--alpha-beta``, ``--dose-model``."""

    sum_plans: bool
    courses: list[str]
    alpha_beta: float | None
    dose_model: str


def _compute(paths: list[Path], structure: list[str] | None, metric: list[str] | None,
             end_caps: bool, rx_gy: float | None, fractions: int | None,
             derive: list[str] | None, write_rtstruct: Path | None,
             combine: _Combine) -> PlanDVHs:
    """The plan's DVHs, after refusing a ``write_rtstruct`` that is an input file.

    Unusable input is printed and ends the command with exit code 2.
    """
    from dvheval.engine.compute import compute_dvhs
    from dvheval.engine.forked import available_workers

    try:
        if write_rtstruct is not None:
            from dvheval.dicom import expand_paths
            from dvheval.engine.derive import refuse_input_target

            refuse_input_target(write_rtstruct, expand_paths(paths))
        with structure_progress() as progress:
            plan = compute_dvhs(paths, structures=structure or None, metrics=metric or None,
                                end_caps=end_caps, prescription_gy=rx_gy, fractions=fractions,
                                derive=derive or None, progress=progress,
                                sum_plans=combine.sum_plans, courses=combine.courses or None,
                                alpha_beta=combine.alpha_beta, dose_model=combine.dose_model,
                                workers=available_workers())
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
