"""A bounded YAML loader whose mappings and lists know their line numbers.

Protocol files are read with a safe loader that leaves dates as text and
refuses, with the line of the problem, what could hang or crash it: nesting
deeper than :data:`~dvheval.protocol.schema.MAX_DEPTH`, more than
:data:`~dvheval.protocol.schema.MAX_ALIASES` aliases, more than
:data:`~dvheval.protocol.schema.MAX_NODES` values (as written and once
aliases are expanded), recursive aliases, merge keys, tags other than plain
scalars, mappings and lists, and control characters.
"""

from __future__ import annotations

import re
from typing import Any, cast

import yaml

from dvheval.protocol.problems import ProtocolError, _short
from dvheval.protocol.schema import MAX_ALIASES, MAX_DEPTH, MAX_NODES


class _Map(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Seq(list[Any]):
    """A YAML sequence that remembers the line of itself and of each item."""

    line: int = 0
    item_lines: list[int]


class _Limit(yaml.MarkedYAMLError):
    """The YAML is well formed but exceeds a bound of the loader (message is the problem)."""


try:  # libyaml reads the text about 7x faster than PyYAML's pure-Python reader
    from yaml._yaml import CParser as _Parser

    _PARSERS: tuple[type, ...] = (_Parser,)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _PARSERS = (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser)


class _Loader(yaml.composer.Composer, *_PARSERS, yaml.constructor.SafeConstructor,  # type: ignore[misc]
              yaml.resolver.Resolver):
    """Safe YAML loader that leaves dates as text and bounds nesting and aliases.

    The parser's events are composed here, in Python (not by libyaml's own
    composer), so that every node passes the bounds of :meth:`compose_node`.
    """

    def __init__(self, stream: str) -> None:
        # libyaml reads UTF-8 bytes; a lone surrogate becomes bytes it refuses
        source = stream.encode("utf-8", "surrogatepass") if _PARSERS[0] is not yaml.reader.Reader \
            else stream
        for base in _PARSERS:
            cast(Any, base).__init__(self, source)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.depth = 0
        self.aliases = 0
        self.nodes = 0
        self.expanded = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, refusing too deep nesting and too many aliases."""
        event = cast(Any, self).peek_event()
        mark = event.start_mark
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Limit(problem=f"more than {MAX_NODES} YAML values",
                         problem_mark=mark)
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Limit(problem=f"more than {MAX_ALIASES} YAML aliases ('*name'); "
                             "write the values out", problem_mark=mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Limit(problem=f"nested deeper than {MAX_DEPTH} levels",
                             problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_YAML = "tag:yaml.org,2002:"
#: YAML tags a protocol may use (implicitly or written out); any other is refused.
_SCALAR_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null")}
_MAP_TAG, _SEQ_TAG = _YAML + "map", _YAML + "seq"
#: Characters a protocol file must not contain: C0/C1 controls except tab,
#: line feed, carriage return and NEL, and the non-characters U+FFFE/U+FFFF.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")


def _control_char_error(text: str, file: str) -> ProtocolError | None:
    """The error for the first control character of ``text``, or None."""
    m = _CONTROL_RE.search(text)
    if not m:
        return None
    line = text.count("\n", 0, m.start()) + 1
    column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    return ProtocolError(
        f"control character U+{ord(m.group()):04X} at column {column}; "
        "a protocol is plain text", file, line)


def _parse_yaml(text: str, file: str, errors: list[ProtocolError]) -> Any:
    """Parse YAML into plain data whose mappings and lists carry line numbers.

    Problems are appended to ``errors`` (and None returned for a file that
    cannot be read at all).
    """
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            errors.append(ProtocolError("the file is empty", file, 1))
            return None
        return _convert(node, loader, file, errors, set())
    except _Limit as exc:
        mark = exc.problem_mark
        errors.append(ProtocolError(str(exc.problem), file, mark.line + 1 if mark else None))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own bound (1000 levels)
            errors.append(ProtocolError(f"nested deeper than {MAX_DEPTH} levels", file,
                                        mark.line + 1 if mark else None))
            return None
        what = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        line = mark.line + 1 if mark else None
        errors.append(ProtocolError(f"not valid YAML: {what}", file, line))
    except yaml.YAMLError as exc:
        errors.append(ProtocolError(f"not valid YAML: {exc}", file))
    except RecursionError:  # pragma: no cover - bounded by MAX_DEPTH
        errors.append(ProtocolError(f"nested deeper than {MAX_DEPTH} levels", file))
    finally:
        if loader is not None:
            loader.dispose()
    return None


def _convert(node: yaml.Node, loader: _Loader, file: str, errors: list[ProtocolError],
             stack: set[int]) -> Any:
    """Plain data of ``node``; ``stack`` holds the ids of the nodes being converted."""
    if id(node) in stack:
        raise yaml.MarkedYAMLError(problem="recursive alias", problem_mark=node.start_mark)
    loader.expanded += 1
    if loader.expanded > MAX_NODES:
        raise _Limit(problem=f"more than {MAX_NODES} YAML values once aliases are expanded",
                     problem_mark=node.start_mark)
    if len(stack) >= MAX_DEPTH:
        raise _Limit(problem=f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                     problem_mark=node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        return _convert_scalar(node, loader)
    if node.tag not in (_MAP_TAG, _SEQ_TAG):
        raise _Limit(problem=f"YAML tag {node.tag!r} is not allowed in a protocol",
                     problem_mark=node.start_mark)
    stack = stack | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        seq = _Seq(_convert(n, loader, file, errors, stack) for n in node.value)
        seq.line = node.start_mark.line + 1
        seq.item_lines = [n.start_mark.line + 1 for n in node.value]
        return seq
    return _convert_mapping(node, loader, file, errors, stack)


def _convert_scalar(node: yaml.ScalarNode, loader: _Loader) -> Any:
    """The value of a scalar with one of the allowed tags."""
    if node.tag not in _SCALAR_TAGS:
        raise _Limit(problem=f"YAML tag {node.tag!r} is not allowed in a protocol",
                     problem_mark=node.start_mark)
    try:
        return loader.construct_object(node)
    except (ValueError, OverflowError) as exc:
        raise _Limit(problem=f"cannot read the value {_short(node.value)}: {exc}",
                     problem_mark=node.start_mark) from None


def _convert_mapping(node: yaml.Node, loader: _Loader, file: str,
                     errors: list[ProtocolError], stack: set[int]) -> _Map:
    """A mapping with text keys; merge keys, other keys and duplicates are errors."""
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for knode, vnode in node.value:
        kline = knode.start_mark.line + 1
        if knode.tag == "tag:yaml.org,2002:merge":
            errors.append(ProtocolError("YAML merge keys ('<<') are not supported", file, kline))
            continue
        key = (_convert(knode, loader, file, errors, stack)
               if isinstance(knode, yaml.ScalarNode) else None)
        if not isinstance(key, str):
            errors.append(ProtocolError(f"a key must be text, not {_short(key)}", file, kline))
            continue
        if key in out:
            errors.append(ProtocolError(
                f"duplicate key {_short(key)} (first at line {out.key_lines[key]})",
                file, kline, key[:60]))
            continue
        out[key] = _convert(vnode, loader, file, errors, stack)
        out.key_lines[key] = kline
    return out
