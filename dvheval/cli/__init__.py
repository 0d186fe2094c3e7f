"""Command-line interface: ``dvheval dvh``, ``check``, ``protocol``, ``batch``,
``cohort`` and ``compare-tps``.

Each command lives in its own module (:mod:`dvheval.cli.dvh`,
:mod:`~dvheval.cli.check`, :mod:`~dvheval.cli.protocol`,
:mod:`~dvheval.cli.batch`, :mod:`~dvheval.cli.cohort`,
:mod:`~dvheval.cli.compare_tps`); the options they share, the exit codes and the
error printer in :mod:`dvheval.cli.common`. Heavy modules (DICOM reading, the
report formats, pandas, matplotlib, dask) are imported inside the commands
that need them, so ``dvheval --help`` stays fast.
"""

from __future__ import annotations

import atexit
import gc
import importlib.util
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from dvheval.cli.batch import batch_command
from dvheval.cli.check import check_command
from dvheval.cli.cohort import cohort_command
from dvheval.cli.common import EXIT_INPUT
from dvheval.cli.compare_tps import compare_tps_command
from dvheval.cli.dvh import dvh_command
from dvheval.cli.protocol import protocol_app
from dvheval.engine.forked import with_stack_room

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

__all__ = ["EXIT_INPUT", "app", "main", "run"]

def _print_version(value: bool) -> None:
    """Print ``dvheval VERSION`` and exit 0 when ``--version`` is given."""
    if value:
        from dvheval import __version__

        typer.echo(f"dvheval {__version__}")
        raise typer.Exit(0)


def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Check radiotherapy plans (DICOM-RT) against dose-volume protocols.

    Exit codes: 0 success (`check`: every hard constraint passed; `compare-tps`:
    every stored DVH agrees), 1 a hard constraint failed or could not be
    evaluated (`compare-tps`: a DVH disagrees or none could be compared),
    2 unusable input or command line.
    """


#: The commands, in the order ``dvheval --help`` lists them.
COMMANDS: tuple[tuple[str, Callable[..., None] | typer.Typer], ...] = (
    ("dvh", dvh_command),
    ("check", check_command),
    ("protocol", protocol_app),
    ("batch", batch_command),
    ("cohort", cohort_command),
    ("compare-tps", compare_tps_command),
)


def _typer_app(commands: Sequence[tuple[str, Callable[..., None] | typer.Typer]]) -> typer.Typer:
    """The command line with ``commands``."""
    cli = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        rich_markup_mode="markdown",
        help="Check radiotherapy plans (DICOM-RT) against dose-volume protocols.",
    )
    cli.callback()(_root)
    for name, target in commands:
        if isinstance(target, typer.Typer):
            cli.add_typer(target, name=name)
        else:
            cli.command(name)(target)
    return cli


#: The whole command line.
app = _typer_app(COMMANDS)


def main() -> None:
    """Run the command line with warnings printed as plain lines.

    When the first argument names a command, only that command is built:
    typer reads the signature of every command it builds (about 20 ms for
    all of them), and the others cannot be invoked anyway.
    """
    warnings.showwarning = _show_warning
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    chosen = [c for c in COMMANDS if c[0] == name]
    (_typer_app(chosen) if chosen else app)()


#: Thread pools of the numerical libraries, limited to one thread in the command's
#: process (and the processes it starts) unless the environment says otherwise.
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Garbage-collector thresholds of the command's process (Python's are 700, 10, 10).
GC_THRESHOLDS = (100_000, 50, 100)
#: Modules that pydicom imports when it is imported but that no command of
#: dvheval uses: downloading pydicom's test files (``urllib.request``, with
#: the HTTP, SSL and socket modules it imports), the example data sets, ICC
#: colour management for colour images, and the EXIF and TIFF tag tables
#: (Pillow's image module reads them only inside its functions). They are
#: loaded when first used.
DEFERRED_MODULES = frozenset({"urllib.request", "pydicom.examples", "PIL.ImageCms",
                              "PIL.ExifTags", "PIL.TiffTags"})


class _DeferredImports:
    """A finder (of ``sys.meta_path``) that imports ``names`` lazily: each module is
    created at its import and run at its first use (:class:`importlib.util.LazyLoader`)."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None
                  ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


def defer_imports(names: frozenset[str]) -> None:
    """Load the modules ``names`` when first used rather than when imported.

    Only imports made after this call are affected; the module objects are
    the usual ones once loaded.
    """
    if not any(isinstance(f, _DeferredImports) and f.names == names for f in sys.meta_path):
        sys.meta_path.insert(0, _DeferredImports(names))


def run() -> None:
    """Console-script entry point: :func:`main` in a process tuned for it, then a prompt exit.

    The process is set up for a command's work before numpy is imported:

    * The numerical libraries' thread pools get one thread. dvheval shares
      work among processes itself (a plan's structures, a batch's plans)
      and does no linear algebra large enough for a threaded BLAS to pay:
      its threads would only spin at start-up and compete with those
      processes (0.15-0.25 s of CPU per command), and sums would depend on
      the machine's core count (the batch workers do the same).
    * The garbage collector runs less often (:data:`GC_THRESHOLDS`). A
      command creates tens of thousands of long-lived objects (modules,
      DICOM data sets), which the default thresholds traverse again and
      again (50-75 ms on a clinical plan); unreachable cycles are still
      collected.
    * The modules of :data:`DEFERRED_MODULES` are loaded only if used
      (about 40 ms of pydicom's import otherwise).
    * The command runs where the interpreter's frame stack has room
      (:func:`~dvheval.engine.forked.with_stack_room`): calls that would
      allocate and free a stack chunk each time cost a third of a sample
      plan's page faults.

    When a command returns, its results are written. What the interpreter
    would still do is free every object, with several garbage-collector
    passes over the whole heap (about 0.1 s after a plan's DVHs), which the
    operating system does at once when the process ends. So the exit
    handlers run, the standard streams are flushed and the process ends
    with the command's exit code, without that teardown. Where something
    might still be running (another thread, a child process), the exit code
    is not a number, or a stream cannot be flushed, the interpreter exits
    as usual.
    """
    for name in _ONE_THREAD:
        os.environ.setdefault(name, "1")
    gc.set_threshold(*GC_THRESHOLDS)
    defer_imports(DEFERRED_MODULES)
    try:
        with_stack_room(main)
        code: str | int | None = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    if not isinstance(code, int) or threading.active_count() > 1 or _children_running():
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code)


def _children_running() -> bool:
    """Whether a child process started by multiprocessing is still running."""
    mp = sys.modules.get("multiprocessing")
    return bool(mp is not None and mp.active_children())


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    """A library's warning (e.g. pydicom on a value it could not decode) as one plain line.

    Python's default names the library's source file and line, which says
    nothing to the reader; the message itself is kept, with control
    characters made visible.
    """
    from dvheval.sanitize import visible

    origin = "pydicom" if "pydicom" in filename else category.__name__
    print(f"warning: {origin}: {visible(str(message))}", file=file or sys.stderr)


if __name__ == "__main__":
    run()
