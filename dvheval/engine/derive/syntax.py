"""Derived-structure expressions: the grammar, its limits and the parsed tree."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dvheval.errors import DvhevalError

#: Longest expression, in characters.
MAX_EXPRESSION_CHARS = 500
#: Deepest nesting of parentheses.
MAX_DEPTH = 20
#: Most ROI references in one expression, and most margins.
MAX_OPERANDS = 50
MAX_MARGINS = 10
#: Largest margin along any axis, in mm.
MAX_MARGIN_MM = 50.0
#: Longest derived structure name (DICOM LO).
MAX_NAME_CHARS = 64
#: Most derived structures of one plan.
MAX_DERIVED = 50

_OPS = {"|": "union", "&": "intersection", "-": "difference"}
_BARE = re.compile(r"[^\s|&+\-()\"',=]+")
_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
_NUMBER_MM = re.compile(r"^(?P<n>(?:\d+(?:\.\d*)?|\.\d+))(?P<u>[A-Za-zµ]*)$")


class DerivationError(DvhevalError, ValueError):
    """A derived-structure definition that cannot be parsed or used.

    Parameters
    ----------
    message : str
        What is wrong.
    expression : str
        The expression (or ``NAME=EXPRESSION`` text) concerned.
    position : int, optional
        0-based character position of the problem in ``expression``.
    name : str, optional
        The derived structure concerned.
    """

    def __init__(self, message: str, expression: str = "", position: int | None = None,
                 name: str | None = None) -> None:
        self.message = message
        self.expression = expression
        self.position = position
        self.name = name
        where = f"derived structure {name!r}" if name else "derived structure"
        text = f"{where}: {message}"
        if position is not None:
            text += f" at character {position + 1} of {expression!r}"
            before = expression[max(0, position - 20):position]
            text += f" (after {before!r})" if before.strip() else ""
        elif expression:
            text += f" in {expression!r}"
        super().__init__(text)

    @property
    def caret(self) -> str:
        """The expression and a ``^`` under the problem (two lines), or ''."""
        if self.position is None:
            return ""
        return f"{self.expression}\n{' ' * self.position}^"


# --------------------------------------------------------------------- syntax
@dataclass(frozen=True)
class Name:
    """An ROI reference."""

    name: str
    pos: int


@dataclass(frozen=True)
class BinOp:
    """``left OP right`` with OP one of ``|``, ``&``, ``-``."""

    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True)
class Margin:
    """``operand +/- margin``; ``mm`` is (x, y, z), all >= 0; ``grow`` the sign."""

    operand: Node
    mm: tuple[float, float, float]
    grow: bool
    pos: int


Node = Name | BinOp | Margin


@dataclass(frozen=True)
class Derivation:
    """A parsed ``NAME = EXPRESSION``."""

    name: str
    expression: str
    tree: Node = field(compare=False)


@dataclass(frozen=True)
class _Token:
    kind: str  # name, op, (, ), ",", end
    text: str
    pos: int
    quoted: bool = False


def _tokens(text: str, name: str | None) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "|&-+":
            out.append(_Token("op", c, i))
            i += 1
        elif c in "(),":
            out.append(_Token(c, c, i))
            i += 1
        elif c in "\"'":
            end = text.find(c, i + 1)
            if end < 0:
                raise DerivationError(f"unterminated quoted name (no closing {c})", text, i, name)
            word = text[i + 1:end]
            if not word.strip():
                raise DerivationError("empty quoted name", text, i, name)
            out.append(_Token("name", word, i, quoted=True))
            i = end + 1
        else:
            m = _BARE.match(text, i)
            if m is None:
                raise DerivationError(f"unexpected character {c!r}", text, i, name)
            out.append(_Token("name", m.group(0), i))
            i = m.end()
    out.append(_Token("end", "", n))
    return out


class _Parser:
    def __init__(self, text: str, name: str | None) -> None:
        self.text = text
        self.name = name
        self.toks = _tokens(text, name)
        self.i = 0
        self.depth = 0
        self.names = 0
        self.margins = 0

    def fail(self, message: str, pos: int) -> DerivationError:
        return DerivationError(message, self.text, pos, self.name)

    def peek(self, ahead: int = 0) -> _Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> _Token:
        tok = self.peek()
        self.i += 1
        return tok

    def parse(self) -> Node:
        tree = self.expression()
        tok = self.peek()
        if tok.kind != "end":
            what = "')' without '('" if tok.kind == ")" else f"{tok.text!r}"
            raise self.fail(f"unexpected {what}; expected an operator (|, &, -) or the end",
                            tok.pos)
        return tree

    def expression(self) -> Node:
        left, _ = self.operand()
        op: str | None = None
        while self.peek().kind == "op" and self.peek().text in _OPS:
            tok = self.take()
            if op is not None and tok.text != op:
                raise self.fail(f"mixing {op!r} and {tok.text!r} needs parentheses, e.g. "
                                f"(A {op} B) {tok.text} C", tok.pos)
            op = tok.text
            right, margin_pos = self.operand()
            if margin_pos is not None:
                raise self.fail(f"ambiguous margin after {op!r}: write A {op} (B + 3mm) or "
                                f"(A {op} B) + 3mm", margin_pos)
            left = BinOp(op, left, right, tok.pos)
        if self.peek().kind == "op" and self.peek().text == "+":
            tok = self.peek()
            raise self.fail("'+' starts a margin (e.g. + 3mm); the union is '|'", tok.pos)
        return left

    def operand(self) -> tuple[Node, int | None]:
        node = self.primary()
        bare_margin: int | None = None
        while True:
            tok = self.peek()
            if tok.kind != "op" or tok.text not in "+-":
                break
            if tok.text == "-" and not self.margin_follows():
                break
            self.take()
            mm = self.margin_literal(tok)
            self.margins += 1
            if self.margins > MAX_MARGINS:
                raise self.fail(f"more than {MAX_MARGINS} margins", tok.pos)
            node = Margin(node, mm, tok.text == "+", tok.pos)
            bare_margin = tok.pos
        return node, bare_margin

    def margin_follows(self) -> bool:
        """True when the token after a '-' starts a margin, not an operand."""
        nxt = self.peek(1)
        if nxt.kind == "name" and not nxt.quoted:
            return _NUMBER_MM.match(nxt.text) is not None
        if nxt.kind == "(":
            after = self.peek(2)
            return after.kind == "name" and not after.quoted and \
                _NUMBER.fullmatch(after.text) is not None and self.peek(3).kind == ","
        return False

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "name":
            if not tok.quoted and _NUMBER_MM.match(tok.text):
                raise self.fail(f"expected a structure name, got {tok.text!r}; a margin "
                                "follows its structure: A + 3mm", tok.pos)
            self.names += 1
            if self.names > MAX_OPERANDS:
                raise self.fail(f"more than {MAX_OPERANDS} structure names", tok.pos)
            if len(tok.text) > MAX_NAME_CHARS:
                raise self.fail(f"a structure name is at most {MAX_NAME_CHARS} characters",
                                tok.pos)
            return Name(tok.text.strip() if tok.quoted else tok.text, tok.pos)
        if tok.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"parentheses nested deeper than {MAX_DEPTH}", tok.pos)
            inner = self.expression()
            close = self.take()
            if close.kind != ")":
                raise self.fail("expected ')' to close a '('", close.pos)
            self.depth -= 1
            return inner
        if tok.kind == "end":
            raise self.fail("expected a structure name or '(' but the expression ends", tok.pos)
        raise self.fail(f"expected a structure name or '(', got {tok.text!r}", tok.pos)

    def margin_literal(self, sign: _Token) -> tuple[float, float, float]:
        tok = self.take()
        if tok.kind == "name" and not tok.quoted:
            m = _NUMBER_MM.match(tok.text)
            if m is None:
                raise self.fail(f"expected a margin such as 3mm after {sign.text!r}, got "
                                f"{tok.text!r} (the union is '|')", tok.pos)
            value = self.number(m.group("n"), tok.pos)
            self.unit(m.group("u"), tok)
            return (value, value, value)
        if tok.kind == "(":
            values = []
            for k in range(3):
                num = self.take()
                m = _NUMBER.fullmatch(num.text) if num.kind == "name" and not num.quoted \
                    else None
                if m is None:
                    if num.kind == "op" and num.text == "-":
                        raise self.fail("margin components are distances >= 0; the sign "
                                        "before the parenthesis says grow (+) or shrink (-)",
                                        num.pos)
                    raise self.fail("expected a number (mm) in the margin (x, y, z)", num.pos)
                values.append(self.number(num.text, num.pos))
                sep = self.take()
                want = "," if k < 2 else ")"
                if sep.kind != want:
                    raise self.fail(f"expected {want!r} in the margin (x, y, z)", sep.pos)
            unit = self.take()
            if unit.kind != "name" or unit.quoted:
                raise self.fail("a margin needs its unit: (x, y, z)mm", unit.pos)
            self.unit(unit.text, unit)
            return (values[0], values[1], values[2])
        raise self.fail(f"expected a margin such as 3mm or (3,3,5)mm after {sign.text!r}",
                        tok.pos)

    def number(self, text: str, pos: int) -> float:
        value = float(text)
        if not math.isfinite(value) or value > MAX_MARGIN_MM:
            raise self.fail(f"a margin is at most {MAX_MARGIN_MM:g} mm, got {text} mm", pos)
        return value

    def unit(self, text: str, tok: _Token) -> None:
        if text == "mm":
            return
        if not text:
            if self.peek().kind == "name" and self.peek().text == "mm":
                self.take()
                return
            raise self.fail("a margin needs its unit: write 3mm", tok.pos)
        raise self.fail(f"margins are written in mm, not {text!r}", tok.pos)


def parse_expression(text: str, name: str | None = None) -> Node:
    """Parse a structure expression into a syntax tree.

    Raises
    ------
    DerivationError
        With the 0-based character position of the problem.
    """
    if not isinstance(text, str) or not text.strip():
        raise DerivationError("the expression is empty", str(text or ""), None, name)
    if len(text) > MAX_EXPRESSION_CHARS:
        raise DerivationError(f"the expression has {len(text)} characters; at most "
                              f"{MAX_EXPRESSION_CHARS} are allowed", "", None, name)
    bad = next((i for i, c in enumerate(text) if ord(c) < 32 and c not in "\t"), None)
    if bad is not None:
        raise DerivationError("control character in the expression", text, bad, name)
    return _Parser(text, name).parse()


def _check_name(name: str, text: str) -> str:
    name = name.strip()
    if not name:
        raise DerivationError("the derived structure needs a name: NAME=EXPRESSION", text, 0)
    if len(name) > MAX_NAME_CHARS:
        raise DerivationError(f"the name has {len(name)} characters; at most "
                              f"{MAX_NAME_CHARS} are allowed", text, 0)
    if any(ord(c) < 32 for c in name):
        raise DerivationError("control character in the name", text, 0)
    return name


def parse_derivation(text: str) -> Derivation:
    """Parse ``NAME=EXPRESSION`` (the form of ``--derive``).

    Raises
    ------
    DerivationError
        When the text has no ``=``, the name is empty or too long, or the
        expression does not parse; positions refer to ``text``.
    """
    if "=" not in text:
        raise DerivationError("expected NAME=EXPRESSION, e.g. Kidneys=Kidney_L | Kidney_R",
                              text)
    head, _, expr = text.partition("=")
    name = _check_name(head.strip().strip("\"'"), text)
    offset = len(head) + 1
    try:
        tree = parse_expression(expr, name)
    except DerivationError as exc:
        pos = None if exc.position is None else exc.position + offset
        raise DerivationError(exc.message, text, pos, name) from None
    return Derivation(name, expr.strip(), tree)


def derivations_from(
    spec: Mapping[str, str] | Sequence[str] | Sequence[Derivation] | None,
) -> list[Derivation]:
    """Parse derived-structure definitions.

    Parameters
    ----------
    spec : mapping or sequence, optional
        ``{name: expression}``, or ``"NAME=EXPRESSION"`` texts, or already
        parsed :class:`Derivation` objects.

    Raises
    ------
    DerivationError
        On a syntax error, a name defined twice or too many definitions.
    """
    if not spec:
        return []
    items: list[Derivation] = []
    if isinstance(spec, Mapping):
        for name, expr in spec.items():
            checked = _check_name(str(name), f"{name}={expr}")
            items.append(Derivation(checked, str(expr).strip(), parse_expression(expr, checked)))
    else:
        for s in spec:
            items.append(s if isinstance(s, Derivation) else parse_derivation(s))
    if len(items) > MAX_DERIVED:
        raise DerivationError(f"{len(items)} derived structures; at most {MAX_DERIVED}")
    seen: set[str] = set()
    for d in items:
        key = d.name.lower()
        if key in seen:
            raise DerivationError("defined twice", d.expression, None, d.name)
        seen.add(key)
    return items


def operand_names(tree: Node) -> list[str]:
    """ROI names an expression refers to, in order of appearance (unique)."""
    out: list[str] = []

    def walk(n: Node) -> None:
        if isinstance(n, Name):
            if n.name not in out:
                out.append(n.name)
        elif isinstance(n, BinOp):
            walk(n.left)
            walk(n.right)
        else:
            walk(n.operand)

    walk(tree)
    return out
