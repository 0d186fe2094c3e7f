"""Errors of protocol files, located by file, line and field."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dvheval.errors import DvhevalError


class ProtocolError(DvhevalError):
    """A protocol file cannot be used as written.

    Parameters
    ----------
    message : str
        What is wrong, in words the protocol's author can act on.
    file : str or Path, optional
        The protocol file.
    line : int, optional
        1-based line in the file.
    field : str, optional
        Dotted path of the field, e.g. ``structures[SpinalCord].constraints[0].check``.

    Attributes
    ----------
    errors : list of ProtocolError
        When raised by :func:`dvheval.protocol.load_protocol`, every problem
        found in the file (this error is the first of them).
    """

    def __init__(
        self,
        message: str,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.errors: list[ProtocolError] = [self]
        where = self.file or "<protocol>"
        if line is not None:
            where += f":{line}"
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)


class _Bad(Exception):
    """A value is wrong; the text says why (located by the caller)."""


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hint(key: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``allowed``, or nothing."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
