"""Matching a plan's ROI names to the structures of a protocol.

Names and aliases are compared after normalising (:func:`normalize_name`);
``patterns`` are regular expressions already checked to be safe from
catastrophic backtracking (:mod:`dvheval.protocol.patterns`) and are tried
only on names no longer than a DICOM ROI Name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dvheval.protocol.model import Protocol, StructureSpec, normalize_name
from dvheval.protocol.schema import MAX_ROI_NAME
from dvheval.vocab import MatchState


@dataclass(frozen=True)
class RoiMatch:
    """A plan ROI assigned to a protocol structure.

    ``how`` is ``"name"`` (the canonical name), ``"alias"`` or ``"pattern"``;
    ``by`` is the alias or regular expression that matched; ``index`` the
    ROI's position in the list given to :func:`match_structures`.
    """

    structure: str
    roi: str
    how: str
    by: str
    index: int


@dataclass
class StructureMatch:
    """Which plan ROI stands for which protocol structure.

    Attributes
    ----------
    matched : dict
        Protocol structure -> :class:`RoiMatch`.
    missing : list of str
        Protocol structures no ROI matched.
    ambiguous : dict
        Protocol structure -> reason; several ROIs matched and none is
        preferred. Such a structure is not evaluated.
    candidates : dict
        Protocol structure -> every ROI that matched it (ambiguous ones too).
    unmatched : list of str
        ROIs that match no protocol structure.
    notes : list of str
        Choices made (an exact canonical name preferred over other matches).
    """

    matched: dict[str, RoiMatch] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    ambiguous: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, list[RoiMatch]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def status(self, structure: str) -> MatchState:
        """``matched``, ``ambiguous`` or ``missing`` (equal to those strings)."""
        if structure in self.matched:
            return MatchState.MATCHED
        return MatchState.AMBIGUOUS if structure in self.ambiguous else MatchState.MISSING

    def present(self, structure: str) -> bool:
        """True when at least one ROI matched the structure."""
        return bool(self.candidates.get(structure))

    def to_dict(self) -> dict[str, Any]:
        """The match as plain data, for the JSON report."""
        return {
            "matched": [
                {"structure": m.structure, "roi": m.roi, "how": m.how, "by": m.by}
                for m in self.matched.values()
            ],
            "missing": list(self.missing),
            "ambiguous": [
                {"structure": s, "rois": [c.roi for c in self.candidates.get(s, [])],
                 "reason": r}
                for s, r in self.ambiguous.items()
            ],
            "unmatched_rois": list(self.unmatched),
            "notes": list(self.notes),
        }


def _roi_hits(spec: StructureSpec, roi: str) -> tuple[str, str] | None:
    """How ``roi`` matches ``spec`` (``name``, ``alias``, ``pattern``) and by what, or None."""
    key = normalize_name(roi)
    if key == normalize_name(spec.name):
        return "name", spec.name
    for a in spec.aliases:
        if key == normalize_name(a):
            return "alias", a
    name = roi.strip()
    if len(name) > MAX_ROI_NAME:  # longer than a DICOM ROI Name: names and aliases only
        return None
    for p in spec.patterns:
        if p.fullmatch(name):
            return "pattern", p.pattern
    return None


def match_structures(protocol: Protocol, roi_names: Sequence[str]) -> StructureMatch:
    """Assign plan ROIs to the protocol's structures.

    A ROI matches a structure by its canonical name or an alias (compared
    after trimming, ignoring case, with ' ', '_' and '-' equal) or by one of
    its regular expressions (full match, ignoring case). A name or alias
    match wins over a pattern match of another structure; a ROI matching the
    patterns of several structures is used for none (reported as ambiguous).
    When several ROIs match one structure, the single ROI carrying its
    canonical name is used; otherwise the structure is ambiguous and not
    guessed.

    Parameters
    ----------
    protocol : Protocol
    roi_names : sequence of str
        ROI names of the plan, in order (duplicates allowed).

    Returns
    -------
    StructureMatch
    """
    result = StructureMatch()
    cands: dict[str, list[RoiMatch]] = {s.name: [] for s in protocol.structures}
    conflicts: dict[str, list[str]] = {s.name: [] for s in protocol.structures}
    for i, roi in enumerate(roi_names):
        _assign_roi(protocol, i, roi, cands, conflicts, result)
    for spec in protocol.structures:
        _settle(spec.name, cands[spec.name], conflicts[spec.name], result)
    return result


def _assign_roi(protocol: Protocol, index: int, roi: str, cands: dict[str, list[RoiMatch]],
                conflicts: dict[str, list[str]], result: StructureMatch) -> None:
    """Add ROI ``roi`` to the candidates of the structure it matches, if exactly one."""
    hits = []
    for spec in protocol.structures:
        hit = _roi_hits(spec, roi)
        if hit:
            hits.append(RoiMatch(spec.name, roi, hit[0], hit[1], index))
    exact = [h for h in hits if h.how != "pattern"]
    if exact:  # names and aliases are unique across structures
        cands[exact[0].structure].append(exact[0])
    elif len(hits) == 1:
        cands[hits[0].structure].append(hits[0])
    elif hits:
        names = " and ".join(h.structure for h in hits)
        for h in hits:
            conflicts[h.structure].append(f"ROI {roi!r} matches the patterns of {names}")
        result.notes.append(f"ROI {roi!r} matches the patterns of {names}; used for none")
    else:
        result.unmatched.append(roi)


def _settle(name: str, found: list[RoiMatch], conflicts: list[str],
            result: StructureMatch) -> None:
    """Record structure ``name`` as matched, missing or ambiguous from its candidates."""
    result.candidates[name] = list(found)
    if len(found) == 1 and not conflicts:
        result.matched[name] = found[0]
        return
    if not found and not conflicts:
        result.missing.append(name)
        return
    by_name = [c for c in found if c.how == "name"]
    if len(by_name) == 1:
        result.matched[name] = by_name[0]
        others = ", ".join(repr(c.roi) for c in found if c is not by_name[0])
        extra = [*([f"also matched: {others}"] if others else []), *conflicts]
        result.notes.append(
            f"{name}: used ROI {by_name[0].roi!r} (exact name); " + "; ".join(extra)
        )
        return
    reasons = list(conflicts)
    if found:
        listed = ", ".join(f"{c.roi!r} ({c.how} {c.by!r})" for c in found)
        reasons.insert(0, f"{len(found)} ROIs match: {listed}")
    result.ambiguous[name] = "; ".join(reasons) + "; rename or remove all but one"
