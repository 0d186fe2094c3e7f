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

from dvheval.engine.derive.build import DerivedStructures, derive_structures
from dvheval.engine.derive.output import (
    refuse_input_target,
    write_derived_for_plan,
    write_derived_rtstruct,
)
from dvheval.engine.derive.syntax import (
    BinOp,
    Derivation,
    DerivationError,
    Margin,
    Name,
    Node,
    derivations_from,
    operand_names,
    parse_derivation,
    parse_expression,
)

__all__ = [
    "BinOp",
    "Derivation",
    "DerivationError",
    "DerivedStructures",
    "Margin",
    "Name",
    "Node",
    "derivations_from",
    "derive_structures",
    "operand_names",
    "parse_derivation",
    "parse_expression",
    "refuse_input_target",
    "write_derived_for_plan",
    "write_derived_rtstruct",
]
