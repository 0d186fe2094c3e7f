"""Reading the constraints and report metrics of a protocol structure."""

from __future__ import annotations

from typing import Any

from dvheval.engine.metrics import Metric
from dvheval.protocol.expressions import (
    _is_number,
    _parse_limit,
    _parse_metric_text,
    _parse_unacceptable,
    _split_check,
)
from dvheval.protocol.fields import _Ctx, _Fields
from dvheval.protocol.model import Constraint, Limit
from dvheval.protocol.problems import _Bad
from dvheval.protocol.schema import (
    _ID_RE,
    CONSTRAINT_KEYS,
    PRIORITIES,
    UNIT_PCT_RX,
    VOLUME,
)
from dvheval.protocol.yaml_lines import _Map
from dvheval.vocab import Priority

#: ``acceptable`` and ``unacceptable`` limits of a constraint, and the operator
#: of the unacceptable condition.
_Bounds = tuple[Limit | None, Limit | None, str | None]


def _with_level(limit: Limit, rx: str | None) -> Limit:
    """A ``%Rx`` limit without a level takes the constraint's prescription ``rx``."""
    if limit.unit == UNIT_PCT_RX:
        return Limit(limit.value, limit.unit, limit.level or rx, limit.text)
    return limit


class _ConstraintReader(_Fields):
    """Reads ``constraints`` and ``report`` entries into :class:`Constraint`."""

    def read_report(self, r: Any, line: int, path: str, ctx: _Ctx) -> Constraint | None:
        """A report-only metric of the structure ``ctx`` (``Volume`` or a DVH metric)."""
        if not (isinstance(r, str) and r.strip()):
            self.error(line, path, f"expected a metric name, got {r!r}")
            return None
        text = r.strip()
        metric: Metric | None
        if text.lower() == VOLUME.lower():
            name, metric = VOLUME, None
        else:
            try:
                name, metric = _parse_metric_text(text, ctx.alpha_beta)
            except _Bad as exc:
                self.error(line, path, str(exc))
                return None
            if metric.needs_prescription and ctx.prescription is None:
                self.error(line, path, f"{text} needs a prescription: give the structure one")
                return None
        cid = f"{ctx.name}: {name} (report)"
        if not self.new_id(cid, line, path):
            return None
        return Constraint(
            id=cid, structure=ctx.name, metric_name=name, metric=metric,
            priority=Priority.REPORT, prescription=ctx.prescription, text=text, line=line,
        )

    def read_constraint(
        self, m: Any, line: int, path: str, ctx: _Ctx | None, alternative: str | None
    ) -> Constraint | None:
        """A constraint of the structure ``ctx``, or of an ``alternative`` when one is named."""
        got = self._read_constraint(m, line, path, ctx, alternative)
        if got is None and isinstance(m, _Map) and isinstance(m.get("id"), str):
            # a broken constraint keeps its id known: 'replaces' must not fail as well
            self.ids.setdefault(m["id"].strip(), self.key_line(m, "id"))
        return got

    def _read_constraint(
        self, m: Any, line: int, path: str, ctx: _Ctx | None, alternative: str | None
    ) -> Constraint | None:
        """The constraint of :meth:`read_constraint`; None (and errors) when unusable.

        Problems are recorded in the order the fields are read: keys, check,
        prescription, acceptable and unacceptable limits, priority, sources, id.
        """
        if not isinstance(m, _Map):
            self.error(line, path, "expected a mapping with 'check' and 'source'")
            return None
        assert ctx is not None
        spec = dict(CONSTRAINT_KEYS)
        if alternative is not None:
            spec["structure"] = True
        self.keys(m, path, spec)
        text = self.get(m, "check", path, "str")
        if text is None:
            return None
        cline, cpath = self.key_line(m, "check"), f"{path}.check"
        try:
            metric_text, op, limit_text = _split_check(text)
            name, metric = _parse_metric_text(metric_text, ctx.alpha_beta)
            limit = _parse_limit(limit_text, metric, metric_text)
        except _Bad as exc:
            self.error(cline, cpath, str(exc))
            return None
        got = self.resolve_prescription(m, path, text, metric, limit, ctx)
        if got is None:
            return None
        limit, rx = got
        acceptable, unacceptable, unacceptable_op = self.read_bounds(
            m, path, metric, metric_text, op, limit, rx)
        priority = self.read_priority(m, path)
        sources = self.get(m, "source", path, "strs", ())
        self.source_refs(sources, self.key_line(m, "source"), f"{path}.source")
        detail = self.get(m, "detail", path, "str")
        cid = self.read_id(m, path, line, f"{ctx.name}: {metric_text} {op} {limit_text}")
        if cid is None:
            return None
        return Constraint(
            id=cid,
            structure=ctx.name,
            metric_name=name,
            metric=metric,
            operator=op,
            limit=limit,
            acceptable=acceptable,
            unacceptable=unacceptable,
            unacceptable_operator=unacceptable_op,
            priority=priority,
            prescription=rx,
            sources=sources,
            citation=self.citation(sources, detail),
            checked_against=self.get(m, "checked_against", path, "str"),
            note=self.get(m, "note", path, "str"),
            alternative=alternative,
            text=text,
            line=line,
        )

    def resolve_prescription(
        self, m: _Map, path: str, text: str, metric: Metric, limit: Limit, ctx: _Ctx
    ) -> tuple[Limit, str | None] | None:
        """The limit with its level, and the constraint's prescription level.

        The level is the constraint's ``prescription``, else the one the
        limit names (``90% of PTV30``), else the structure's. None (and an
        error) when the constraint cannot be used.
        """
        cline, cpath = self.key_line(m, "check"), f"{path}.check"
        rx = None
        if "prescription" in m:
            given = self.get(m, "prescription", path, "str")
            if given is not None:
                rx = self.level_ref(given, self.key_line(m, "prescription"), f"{path}.prescription")
        if limit.level is not None:
            lvl = self.level_ref(limit.level, cline, cpath)
            if lvl is None:
                return None
            if rx is not None and rx != lvl:
                self.error(cline, cpath, f"the limit is relative to {lvl} but prescription is {rx}")
            rx = lvl
        rx = rx or ctx.prescription
        needs_rx = metric.needs_prescription or limit.unit == UNIT_PCT_RX
        if needs_rx and rx is None:
            self.error(cline, cpath, f"{text!r} is relative to a prescription: write "
                       "'<x>% of <level>' or give the structure (or constraint) a prescription")
            return None
        if limit.unit == UNIT_PCT_RX:
            limit = Limit(limit.value, limit.unit, rx, limit.text)
        return limit, rx

    def read_bounds(
        self, m: _Map, path: str, metric: Metric, metric_text: str, op: str, limit: Limit,
        rx: str | None,
    ) -> _Bounds:
        """The ``acceptable`` and ``unacceptable`` limits, when given and valid."""
        acceptable = None
        if "acceptable" in m:
            acceptable = self.read_acceptable(m, path, metric, metric_text, op, limit, rx)
        unacceptable = unacceptable_op = None
        if "unacceptable" in m:
            got = self.read_unacceptable(m, path, metric, metric_text, op, limit, acceptable, rx)
            if got is not None:
                unacceptable, unacceptable_op = got
        return acceptable, unacceptable, unacceptable_op

    def read_priority(self, m: _Map, path: str) -> Priority:
        """The constraint's priority (``hard`` when not given)."""
        priority = self.get(m, "priority", path, "str", Priority.HARD.value)
        if priority in PRIORITIES:
            return Priority(priority)
        self.error(self.key_line(m, "priority"), f"{path}.priority",
                   f"priority {priority!r} is not one of {', '.join(PRIORITIES)}")
        return Priority.HARD  # never used: the protocol has an error

    def read_id(self, m: _Map, path: str, line: int, default: str) -> str | None:
        """The constraint's id (``default`` when not given), registered as taken."""
        cid = self.get(m, "id", path, "str")
        if cid is not None and not _ID_RE.match(cid):
            self.error(self.key_line(m, "id"), f"{path}.id",
                       f"id {cid!r}: use letters, digits, '_', '.', ':' and '-'")
        cid = cid or default
        if not self.new_id(cid, self.key_line(m, "id") if "id" in m else line, path):
            return None
        return str(cid)

    def read_acceptable(
        self, m: _Map, path: str, metric: Metric, metric_text: str, op: str, limit: Limit,
        rx: str | None,
    ) -> Limit | None:
        """The looser limit up to which the verdict is ACCEPTABLE."""
        line, apath = self.key_line(m, "acceptable"), f"{path}.acceptable"
        raw = m["acceptable"]
        if not (isinstance(raw, str) or _is_number(raw)):
            self.error(line, apath, f"expected a limit such as '36 Gy', got {raw!r}")
            return None
        try:
            acc = _with_level(_parse_limit(str(raw), metric, metric_text), rx)
        except _Bad as exc:
            self.error(line, apath, str(exc))
            return None
        if acc.unit != limit.unit or acc.level != limit.level:
            self.error(line, apath, f"write the acceptable limit in the unit of the limit "
                       f"({limit.text!r})")
            return None
        looser = acc.value > limit.value if op in ("<", "<=") else acc.value < limit.value
        if not looser:
            side = "above" if op in ("<", "<=") else "below"
            self.error(line, apath, f"the acceptable limit {acc.text!r} must lie {side} the "
                       f"limit {limit.text!r}")
            return None
        return acc

    def read_unacceptable(
        self, m: _Map, path: str, metric: Metric, metric_text: str, op: str, limit: Limit,
        acceptable: Limit | None, rx: str | None,
    ) -> tuple[Limit, str] | None:
        """The ``unacceptable`` condition: operator and limit, checked against the limit."""
        line, upath = self.key_line(m, "unacceptable"), f"{path}.unacceptable"
        raw = m["unacceptable"]
        try:
            uop, unacc = _parse_unacceptable(raw, op, metric, metric_text)
        except _Bad as exc:
            self.error(line, upath, str(exc))
            return None
        unacc = _with_level(unacc, rx)
        if unacc.unit != limit.unit or unacc.level != limit.level:
            self.error(line, upath, f"write the unacceptable limit in the unit of the limit "
                       f"({limit.text!r})")
            return None
        floor = op in (">=", ">")
        side = "below" if floor else "above"
        beyond = unacc.value < limit.value if floor else unacc.value > limit.value
        if not beyond:
            self.error(line, upath, f"the unacceptable limit {unacc.text!r} must lie {side} "
                       f"the limit {limit.text!r}")
            return None
        if acceptable is not None and not _beyond_acceptable(unacc.value, uop, acceptable, floor):
            self.error(line, upath, f"the unacceptable condition {raw.strip()!r} overlaps "
                       f"the acceptable limit {acceptable.text!r}: it must lie {side} it")
            return None
        return unacc, uop


def _beyond_acceptable(value: float, uop: str, acceptable: Limit, floor: bool) -> bool:
    """Whether an unacceptable condition ``<uop> value`` lies beyond the acceptable limit."""
    if floor:
        return value < acceptable.value or (value == acceptable.value and uop == "<")
    return value > acceptable.value or (value == acceptable.value and uop == ">")
