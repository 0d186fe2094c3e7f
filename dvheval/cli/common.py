"""What every command shares: exit codes, output, the error printer, common options.

The options used by more than one command are defined here once, as
``Annotated`` types, so that their flag, help text and bounds cannot drift
apart between ``dvheval dvh``, ``dvheval check`` and ``dvheval batch``.

Nothing heavy is imported here: this module is loaded for ``dvheval --help``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from dvheval.sanitize import print_error

if TYPE_CHECKING:
    from rich.console import Console

#: Exit code of success (for ``check`` and ``batch``: the gate is open).
EXIT_OK = 0
#: Exit code of a closed gate: a hard constraint failed or could not be evaluated.
EXIT_GATE = 1
#: Exit code for unusable input or a bad command line.
EXIT_INPUT = 2


# ------------------------------------------------------------------ output
def make_console(output: Path | None) -> Console:
    """A console writing to ``output`` (or stdout), coloured only on a terminal.

    Parameters
    ----------
    output : Path or None
        File to write; None for stdout.

    Returns
    -------
    rich.console.Console
        Plain and 200 columns wide for a file or a pipe; the terminal's own
        width and colours on a terminal.
    """
    from rich.console import Console

    if output is not None:
        try:
            stream = open(output, "w", encoding="utf-8")
        except OSError as exc:
            fail(exc)
        return Console(file=stream, no_color=True, width=200, force_terminal=False)
    if sys.stdout.isatty():
        return Console()
    return Console(no_color=True, width=200, force_terminal=False)


def fail(exc: BaseException | str) -> NoReturn:
    """Print each problem as one ``error: ...`` line on stderr and exit 2.

    The one error printer of every command (see
    :func:`dvheval.sanitize.print_error`): nothing is read as markup, control
    characters are shown as escapes, and a
    :class:`~dvheval.protocol.ProtocolError` prints every problem of its
    file, each located as ``file:line: field: message``.

    Parameters
    ----------
    exc : Exception or str
        The problem.

    Raises
    ------
    typer.Exit
        Always, with :data:`EXIT_INPUT`.
    """
    print_error(exc)
    raise typer.Exit(EXIT_INPUT)


def emit(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output``, or to stdout ending with one newline.

    Parameters
    ----------
    text : str
        The document.
    output : Path or None
        File to write; None for stdout. A file that cannot be written is an
        input error (exit 2) naming the file.
    """
    try:
        if output is None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        else:
            output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(exc)


# ---------------------------------------------------------- prescriptions
#: Help of ``--rx``, the same for every command.
RX_HELP = (
    "Prescription dose LEVEL=GY for relative limits and metrics, used instead of the "
    "protocol's and the RTPLAN's, e.g. --rx PTV30=32 --rx PTV40=42 (repeatable, one per "
    "level; dvh takes one, also the reference of a RELATIVE dose file). A plain GY "
    "(--rx 32) where it is unambiguous: always for dvh, for check and batch with a "
    "single-level protocol."
)


def dose_gy(raw: str, text: str) -> float:
    """The dose of one ``--rx`` value: a positive number, optionally followed by ``Gy``.

    Parameters
    ----------
    raw : str
        The whole value as given, for the message.
    text : str
        Its dose part, e.g. ``"32"`` or ``"32 Gy"``.

    Returns
    -------
    float
        The dose in Gy.

    Raises
    ------
    typer.Exit
        After printing the problem: not a number, or not a positive finite one.
    """
    number = text.strip()
    if number.lower().endswith("gy"):
        number = number[:-2].strip()
    try:
        dose = float(number)
    except ValueError:
        fail(f"--rx {raw}: {text.strip()!r} is not a dose in Gy")
    if not (math.isfinite(dose) and dose > 0):
        fail(f"--rx {raw}: the dose must be a positive number of Gy")
    return dose


