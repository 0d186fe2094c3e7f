"""Command-line interface: ``dvheval dvh``, ``dvheval check``, ``dvheval protocol``."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from dvheval.errors import DvhevalError
from dvheval.sanitize import dumps_json, print_error, visible

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
        try:
            stream = open(output, "w", encoding="utf-8")
        except OSError as exc:
            _fail(exc)
        return Console(file=stream, no_color=True, width=200, force_terminal=False)
    if sys.stdout.isatty():
        return Console()
    return Console(no_color=True, width=200, force_terminal=False)


def _fail(exc: Exception | str) -> NoReturn:
    """Print each problem as one ``error: ...`` line on stderr and exit 2.

    The one error printer of every command (see
    :func:`dvheval.sanitize.print_error`): nothing is read as markup, control
    characters are shown as escapes, and a
    :class:`~dvheval.protocol.ProtocolError` prints every problem of its
    file, each located as ``file:line: field: message``.
    """
    print_error(exc)
    raise typer.Exit(EXIT_INPUT)


#: The same printer; kept so that every command calls one function.
_fail_all = _fail


def _emit(text: str, output: Path | None) -> None:
    try:
        if output is None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        else:
            output.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(exc)


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
    derive: list[str] = typer.Option(
        None, "--derive", metavar="NAME=EXPR",
        help="Add a derived structure (repeatable): | union, & intersection, - difference, "
             "+3mm / -3mm isotropic or +(x,y,z)mm anisotropic 3D margin, parentheses; "
             "names with spaces or operators in quotes, e.g. --derive "
             "\"PTV30_eval=PTV30 - (PTV40 + 2mm)\"."),
    write_rtstruct: Path = typer.Option(
        None, "--write-rtstruct", metavar="OUT.dcm",
        help="Also write the derived structures as a new RT Structure Set (same patient, "
             "study and Frame of Reference; never an input file)."),
) -> None:
    """Compute DVHs and metrics for every structure of a plan.

    Examples:

        dvheval dvh sample_dicom/sample_plan

        dvheval dvh plan/ -s PTV30 -s SpinalCord -m D98% -m D2% -m "Dmax[EQD2, a/b=2]"

        dvheval dvh rtss.dcm rtdose.dcm --format json --output dvh.json

        dvheval dvh plan/ --derive "Kidneys=Kidney_L | Kidney_R" --derive "PRV=SpinalCord + 3mm"

        dvheval dvh plan/ --derive "PTV30_eval=PTV30 - (PTV40 + 2mm)" --write-rtstruct derived.dcm
    """
    from dvheval.engine.compute import compute_dvhs
    from dvheval.reports.dvh_table import render_table, to_csv, to_json

    if write_rtstruct is not None and not derive:
        _fail("--write-rtstruct needs at least one --derive")
    try:
        if write_rtstruct is not None:
            from dvheval.dicom import expand_paths
            from dvheval.engine.derive import refuse_input_target

            refuse_input_target(write_rtstruct, expand_paths(paths))
        plan = compute_dvhs(paths, structures=structure or None, metrics=metric or None,
                            end_caps=end_caps, prescription_gy=rx, fractions=fractions,
                            derive=derive or None)
        if write_rtstruct is not None:
            from dvheval.engine.derive import write_derived_for_plan

            write_derived_for_plan(paths, derive, write_rtstruct,
                                   plan.settings["slice_thickness_mm"], end_caps)
    except (DvhevalError, ValueError) as exc:
        _fail(exc)
    if fmt is DvhFormat.json:
        _emit(to_json(plan), output)
    elif fmt is DvhFormat.csv:
        _emit(to_csv(plan), output)
    else:
        console = _console(output)
        render_table(plan, console)


# -------------------------------------------------------------------- check
class CheckFormat(str, Enum):
    text = "text"
    json = "json"
    junit = "junit"
    html = "html"
    markdown = "markdown"


@app.command("check")
def check_command(
    paths: list[Path] = typer.Argument(
        ..., help="DICOM files and/or folders of one plan (RTSTRUCT, RTDOSE, optional RTPLAN).",
        show_default=False),
    protocol: str = typer.Option(
        ..., "--protocol", "-p", show_default=False,
        help="Name of a shipped protocol (see `dvheval protocol list`) or path of a YAML "
             "protocol file."),
    fmt: CheckFormat = typer.Option(
        CheckFormat.text, "--format", "-f",
        help="Report format: text (table), json (the stable JSON document), junit (JUnit "
             "XML for CI), html (one self-contained page with the DVH plot), markdown."),
    output: Path = typer.Option(
        None, "--output", "-o",
        help="Write the report to this file; the verdict line then goes to stderr."),
    rx: list[str] = typer.Option(
        None, "--rx", metavar="LEVEL=GY",
        help="Prescription dose of a level (repeatable), used instead of the protocol's and "
             "the RTPLAN's, e.g. --rx PTV30=32 --rx PTV40=42. A bare dose (--rx 32) when "
             "the protocol has a single level."),
    fractions: int = typer.Option(
        None, "--fractions", min=1,
        help="Number of fractions for EQD2/BED instead of the protocol's."),
    acceptable_fails: bool = typer.Option(
        False, "--acceptable-fails",
        help="Also exit 1 when the verdict is ACCEPTABLE (an objective not met, or a hard "
             "limit met only within its acceptable variation)."),
    condition: list[str] = typer.Option(
        None, "--condition",
        help="Assert a condition the protocol declares (repeatable), which activates its "
             "alternatives, e.g. --condition lumbosacral. It relaxes a hard limit, so it is "
             "printed in every report and in the verdict line."),
    end_caps: bool = typer.Option(
        True, "--end-caps/--no-end-caps",
        help="Extend each structure half a slice beyond its first and last contour."),
    strict: list[str] = typer.Option(
        None, "--strict", metavar="CHECK",
        help="Make the warning of this integrity check close the gate (repeatable; 'all' for "
             "every one), e.g. --strict hot-spot-outside-target. Ids in README."),
    require_approved: bool = typer.Option(
        False, "--require-approved",
        help="Close the gate unless the RTPLAN's Approval Status is APPROVED "
             "(same as --strict plan-not-approved)."),
    integrity_only: bool = typer.Option(
        False, "--integrity-only",
        help="Run only the integrity checks (headers and contours, no dose grid, no DVH): "
             "fast; exit 1 when one closes the gate."),
    derive: list[str] = typer.Option(
        None, "--derive", metavar="NAME=EXPR",
        help="Add a derived structure (repeatable) before matching, in addition to the "
             "protocol's 'derived' section, e.g. --derive \"Kidneys=Kidney_L | Kidney_R\". "
             "Syntax as for `dvheval dvh --derive`."),
) -> None:
    """Check one plan against a protocol; the exit code is the gate.

    Every constraint gets a verdict: PASS, ACCEPTABLE (outside the limit, within its
    acceptable variation), FAIL, NOT_EVALUATED (structure missing or ambiguous, not
    fully inside the dose grid, prescription unknown...), NOT_APPLICABLE (optional
    structure absent, replaced by an alternative) or REPORT (report-only metric).
    Only hard constraints and required structures can stop a plan; an unmet
    objective makes it ACCEPTABLE.

    **Exit codes** (the same for every format):

    * **0**: every hard constraint passed (verdict PASS, or ACCEPTABLE without
      --acceptable-fails).
    * **1**: a hard constraint failed or could not be evaluated, or a required
      structure is missing (FAIL, NOT_EVALUATED), or ACCEPTABLE with --acceptable-fails.
    * **2**: unusable input or command line: unreadable DICOM, unknown protocol,
      invalid protocol file (each problem printed as file:line: field: message), bad --rx.

    **Examples**:

    * `dvheval check sample_dicom/sample_plan --protocol bone-sib-30-40-10fx`
    * `dvheval check plan/ -p bone-sib-30-40-10fx --rx PTV30=32 --format html -o report.html`
    * `dvheval check plan/ -p my_protocol.yaml --format junit -o dvheval.xml`
    * `dvheval check plan/ -p sbrt-3fx --rx 27 --acceptable-fails`
    * `dvheval check plan/ -p bone-sib-30-40-10fx --require-approved --integrity-only`
    * `dvheval check plan/ -p my_protocol.yaml --derive "Cord_PRV=SpinalCord + 3mm"`
    """
    import time

    from dvheval.check import check_plan
    from dvheval.engine.compute import compute_dvhs
    from dvheval.protocol import ProtocolError, load_protocol
    from dvheval.reports import gate_text, parse_rx, render, render_text, to_text

    start = time.perf_counter()
    try:
        proto = load_protocol(protocol)
    except ProtocolError as exc:
        _fail_all(exc)
    try:
        overrides = parse_rx(rx or [], proto)
    except DvhevalError as exc:
        _fail_all(exc)
    strict_ids = _strict_ids(strict, require_approved)
    if integrity_only:
        _integrity_only(paths, proto, overrides, fractions, strict_ids, fmt, output)
    try:
        plan = compute_dvhs(paths, end_caps=end_caps, fractions=fractions,
                            derive=_check_derivations(proto, derive))
        result = check_plan(plan, proto, rx_overrides=overrides or None, fractions=fractions,
                            acceptable_fails_gate=acceptable_fails, conditions=condition or None,
                            strict=strict_ids)
    except (DvhevalError, ValueError) as exc:
        _fail_all(exc)
    seconds = time.perf_counter() - start
    try:
        if fmt is CheckFormat.text and output is None and sys.stdout.isatty():
            render_text(result, Console())
        elif fmt is CheckFormat.text:
            _emit(to_text(result), output)
        else:
            _emit(render(result, fmt.value, seconds=seconds), output)
    except OSError as exc:
        _fail_all(exc)
    if output is not None:
        from rich.text import Text

        d = result.to_dict()
        style = {"PASS": "green", "ACCEPTABLE": "yellow"}.get(d["verdict"], "red")
        err = Console(stderr=True)
        err.print(Text(gate_text(d), style=f"bold {style}"), soft_wrap=True)
        err.print(Text(f"report: {output}"), soft_wrap=True)
    raise typer.Exit(result.exit_code)


def _check_derivations(proto, derive: list[str] | None) -> list[str] | None:
    """The protocol's derived structures followed by those of ``--derive``."""
    from dvheval.engine.derive import DerivationError, derivations_from

    own = [f"{name}={expr}" for name, expr in getattr(proto, "derived", {}).items()]
    extra = derivations_from(derive or [])
    names = {n.lower() for n in getattr(proto, "derived", {})}
    for d in extra:
        if d.name.lower() in names:
            raise DerivationError("the protocol already derives this structure; choose another "
                                  "name", d.expression, None, d.name)
    return (own + list(derive or [])) or None


