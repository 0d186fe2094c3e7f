"""Output safety: strings from DICOM files, paths and messages, made safe per format.

ROI names, patient names, plan and structure set labels, file names and
error texts come from outside. They may hold escape sequences, line breaks,
NUL or other control characters, markup or formula prefixes. Nothing here
changes what is matched or stored: these functions are applied where a
report or message is written, each for its format.

* :func:`visible` (terminal and plain text): control characters, line and
  paragraph separators, bidirectional overrides, surrogates and the
  non-characters U+FFFE/U+FFFF are shown as visible escapes (``\\x1b``,
  ``\\n``, ``\\u202e``), so a name can neither move the cursor nor forge a
  line of the report;
* :func:`for_xml`: the same, so that every character left is allowed in
  XML 1.0 (ElementTree then escapes ``<``, ``&`` and quotes);
* :func:`for_csv`: visible escapes, then a leading ``'`` on a text cell
  starting with ``=``, ``+``, ``-``, ``@``, tab or CR (spreadsheet formula
  injection); numbers are not touched;
* :func:`for_markdown`: visible escapes, HTML-sensitive characters as
  entities, Markdown punctuation backslash-escaped;
* :func:`for_html`: visible escapes, then :func:`html.escape`;
* :func:`json_safe` / :func:`dumps_json`: the true strings (JSON escapes
  them), non-finite numbers as ``null``, never bare ``NaN``/``Infinity``.

:func:`print_error` is the one way the command line prints an error.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import sys
from collections.abc import Callable
from typing import IO, Any

#: Characters shown as an escape: C0 and C1 controls, DEL, line/paragraph
#: separators, bidirectional marks, embeddings, overrides and isolates,
#: invisible characters that make two different names look alike (soft
#: hyphen, zero-width space/joiners, word joiner and invisible operators,
#: byte-order mark, Mongolian vowel separator), surrogates, the
#: non-characters U+FFFE and U+FFFF.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u180e\u200b-\u200f\u2028\u2029\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff\ufffe\uffff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: Any) -> str:
    """``text`` with every control or invisible formatting character shown as an escape.

    Parameters
    ----------
    text : Any
        A string (anything else is converted with ``str``).

    Returns
    -------
    str
        E.g. ``"PTV\\x1b[2J"`` for a name holding ESC, ``"a\\nb"`` for a line
        break. Printable text, including backslashes, is unchanged, so the
        function is idempotent.
    """
    return _UNSAFE.sub(_escape_char, str(text))


def for_terminal(text: Any) -> str:
    """Text for a terminal or a plain-text report; see :func:`visible`."""
    return visible(text)


def for_xml(text: Any) -> str:
    """Text whose every character is allowed in XML 1.0 (markup is left to the serializer).

    Control characters, surrogates and U+FFFE/U+FFFF are not allowed in XML
    1.0 even as character references; they are shown as visible escapes.
    """
    return visible(text)


def for_csv(value: Any) -> Any:
    """A CSV cell: text guarded against formula injection, numbers unchanged.

    Parameters
    ----------
    value : Any
        A cell. ``int``, ``float`` and ``None`` are returned as they are.

    Returns
    -------
    Any
        For text: :func:`visible` escapes, and a leading ``'`` when the text
        starts with ``=``, ``+``, ``-``, ``@``, tab or CR.
    """
    if value is None or isinstance(value, (int, float)):
        return value
    raw = str(value)
    text = visible(raw)
    if raw.startswith(FORMULA_START):
        text = "'" + text
    return text


_MD_PUNCT = re.compile(r"([\\`*\[\]|#~])")


def for_markdown(text: Any) -> str:
    """Text for a Markdown table cell or line: no markup, no raw HTML, one line.

    ``&``, ``<`` and ``>`` become entities; backslash, backtick, ``*``,
    ``[``, ``]``, ``|``, ``#`` and ``~`` are backslash-escaped (``_`` is
    left alone: inside a word it is no emphasis, and names like
    ``PTV_Low`` stay readable in the source); control characters and line
    breaks are shown as visible escapes. Not for code spans, where a
    backslash is literal.
    """
    out = visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_PUNCT.sub(r"\\\1", out)


def for_html(text: Any) -> str:
    """Text for HTML element content or a quoted attribute value."""
    return html.escape(visible(text), quote=True)


def clean_tree(obj: Any, clean: Callable[[Any], str]) -> Any:
    """A copy of a JSON-like tree with every string (and every key) passed through ``clean``.

    Parameters
    ----------
    obj : Any
        Dicts, lists, tuples, strings, numbers, booleans and None.
    clean : callable
        E.g. :func:`visible`.

    Returns
    -------
    Any
        The same structure; numbers, booleans and None unchanged.
    """
    if isinstance(obj, str):
        return clean(obj)
    if isinstance(obj, dict):
        return {clean(k) if isinstance(k, str) else k: clean_tree(v, clean)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_tree(v, clean) for v in obj]
    return obj


def json_safe(obj: Any) -> Any:
    """A copy of a JSON-like tree with non-finite floats (NaN, +-Infinity) as None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON: the true strings (escaped by JSON), non-finite numbers as ``null``.

    The text is exactly ``json.dumps(json_safe(obj), indent=indent)``;
    indented documents are written by :func:`_indented`, which joins whole
    lists of numbers at C speed (the standard library writes an indented
    document one value at a time in Python, about 5x slower on a DVH).

    Raises
    ------
    TypeError, ValueError
        For a value JSON cannot hold (as :func:`json.dumps`); never for a
        NaN or infinite value, which is written ``null``.
    """
    if indent is None:
        return json.dumps(json_safe(obj), allow_nan=False)
    out: list[str] = []
    _indented(obj, out, "\n", " " * indent)
    return "".join(out)


#: Writes a string as JSON does by default (ASCII only, C implementation).
_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _number_list(items: list[Any] | tuple[Any, ...]) -> list[str] | None:
    """The JSON text of each item when every one is a finite float or a plain int, else None."""
    kinds = set(map(type, items))
    if kinds == {float}:
        return list(map(float.__repr__, items)) if all(map(math.isfinite, items)) else None
    if kinds == {int}:
        return list(map(int.__repr__, items))
    return None


def _indented(obj: Any, out: list[str], newline: str, step: str) -> None:
    """Append the indented JSON text of ``obj`` to ``out`` (``newline`` ends with its indent)."""
    if isinstance(obj, str):
        out.append(_json_string(obj))
    elif obj is None or obj is True or obj is False:
        out.append("null" if obj is None else "true" if obj else "false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(float.__repr__(obj) if math.isfinite(obj) else "null")
    elif isinstance(obj, (list, tuple)):
        if not obj:
            out.append("[]")
            return
        inner = newline + step
        numbers = _number_list(obj)
        if numbers is not None:
            out += ("[", inner, ("," + inner).join(numbers), newline, "]")
            return
        out.append("[")
        for i, item in enumerate(obj):
            out.append("," + inner if i else inner)
            _indented(item, out, inner, step)
        out += (newline, "]")
    elif isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        inner = newline + step
        out.append("{")
        for i, (key, item) in enumerate(obj.items()):
            out += ("," + inner if i else inner, _json_string(_json_key(key)), ": ")
            _indented(item, out, inner, step)
        out += (newline, "}")
    else:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json_key(key: Any) -> str:
    """A mapping key as JSON writes it: strings as they are, numbers, booleans and None as text."""
    if isinstance(key, str):
        return key
    if key is None or key is True or key is False:
        return "null" if key is None else "true" if key else "false"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        if not math.isfinite(key):
            raise ValueError("Out of range float values are not JSON compliant")
        return float.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


# ------------------------------------------------------------------ errors
def error_lines(problem: BaseException | str) -> list[str]:
    """The lines ``error: ...`` printed for an exception or a message, one per problem.

    An exception with a non-empty ``errors`` list (e.g.
    :class:`~dvheval.protocol.ProtocolError`) gives one line per entry.
    Control characters are shown as visible escapes; brackets are kept.
    """
    items = getattr(problem, "errors", None) if isinstance(problem, BaseException) else None
    return [f"error: {visible(item)}" for item in (items or [problem])]


def print_error(problem: BaseException | str, file: IO[str] | None = None) -> None:
    """Print an error as ``error: ...`` lines on stderr, red only on a terminal.

    Nothing in the text is read as markup: a path holding ``[/]`` or a
    metric written ``V20Gy[cc]`` is printed as it is. Lines are never
    wrapped, so each problem stays on one line.

    Parameters
    ----------
    problem : BaseException or str
        The error; one with an ``errors`` list prints one line per entry.
    file : text stream, optional
        Where to print; stderr by default.
    """
    stream = file if file is not None else sys.stderr
    colour = bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ
    for line in error_lines(problem):
        if colour:
            line = "\x1b[1;31merror:\x1b[0m" + line[len("error:"):]
        stream.write(line + "\n")
    stream.flush()
