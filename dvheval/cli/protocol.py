"""``dvheval protocol``: list the shipped protocols, validate protocol files."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from dvheval.cli.common import emit, fail, make_console
from dvheval.sanitize import dumps_json, visible

protocol_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="List the shipped protocols and validate protocol files.",
)


class ListFormat(str, Enum):
    """Output formats of ``dvheval protocol list``."""

    table = "table"
    json = "json"


@protocol_app.command("validate")
def protocol_validate_command(
    files: Annotated[list[Path], typer.Argument(
        help="Protocol YAML files.", show_default=False)],
) -> None:
    """Validate protocol files: YAML, keys, metrics, limits, units and references.

    Prints `file: valid (...)` for a good file and every problem of a bad one as
    `file:line: field: message`. Exit code 0 when every file is valid, 2 otherwise.

    **Example**: `dvheval protocol validate protocols/*.yaml`
    """
    from rich.text import Text

    from dvheval.protocol import ProtocolError, load_protocol, validate_protocol_file

    console = make_console(None)
    invalid = 0
    for f in files:
        errors = validate_protocol_file(f)
        if not errors:
            try:
                p = load_protocol(f)
            except ProtocolError as exc:
                errors = exc.errors
            else:
                n = sum(not c.is_report for c in p.constraints())
                console.print(Text(f"{visible(f)}: valid ({visible(p.name)} "
                                   f"{visible(p.version)}, {n} constraints)"), soft_wrap=True)
                continue
        invalid += 1
        for err in errors:
            console.print(Text(visible(err)), soft_wrap=True)
    if invalid:
        fail(f"{invalid} of {len(files)} protocol file(s) invalid")


@protocol_app.command("list")
def protocol_list_command(
    fmt: Annotated[ListFormat, typer.Option(
        "--format", "-f", help="Output format.")] = ListFormat.table,
) -> None:
    """List the shipped protocols: name, title, version, fractions, levels, sources.

    A level without a dose takes it from the RTPLAN or `--rx`. Use the name with
    `dvheval check --protocol NAME`.
    """
    rows = _protocol_rows()
    if fmt is ListFormat.json:
        emit(dumps_json(rows), None)
    else:
        _print_table(rows)


def _protocol_rows() -> list[dict[str, Any]]:
    """One row per shipped protocol, with its sources, or the reason it is invalid."""
    from dvheval.protocol import ProtocolError, list_protocols, load_protocol

    rows = []
    for s in list_protocols():
        sources: list[str] = []
        error = s.error
        if error is None:
            try:
                sources = [src.short for src in load_protocol(s.file).sources.values()]
            except ProtocolError as exc:
                error = str(exc)
        rows.append({
            "name": s.name, "title": s.title, "version": s.version, "date": s.date,
            "fractions": s.fractions, "prescriptions": dict(s.prescriptions),
            "constraints": s.constraints, "sources": sources, "file": s.file,
            "sha256": s.sha256, "error": error,
        })
    return rows


def _levels_text(prescriptions: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {'from plan' if v is None else f'{v:g} Gy'}"
                     for k, v in prescriptions.items())


def _print_table(rows: list[dict[str, Any]]) -> None:
    """The rows of :func:`_protocol_rows` as a table on stdout."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for name in ("Name", "Title", "Version", "Fx", "Levels", "Constraints", "Sources"):
        table.add_column(name, overflow="fold", no_wrap=name in ("Name", "Version", "Fx"))
    for r in rows:
        if r["error"]:
            table.add_row(Text(visible(r["name"])),
                          Text(f"invalid: {visible(r['error'])}", style="red"), "", "", "",
                          "", "")
            continue
        table.add_row(*(Text(visible(x)) for x in (
            r["name"], r["title"] or "", r["version"] or "", r["fractions"],
            _levels_text(r["prescriptions"]), r["constraints"], "; ".join(r["sources"]))))
    make_console(None).print(table)
