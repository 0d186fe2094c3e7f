"""The data model of a loaded protocol: levels, structures, constraints, alternatives.

Every class is a frozen dataclass built by :mod:`dvheval.protocol.reader`
once the whole file has been validated; nothing here reads files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dvheval.engine.metrics import Metric
from dvheval.vocab import Priority


def normalize_name(name: str) -> str:
    """Name as compared for matching: trimmed, lower case, runs of ' ', '_', '-' as one '_'."""
    return re.sub(r"[\s_-]+", "_", name.strip().lower()).strip("_")


@dataclass(frozen=True)
class Source:
    """A publication a protocol's numbers come from."""

    key: str
    short: str
    reference: str
    doi: str | None = None
    url: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PrescriptionLevel:
    """A named prescription dose level; ``dose_gy`` None means "from the plan"."""

    name: str
    dose_gy: float | None
    aliases: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class Limit:
    """A limit value in the unit it is compared in.

    ``unit`` is ``"Gy"``, ``"cc"``, ``"%"`` (of the structure volume) or
    ``"%Rx"`` (of the prescription ``level``); cGy are converted to Gy.
    """

    value: float
    unit: str
    level: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Constraint:
    """A dose-volume limit or a report-only metric of one structure.

    Attributes
    ----------
    id : str
        Unique within the protocol (written or made from structure and check).
    structure : str
        Canonical name of the protocol structure.
    metric_name : str
        The metric as evaluated (the structure's alpha/beta filled in).
    metric : Metric or None
        Parsed metric; None for the ``Volume`` report.
    operator : str or None
        ``<=``, ``<``, ``>=``, ``>``; None for a report-only metric.
    limit, acceptable : Limit or None
        The limit, and the looser limit up to which the verdict is ACCEPTABLE.
    unacceptable : Limit or None
        A hard floor (or ceiling) beyond the limit: a value that meets the
        condition ``<value> <unacceptable_operator> <unacceptable>`` makes the
        verdict FAIL and closes the gate whatever the priority (an RTOG-style
        "deviation unacceptable"). Same unit and prescription level as
        ``limit``; it lies on the violating side of ``limit`` and, when both
        are given, at or beyond ``acceptable``.
    unacceptable_operator : str or None
        ``<`` or ``<=`` for a constraint written with ``>=``/``>`` (a floor),
        ``>`` or ``>=`` for one written with ``<=``/``<`` (a ceiling); None
        when there is no ``unacceptable`` limit.
    priority : Priority
        ``hard``, ``objective`` or ``report`` (a member of
        :class:`dvheval.vocab.Priority`, equal to its string).
    prescription : str or None
        Prescription level used for ``%`` limits, ``V<x>%`` and ``[%]`` metrics.
    citation : str
        Short citation (sources' short labels and the detail).
    alternative : str or None
        Id of the alternative that brings this constraint in, if any.
    """

    id: str
    structure: str
    metric_name: str
    metric: Metric | None
    operator: str | None = None
    limit: Limit | None = None
    acceptable: Limit | None = None
    unacceptable: Limit | None = None
    unacceptable_operator: str | None = None
    priority: Priority = Priority.HARD
    prescription: str | None = None
    sources: tuple[str, ...] = ()
    citation: str = ""
    checked_against: str | None = None
    note: str | None = None
    alternative: str | None = None
    text: str = ""
    line: int | None = None

    @property
    def is_report(self) -> bool:
        """True for a report-only metric (no limit)."""
        return self.operator is None


@dataclass(frozen=True)
class StructureSpec:
    """A structure the protocol knows, and how plan ROIs are recognised."""

    name: str
    aliases: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    required: bool = True
    type: str | None = None
    prescription: str | None = None
    alpha_beta: float | None = None
    description: str | None = None
    constraints: tuple[Constraint, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Alternative:
    """Constraints that apply instead of others while a condition holds.

    The alternative is active when every structure in ``present`` matched at
    least one ROI of the plan (an ambiguous match counts) and, if
    ``condition`` is set, the caller asserted it.
    While active, the constraints listed in ``replaces`` do not apply, the
    structures in ``makes_optional`` are no longer required and
    ``constraints`` apply.
    """

    id: str
    description: str
    present: tuple[str, ...] = ()
    condition: str | None = None
    replaces: tuple[str, ...] = ()
    makes_optional: tuple[str, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    citation: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Protocol:
    """A loaded, validated protocol."""

    name: str
    title: str
    version: str
    date: str
    fractions: int
    prescriptions: dict[str, PrescriptionLevel]
    structures: tuple[StructureSpec, ...]
    sources: dict[str, Source] = field(default_factory=dict)
    alternatives: tuple[Alternative, ...] = ()
    conditions: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    checked_against: str | None = None
    notes: tuple[str, ...] = ()
    file: str | None = None
    sha256: str = ""
    derived: dict[str, str] = field(default_factory=dict)

    def structure(self, name: str) -> StructureSpec | None:
        """The protocol structure with this canonical name, or None."""
        for s in self.structures:
            if s.name == name:
                return s
        return None

    def constraints(self) -> list[Constraint]:
        """Every constraint and report metric, alternatives' ones last."""
        out = [c for s in self.structures for c in s.constraints]
        out += [c for a in self.alternatives for c in a.constraints]
        return out

    def find_level(self, name: str) -> str | None:
        """The prescription level called ``name`` (or one of its aliases), or None."""
        key = normalize_name(name)
        for level in self.prescriptions.values():
            if key == normalize_name(level.name) or key in map(normalize_name, level.aliases):
                return level.name
        return None

    def identity(self) -> dict[str, Any]:
        """Name, version, date, file and content hash, for reports."""
        return {
            "name": self.name,
            "title": self.title,
            "version": self.version,
            "date": self.date,
            "file": self.file,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class ProtocolSummary:
    """One line of :func:`list_protocols`; ``error`` is set for an invalid file."""

    name: str
    file: str
    sha256: str
    title: str | None = None
    version: str | None = None
    date: str | None = None
    fractions: int | None = None
    prescriptions: dict[str, float | None] = field(default_factory=dict)
    constraints: int = 0
    error: str | None = None
