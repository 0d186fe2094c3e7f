"""Derived structures: structure algebra on the ROIs of a structure set.

A derived structure is defined by an expression over ROI names::

    PTV30_eval = PTV30 - (PTV40 + 2mm)      # difference, margin
    Kidneys    = Kidney_L | Kidney_R         # union
    Overlap    = PTV30 & "Niere li"          # intersection; quoted names
    Cord_PRV   = SpinalCord + 3mm            # isotropic 3D expansion
    Rectum_ant = Rectum & (PTV + (5,5,10)mm) # anisotropic margin (x, y, z in mm)

Grammar (a hand-written recursive-descent parser; nothing is evaluated as
Python)::

    expression := operand ( OP operand )*      OP one of | & -, all the same
    operand    := primary margin*
    primary    := NAME | "quoted name" | 'quoted name' | ( expression )
    margin     := (+|-) NUMBER mm | (+|-) ( NUMBER , NUMBER , NUMBER ) mm

Different operators at one level need parentheses (``A - B | C`` is
refused: write ``(A - B) | C``), and so does a margin on the right-hand
operand of an operator (``A - B + 2mm`` is refused: write ``A - (B + 2mm)``
or ``(A - B) + 2mm``). A name is matched exactly, else case-insensitively;
names holding spaces or operator characters are quoted.

Geometry (the result is an ordinary :class:`~dvheval.dicom.ROI`, so the
DVH engine computes it with partial volumes like any other ROI):

* every operand must be contoured on the structure set's plane grid (its
  planes ``z0 + k * slice thickness``); an operand off that grid makes the
  derived structure empty with a warning. A single plane an operand skips
  inside its extent (the DVH engine bridges such a gap) takes the region of
  the plane below, with a warning;
* booleans are exact per plane: polygon operations on the even-odd region of
  each plane (holes are kept), on every plane of either operand; a plane
  where an operand has no contour is empty for that operand, which on a
  common grid is exactly the slab model of the DVH engine (an operand's end
  cap covers half a slice, the slab of a neighbouring grid plane starts there);
* margins are 3D: between its planes the operand is interpolated in shape
  (linear interpolation of the in-plane signed distance on sub-planes at most
  0.5 mm apart), beyond its first and last plane it continues for the
  half-slice end cap the DVH engine gives it (tapering as the signed distance
  of the last two planes extrapolates, never wider than the last contour;
  no end cap with ``end_caps=False``); each output plane is then the exact
  Minkowski sum (expansion) or erosion (contraction) of that stack of
  sub-planes with the ellipsoid of the margin: the union (intersection) of
  every sub-plane's polygon buffered by the ellipse the ellipsoid cuts at that
  height. A positive z margin adds planes above and below on the same plane
  spacing.

A derived structure needs every operand: a missing, ambiguous or empty
operand makes it an empty ROI with a warning (so a protocol that needs it is
NOT_EVALUATED).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import shapely

from dvheval.dicom import ROI, Contour, StructureSet
from dvheval.errors import DvhevalError, InputError

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
#: Contour planes within this distance (mm, or 1 % of the plane spacing) of the
#: grid count as on it.
GRID_TOLERANCE_MM = 0.05
#: Polygons and holes smaller than this (mm^2) are numerical slivers and dropped.
MIN_AREA_MM2 = 0.01
#: Largest sub-plane spacing (mm) of the shape interpolation of margins.
MAX_SUBPLANE_MM = 0.5
#: In-plane pixel size range (mm) of the signed-distance rasters of margins.
PIXEL_RANGE_MM = (0.2, 1.0)
#: Target number of pixels of one signed-distance raster.
TARGET_PIXELS = 60_000

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


def derivations_from(spec: Mapping[str, str] | Sequence[str] | None) -> list[Derivation]:
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


# ------------------------------------------------------------------- geometry
class _Unusable(Exception):
    """The derived structure cannot be built; the message says why."""


@dataclass
class _Grid:
    z0: float
    t: float

    def index(self, z: float, what: str) -> int:
        k = round((z - self.z0) / self.t)
        tol = max(GRID_TOLERANCE_MM, 0.01 * self.t)
        if abs(self.z0 + k * self.t - z) > tol:
            raise _Unusable(f"{what} has a contour plane at z = {z:g} mm, off the structure "
                            f"set's {self.t:g} mm plane grid (planes at {self.z0:g} mm + k * "
                            f"{self.t:g} mm); derived structures need operands on one grid")
        return k

    def z(self, k: int) -> float:
        return self.z0 + k * self.t


Stack = dict[int, shapely.Geometry]


def _even_odd(rings: Sequence[np.ndarray]) -> shapely.Geometry:
    region = shapely.Polygon()
    for p in rings:
        poly = shapely.make_valid(shapely.Polygon(p))
        region = shapely.symmetric_difference(region, poly)
    return region


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Only the area of ``geom``: slivers, lines and points dropped."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon)]
    keep = []
    for p in parts:
        if p.area < MIN_AREA_MM2:
            continue
        holes = [h for h in p.interiors if shapely.Polygon(h).area >= MIN_AREA_MM2]
        keep.append(shapely.Polygon(p.exterior, holes))
    if not keep:
        return shapely.Polygon()
    return shapely.union_all(keep) if len(keep) > 1 else keep[0]


def _roi_planes(roi: ROI) -> tuple[dict[float, list[np.ndarray]], list[str]]:
    planes: dict[float, list[np.ndarray]] = {}
    notes: list[str] = []
    for c in roi.contours:
        if not c.geometric_type.startswith("CLOSED") or len(c.points) < 3:
            continue
        p = c.points
        if float(p[:, 2].max() - p[:, 2].min()) > GRID_TOLERANCE_MM:
            raise _Unusable(f"{roi.name!r} has a contour that is not axial")
        z = float(np.round(p[:, 2].mean() / GRID_TOLERANCE_MM) * GRID_TOLERANCE_MM)
        planes.setdefault(z, []).append(p[:, :2])
    return planes, notes


def _leaf_stack(roi: ROI, grid: _Grid, warnings: list[str]) -> Stack:
    planes, _ = _roi_planes(roi)
    stack: Stack = {}
    for z, rings in planes.items():
        region = _polygonal(_even_odd(rings))
        if not region.is_empty:
            stack[grid.index(z, repr(roi.name))] = region
    if not stack:
        raise _Unusable(f"operand {roi.name!r} has no closed contours enclosing an area")
    ks = sorted(stack)
    for a, b in zip(ks, ks[1:], strict=False):
        if b - a == 2:
            stack[a + 1] = stack[a]
            warnings.append(f"operand {roi.name!r} skips the plane at z = {grid.z(a + 1):g} "
                            "mm; the region of the plane below is used there")
    return stack


def _boolean(op: str, a: Stack, b: Stack) -> Stack:
    out: Stack = {}
    empty = shapely.Polygon()
    for k in sorted(set(a) | set(b)):
        ra, rb = a.get(k, empty), b.get(k, empty)
        if op == "|":
            r = shapely.union(ra, rb)
        elif op == "&":
            r = shapely.intersection(ra, rb)
        else:
            r = shapely.difference(ra, rb)
        r = _polygonal(r)
        if not r.is_empty:
            out[k] = r
    return out


# ---------------------------------------------------------------- margins
def _edt(feature: np.ndarray, spacing: Sequence[float], limit: float) -> np.ndarray:
    """Euclidean distance (mm) of every pixel to the nearest ``feature`` pixel, capped.

    Exact separable squared-distance transform with a window: distances up
    to ``limit`` are exact, larger ones are ``limit``.
    """
    g = np.where(feature, 0.0, np.inf)
    for ax, s in enumerate(spacing):
        k_max = min(int(math.ceil(limit / s)), g.shape[ax] - 1)
        out = g.copy()
        for k in range(1, k_max + 1):
            add = (k * s) ** 2
            hi = [slice(None)] * g.ndim
            lo = [slice(None)] * g.ndim
            hi[ax], lo[ax] = slice(k, None), slice(None, -k)
            np.minimum(out[tuple(hi)], g[tuple(lo)] + add, out=out[tuple(hi)])
            np.minimum(out[tuple(lo)], g[tuple(hi)] + add, out=out[tuple(lo)])
        g = out
    return np.sqrt(np.minimum(g, limit * limit))


@dataclass
class _Raster:
    x0: float
    y0: float
    h: float
    nx: int
    ny: int
    limit: float

    @property
    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.x0 + self.h * np.arange(self.nx)
        y = self.y0 + self.h * np.arange(self.ny)
        return np.meshgrid(x, y)

    def sdf(self, region: shapely.Geometry) -> np.ndarray:
        """Signed in-plane distance (mm) to the region's boundary; negative inside.

        Distance transforms of the pixel mask, replaced by the exact distance
        to the boundary's segments near the boundary (where the zero level is
        taken from).
        """
        xx, yy = self.xy
        inside = shapely.contains_xy(region, xx, yy)
        d_out = _edt(inside, (self.h, self.h), self.limit)
        d_in = _edt(~inside, (self.h, self.h), self.limit)
        s = np.where(inside, -(d_in - 0.5 * self.h), d_out - 0.5 * self.h)
        band = np.abs(s) <= 2.0 * self.h
        if band.any():
            segs = _segments(region)
            tree = shapely.STRtree(segs)
            pts = shapely.points(xx[band], yy[band])
            _, dist = tree.query_nearest(pts, return_distance=True, all_matches=False)
            s[band] = np.where(inside[band], -dist, dist)
        return s

    def region(self, s: np.ndarray) -> shapely.Geometry:
        """The region where ``s < 0`` as polygons (sub-pixel contours of level 0)."""
        from skimage.measure import find_contours

        if not (s < 0).any():
            return shapely.Polygon()
        padded = np.pad(s, 1, constant_values=self.limit)
        rings = []
        for c in find_contours(padded, 0.0):
            if len(c) < 4:
                continue
            rings.append(np.column_stack((self.x0 + (c[:, 1] - 1) * self.h,
                                          self.y0 + (c[:, 0] - 1) * self.h)))
        return _polygonal(_even_odd(rings))


def _segments(region: shapely.Geometry) -> np.ndarray:
    coords = []
    for ring in shapely.get_parts(shapely.boundary(region)):
        for part in shapely.get_parts(ring):
            c = shapely.get_coordinates(part)
            if len(c) >= 2:
                coords.append(np.stack((c[:-1], c[1:]), axis=1))
    return shapely.linestrings(np.concatenate(coords))


def _raster_for(stack: Stack, pad_xy: tuple[float, float], t: float) -> _Raster:
    bounds = np.array([r.bounds for r in stack.values()])
    xmin, ymin = bounds[:, 0].min(), bounds[:, 1].min()
    xmax, ymax = bounds[:, 2].max(), bounds[:, 3].max()
    h0 = math.sqrt(max((xmax - xmin) * (ymax - ymin), 1.0) / TARGET_PIXELS)
    h = float(np.clip(h0, *PIXEL_RANGE_MM))
    px, py = pad_xy[0] + 3 * h, pad_xy[1] + 3 * h
    x0, y0 = xmin - px, ymin - py
    nx = int(math.ceil((xmax + px - x0) / h)) + 1
    ny = int(math.ceil((ymax + py - y0) / h)) + 1
    return _Raster(x0, y0, h, nx, ny, limit=max(10.0, 3.0 * t))


def _subplanes(stack: Stack, grid: _Grid, nsub: int, end_caps: bool,
               raster: _Raster) -> dict[int, shapely.Geometry]:
    """The operand on sub-planes ``z0 + q * t / nsub`` (shape-based interpolation)."""
    sdf: dict[int, np.ndarray] = {}

    def s_of(k: int) -> np.ndarray:
        if k not in sdf:
            sdf[k] = raster.sdf(stack[k])
        return sdf[k]

    out: dict[int, shapely.Geometry] = {}
    ks = sorted(stack)
    for k in ks:
        out[k * nsub] = stack[k]
    for k in range(ks[0] - 1, ks[-1] + 1):
        lower, upper = k in stack, (k + 1) in stack
        if not (lower or upper):
            continue
        for j in range(1, nsub):
            f = j / nsub
            if lower and upper:
                s = _cubic(s_of(k - 1) if k - 1 in stack else None, s_of(k), s_of(k + 1),
                           s_of(k + 2) if k + 2 in stack else None, f)
            else:
                u = f if lower else 1 - f  # distance from the last plane, in slices
                if not end_caps or u > 0.5 + 1e-9:
                    continue
                last = k if lower else k + 1
                prev = last - 1 if lower else last + 1
                s = s_of(last)
                if prev in stack:
                    s = np.maximum(s, s + (s - s_of(prev)) * u)
            region = raster.region(s)
            if not region.is_empty:
                out[k * nsub + j] = region
    return out


def _cubic(p0: np.ndarray | None, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray | None,
           f: float) -> np.ndarray:
    """Catmull-Rom interpolation between p1 (f = 0) and p2 (f = 1).

    A missing outer neighbour is extrapolated linearly, so that between the
    last two planes of a structure the interpolation is quadratic (linear
    for a structure of two planes).
    """
    if p0 is None:
        p0 = 2 * p1 - p2
    if p3 is None:
        p3 = 2 * p2 - p1
    return 0.5 * (2 * p1 + (p2 - p0) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f * f
                  + (3 * p1 - p0 - 3 * p2 + p3) * f ** 3)


def _scaled_buffer(region: shapely.Geometry, a: float, b: float, sign: float
                   ) -> shapely.Geometry:
    """``region`` grown (sign +1) or shrunk (-1) by the ellipse of semi-axes a (x), b (y)."""
    if a <= 0 and b <= 0:
        return region
    a, b = max(a, 1e-2), max(b, 1e-2)
    if abs(a - b) <= 1e-9 * max(a, b):
        return shapely.buffer(region, sign * a, quad_segs=16)
    from shapely import affinity

    squeezed = affinity.scale(region, xfact=b / a, yfact=1.0, origin=(0.0, 0.0))
    grown = shapely.buffer(squeezed, sign * b, quad_segs=16)
    return affinity.scale(grown, xfact=a / b, yfact=1.0, origin=(0.0, 0.0))


def _margin(stack: Stack, mm: tuple[float, float, float], grow: bool, grid: _Grid,
            end_caps: bool) -> Stack:
    mx, my, mz = mm
    if not stack or (mx == 0 and my == 0 and mz == 0):
        return dict(stack)
    step = max(MAX_SUBPLANE_MM, mz / 12.0)
    nsub = max(1, int(math.ceil(grid.t / step - 1e-9)))
    dz = grid.t / nsub
    raster = _raster_for(stack, (mx, my) if grow else (0.0, 0.0), grid.t)
    sub = _subplanes(stack, grid, nsub, end_caps, raster)
    reach = int(math.floor(mz / dz + 1e-9))
    ks = sorted(stack)
    if grow:
        extra = int(math.ceil((mz + (0.5 * grid.t if end_caps else 0.0)) / grid.t))
        outputs = range(ks[0] - extra, ks[-1] + extra + 1)
    else:
        outputs = ks
    out: Stack = {}
    for k in outputs:
        q0 = k * nsub
        pieces = []
        for q in range(q0 - reach, q0 + reach + 1):
            region = sub.get(q)
            if region is None:
                if grow:
                    continue
                pieces = []
                break
            h = abs(q - q0) * dz
            scale = math.sqrt(max(0.0, 1.0 - (h / mz) ** 2)) if mz > 0 else 1.0
            pieces.append(_scaled_buffer(region, mx * scale, my * scale, 1.0 if grow else -1.0))
        if not pieces:
            continue
        r = shapely.union_all(pieces) if grow else shapely.intersection_all(pieces)
        r = _polygonal(shapely.simplify(r, 0.005, preserve_topology=True))
        if not r.is_empty:
            out[k] = r
    return out


# ----------------------------------------------------------------- building
def _lookup(rois: Sequence[ROI], name: str) -> ROI:
    exact = [r for r in rois if r.name == name]
    hit = exact or [r for r in rois if r.name.strip().lower() == name.strip().lower()]
    if not hit:
        raise _Unusable(f"operand {name!r} is not in the structure set")
    if len(hit) > 1:
        raise _Unusable(f"operand {name!r} is ambiguous: {len(hit)} ROIs carry that name")
    return hit[0]


def _evaluate(node: Node, rois: Sequence[ROI], grid: _Grid, end_caps: bool,
              warnings: list[str]) -> Stack:
    if isinstance(node, Name):
        return _leaf_stack(_lookup(rois, node.name), grid, warnings)
    if isinstance(node, BinOp):
        left = _evaluate(node.left, rois, grid, end_caps, warnings)
        right = _evaluate(node.right, rois, grid, end_caps, warnings)
        return _boolean(node.op, left, right)
    return _margin(_evaluate(node.operand, rois, grid, end_caps, warnings), node.mm,
                   node.grow, grid, end_caps)


def _grid_origin(node: Node, rois: Sequence[ROI]) -> float:
    for name in operand_names(node):
        roi = _lookup(rois, name)
        for c in roi.contours:
            if c.geometric_type.startswith("CLOSED") and len(c.points) >= 3:
                return float(c.points[:, 2].mean())
    raise _Unusable("no operand has closed contours")


def _contours(stack: Stack, grid: _Grid) -> tuple[Contour, ...]:
    out = []
    for k in sorted(stack):
        z = grid.z(k)
        for poly in shapely.get_parts(stack[k]):
            for ring in (poly.exterior, *poly.interiors):
                xy = np.asarray(ring.coords)[:-1]
                if len(xy) >= 3:
                    out.append(Contour("CLOSED_PLANAR",
                                       np.column_stack((xy, np.full(len(xy), z)))))
    return tuple(out)


def _interpreted_type(node: Node, rois: Sequence[ROI]) -> str:
    types = set()
    for name in operand_names(node):
        try:
            types.add(_lookup(rois, name).interpreted_type)
        except _Unusable:
            return ""
    return types.pop() if len(types) == 1 else ""


def _gap_note(stack: Stack, grid: _Grid) -> str | None:
    ks = sorted(stack)
    gaps = [grid.z(a + 1) for a, b in zip(ks, ks[1:], strict=False) if b - a == 2]
    if not gaps:
        return None
    where = ", ".join(f"{z:g}" for z in gaps[:5])
    return (f"the result is empty on the plane(s) at z = {where} mm between non-empty planes; "
            "the DVH engine bridges a single missing plane, so the volume there is "
            "overestimated by up to one slice of the neighbouring contours")


@dataclass(frozen=True)
class DerivedStructures:
    """The structure set with the derived ROIs appended, and what happened.

    Attributes
    ----------
    structure_set : StructureSet
        The input structure set plus the derived ROIs (numbers above the
        existing ones).
    rois : tuple of ROI
        The derived ROIs only, in definition order (an empty ROI where an
        operand was missing or empty).
    warnings : dict
        Derived ROI name -> warnings.
    derivations : tuple of Derivation
    """

    structure_set: StructureSet
    rois: tuple[ROI, ...]
    warnings: dict[str, list[str]]
    derivations: tuple[Derivation, ...]


def derive_structures(
    sset: StructureSet,
    derivations: Mapping[str, str] | Sequence[str] | Sequence[Derivation] | None,
    thickness: float | None,
    end_caps: bool = True,
) -> DerivedStructures:
    """Build derived structures and append them to a structure set.

    Definitions are built in order; a later one may use an earlier one.

    Parameters
    ----------
    sset : StructureSet
    derivations : mapping, sequence of ``"NAME=EXPRESSION"`` or of Derivation
    thickness : float or None
        Plane spacing of the structure set (mm); margins need it.
    end_caps : bool
        Whether operands continue half a slice beyond their outermost planes
        (as the DVH engine's end caps); used by margins.

    Returns
    -------
    DerivedStructures

    Raises
    ------
    DerivationError
        On a syntax error, or a derived name that is already an ROI name.
    """
    items = derivations_from(derivations)
    rois = list(sset.rois)
    number = max((r.number for r in rois), default=0)
    made: list[ROI] = []
    warnings: dict[str, list[str]] = {}
    for d in items:
        clash = [r.name for r in rois if r.name.strip().lower() == d.name.strip().lower()]
        if clash:
            raise DerivationError(f"the name is already used by ROI {clash[0]!r} of the "
                                  "structure set; choose another name", d.expression, None,
                                  d.name)
        notes: list[str] = []
        contours: tuple[Contour, ...] = ()
        try:
            if not thickness or thickness <= 0:
                raise _Unusable("the structure set's plane spacing is unknown")
            grid = _Grid(_grid_origin(d.tree, rois), float(thickness))
            stack = _evaluate(d.tree, rois, grid, end_caps, notes)
            if not stack:
                notes.append("the expression gives an empty structure")
            gap = _gap_note(stack, grid)
            if gap:
                notes.append(gap)
            contours = _contours(stack, grid)
        except _Unusable as exc:
            notes.append(f"{exc}; the derived structure {d.name!r} = {d.expression} is left "
                         "empty")
        except (ValueError, shapely.errors.GEOSException) as exc:
            notes.append(f"the geometry could not be built ({exc}); the derived structure "
                         f"{d.name!r} = {d.expression} is left empty")
            contours = ()
        number += 1
        roi = ROI(number=number, name=d.name, interpreted_type=_interpreted_type(d.tree, rois),
                  frame_of_reference_uid=sset.frame_of_reference_uid, contours=contours)
        rois.append(roi)
        made.append(roi)
        warnings[d.name] = notes
    return DerivedStructures(replace(sset, rois=tuple(rois)), tuple(made), warnings,
                             tuple(items))


# ------------------------------------------------------------------ writing
def write_derived_rtstruct(source: str | Path, rois: Sequence[ROI], out: str | Path,
                           inputs: Sequence[str | Path] = ()) -> str:
    """Write derived ROIs as a new RT Structure Set next to their source.

    The new object references the source's Frame of Reference, Study and
    referenced image series, copies the patient identity and gets a new SOP
    Instance UID.

    Parameters
    ----------
    source : path
        The structure set the ROIs were derived from.
    rois : sequence of ROI
    out : path
        File to write; refused when it is ``source`` or one of ``inputs``.
    inputs : sequence of path
        Every input file of the plan (never overwritten).

    Returns
    -------
    str
        The new SOP Instance UID.

    Raises
    ------
    InputError
        When ``out`` is an input file or cannot be written.
    """
    import pydicom

    from dvheval.testing.synthetic import ROISpec, write_rtstruct

    out_path = Path(out)
    protected = {Path(source).resolve(), *(Path(p).resolve() for p in inputs)}
    if out_path.resolve() in protected:
        raise InputError("refusing to overwrite an input file; choose another output file",
                         out_path, "--write-rtstruct")
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    for_uid = ""
    series_uid = None
    frames = ds.get("ReferencedFrameOfReferenceSequence") or []
    if frames:
        for_uid = str(frames[0].get("FrameOfReferenceUID", "") or "")
        for study in frames[0].get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                series_uid = str(series.get("SeriesInstanceUID", "") or "") or None
                break
            break
    for_uid = for_uid or str(ds.get("FrameOfReferenceUID", "") or "") or \
        next((r.frame_of_reference_uid for r in rois if r.frame_of_reference_uid), "")
    specs = [ROISpec(r.number, r.name, r.interpreted_type,
                     tuple((c.geometric_type, c.points) for c in r.contours)) for r in rois]
    try:
        return write_rtstruct(
            out_path, specs, frame_of_reference_uid=for_uid,
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
            patient_name=str(ds.get("PatientName", "") or ""),
            patient_birth_date=str(ds.get("PatientBirthDate", "") or ""),
            patient_sex=str(ds.get("PatientSex", "") or ""),
            label="DERIVED", referenced_series_uid=series_uid)
    except OSError as exc:
        raise InputError(f"cannot write the structure set ({exc})", out_path) from exc


def write_derived_for_plan(paths: Sequence[str | Path],
                           derivations: Mapping[str, str] | Sequence[str],
                           out: str | Path, thickness: float | None,
                           end_caps: bool = True) -> str:
    """Derive structures of a plan's structure set and write them to ``out``.

    Parameters
    ----------
    paths : sequence of path
        The plan's files and folders (as given to :func:`~dvheval.compute_dvhs`).
    derivations : mapping or sequence of ``"NAME=EXPRESSION"``
    out : path
        The new RT Structure Set; never one of the input files.
    thickness : float or None
        Plane spacing (the ``slice_thickness_mm`` setting of the DVH result).
    end_caps : bool

    Returns
    -------
    str
        The new SOP Instance UID.
    """
    from dvheval.dicom import expand_paths, find_inputs, read_structure_set

    files = expand_paths(paths)
    refuse_input_target(out, files)
    sset = read_structure_set(find_inputs(paths).structure_set.path)
    built = derive_structures(sset, derivations, thickness, end_caps)
    return write_derived_rtstruct(sset.path, built.rois, out, inputs=files)


def refuse_input_target(out: str | Path, files: Sequence[str | Path]) -> None:
    """Raise InputError when ``out`` is one of ``files`` (an input is never overwritten)."""
    target = Path(out).resolve()
    if any(Path(f).resolve() == target for f in files):
        raise InputError("refusing to overwrite an input file; choose another output file",
                         out, "--write-rtstruct")
