"""The text report: rich tables, coloured on a terminal, plain in files and pipes.

The last line is the verdict line of :func:`~dvheval.reports.summary.gate_text`,
never wrapped, for pipelines that read the last line.
"""

from __future__ import annotations

import io
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from dvheval.check import CheckResult
from dvheval.reports.common import fmt_limit, fmt_margin, fmt_value
from dvheval.reports.json import report_view
from dvheval.reports.summary import (
    alternative_lines,
    closing_findings,
    constraint_note,
    constraint_rows,
    finding_text,
    fractions_text,
    gate_text,
    integrity_findings,
    matching_rows,
    overrides_text,
    patient_text,
    plan_text,
    prescriptions_text,
    protocol_text,
    report_rows,
    structure_label,
)
from dvheval.vocab import Verdict

_RICH_STYLE = {
    Verdict.PASS.value: "bold green",
    Verdict.ACCEPTABLE.value: "bold yellow",
    Verdict.FAIL.value: "bold red",
    Verdict.NOT_EVALUATED.value: "bold magenta",
    Verdict.NOT_APPLICABLE.value: "dim",
    Verdict.REPORT.value: "dim",
}

#: Columns of the constraint table: header, justification, and whether the
#: column is fixed (numbers and verdicts never wrap or shrink; names, limits
#: and notes wrap on narrow screens).
_CONSTRAINT_COLUMNS = (
    ("Structure -> ROI", "left", False), ("Metric", "left", False),
    ("Limit", "left", False), ("Value", "right", True), ("Margin", "right", True),
    ("Priority", "left", True), ("Verdict", "left", True), ("Note", "left", False),
)

#: Below this console width long notes go below the constraint table, numbered.
_FOOTNOTE_WIDTH = 160


def render_text(result: CheckResult, console: Console) -> None:
    """Print the check as a table, coloured when the console is a terminal.

    Parameters
    ----------
    result : CheckResult
    console : rich.console.Console
        Where to print; colours follow the console's settings.
    """
    d = report_view(result)
    console.print(_header_grid(d))
    block = _integrity_block(d)
    if block:
        console.print()
        for line in block:
            console.print(line)
    console.print()
    _print_constraints(d, console)
    _print_report_metrics(d, console)
    _print_structures(d, console)
    console.print()
    # the verdict is one line, however long, for pipelines that read the last line
    console.print(Text(gate_text(d), style=_RICH_STYLE[d["verdict"]]), soft_wrap=True)


def to_text(result: CheckResult, width: int = 200) -> str:
    """The text report without colours, for files and pipes.

    Parameters
    ----------
    result : CheckResult
    width : int
        Line width; tables wrap long notes below it. Trailing blanks are removed.

    Returns
    -------
    str
    """
    buf = io.StringIO()
    console = Console(file=buf, no_color=True, width=width, force_terminal=False,
                      highlight=False, emoji=False)
    render_text(result, console)
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


def _header_grid(d: dict[str, Any]) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("Patient", Text(patient_text(d)))
    grid.add_row("Plan", Text(plan_text(d)))
    grid.add_row("Protocol", Text(protocol_text(d)))
    grid.add_row("Prescriptions", Text(prescriptions_text(d)))
    grid.add_row("Fractions", Text(fractions_text(d)))
    if overrides_text(d):
        grid.add_row("Overrides", Text(overrides_text(d), style="bold yellow"))
    if d.get("conditions"):
        grid.add_row("Conditions", Text(f"asserted: {', '.join(d['conditions'])} (activates "
                                        "the protocol's alternatives)", style="bold yellow"))
    return Group(grid)


def _integrity_block(d: dict[str, Any]) -> list[Text]:
    """Gate-closing integrity findings, for the top of the text report."""
    return [Text.assemble(("CLOSES THE GATE ", "bold red"), ("integrity ", "bold"),
                          finding_text(f)) for f in closing_findings(d)]


def _print_constraints(d: dict[str, Any], console: Console) -> None:
    """The constraint table; on a narrow console long notes go below it, numbered."""
    console.print(Text("Constraints", style="bold"))
    footnotes: list[str] = []
    rows = []
    for c in constraint_rows(d):
        style = "dim" if c["verdict"] == Verdict.NOT_APPLICABLE else ""
        note = constraint_note(c)
        if note and console.width < _FOOTNOTE_WIDTH:
            footnotes.append(note)
            note = f"[{len(footnotes)}]"
        rows.append([
            Text(structure_label(c), style=style),
            Text(c["metric"], style=style),
            Text(fmt_limit(c), style=style),
            Text(fmt_value(c["value"], c["limit_unit"]), style=style),
            Text(fmt_margin(c["margin"], c["limit_unit"]), style=style),
            Text(c["priority"], style=style),
            Text(c["verdict"], style=_RICH_STYLE[c["verdict"]]),
            Text(note, style=style),
        ])
    console.print(_constraint_table(rows))
    for i, note in enumerate(footnotes, 1):
        console.print(Text(f"[{i}] {note}", style="dim"))
    console.print()


def _constraint_table(rows: list[list[Text]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for i, (name, justify, fixed) in enumerate(_CONSTRAINT_COLUMNS):
        width = max([len(name)] + [len(r[i].plain) for r in rows]) if fixed else None
        table.add_column(name, justify=justify, overflow="fold",  # type: ignore[arg-type]
                         no_wrap=fixed, min_width=width)
    for r in rows:
        table.add_row(*r)
    return table


def _print_report_metrics(d: dict[str, Any], console: Console) -> None:
    """The report-only metrics, one row per structure (nothing when there are none)."""
    reports = report_rows(d)
    if not reports:
        return
    console.print(Text("Report-only metrics", style="bold"))
    rt = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    rt.add_column("Structure -> ROI", no_wrap=True)
    rt.add_column("Values", overflow="fold")
    rt.add_column("Note", overflow="fold")
    for label, values, note in reports:
        rt.add_row(Text(label), Text(values), Text(note, style="dim"))
    console.print(rt)
    console.print()


def _print_structures(d: dict[str, Any], console: Console) -> None:
    """Structure matching, unmatched ROIs, alternatives, warnings and integrity warnings."""
    console.print(Text("Structures", style="bold"))
    mt = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for name in ("Protocol structure", "ROI", "Matched by", "Required", "Note"):
        mt.add_column(name, overflow="fold")
    for row in matching_rows(d):
        mt.add_row(*(Text(x) for x in row))
    console.print(mt)
    console.print()
    lines = [("Unmatched ROIs", ", ".join(d["unmatched_rois"]) or "none")]
    alts = alternative_lines(d)
    if alts:
        lines.append(("Alternatives", "; ".join(alts)))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for k, v in lines:
        grid.add_row(k, Text(v))
    console.print(grid)
    for w in d["warnings"]:
        console.print(Text.assemble(("warning ", "yellow"), w))
    for f in integrity_findings(d):
        if f.get("severity") != "close":
            console.print(Text.assemble(("integrity warning ", "yellow"), finding_text(f)))

