"""Rendering DVH results: terminal table, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json

from rich import box
from rich.console import Console
from rich.table import Table

from .metrics import parse_metric
from .results import PlanDVHs


def to_json(plan: PlanDVHs, include_dvh: bool = True) -> str:
    """The stable JSON document of a plan's DVHs (doses Gy, volumes cm^3)."""
    return json.dumps(plan.to_dict(include_dvh=include_dvh), indent=2)


def to_csv(plan: PlanDVHs) -> str:
    """One row per structure and metric (tidy long format)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["patient_id", "structure", "roi_number", "type", "status", "volume_cc",
                "coverage", "metric", "value", "unit", "note"])
    for s in plan.structures:
        for name, value in s.metrics.items():
            w.writerow([
                plan.patient_id, s.name, s.number, s.type, s.status,
                "" if s.volume_cc is None else f"{s.volume_cc:.6g}",
                "" if s.coverage is None else f"{s.coverage:.6g}",
                name,
                "" if value is None else f"{value:.6g}",
                _unit(name),
                s.metric_errors.get(name, ""),
            ])
    return buf.getvalue()


def _unit(name: str) -> str:
    m = parse_metric(name)
    return m.output_unit


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render_table(plan: PlanDVHs, console: Console) -> None:
    """Print the plan header, one row per structure, then every warning."""
    d = plan.dose
    console.print(f"[bold]Patient[/bold] {plan.patient_id} {plan.patient_name}".rstrip())
    console.print(f"[bold]Dose[/bold] {d.summation}, {d.units}: " + ", ".join(d.files))
    if d.resampled_files:
        console.print("  resampled onto the first grid: " + ", ".join(d.resampled_files))
    console.print(f"[bold]Structures[/bold] {plan.structure_set_file}")
    if plan.plan:
        rx = ", ".join(f"{p.name} {p.dose_gy:g} Gy" for p in plan.plan.prescriptions) or "none"
        console.print(f"[bold]Plan[/bold] {plan.plan.label or plan.plan.file}: {rx} in "
                      f"{plan.plan.fractions or '?'} fractions")
    st = plan.settings
    console.print(
        f"[dim]slice thickness {st.get('slice_thickness_mm', 0):g} mm, end caps "
        f"{'on' if st.get('end_caps') else 'off'}; doses in Gy, volumes in cc[/dim]"
    )
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
        table.add_column(n, justify="right")
    for s in plan.structures:
        if s.status == "ok":
            cover = "100%"
        elif s.status == "partial":
            pct = 100.0 * (s.coverage or 0.0)
            cover = f"[yellow]{min(pct, 99.9):.1f}%[/yellow]"
        else:
            cover = s.status
        row = [s.name, s.type or "", _fmt(s.volume_cc, 2 if (s.volume_cc or 0) >= 1 else 3),
               cover]
        row += [_fmt(s.metrics.get(n)) for n in names]
        table.add_row(*row)
    console.print(table)
    notes = list(plan.warnings)
    for s in plan.structures:
        notes += [f"{s.name}: {w}" for w in s.warnings]
        seen = set()
        for k, why in s.metric_errors.items():
            if s.status in ("ok", "partial") and why not in seen:
                seen.add(why)
                notes.append(f"{s.name}: {k}: {why}")
    for n in notes:
        console.print(f"[yellow]warning[/yellow] {n}", highlight=False)