def _strict_ids(strict: list[str] | None, require_approved: bool) -> tuple[str, ...]:
    from dvheval.integrity import CHECKS

    ids = list(strict or [])
    if require_approved:
        ids.append("plan-not-approved")
    unknown = [i for i in ids if i != "all" and i not in CHECKS]
    if unknown:
        _fail(f"--strict: unknown integrity check {', '.join(unknown)} (known: "
              f"{', '.join(CHECKS)}, all)")
    return tuple(ids)


def _integrity_only(paths: list[Path], proto, overrides, fractions: int | None,
                    strict: tuple[str, ...], fmt: CheckFormat, output: Path | None) -> None:
    """Print the integrity findings only and exit: 1 when one closes the gate."""
    import json

    from dvheval.check import review_integrity

    try:
        findings = review_integrity(paths, proto, rx_overrides=overrides or None,
                                    fractions=fractions, strict=strict)
    except (DvhevalError, ValueError) as exc:
        _fail(exc)
    closes = [f for f in findings if f.closes]
    code = 1 if closes else 0
    verdict = "NOT_EVALUATED" if closes else "PASS"
    if fmt is CheckFormat.json:
        text = json.dumps({"protocol": proto.name, "integrity": [f.to_dict() for f in findings],
                           "verdict": verdict, "exit_code": code}, indent=2)
    else:
        lines = [f"{f.severity.value:5}  {f.check}: {visible(f.message)}" for f in findings]
        lines.append(f"integrity {verdict}: {len(closes)} check(s) close the gate, "
                     f"{len(findings) - len(closes)} warning(s); exit {code}")
        text = "\n".join(lines)
    _emit(text, output)
    raise typer.Exit(code)


