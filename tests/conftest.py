from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DCC_DATA = SHARED / "testdata" / "dicompyler-core"


@pytest.fixture
def write():
    """The phantom writer (imported lazily so that collection stays cheap)."""
    from .phantoms import write_phantom

    def _write(tmp_path, shapes, dose, **kw):
        return write_phantom(tmp_path / "plan", shapes, dose, **kw)

    return _write


def _build_cli_commands_once() -> None:
    """Let typer's test runner build each app's click command once per process.

    ``typer.testing.CliRunner.invoke`` rebuilds the whole command tree from
    the function signatures on every call (about 40 ms here); the tree does
    not change between calls, so tests reuse it.
    """
    import functools

    import typer.testing

    typer.testing._get_command = functools.cache(typer.testing._get_command)


_build_cli_commands_once()
