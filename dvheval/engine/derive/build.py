"""Building derived structures as ROIs of a structure set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import shapely

from dvheval.dicom import ROI, Contour, StructureSet
from dvheval.engine.derive.regions import (
    PlaneGrid,
    Stack,
    Unusable,
    boolean_stack,
    leaf_stack,
    margin_stack,
)
from dvheval.engine.derive.syntax import (
    BinOp,
    Derivation,
    DerivationError,
    Name,
    Node,
    derivations_from,
    operand_names,
)


# ----------------------------------------------------------------- building
def _lookup(rois: Sequence[ROI], name: str) -> ROI:
    exact = [r for r in rois if r.name == name]
    hit = exact or [r for r in rois if r.name.strip().lower() == name.strip().lower()]
    if not hit:
        raise Unusable(f"operand {name!r} is not in the structure set")
    if len(hit) > 1:
        raise Unusable(f"operand {name!r} is ambiguous: {len(hit)} ROIs carry that name")
    return hit[0]


def _evaluate(node: Node, rois: Sequence[ROI], grid: PlaneGrid, end_caps: bool,
              warnings: list[str]) -> Stack:
    if isinstance(node, Name):
        return leaf_stack(_lookup(rois, node.name), grid, warnings)
    if isinstance(node, BinOp):
        left = _evaluate(node.left, rois, grid, end_caps, warnings)
        right = _evaluate(node.right, rois, grid, end_caps, warnings)
        return boolean_stack(node.op, left, right)
    return margin_stack(_evaluate(node.operand, rois, grid, end_caps, warnings), node.mm,
                   node.grow, grid, end_caps)


def _grid_origin(node: Node, rois: Sequence[ROI]) -> float:
    for name in operand_names(node):
        roi = _lookup(rois, name)
        for c in roi.contours:
            if c.geometric_type.startswith("CLOSED") and len(c.points) >= 3:
                return float(c.points[:, 2].mean())
    raise Unusable("no operand has closed contours")


def _contours(stack: Stack, grid: PlaneGrid) -> tuple[Contour, ...]:
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
        except Unusable:
            return ""
    return types.pop() if len(types) == 1 else ""


def _gap_note(stack: Stack, grid: PlaneGrid) -> str | None:
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
                raise Unusable("the structure set's plane spacing is unknown")
            grid = PlaneGrid(_grid_origin(d.tree, rois), float(thickness))
            stack = _evaluate(d.tree, rois, grid, end_caps, notes)
            if not stack:
                notes.append("the expression gives an empty structure")
            gap = _gap_note(stack, grid)
            if gap:
                notes.append(gap)
            contours = _contours(stack, grid)
        except Unusable as exc:
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
