"""``dvheval check``: one plan against a protocol; the exit code is the gate."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dvheval.cli.common import (
    AcceptableFails,
    Condition,
    Courses,
    Derive,
    EndCaps,
    Fractions,
    PlanPathsOrCourses,
    RequireApproved,
    Rx,
    Strict,
    SumPlans,
    emit,
    fail,
    strict_ids,
    structure_progress,
)
from dvheval.errors import DvhevalError
from dvheval.sanitize import visible

if TYPE_CHECKING:
    from collections.abc import Callable

    from dvheval.check import CheckResult
    from dvheval.engine.results import PlanDVHs
    from dvheval.protocol import Protocol


class CheckFormat(str, Enum):
    """Report formats of ``dvheval check``."""

    text = "text"
    json = "json"
    junit = "junit"
    html = "html"
    markdown = "markdown"
    pdf = "pdf"


def check_command(
    protocol: Annotated[str, typer.Option(
        "--protocol", "-p", show_default=False,
        help="Name of a shipped protocol (see `dvheval protocol list`) or path of a YAML "
             "protocol file.")],
    paths: PlanPathsOrCourses = None,
    fmt: Annotated[CheckFormat, typer.Option(
        "--format", "-f",
        help="Report format: text (table), json (the stable JSON document), junit (JUnit "
             "XML for CI), html (one self-contained page with the DVH plot), "
             "markdown, pdf (A4 pages with the DVH plot, for the plan's record; needs "
             "-o FILE).")] = CheckFormat.text,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o",
        help="Write the report to this file; the verdict line then goes to stderr.")] = None,
    rx: Rx = None,
    fractions: Fractions = None,
    acceptable_fails: AcceptableFails = False,
    condition: Condition = None,
    end_caps: EndCaps = True,
    strict: Strict = None,
    require_approved: RequireApproved = False,
    integrity_only: Annotated[bool, typer.Option(
        "--integrity-only",
        help="Run only the integrity checks (headers and contours, no dose grid, no DVH): "
             "fast; exit 1 when one closes the gate.")] = False,
    derive: Derive = None,
    sum_plans: SumPlans = False,
    course: Courses = None,
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
    * `dvheval check primary/ boost/ --sum -p my_protocol.yaml --rx PTV=60`
    * `dvheval check --course first/:0.5 --course reirradiation/ -p my_reirradiation.yaml`
      (courses: limits written in EQD2/BED are read on the cumulative EQD2/BED at their
      own a/b; physical-dose limits are NOT_EVALUATED)

    \f
    Longer than 60 lines because typer reads the options from the signature,
    one parameter each, and the help above from this docstring; the work is
    done by the helpers below.
    """
    from dvheval.check import check_plan
    from dvheval.engine.compute import compute_dvhs
    from dvheval.engine.forked import available_workers

    start = time.perf_counter()
    _check_output(fmt, output, integrity_only)
    _check_inputs(paths, course, sum_plans, integrity_only)
    proto, overrides = _protocol_and_rx(protocol, rx)
    strict_checks = strict_ids(strict, require_approved)
    if integrity_only:
        _integrity_only(paths or [], proto, overrides, fractions, strict_checks, fmt, output)
    try:
        with structure_progress() as progress:
            derived = _check_derivations(proto, derive)
            cumulative = None
            if course:
                cumulative = _course_dvhs(course, proto, end_caps, derived, progress)
                plan = next(iter(cumulative.values()))
            else:
                plan = compute_dvhs(paths or [], end_caps=end_caps, fractions=fractions,
                                    derive=derived, progress=progress, sum_plans=sum_plans,
                                    workers=available_workers())
        result = check_plan(plan, proto, rx_overrides=overrides or None, fractions=fractions,
                            acceptable_fails_gate=acceptable_fails, conditions=condition or None,
                            strict=strict_checks, cumulative=cumulative)
    except (DvhevalError, ValueError) as exc:
        fail(exc)
    _report(result, fmt, output, time.perf_counter() - start)
    if output is not None:
        _print_verdict_line(result, output)
    raise typer.Exit(result.exit_code)