def single_rx(values: list[str] | None) -> tuple[str | None, float | None, str | None]:
    """The one prescription of ``dvheval dvh --rx``: ``GY`` or ``LEVEL=GY``.

    Parameters
    ----------
    values : list of str or None
        The ``--rx`` values; at most one, as relative metrics refer to one dose.

    Returns
    -------
    level, dose, raw : str or None, float or None, str or None
        The level named (None for a plain dose), the dose in Gy and the value
        as given; all None without ``--rx``.

    Raises
    ------
    typer.Exit
        After printing the problem: more than one value, an empty level, a bad dose.
    """
    if not values:
        return None, None, None
    if len(values) > 1:
        fail(f"--rx {' --rx '.join(values)}: dvheval dvh takes one prescription, the dose "
             f"its relative metrics refer to (e.g. --rx 30 or --rx PTV30=30)")
    raw = values[0]
    level, sep, text = raw.rpartition("=")
    if sep and not level.strip():
        fail(f"--rx {raw}: the level name before '=' is empty; write --rx LEVEL=GY or --rx GY")
    return (level.strip() if sep else None), dose_gy(raw, text), raw


def check_rx_level(level: str | None, raw: str | None, plan_levels: list[str]) -> None:
    """Refuse a ``dvh --rx LEVEL=GY`` whose level the RTPLAN does not prescribe.

    Parameters
    ----------
    level, raw : str or None
        From :func:`single_rx`.
    plan_levels : list of str
        Names of the RTPLAN's prescriptions; empty without an RTPLAN, when
        any level name is taken as a label.

    Raises
    ------
    typer.Exit
        After printing the problem.
    """
    if level is None or not plan_levels:
        return
    if level.lower() not in {name.lower() for name in plan_levels}:
        fail(f"--rx {raw}: {level!r} is not a prescription of the RTPLAN "
             f"(prescriptions: {', '.join(plan_levels)})")


# ------------------------------------------------------------------ checks
def strict_ids(strict: list[str] | None, require_approved: bool) -> tuple[str, ...]:
    """The integrity checks made to close the gate by ``--strict``/``--require-approved``.

    Parameters
    ----------
    strict : list of str or None
        Check ids, or ``all``.
    require_approved : bool
        Adds ``plan-not-approved`` and ``no-rtplan`` (without an RTPLAN no
        approval can be seen).

    Returns
    -------
    tuple of str

    Raises
    ------
    typer.Exit
        After printing the unknown ids and the known ones.
    """
    from dvheval.integrity import CHECKS

    ids = list(strict or [])
    if require_approved:
        ids += ["plan-not-approved", "no-rtplan"]
    unknown = [i for i in ids if i != "all" and i not in CHECKS]
    if unknown:
        fail(f"--strict: unknown integrity check {', '.join(unknown)} (known: "
             f"{', '.join(CHECKS)}, all)")
    return tuple(ids)


# ----------------------------------------------------------------- options
PlanPaths = Annotated[list[Path], typer.Argument(
    help="DICOM files and/or folders of one plan (RTSTRUCT, RTDOSE, optional RTPLAN).",
    show_default=False)]

PlanPathsOrCourses = Annotated[list[Path] | None, typer.Argument(
    help="DICOM files and/or folders of one plan (RTSTRUCT, RTDOSE, optional RTPLAN), or "
         "of several plans with --sum; none with --course.",
    show_default=False)]

SumPlans = Annotated[bool, typer.Option(
    "--sum",
    help="Several RTPLANs with their RTDOSEs among PATH: add their physical doses (each "
         "plan's doses as for one plan, then all on the first plan's grid). They must share "
         "one structure set and Frame of Reference; a plan given twice is added twice. Without "
         "--sum several plans are refused with their list.")]

Courses = Annotated[list[str] | None, typer.Option(
    "--course", metavar="PATH[:RECOVERY]", show_default=False,
    help="A treatment course: the folder of one plan (its RTPLAN gives the fraction count, "
         "its RTDOSEs; the structure set in any course), repeatable, instead of PATH. The DVHs are "
         "of the cumulative EQD2 (or BED): the sum over courses of each course's EQD2 at its "
         "own fraction count, times its RECOVERY factor (fraction of the dose still counted, "
         "0-1, default 1), e.g. --course first/:0.5 --course reirradiation/.")]

