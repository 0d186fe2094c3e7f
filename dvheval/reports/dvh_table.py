"""Rendering DVH results: terminal table, JSON and CSV."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from dvheval.engine.metrics import parse_metric
from dvheval.engine.results import PlanDVHs
from dvheval.reports.summary import component_text
from dvheval.sanitize import dumps_json, for_csv, visible
from dvheval.vocab import UNIT_INDEX

if TYPE_CHECKING:  # rich is imported where a table is drawn: JSON and CSV do without it
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


def to_json(plan: PlanDVHs, include_dvh: bool = True) -> str:
    """The stable JSON document of a plan's DVHs (doses Gy, volumes cm^3).

    Strings are kept as they are (JSON escapes them); a non-finite number is
    written ``null``, never as a bare ``NaN`` or ``Infinity``.
    """
    return dumps_json(plan.to_dict(include_dvh=include_dvh))


def to_csv(plan: PlanDVHs) -> str:
    """One row per structure and metric (tidy long format).

    Text cells are guarded against spreadsheet formula injection and show
    control characters as escapes (:func:`dvheval.sanitize.for_csv`); the
    JSON keeps the true strings.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["patient_id", "structure", "roi_number", "type", "status", "volume_cc",
                "coverage", "metric", "value", "unit", "note"])
    for s in plan.structures:
        for name, value in s.metrics.items():
            w.writerow([
                for_csv(plan.patient_id), for_csv(s.name), s.number, for_csv(s.type),
                for_csv(s.status),
                "" if s.volume_cc is None else f"{s.volume_cc:.6g}",
                "" if s.coverage is None else f"{s.coverage:.6g}",
                for_csv(name),
                "" if value is None else f"{value:.6g}",
                for_csv(_unit(name, plan.dose.quantity)),
                for_csv(s.metric_errors.get(name, "")),
            ])
    return buf.getvalue()


def _unit(name: str, quantity: str = "physical") -> str:
    """The metric's output unit; a dose of courses names its quantity (``Gy EQD2, a/b=2 Gy``)."""
    m = parse_metric(name)
    if quantity != "physical" and m.output_unit in ("Gy", "cGy"):
        return f"{m.output_unit} {quantity}"
    return m.output_unit


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _line(*parts: str | tuple[str, str]) -> Text:
    """A line of plain text pieces, ``(text, style)`` pairs styled; never read as markup."""
    from rich.text import Text

    return Text.assemble(*parts)


def render_table(plan: PlanDVHs, console: Console) -> None:
    """Print the plan header, one row per structure, then every finding and warning.

    Every name, label, path and message is printed as plain text (never read
    as markup) with control characters shown as escapes.
    """
    _print_header(plan, console)
    console.print(_metric_table(plan))
    _print_findings(plan, console)


def _print_header(plan: PlanDVHs, console: Console) -> None:
    """Patient, dose files, structure set, plan, and the calculation settings."""
    from rich.text import Text

    v = visible
    d = plan.dose
    console.print(_line(("Patient", "bold"), f" {v(plan.patient_id)} {v(plan.patient_name)}"
                        .rstrip()), soft_wrap=True)
    console.print(_line(("Dose", "bold"), f" {v(d.summation)}, {v(d.units)}: "
                        + ", ".join(v(f) for f in d.files)), soft_wrap=True)
    if d.resampled_files:
        console.print(Text("  resampled onto the first grid: "
                           + ", ".join(v(f) for f in d.resampled_files)), soft_wrap=True)
    console.print(_line(("Structures", "bold"), f" {v(plan.structure_set_file)}"),
                  soft_wrap=True)
    courses = d.quantity != "physical"
    if plan.plan and not courses:
        rx = ", ".join(f"{v(p.name)} {p.dose_gy:g} Gy" for p in plan.plan.prescriptions) or "none"
        console.print(_line(("Plan", "bold"), f" {v(plan.plan.label or plan.plan.file)}: {rx} "
                            f"in {plan.plan.fractions or '?'} fractions"), soft_wrap=True)
    for i, c in enumerate(d.components, start=1):
        console.print(Text(f"  {'course' if courses else 'plan'} {i}: " + v(component_text(c))),
                      soft_wrap=True)
    st = plan.settings
    unit = f"Gy {d.quantity}" if courses else "Gy"
    console.print(Text(
        f"slice thickness {st.get('slice_thickness_mm', 0):g} mm, end caps "
        f"{'on' if st.get('end_caps') else 'off'}; doses in {unit}, volumes in cc"
        + ("; indices without unit" if _has_index(plan) else ""), style="dim"))


def _has_index(plan: PlanDVHs) -> bool:
    """Whether a structure of the plan has a dimensionless quality index among its metrics."""
    return any(_unit(name) == UNIT_INDEX for s in plan.structures for name in s.metrics)


def _metric_table(plan: PlanDVHs) -> Table:
    """One row per structure: type, volume, coverage of the dose grid, then every metric."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    v = visible
    names: list[str] = []
    for s in plan.structures:
        for k in s.metrics:
            if k not in names:
                names.append(k)
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("Structure")
    table.add_column("Type")
    table.add_column("Vol cc", justify="right")
    table.add_column("Cover", justify="right")
    for n in names:
        table.add_column(Text(v(n)), justify="right")
    for s in plan.structures:
        if s.status == "ok":
            cover = Text("100%")
        elif s.status == "partial":
            pct = 100.0 * (s.coverage or 0.0)
            cover = Text(f"{min(pct, 99.9):.1f}%", style="yellow")
        else:
            cover = Text(v(s.status))
        row = [Text(v(s.name)), Text(v(s.type or "")),
               Text(_fmt(s.volume_cc, 2 if (s.volume_cc or 0) >= 1 else 3)), cover]
        row += [Text(_fmt(s.metrics.get(n))) for n in names]
        table.add_row(*row)
    return table


def _print_findings(plan: PlanDVHs, console: Console) -> None:
    """Integrity findings, then the plan's and the structures' warnings."""
    v = visible
    for f in plan.findings:
        closes = f.severity.value == "close"
        label = ("integrity (closes the gate)", "bold red") if closes else (
            "integrity warning", "yellow")
        where = f" ({v(f.file)})" if f.file else ""
        console.print(_line(label, f" {v(f.check)}: {v(f.message)}{where}"), soft_wrap=True)
    notes = list(plan.warnings)
    for s in plan.structures:
        notes += [f"{s.name}: defect: {w}" for w in s.defects]
        notes += [f"{s.name}: {w}" for w in s.warnings]
        seen = set()
        for k, why in s.metric_errors.items():
            if s.status in ("ok", "partial") and why not in seen:
                seen.add(why)
                notes.append(f"{s.name}: {k}: {why}")
    for n in notes:
        console.print(_line(("warning", "yellow"), f" {v(n)}"), soft_wrap=True)