# ----------------------------------------------------------------- protocol
protocol_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="List the shipped protocols and validate protocol files.",
)
app.add_typer(protocol_app, name="protocol")


class ListFormat(str, Enum):
    table = "table"
    json = "json"


@protocol_app.command("validate")
def protocol_validate_command(
    files: list[Path] = typer.Argument(..., help="Protocol YAML files.", show_default=False),
) -> None:
    """Validate protocol files: YAML, keys, metrics, limits, units and references.

    Prints `file: valid (...)` for a good file and every problem of a bad one as
    `file:line: field: message`. Exit code 0 when every file is valid, 2 otherwise.

    **Example**: `dvheval protocol validate protocols/*.yaml`
    """
    from rich.text import Text

    from dvheval.protocol import ProtocolError, load_protocol, validate_protocol_file

    console = _console(None)
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
        _fail(f"{invalid} of {len(files)} protocol file(s) invalid")


def _levels_text(prescriptions: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {'from plan' if v is None else f'{v:g} Gy'}"
                     for k, v in prescriptions.items())


@protocol_app.command("list")
def protocol_list_command(
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", "-f", help="Output format."),
) -> None:
    """List the shipped protocols: name, title, version, fractions, levels, sources.

    A level without a dose takes it from the RTPLAN or `--rx`. Use the name with
    `dvheval check --protocol NAME`.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

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
    if fmt is ListFormat.json:
        _emit(dumps_json(rows), None)
        return
    console = _console(None)
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
    console.print(table)


@app.command("batch")
def batch_command(
    root: Path = typer.Argument(
        None, help="Archive folder, searched recursively for DICOM-RT plans. Leave out to "
                   "export from --db only.", show_default=False),
    protocol: str = typer.Option(
        None, "--protocol", "-p", help="Shipped protocol name or YAML file.",
        show_default=False),
    jobs: int = typer.Option(
        None, "--jobs", "-j", help="Worker processes. Default: the number of CPUs.",
        show_default=False),
    db: Path = typer.Option(Path("dvheval.sqlite"), "--db", help="SQLite results database."),
    export: Path = typer.Option(
        None, "--export", help="Write the tidy results table (.csv or .parquet) "
                               "and next to it STEM_summary.csv and STEM_boxplots.png/.svg.",
        show_default=False),
    scheduler: str = typer.Option(
        None, "--scheduler", help="Dask scheduler address (tcp://host:port) to evaluate on a "
                                  "cluster; needs dvheval[dask].", show_default=False),
    rx: list[str] = typer.Option(
        None, "--rx", help="Prescription override LEVEL=GY (repeatable); GY alone for a "
                           "one-level protocol.", show_default=False),
    fractions: int = typer.Option(
        None, "--fractions", min=1, help="Number of fractions instead of the protocol's.",
        show_default=False),
    condition: list[str] = typer.Option(
        None, "--condition", help="Assert a protocol condition for every plan (repeatable).",
        show_default=False),
    acceptable_fails: bool = typer.Option(
        False, "--acceptable-fails", help="Count ACCEPTABLE plans as failing (exit 1)."),
    end_caps: bool = typer.Option(
        True, "--end-caps/--no-end-caps",
        help="Extend each structure half a slice beyond its first and last contour."),
    force: bool = typer.Option(
        False, "--force", help="Evaluate again plans the database already holds."),
    strict: list[str] = typer.Option(
        None, "--strict", metavar="CHECK",
        help="Make the warning of this integrity check close the gate for every plan "
             "(repeatable; 'all' for every one)."),
    require_approved: bool = typer.Option(
        False, "--require-approved",
        help="Close the gate of every plan whose RTPLAN is not APPROVED."),
    run: int = typer.Option(
        None, "--run", help="Without ROOT: the run to export (default the latest).",
        show_default=False),
    timeout: float = typer.Option(
        600.0, "--timeout", min=0, help="Time limit of one plan in seconds (0: none); a plan "
                                        "over it is recorded as an error and its worker "
                                        "killed. Not applied with --scheduler."),
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
    """
    from dvheval.batch import batch_command as run_batch_command

    code = run_batch_command(root, protocol, jobs=jobs, db=db, export=export,
                             scheduler=scheduler, rx=rx or None, fractions=fractions,
                             conditions=condition or None, acceptable_fails=acceptable_fails,
                             end_caps=end_caps, force=force, run=run,
                             command=" ".join(sys.argv), timeout=timeout,
                             strict=_strict_ids(strict, require_approved))
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
