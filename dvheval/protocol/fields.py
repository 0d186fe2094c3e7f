"""Reading typed fields out of a parsed protocol, collecting located errors.

:class:`_Fields` is the base of the protocol reader: it records every
problem with its line and field path instead of stopping at the first, so
that one run of ``dvheval protocol validate`` lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dvheval.protocol.expressions import _is_number
from dvheval.protocol.model import PrescriptionLevel, Source, StructureSpec
from dvheval.protocol.problems import ProtocolError, _hint, _short
from dvheval.protocol.schema import MAX_ITEMS, MAX_STRUCTURES
from dvheval.protocol.yaml_lines import _Map, _Seq

#: Returned by a scalar reader for a value of the wrong kind.
_WRONG = object()


def _read_str(v: Any) -> Any:
    """Non-empty text, stripped."""
    return v.strip() if isinstance(v, str) and v.strip() else _WRONG


def _read_text(v: Any) -> Any:
    """Text, also a number written bare (``version: 1.0``)."""
    if isinstance(v, str) and v.strip():
        return v.strip()
    return str(v) if _is_number(v) else _WRONG


def _read_number(v: Any) -> Any:
    """A finite number, as a float."""
    return float(v) if _is_number(v) else _WRONG


def _read_int(v: Any) -> Any:
    """A whole number (not a boolean)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else _WRONG


def _read_bool(v: Any) -> Any:
    """true or false."""
    return v if isinstance(v, bool) else _WRONG


#: Scalar kinds of :meth:`_Fields.get`: reader, and what the error says was expected.
_SCALARS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "str": (_read_str, "expected non-empty text"),
    "text": (_read_text, "expected text"),
    "number": (_read_number, "expected a finite number"),
    "int": (_read_int, "expected a whole number"),
    "bool": (_read_bool, "expected true or false"),
}


def _join(path: str, key: str | int) -> str:
    """Field path of ``key`` under ``path`` (``a.b`` or ``a[0]``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@dataclass
class _Ctx:
    """What a constraint needs to know about its structure."""

    name: str
    alpha_beta: float | None
    prescription: str | None


class _Fields:
    """Typed access to parsed YAML, recording located errors in :attr:`errors`."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[ProtocolError] = []
        self.levels: dict[str, PrescriptionLevel] = {}
        self.sources: dict[str, Source] = {}
        self.ids: dict[str, int] = {}

    def error(self, line: int | None, path: str | None, message: str) -> None:
        """Record a problem at ``line`` of the file, in field ``path``."""
        self.errors.append(ProtocolError(message, self.file, line, path))

    @staticmethod
    def key_line(m: _Map, key: str) -> int:
        """Line of ``key`` in ``m``, else of ``m`` itself."""
        return m.key_lines.get(key, m.line)

    def keys(self, m: _Map, path: str, spec: dict[str, bool]) -> None:
        """Record unknown keys of ``m`` and required keys of ``spec`` it lacks."""
        for k in m:
            if k not in spec:
                self.error(
                    m.key_lines[k], _join(path, k),
                    f"unknown key {k!r}{_hint(k, spec)}; allowed: {', '.join(spec)}",
                )
        for k, required in spec.items():
            if required and k not in m:
                self.error(m.line, path or None, f"missing required key {k!r}")

    def get(self, m: _Map, key: str, path: str, kind: str, default: Any = None) -> Any:
        """Value of ``key`` if it has the right kind; else record an error.

        ``kind`` is one of ``str`` (non-empty text, stripped), ``text`` (also
        a bare number), ``number``, ``int``, ``bool``, ``map``, ``list`` and
        ``strs`` (one text or a list of texts, as a tuple).
        """
        if key not in m:
            return default
        v = m[key]
        where = (self.key_line(m, key), _join(path, key))
        scalar = _SCALARS.get(kind)
        if scalar is not None:
            read, expected = scalar
            got = read(v)
            if got is not _WRONG:
                return got
            self.error(*where, f"{expected}, got {_short(v)}")
        elif kind == "map":
            if isinstance(v, _Map) and self.bounded(v, where):
                return v
            if not isinstance(v, _Map):
                self.error(*where, "expected a mapping (key: value lines)")
        elif kind == "list":
            if isinstance(v, _Seq) and self.bounded(v, where, key):
                return v
            if not isinstance(v, _Seq):
                self.error(*where, "expected a list")
        elif kind == "strs":
            items = [v] if isinstance(v, str) else v if isinstance(v, _Seq) else None
            if items is not None and not self.bounded(items, where):
                return default
            if items is not None and all(isinstance(x, str) and x.strip() for x in items):
                return tuple(x.strip() for x in items)
            self.error(*where, f"expected text or a list of texts, got {_short(v)}")
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
        return default

    def bounded(self, items: Sequence[Any] | dict[str, Any], where: tuple[int, str],
                key: str = "") -> bool:
        """True when a list or mapping is within its size cap; else record an error."""
        cap = MAX_STRUCTURES if key == "structures" else MAX_ITEMS
        if len(items) <= cap:
            return True
        self.error(*where, f"{len(items)} entries; at most {cap} are allowed")
        return False

    def level_ref(self, name: str, line: int, path: str) -> str | None:
        """``name`` if it is a defined prescription level; else record an error."""
        if name in self.levels:
            return name
        known = ", ".join(self.levels) or "none"
        self.error(line, path, f"undefined prescription {name!r}{_hint(name, self.levels)}; "
                   f"defined: {known}")
        return None

    def new_id(self, cid: str, line: int, path: str) -> bool:
        """Register a constraint id; False (and an error) when it is taken."""
        if cid in self.ids:
            self.error(line, path, f"duplicate constraint {cid!r} (line {self.ids[cid]})")
            return False
        self.ids[cid] = line
        return True

    def citation(self, keys: Sequence[str], detail: str | None) -> str:
        """Short labels of the sources ``keys``, then ``detail``."""
        text = "; ".join(self.sources[k].short for k in keys if k in self.sources)
        return f"{text}, {detail}" if detail and text else (detail or text)

    def structure_refs(
        self, names: Sequence[str], known: dict[str, StructureSpec], line: int, path: str
    ) -> None:
        """Record every name of ``names`` that is not a known structure."""
        for s in names:
            if s not in known:
                self.error(line, path, f"unknown structure {s!r}{_hint(s, known)}")

    def source_refs(self, keys: Sequence[str], line: int, path: str) -> None:
        """Record every key of ``keys`` that is not a defined source."""
        for s in keys:
            if s not in self.sources:
                self.error(line, path, f"unknown source {s!r}{_hint(s, self.sources)}; "
                           f"defined: {', '.join(self.sources) or 'none'}")