def _check_inputs(paths: list[Path] | None, course: list[str] | None, sum_plans: bool,
                  integrity_only: bool) -> None:
    """Refuse, before any work, a command line without a plan, or mixing PATH and --course."""
    if not paths and not course:
        fail("give the files or folders of a plan (PATH...), or --course PATH for each course")
    if course and (paths or sum_plans):
        fail("--course replaces PATH...: give each course with --course (the structure set in "
             "any of them), without PATH or --sum")
    if integrity_only and (course or sum_plans):
        fail("--integrity-only checks one plan; it is not available with --sum or --course")


def _course_dvhs(course: list[str], proto: Protocol, end_caps: bool,
                 derived: list[str] | None,
                 progress: Callable[[int, int, str], None] | None
                 ) -> dict[tuple[str, float], PlanDVHs]:
    """The cumulative EQD2/BED DVHs of the courses at every a/b the protocol's limits use."""
    from dvheval.check.courses import course_models
    from dvheval.engine.courses import compute_course_dvhs

    return compute_course_dvhs(course, course_models(proto), end_caps=end_caps, derive=derived,
                               progress=progress)


def _protocol_and_rx(protocol: str, rx: list[str] | None) -> tuple[Protocol, dict[str, float]]:
    """The protocol named by ``--protocol`` and the ``--rx`` overrides of its levels."""
    from dvheval.check import parse_rx
    from dvheval.protocol import ProtocolError, load_protocol

    try:
        proto = load_protocol(protocol)
    except ProtocolError as exc:
        fail(exc)
    try:
        overrides = parse_rx(rx or [], proto)
    except DvhevalError as exc:
        fail(exc)
    return proto, overrides


def _check_output(fmt: CheckFormat, output: Path | None, integrity_only: bool) -> None:
    """Refuse, before any work, a PDF report without ``-o FILE`` or with ``--integrity-only``."""
    if fmt is not CheckFormat.pdf:
        return
    if output is None:
        fail("--format pdf writes a binary file and needs --output/-o FILE, e.g. "
             "-o report.pdf; it is never written to standard output")
    if integrity_only:
        fail("--format pdf is not available with --integrity-only; use --format text or json")


def _report(result: CheckResult, fmt: CheckFormat, output: Path | None, seconds: float) -> None:
    """Write the report in ``fmt``; the text report is coloured on a terminal only."""
    try:
        if fmt is CheckFormat.pdf:
            from dvheval.reports import to_pdf

            assert output is not None  # refused by _check_output
            output.write_bytes(to_pdf(result))
        elif fmt is CheckFormat.text:
            from dvheval.reports import render_text, to_text

            if output is None and sys.stdout.isatty():
                from rich.console import Console

                render_text(result, Console())
            else:
                emit(to_text(result), output)
        else:
            from dvheval.reports import render

            text = render(result, fmt.value, seconds=seconds)
            assert isinstance(text, str)  # binary formats are written above
            emit(text, output)
    except OSError as exc:
        fail(exc)


def _print_verdict_line(result: CheckResult, output: Path) -> None:
    """The verdict line and the report's path on stderr, when the report went to a file."""
    from rich.console import Console
    from rich.text import Text

    from dvheval.reports import gate_text

    d = result.to_dict()
    style = {"PASS": "green", "ACCEPTABLE": "yellow"}.get(d["verdict"], "red")
    err = Console(stderr=True)
    err.print(Text(gate_text(d), style=f"bold {style}"), soft_wrap=True)
    err.print(Text(f"report: {output}"), soft_wrap=True)


def _check_derivations(proto: Protocol, derive: list[str] | None) -> list[str] | None:
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


def _integrity_only(paths: list[Path], proto: Protocol, overrides: dict[str, float],
                    fractions: int | None, strict: tuple[str, ...], fmt: CheckFormat,
                    output: Path | None) -> None:
    """Print the integrity findings only and exit: 1 when one closes the gate."""
    import json

    from dvheval.check import review_integrity

    try:
        findings = review_integrity(paths, proto, rx_overrides=overrides or None,
                                    fractions=fractions, strict=strict)
    except (DvhevalError, ValueError) as exc:
        fail(exc)
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
    emit(text, output)
    raise typer.Exit(code)
