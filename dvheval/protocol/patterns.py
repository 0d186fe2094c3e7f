"""Regular expressions of ``patterns`` that cannot backtrack catastrophically.

A pattern is tried on every ROI name of every plan checked, so a protocol
file must not be able to make matching take exponential time. Patterns are
checked on their parse tree before they are compiled for use.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from dvheval.protocol.schema import MAX_PATTERN_LENGTH, MAX_PATTERN_REPEATS


def _regex_parser() -> Any:
    """The standard library's regular-expression parser (``re._parser``)."""
    try:
        return importlib.import_module("re._parser")
    except ImportError:  # pragma: no cover - Python 3.10
        return importlib.import_module("sre_parse")


_sre_parse = _regex_parser()

_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")


def _pattern_problem(pattern: str) -> str | None:
    """Why a ``patterns`` entry is refused, or None when it is safe to match.

    A pattern must compile, be at most :data:`MAX_PATTERN_LENGTH` characters
    long, use no backreference, hold at most :data:`MAX_PATTERN_REPEATS`
    repeats (``+``, ``*``, ``{m,n}`` with n > 1), and no repeat may contain
    another repeat or an alternation (``(a+)+``, ``(a|ab)*``): those can
    backtrack exponentially.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"longer than {MAX_PATTERN_LENGTH} characters"
    try:
        re.compile(pattern, re.IGNORECASE)
        tree = _sre_parse.parse(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"bad regular expression: {exc}"
    repeats = [0]
    found = _walk(tree, False, repeats)
    if found:
        return f"{found}: such patterns can take exponential time to match"
    if repeats[0] > MAX_PATTERN_REPEATS:
        return (f"more than {MAX_PATTERN_REPEATS} repeats ('+', '*', '{{m,n}}'); "
                "write a simpler pattern or list the names as aliases")
    return None


def _walk(items: Any, in_repeat: bool, repeats: list[int]) -> str | None:
    """The first unsafe construct among parsed ``items``, or None.

    ``in_repeat`` tells whether the items lie inside a repeat; ``repeats[0]``
    counts the repeats seen so far.
    """
    for op, av in items:
        found = _walk_item(str(op), av, in_repeat, repeats)
        if found:
            return found
    return None


def _walk_item(name: str, av: Any, in_repeat: bool, repeats: list[int]) -> str | None:
    """The first unsafe construct in one parsed item (opcode ``name``, arguments ``av``)."""
    if name in _REPEATS:
        _lo, hi, sub = av
        if hi > 1:
            repeats[0] += 1
            if in_repeat:
                return "a repeated group contains another repeat (e.g. '(a+)+')"
            return _walk(sub, True, repeats)
        return _walk(sub, in_repeat, repeats)
    if name == "BRANCH":
        if in_repeat:
            return "a repeated group contains an alternation (e.g. '(a|ab)*')"
        return next((f for b in av[1] if (f := _walk(b, in_repeat, repeats))), None)
    if name == "SUBPATTERN":
        return _walk(av[-1], in_repeat, repeats)
    if name in ("ASSERT", "ASSERT_NOT"):
        return _walk(av[1], in_repeat, repeats)
    if name == "ATOMIC_GROUP":
        return _walk(av, in_repeat, repeats)
    if name in ("GROUPREF", "GROUPREF_EXISTS"):
        return "backreferences are not allowed"
    return None