#: Default alpha/beta (Gy) of courses; equal to dvheval.engine.combine.DEFAULT_ALPHA_BETA
#: (not imported: this module stays light for ``--help``; a test compares the two).
DEFAULT_ALPHA_BETA_GY = 3.0

AlphaBeta = Annotated[float | None, typer.Option(
    "--alpha-beta", min=0.01, max=100.0, show_default=False,
    help=f"alpha/beta (Gy) of the cumulative EQD2/BED of --course (default "
         f"{DEFAULT_ALPHA_BETA_GY:g} Gy). check uses the a/b of each protocol limit instead.")]


class DoseModel(str, Enum):
    """The quantity of the cumulative dose of courses."""

    EQD2 = "EQD2"
    BED = "BED"


Model = Annotated[DoseModel, typer.Option(
    "--dose-model", case_sensitive=False,
    help="Quantity of the cumulative dose of --course: EQD2 (Gy in 2 Gy fractions) or BED.")]

Rx = Annotated[list[str] | None, typer.Option(
    "--rx", metavar="LEVEL=GY", help=RX_HELP, show_default=False)]

Fractions = Annotated[int | None, typer.Option(
    "--fractions", min=1, show_default=False,
    help="Number of fractions for EQD2/BED instead of the protocol's or the RTPLAN's.")]

EndCaps = Annotated[bool, typer.Option(
    "--end-caps/--no-end-caps",
    help="Extend each structure half a slice beyond its first and last contour.")]

Condition = Annotated[list[str] | None, typer.Option(
    "--condition", show_default=False,
    help="Assert a condition the protocol declares (repeatable; for every plan in batch), "
         "which activates its alternatives, e.g. --condition lumbosacral. It relaxes a hard "
         "limit, so check prints it in every report and in the verdict line.")]

Strict = Annotated[list[str] | None, typer.Option(
    "--strict", metavar="CHECK", show_default=False,
    help="Make the warning of this integrity check close the gate (repeatable; 'all' for "
         "every one), e.g. --strict hot-spot-outside-target. Ids in README.")]

RequireApproved = Annotated[bool, typer.Option(
    "--require-approved",
    help="Close the gate unless an RTPLAN is given and its Approval Status is APPROVED "
         "(same as --strict plan-not-approved --strict no-rtplan).")]

AcceptableFails = Annotated[bool, typer.Option(
    "--acceptable-fails",
    help="Also exit 1 when a plan's verdict is ACCEPTABLE (an objective not met, or a hard "
         "limit met only within its acceptable variation).")]

Derive = Annotated[list[str] | None, typer.Option(
    "--derive", metavar="NAME=EXPR", show_default=False,
    help="Add a derived structure (repeatable): | union, & intersection, - difference, "
         "+3mm / -3mm isotropic or +(x,y,z)mm anisotropic 3D margin, parentheses; "
         "names with spaces or operators in quotes, e.g. --derive "
         "\"PTV30_eval=PTV30 - (PTV40 + 2mm)\". check adds them to the protocol's "
         "'derived' section before matching.")]


@contextmanager
def structure_progress() -> Iterator[Callable[[int, int, str], None] | None]:
    """A transient progress bar on stderr while DVHs are computed, on a terminal only.

    Yields the ``progress`` callback of :func:`dvheval.compute_dvhs`, or None
    when stderr is not a terminal (pipes, CI logs and files get no bar).
    """
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from dvheval.sanitize import visible

    # redrawn on each update rather than by a refresh thread: the structures
    # may be shared with forked processes, which is only done while no other
    # thread runs
    bar = Progress(TextColumn("DVHs"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.description}"), console=Console(stderr=True),
                   transient=True, auto_refresh=False)
    task = bar.add_task("", total=None)

    def update(done: int, total: int, name: str) -> None:
        bar.update(task, completed=done, total=total, description=visible(name))
        bar.refresh()

    with bar:
        yield update
