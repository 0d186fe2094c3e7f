"""Clinical protocols: prescriptions, structures and dose-volume constraints.

A protocol is a YAML file (see ``protocols/README.md`` for the full format and
``dvheval/schemas/protocol.schema.json`` for its JSON Schema)::

    format_version: 1
    name: bone-sib-30-40-10fx          # lower case, the file's stem
    title: Bone metastases, SIB 30/40 Gy in 10 fractions
    version: "1.0"
    date: "2025-01-01"
    sources:                           # every limit cites one of these
      quantec-cord:
        short: QUANTEC spinal cord (Kirkpatrick 2010)
        reference: Kirkpatrick JP et al. Int J Radiat Oncol Biol Phys 2010;76:S42-S49.
    fractions: 10
    prescriptions:                     # named dose levels
      PTV30: {dose_gy: 30, aliases: [PTV_3000]}
    structures:
      - name: SpinalCord               # TG-263 name
        aliases: [Myelon, SC, cord]    # compared case-insensitively, ' ' = '_' = '-'
        patterns: ['(spinal[ _-]?)?cord']   # Python regex, full match, ignoring case
        alpha_beta: 0.87               # for [EQD2] / [BED] metrics without a/b
        constraints:
          - id: cord-dmax
            check: Dmax <= 34 Gy       # <metric> <operator> <limit>
            acceptable: 35 Gy          # optional second limit: ACCEPTABLE verdict
            priority: hard             # or objective
            source: quantec-cord
        report: [Dmax, D2%, D0.5cc, "Dmax[EQD2]"]

Constraint strings are parsed strictly: a TG-263 metric as understood by
:func:`dvheval.engine.metrics.parse_metric`, one of ``<=``, ``<``, ``>=``, ``>``,
and a limit with its unit: ``34 Gy``, ``3400 cGy``, ``0.35 cc``, ``32 %``, or
a percentage of a prescription level, ``90% of PTV30`` (``107%`` alone refers
to the structure's default prescription). The unit may be left out only when
the metric names its output unit in brackets (``V20Gy[%] < 32``).

Loading reports every problem with its file, line and field. Hostile input is
refused with a located error rather than a hang: files are capped in size,
YAML nesting, aliases and expanded nodes are bounded, numbers must be finite
and plausible, and ``patterns`` must not be able to backtrack catastrophically
(see :data:`MAX_FILE_BYTES` and the constants next to it).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dvheval.engine.metrics import Metric, parse_metric
from dvheval.errors import DvhevalError, MetricError

try:  # Python 3.11+
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

#: The protocol file format this version reads.
FORMAT_VERSION = 1
#: Constraint priorities. ``hard`` limits gate a plan; ``objective`` ones are planning aims.
PRIORITIES = ("hard", "objective")
#: Comparison operators of a constraint.
OPERATORS = ("<=", "<", ">=", ">")
#: Structure types (informative only).
STRUCTURE_TYPES = ("target", "oar", "other")
#: Report-only pseudo-metric: the structure's volume in cm^3.
VOLUME = "Volume"

# Bounds that keep a hostile protocol file from hanging or crashing the loader.
#: Largest protocol file, in bytes (the shipped ones are below 20 kB).
MAX_FILE_BYTES = 1_000_000
#: Deepest nesting of YAML mappings and lists (the format needs 5).
MAX_DEPTH = 50
#: Most YAML aliases (``*name``) in one file.
MAX_ALIASES = 100
#: Most YAML nodes, as written and once aliases are expanded (stops "billion
#: laughs" files; the largest shipped protocol has about 1 500).
MAX_NODES = 20_000
#: Most structures, and most items of any other list or mapping of the format.
MAX_STRUCTURES = 500
MAX_ITEMS = 200
#: Longest check, limit or report-metric text, in characters.
MAX_EXPRESSION = 200
#: Longest regular expression in ``patterns``, and most repeats in one.
MAX_PATTERN_LENGTH = 200
MAX_PATTERN_REPEATS = 3
#: Patterns are only tried on ROI names up to this length (DICOM LO, 64 characters).
MAX_ROI_NAME = 64
#: Plausible ranges of numbers. Doses (limits, prescriptions) lie in (0, 1000] Gy,
#: percentages of a prescription in (0, 1000] %, volumes in [0, 100000] cc.
MAX_DOSE_GY = 1000.0
MAX_PERCENT_RX = 1000.0
MAX_VOLUME_CC = 100_000.0
#: Fractions lie in 1..100, alpha/beta in (0, 100] Gy, gEUD's a in [-100, 100].
MAX_FRACTIONS = 100
MAX_ALPHA_BETA = 100.0
MAX_GEUD_A = 100.0

# Keys allowed at each level: name -> required?
TOP_KEYS = {
    "format_version": True,
    "name": True,
    "title": True,
    "version": True,
    "date": True,
    "description": False,
    "sources": True,
    "checked_against": False,
    "fractions": True,
    "prescriptions": True,
    "conditions": False,
    "structures": True,
    "alternatives": False,
    "derived": False,
    "notes": False,
}
SOURCE_KEYS = {"short": True, "reference": True, "doi": False, "url": False, "note": False}
PRESCRIPTION_KEYS = {"dose_gy": False, "aliases": False, "description": False}
STRUCTURE_KEYS = {
    "name": True,
    "aliases": False,
    "patterns": False,
    "required": False,
    "type": False,
    "prescription": False,
    "alpha_beta": False,
    "description": False,
    "constraints": False,
    "report": False,
}
CONSTRAINT_KEYS = {
    "check": True,
    "id": False,
    "priority": False,
    "acceptable": False,
    "unacceptable": False,
    "source": True,
    "detail": False,
    "checked_against": False,
    "note": False,
    "prescription": False,
}
ALTERNATIVE_KEYS = {
    "id": True,
    "description": True,
    "when": True,
    "replaces": False,
    "makes_optional": False,
    "constraints": False,
    "source": False,
}
WHEN_KEYS = {"present": False, "condition": False}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_CHECK_RE = re.compile(
    r"^(?P<metric>[^<>≤≥]+?)\s*(?P<op><=|>=|=<|=>|==|=|<|>|≤|≥)\s*(?P<limit>[^<>=≤≥]+?)\s*$"
)
_LIMIT_RE = re.compile(
    r"^(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[A-Za-z%][A-Za-z0-9]*|%)?"
    r"(?:\s+of\s+(?P<level>\S+))?$"
)
_UNACCEPTABLE_RE = re.compile(r"^(?P<op><=|>=|=<|=>|==|=|<|>|≤|≥)\s*(?P<limit>[^<>=≤≥]+?)$")
_UNITS = {"gy": "Gy", "cgy": "cGy", "cc": "cc", "cm3": "cc", "%": "%"}

#: Units a compared value can have: dose in Gy, volume in cm^3, volume in per
#: cent of the structure, dose in per cent of a prescription.
UNIT_GY, UNIT_CC, UNIT_PCT, UNIT_PCT_RX = "Gy", "cc", "%", "%Rx"


# ----------------------------------------------------------------- errors
class ProtocolError(DvhevalError):
    """A protocol file cannot be used as written.

    Parameters
    ----------
    message : str
        What is wrong, in words the protocol's author can act on.
    file : str or Path, optional
        The protocol file.
    line : int, optional
        1-based line in the file.
    field : str, optional
        Dotted path of the field, e.g. ``structures[SpinalCord].constraints[0].check``.

    Attributes
    ----------
    errors : list of ProtocolError
        When raised by :func:`load_protocol`, every problem found in the file
        (this error is the first of them).
    """

    def __init__(
        self,
        message: str,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.errors: list[ProtocolError] = [self]
        where = self.file or "<protocol>"
        if line is not None:
            where += f":{line}"
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)


class _Bad(Exception):
    """A value is wrong; the text says why (located by the caller)."""


# ------------------------------------------------------------ data model
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
    priority : str
        ``"hard"``, ``"objective"`` or ``"report"``.
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
    priority: str = "hard"
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


# ----------------------------------------------------------- YAML with lines
class _Map(dict):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Seq(list):
    """A YAML sequence that remembers the line of itself and of each item."""

    line: int = 0
    item_lines: list[int]


class _Limit(yaml.MarkedYAMLError):
    """The YAML is well formed but exceeds a bound of the loader (message is the problem)."""


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that leaves dates as text and bounds nesting and aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.aliases = 0
        self.nodes = 0
        self.expanded = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, refusing too deep nesting and too many aliases."""
        event = self.peek_event()
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Limit(problem=f"more than {MAX_NODES} YAML values",
                         problem_mark=event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Limit(problem=f"more than {MAX_ALIASES} YAML aliases ('*name'); "
                             "write the values out", problem_mark=event.start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Limit(problem=f"nested deeper than {MAX_DEPTH} levels",
                             problem_mark=event.start_mark)
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


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _control_char_error(text: str, file: str) -> ProtocolError | None:
    m = _CONTROL_RE.search(text)
    if not m:
        return None
    line = text.count("\n", 0, m.start()) + 1
    column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    return ProtocolError(
        f"control character U+{ord(m.group()):04X} at column {column}; "
        "a protocol is plain text", file, line)


def _parse_yaml(text: str, file: str, errors: list[ProtocolError]) -> Any:
    """Parse YAML into plain data whose mappings and lists carry line numbers."""
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


def _convert(node: yaml.Node, loader: _Loader, file: str, errors: list, stack: set) -> Any:
    line = node.start_mark.line + 1
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
        if node.tag not in _SCALAR_TAGS:
            raise _Limit(problem=f"YAML tag {node.tag!r} is not allowed in a protocol",
                         problem_mark=node.start_mark)
        try:
            return loader.construct_object(node)
        except (ValueError, OverflowError) as exc:
            raise _Limit(problem=f"cannot read the value {_short(node.value)}: {exc}",
                         problem_mark=node.start_mark) from None
    if node.tag not in (_MAP_TAG, _SEQ_TAG):
        raise _Limit(problem=f"YAML tag {node.tag!r} is not allowed in a protocol",
                     problem_mark=node.start_mark)
    stack = stack | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        seq = _Seq(_convert(n, loader, file, errors, stack) for n in node.value)
        seq.line = line
        seq.item_lines = [n.start_mark.line + 1 for n in node.value]
        return seq
    out = _Map()
    out.line = line
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


# ----------------------------------------------------------------- helpers
def normalize_name(name: str) -> str:
    """Name as compared for matching: trimmed, lower case, runs of ' ', '_', '-' as one '_'."""
    return re.sub(r"[\s_-]+", "_", name.strip().lower()).strip("_")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _is_number(v: Any) -> bool:
    """True for a finite int or float (an int too large for a float is not)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _with_alpha_beta(text: str, alpha_beta: float | None) -> str:
    """Add the structure's ``a/b=`` to an ``[EQD2]``/``[BED]`` metric that has none."""
    m = re.match(r"^(.*?)\[([^\[\]]*)\]\s*$", text.strip())
    if alpha_beta is None or not m:
        return text.strip()
    opts = m.group(2)
    if re.search(r"\b(eqd2|bed)\b", opts, re.I) and not re.search(
        r"(a/b|ab|alpha/beta)\s*=", opts, re.I
    ):
        return f"{m.group(1)}[{opts.strip()}, a/b={alpha_beta:g}]"
    return text.strip()


def _parse_metric_text(text: str, alpha_beta: float | None) -> tuple[str, Metric]:
    if len(text) > MAX_EXPRESSION:
        raise _Bad(f"metric longer than {MAX_EXPRESSION} characters: {_short(text)}")
    name = _with_alpha_beta(text, alpha_beta)
    try:
        metric = parse_metric(name)
    except MetricError as exc:
        msg = str(exc)
        if "needs a/b" in msg:
            msg += "; or give the structure an alpha_beta"
        raise _Bad(msg) from None
    _check_metric_numbers(metric)
    return name, metric


def _check_metric_numbers(metric: Metric) -> None:
    """Refuse non-finite or implausible numbers inside a metric name."""
    v, name = metric.value, metric.name
    if v is not None:
        if not math.isfinite(v):
            raise _Bad(f"{_short(name)}: the number is too large")
        if metric.kind == "geud" and abs(v) > MAX_GEUD_A:
            raise _Bad(f"{_short(name)}: gEUD's a must lie between -{MAX_GEUD_A:g} and "
                       f"{MAX_GEUD_A:g}")
        if metric.kind == "dose_at_volume" and metric.value_unit == "cc" and v > MAX_VOLUME_CC:
            raise _Bad(f"{_short(name)}: a volume above {MAX_VOLUME_CC:g} cc is not plausible")
        if metric.kind in ("volume_at_dose", "volume_below_dose"):
            gy = v / 100.0 if metric.value_unit == "cGy" else v
            top = MAX_PERCENT_RX if metric.value_unit == "%" else MAX_DOSE_GY
            if gy > top:
                unit = "%" if metric.value_unit == "%" else " Gy"
                raise _Bad(f"{_short(name)}: a dose level above {top:g}{unit} is not plausible")
    ab = metric.alpha_beta
    if ab is not None and not (math.isfinite(ab) and 0 < ab <= MAX_ALPHA_BETA):
        raise _Bad(f"{_short(name)}: a/b must lie in (0, {MAX_ALPHA_BETA:g}] Gy")


def _check_limit_range(limit: Limit, text: str) -> Limit:
    """Refuse a limit outside the plausible range of its unit."""
    v = limit.value
    if limit.unit == UNIT_GY and not 0 < v <= MAX_DOSE_GY:
        raise _Bad(f"a dose limit must lie in (0, {MAX_DOSE_GY:g}] Gy, got {_short(text)}")
    if limit.unit == UNIT_PCT_RX and not 0 < v <= MAX_PERCENT_RX:
        raise _Bad(f"a percentage of the prescription must lie in (0, {MAX_PERCENT_RX:g}] %, "
                   f"got {_short(text)}")
    if limit.unit == UNIT_CC and v > MAX_VOLUME_CC:
        raise _Bad(f"a volume limit must lie in [0, {MAX_VOLUME_CC:g}] cc, got {_short(text)}")
    return limit


def _pattern_problem(pattern: str) -> str | None:
    """Why a ``patterns`` entry is refused, or None when it is safe to match.

    A pattern must compile, be at most :data:`MAX_PATTERN_LENGTH` characters
    long, use no backreference, hold at most :data:`MAX_PATTERN_REPEATS`
    repeats (``+``, ``*``, ``{m,n}`` with n > 1), and no repeat may contain
    another repeat or an alternation (``(a+)+``, ``(a|ab)*``): those can
    backtrack exponentially.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"longer than {MAX_PATTERN_LENGTH} characters"
    try:
        re.compile(pattern, re.IGNORECASE)
        tree = _sre_parse.parse(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"bad regular expression: {exc}"
    repeats = [0]

    def walk(items: Any, in_repeat: bool) -> str | None:
        for op, av in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                _lo, hi, sub = av
                if hi > 1:
                    repeats[0] += 1
                    if in_repeat:
                        return "a repeated group contains another repeat (e.g. '(a+)+')"
                    found = walk(sub, True)
                else:
                    found = walk(sub, in_repeat)
            elif name == "BRANCH":
                if in_repeat:
                    return "a repeated group contains an alternation (e.g. '(a|ab)*')"
                found = next((f for b in av[1] if (f := walk(b, in_repeat))), None)
            elif name == "SUBPATTERN":
                found = walk(av[-1], in_repeat)
            elif name in ("ASSERT", "ASSERT_NOT"):
                found = walk(av[1], in_repeat)
            elif name == "ATOMIC_GROUP":
                found = walk(av, in_repeat)
            elif name in ("GROUPREF", "GROUPREF_EXISTS"):
                return "backreferences are not allowed"
            else:
                found = None
            if found:
                return found
        return None

    found = walk(tree, False)
    if found:
        return f"{found}: such patterns can take exponential time to match"
    if repeats[0] > MAX_PATTERN_REPEATS:
        return (f"more than {MAX_PATTERN_REPEATS} repeats ('+', '*', '{{m,n}}'); "
                "write a simpler pattern or list the names as aliases")
    return None


def _explicit_unit(metric_text: str) -> str | None:
    """The output unit written in the metric's brackets, if any."""
    m = re.search(r"\[([^\[\]]*)\]\s*$", metric_text)
    if not m:
        return None
    for token in m.group(1).split(","):
        unit = _UNITS.get(token.strip().lower())
        if unit:
            return unit
    return None


def _split_check(text: str) -> tuple[str, str, str]:
    if len(text) > MAX_EXPRESSION:
        raise _Bad(f"check longer than {MAX_EXPRESSION} characters: {_short(text)}")
    m = _CHECK_RE.match(text.strip())
    if not m:
        raise _Bad(f"{text!r} is not '<metric> <operator> <limit>', e.g. 'Dmax <= 34 Gy'")
    if m["op"] not in OPERATORS:
        raise _Bad(f"operator {m['op']!r} is not allowed; use one of {', '.join(OPERATORS)}")
    return m["metric"].strip(), m["op"], m["limit"].strip()


def _parse_limit(text: str, metric: Metric, metric_text: str) -> Limit:
    """Parse a limit and check its unit against what the metric gives.

    The level of a relative limit is left None when the text names none.
    """
    if len(str(text)) > MAX_EXPRESSION:
        raise _Bad(f"limit longer than {MAX_EXPRESSION} characters: {_short(text)}")
    m = _LIMIT_RE.match(str(text).strip())
    if not m:
        raise _Bad(
            f"limit {text!r} is not '<number> <unit>' (Gy, cGy, cc or %) or '<number>% of <level>'"
        )
    value = float(m["num"])
    if not math.isfinite(value):
        raise _Bad(f"the number in limit {_short(text)} is too large")
    return _check_limit_range(_limit_in_unit(value, m, text, metric, metric_text), text)


def _limit_in_unit(value: float, m: re.Match, text: str, metric: Metric, metric_text: str
                   ) -> Limit:
    """The limit in the unit it is compared in, checked against the metric's unit."""
    raw_unit = m["unit"]
    unit = _UNITS.get(raw_unit.lower()) if raw_unit else None
    if raw_unit and unit is None:
        raise _Bad(f"unknown unit {raw_unit!r} in limit {text!r}; use Gy, cGy, cc or %")
    level = m["level"]
    if value < 0:
        what = "dose" if unit in ("Gy", "cGy") else "limit"
        raise _Bad(f"negative {what} in limit {text!r}")
    if level and unit != "%":
        raise _Bad(f"'of {level}' only follows a percentage, e.g. '90% of {level}'")
    written = unit or _explicit_unit(metric_text)
    if written is None:
        raise _Bad(
            f"limit {text!r} needs a unit (Gy, cGy, cc or %), or the metric must name its "
            "output unit in brackets, e.g. V20Gy[%]"
        )
    if metric.is_dose:
        if metric.output_unit == "%":
            if written != "%":
                raise _Bad(
                    f"{metric_text} gives per cent of the prescription; write the limit in %"
                )
            return Limit(value, UNIT_PCT_RX, level, str(text).strip())
        if written == "Gy":
            return Limit(value, UNIT_GY, None, str(text).strip())
        if written == "cGy":
            return Limit(value / 100.0, UNIT_GY, None, str(text).strip())
        if written == "%":
            return Limit(value, UNIT_PCT_RX, level, str(text).strip())
        raise _Bad(f"{metric_text} is a dose; its limit cannot be in {written}")
    # volume metric
    if level:
        raise _Bad(f"{metric_text} is a volume; 'of {level}' does not apply to its limit")
    if metric.output_unit == "cc":
        if written == "cc":
            return Limit(value, UNIT_CC, None, str(text).strip())
        if written == "%":
            base = metric.name.split("[")[0].strip()
            raise _Bad(f"{metric_text} gives cc; write {base}[%] to compare with a percentage")
        raise _Bad(f"{metric_text} is a volume in cc; its limit cannot be in {written}")
    if written != "%":
        raise _Bad(f"{metric_text} gives per cent of the structure volume; write the limit in %")
    if value > 100:
        raise _Bad(f"a volume percentage cannot exceed 100 (limit {text!r})")
    return Limit(value, UNIT_PCT, None, str(text).strip())


def _hint(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------- reader
@dataclass
class _Ctx:
    """What a constraint needs to know about its structure."""

    name: str
    alpha_beta: float | None
    prescription: str | None


class _Reader:
    """Turns parsed YAML into a :class:`Protocol`, collecting located errors."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[ProtocolError] = []
        self.levels: dict[str, PrescriptionLevel] = {}
        self.sources: dict[str, Source] = {}
        self.ids: dict[str, int] = {}

    # -- plumbing
    def error(self, line: int | None, path: str | None, message: str) -> None:
        self.errors.append(ProtocolError(message, self.file, line, path))

    @staticmethod
    def key_line(m: _Map, key: str) -> int:
        return m.key_lines.get(key, m.line)

    def keys(self, m: _Map, path: str, spec: dict[str, bool]) -> None:
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
        """Value of ``key`` if it has the right kind; else record an error."""
        if key not in m:
            return default
        v = m[key]
        where = (self.key_line(m, key), _join(path, key))
        if kind == "str":
            if isinstance(v, str) and v.strip():
                return v.strip()
            self.error(*where, f"expected non-empty text, got {_short(v)}")
        elif kind == "text":  # text, also numbers written bare (version: 1.0)
            if isinstance(v, str) and v.strip():
                return v.strip()
            if _is_number(v):
                return str(v)
            self.error(*where, f"expected text, got {_short(v)}")
        elif kind == "number":
            if _is_number(v):
                return float(v)
            self.error(*where, f"expected a finite number, got {_short(v)}")
        elif kind == "int":
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            self.error(*where, f"expected a whole number, got {_short(v)}")
        elif kind == "bool":
            if isinstance(v, bool):
                return v
            self.error(*where, f"expected true or false, got {_short(v)}")
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
        elif kind == "strs":  # one text or a list of texts
            items = [v] if isinstance(v, str) else v if isinstance(v, _Seq) else None
            if items is not None and not self.bounded(items, where):
                return default
            if items is not None and all(isinstance(x, str) and x.strip() for x in items):
                return tuple(x.strip() for x in items)
            self.error(*where, f"expected text or a list of texts, got {_short(v)}")
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
        return default

    def bounded(self, items: Sequence[Any] | dict, where: tuple[int, str], key: str = "") -> bool:
        """True when a list or mapping is within its size cap; else record an error."""
        cap = MAX_STRUCTURES if key == "structures" else MAX_ITEMS
        if len(items) <= cap:
            return True
        self.error(*where, f"{len(items)} entries; at most {cap} are allowed")
        return False

    # -- top level
    def build(self, root: Any, sha256: str) -> Protocol | None:
        if not isinstance(root, _Map):
            self.error(getattr(root, "line", 1), None,
                       "a protocol is a mapping of keys (format_version, name, ...)")
            return None
        self.keys(root, "", TOP_KEYS)
        fv = root.get("format_version")
        if "format_version" in root and fv != FORMAT_VERSION:
            self.error(self.key_line(root, "format_version"), "format_version",
                       f"this dvheval reads format_version {FORMAT_VERSION}, not {fv!r}")
        name = self.get(root, "name", "", "str", "")
        if name and not _NAME_RE.match(name):
            self.error(self.key_line(root, "name"), "name",
                       f"{name!r}: use lower-case letters, digits, '.', '_' and '-'")
        title = self.get(root, "title", "", "str", "")
        version = self.get(root, "version", "", "text", "")
        date = self.get(root, "date", "", "text", "")
        if date and not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
            self.error(self.key_line(root, "date"), "date", f"{date!r} is not YYYY-MM-DD")
        fractions = self.get(root, "fractions", "", "int", 0)
        given = root.get("fractions")
        if isinstance(given, int) and not isinstance(given, bool) and not (
            1 <= given <= MAX_FRACTIONS
        ):
            what = "be at least 1" if given < 1 else f"not exceed {MAX_FRACTIONS}"
            self.error(self.key_line(root, "fractions"), "fractions",
                       f"the number of fractions must {what}, got {_short(fractions)}")
            fractions = 0
        self.read_sources(self.get(root, "sources", "", "map"))
        self.read_prescriptions(self.get(root, "prescriptions", "", "map"))
        conditions = self.read_conditions(self.get(root, "conditions", "", "map"))
        structures = self.read_structures(self.get(root, "structures", "", "list"))
        alternatives = self.read_alternatives(
            self.get(root, "alternatives", "", "list"), structures, conditions
        )
        derived = self.read_derived(self.get(root, "derived", "", "map"))
        notes = self.get(root, "notes", "", "strs", ())
        description = self.get(root, "description", "", "str")
        checked_against = self.get(root, "checked_against", "", "str")
        if self.errors:
            return None
        return Protocol(
            name=name,
            title=title,
            version=version,
            date=date,
            fractions=fractions,
            prescriptions=dict(self.levels),
            structures=tuple(structures),
            sources=dict(self.sources),
            alternatives=tuple(alternatives),
            conditions=conditions,
            description=description,
            checked_against=checked_against,
            notes=notes,
            file=self.file,
            sha256=sha256,
            derived=derived,
        )

    def read_derived(self, m: _Map | None) -> dict[str, str]:
        """``derived:``: name -> structure expression (see :mod:`dvheval.engine.derive`)."""
        from dvheval.engine.derive import DerivationError, parse_expression

        out: dict[str, str] = {}
        seen: dict[str, str] = {}
        for key, v in (m or {}).items():
            path = f"derived.{key}"
            line = m.key_lines[key]
            if not isinstance(key, str) or not key.strip() or len(key) > MAX_ROI_NAME:
                self.error(line, path, f"a derived structure name is 1-{MAX_ROI_NAME} "
                           "characters")
                continue
            if key.strip().lower() in seen:
                self.error(line, path, f"{key!r} is derived twice (also as "
                           f"{seen[key.strip().lower()]!r})")
                continue
            if not (isinstance(v, str) and v.strip()):
                self.error(line, path, "expected an expression such as 'Kidney_L | Kidney_R'")
                continue
            try:
                parse_expression(v, key)
            except DerivationError as exc:
                where = "" if exc.position is None else f" at character {exc.position + 1}"
                self.error(line, path, f"{exc.message}{where} of {_short(v)}")
                continue
            seen[key.strip().lower()] = key
            out[key] = v.strip()
        return out

    def read_sources(self, m: _Map | None) -> None:
        if m is None:
            return
        if not m:
            self.error(m.line, "sources", "list at least one source")
        for key, v in m.items():
            path = f"sources.{key}"
            if not _ID_RE.match(key):
                self.error(m.key_lines[key], path, f"source key {key!r}: use letters, digits, "
                           "'_', '.', ':' and '-'")
            if not isinstance(v, _Map):
                self.error(m.key_lines[key], path, "expected a mapping with short and reference")
                continue
            self.keys(v, path, SOURCE_KEYS)
            self.sources[key] = Source(
                key=key,
                short=self.get(v, "short", path, "str", key),
                reference=self.get(v, "reference", path, "str", ""),
                doi=self.get(v, "doi", path, "text"),
                url=self.get(v, "url", path, "str"),
                note=self.get(v, "note", path, "str"),
            )

    def read_prescriptions(self, m: _Map | None) -> None:
        if m is None:
            return
        if not m:
            self.error(m.line, "prescriptions", "define at least one prescription level")
        seen: dict[str, str] = {}
        for key, v in m.items():
            path = f"prescriptions.{key}"
            line = m.key_lines[key]
            if not isinstance(v, _Map):
                self.error(line, path, "expected a mapping, e.g. {dose_gy: 30}")
                continue
            self.keys(v, path, PRESCRIPTION_KEYS)
            dose = None
            if v.get("dose_gy") is not None:
                dose = self.get(v, "dose_gy", path, "number")
                if dose is not None and dose <= 0:
                    self.error(self.key_line(v, "dose_gy"), f"{path}.dose_gy",
                               f"a prescription dose must be positive, got {dose:g}")
                elif dose is not None and dose > MAX_DOSE_GY:
                    self.error(self.key_line(v, "dose_gy"), f"{path}.dose_gy",
                               f"a prescription dose above {MAX_DOSE_GY:g} Gy is not plausible, "
                               f"got {dose:g}")
                    dose = None
            aliases = self.get(v, "aliases", path, "strs", ())
            for n in (key, *aliases):
                k = normalize_name(n)
                if k in seen and seen[k] != key:
                    self.error(line, path, f"{n!r} also names prescription level {seen[k]!r}")
                seen[k] = key
            self.levels[key] = PrescriptionLevel(
                key, dose, aliases, self.get(v, "description", path, "str")
            )

    def read_conditions(self, m: _Map | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, v in (m or {}).items():
            if not _ID_RE.match(key):
                self.error(m.key_lines[key], f"conditions.{key}", f"condition name {key!r}: "
                           "use letters, digits, '_', '.', ':' and '-'")
            if not (isinstance(v, str) and v.strip()):
                self.error(m.key_lines[key], f"conditions.{key}",
                           "describe the condition in words")
                continue
            out[key] = v.strip()
        return out

    def level_ref(self, name: str, line: int, path: str) -> str | None:
        if name in self.levels:
            return name
        known = ", ".join(self.levels) or "none"
        self.error(line, path, f"undefined prescription {name!r}{_hint(name, self.levels)}; "
                   f"defined: {known}")
        return None

    # -- structures
    def read_structures(self, seq: _Seq | None) -> list[StructureSpec]:
        out: list[StructureSpec] = []
        if seq is None:
            return out
        if not seq:
            self.error(seq.line, "structures", "list at least one structure")
        names: dict[str, tuple[str, int, bool]] = {}  # normalised -> (structure, line, is name)
        for i, item in enumerate(seq):
            line = seq.item_lines[i]
            if not isinstance(item, _Map):
                self.error(line, f"structures[{i}]", "expected a mapping with at least 'name'")
                continue
            label = item.get("name") if isinstance(item.get("name"), str) else str(i)
            path = f"structures[{label}]"
            self.keys(item, path, STRUCTURE_KEYS)
            name = self.get(item, "name", path, "str")
            if name is None:
                continue
            aliases = self.get(item, "aliases", path, "strs", ())
            for n, is_name in ((name, True), *((a, False) for a in aliases)):
                k = normalize_name(n)
                key = "name" if is_name else "aliases"
                where = self.key_line(item, key)
                if k not in names:
                    names[k] = (name, where, is_name)
                elif is_name and names[k][2]:
                    self.error(where, _join(path, key),
                               f"duplicate structure {name!r} (line {names[k][1]})")
                elif names[k][0] != name:
                    self.error(where, _join(path, key),
                               f"{n!r} also names structure {names[k][0]!r} (line {names[k][1]})")
            patterns = []
            for j, p in enumerate(self.get(item, "patterns", path, "strs", ())):
                problem = _pattern_problem(p)
                if problem is None:
                    patterns.append(re.compile(p, re.IGNORECASE))
                else:
                    self.error(self.key_line(item, "patterns"), f"{path}.patterns[{j}]",
                               f"pattern {_short(p)} refused: {problem}")
            stype = self.get(item, "type", path, "str")
            if stype is not None and stype not in STRUCTURE_TYPES:
                self.error(self.key_line(item, "type"), f"{path}.type",
                           f"type {stype!r} is not one of {', '.join(STRUCTURE_TYPES)}")
            ab = self.get(item, "alpha_beta", path, "number")
            if ab is not None and not 0 < ab <= MAX_ALPHA_BETA:
                what = "be positive" if ab <= 0 else f"not exceed {MAX_ALPHA_BETA:g} Gy"
                self.error(self.key_line(item, "alpha_beta"), f"{path}.alpha_beta",
                           f"alpha/beta must {what}, got {ab:g}")
                ab = None
            rx = self.get(item, "prescription", path, "str")
            if rx is not None:
                rx = self.level_ref(rx, self.key_line(item, "prescription"), f"{path}.prescription")
            elif len(self.levels) == 1:
                rx = next(iter(self.levels))
            ctx = _Ctx(name, ab, rx)
            constraints = []
            for j, c in enumerate(self.get(item, "constraints", path, "list", ())):
                got = self.read_constraint(
                    c, item["constraints"].item_lines[j], f"{path}.constraints[{j}]", ctx, None
                )
                if got is not None:
                    constraints.append(got)
            report = self.get(item, "report", path, "list", ())
            for j, r in enumerate(report):
                got = self.read_report(r, report.item_lines[j], f"{path}.report[{j}]", ctx)
                if got is not None:
                    constraints.append(got)
            out.append(StructureSpec(
                name=name,
                aliases=aliases,
                patterns=tuple(patterns),
                required=self.get(item, "required", path, "bool", True),
                type=stype,
                prescription=rx,
                alpha_beta=ab,
                description=self.get(item, "description", path, "str"),
                constraints=tuple(constraints),
                line=line,
            ))
        return out

    def new_id(self, cid: str, line: int, path: str) -> bool:
        if cid in self.ids:
            self.error(line, path, f"duplicate constraint {cid!r} (line {self.ids[cid]})")
            return False
        self.ids[cid] = line
        return True

    def read_report(self, r: Any, line: int, path: str, ctx: _Ctx) -> Constraint | None:
        if not (isinstance(r, str) and r.strip()):
            self.error(line, path, f"expected a metric name, got {r!r}")
            return None
        text = r.strip()
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
            id=cid, structure=ctx.name, metric_name=name, metric=metric, priority="report",
            prescription=ctx.prescription, text=text, line=line,
        )

    def read_constraint(
        self, m: Any, line: int, path: str, ctx: _Ctx | None, alternative: str | None
    ) -> Constraint | None:
        got = self._read_constraint(m, line, path, ctx, alternative)
        if got is None and isinstance(m, _Map) and isinstance(m.get("id"), str):
            # a broken constraint keeps its id known: 'replaces' must not fail as well
            self.ids.setdefault(m["id"].strip(), self.key_line(m, "id"))
        return got

    def _read_constraint(
        self, m: Any, line: int, path: str, ctx: _Ctx | None, alternative: str | None
    ) -> Constraint | None:
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
        cline = self.key_line(m, "check")
        cpath = f"{path}.check"
        try:
            metric_text, op, limit_text = _split_check(text)
            name, metric = _parse_metric_text(metric_text, ctx.alpha_beta)
            limit = _parse_limit(limit_text, metric, metric_text)
        except _Bad as exc:
            self.error(cline, cpath, str(exc))
            return None
        # prescription level: explicit, else the limit's, else the structure's
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
        acceptable = None
        if "acceptable" in m:
            acceptable = self.read_acceptable(m, path, metric, metric_text, op, limit, rx)
        unacceptable = unacceptable_op = None
        if "unacceptable" in m:
            got = self.read_unacceptable(m, path, metric, metric_text, op, limit, acceptable, rx)
            if got is not None:
                unacceptable, unacceptable_op = got
        priority = self.get(m, "priority", path, "str", "hard")
        if priority not in PRIORITIES:
            self.error(self.key_line(m, "priority"), f"{path}.priority",
                       f"priority {priority!r} is not one of {', '.join(PRIORITIES)}")
        sources = self.get(m, "source", path, "strs", ())
        self.source_refs(sources, self.key_line(m, "source"), f"{path}.source")
        detail = self.get(m, "detail", path, "str")
        cid = self.get(m, "id", path, "str")
        if cid is not None and not _ID_RE.match(cid):
            self.error(self.key_line(m, "id"), f"{path}.id",
                       f"id {cid!r}: use letters, digits, '_', '.', ':' and '-'")
        cid = cid or f"{ctx.name}: {metric_text} {op} {limit_text}"
        if not self.new_id(cid, self.key_line(m, "id") if "id" in m else line, path):
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

    def read_acceptable(
        self, m: _Map, path: str, metric: Metric, metric_text: str, op: str, limit: Limit,
        rx: str | None,
    ) -> Limit | None:
        line, apath = self.key_line(m, "acceptable"), f"{path}.acceptable"
        raw = m["acceptable"]
        if not (isinstance(raw, str) or _is_number(raw)):
            self.error(line, apath, f"expected a limit such as '36 Gy', got {raw!r}")
            return None
        try:
            acc = _parse_limit(str(raw), metric, metric_text)
        except _Bad as exc:
            self.error(line, apath, str(exc))
            return None
        if acc.unit == UNIT_PCT_RX:
            acc = Limit(acc.value, acc.unit, acc.level or rx, acc.text)
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
        floor = op in (">=", ">")
        example = "'< 80%'" if floor else "'> 115%'"
        if not (isinstance(raw, str) and raw.strip()):
            self.error(line, upath, f"expected an operator and a limit such as {example}, "
                       f"got {_short(raw)}")
            return None
        if len(raw) > MAX_EXPRESSION:
            self.error(line, upath, f"longer than {MAX_EXPRESSION} characters: {_short(raw)}")
            return None
        mm = _UNACCEPTABLE_RE.match(raw.strip())
        if not mm:
            self.error(line, upath, f"{_short(raw)} is not '<operator> <limit>', e.g. {example}")
            return None
        uop = mm["op"]
        if uop not in OPERATORS:
            self.error(line, upath, f"operator {uop!r} is not allowed; use one of "
                       f"{', '.join(OPERATORS)}")
            return None
        allowed = ("<", "<=") if floor else (">", ">=")
        if uop not in allowed:
            kind = "a floor" if floor else "a ceiling"
            self.error(line, upath, f"the constraint ({op}) is {kind}: its unacceptable "
                       f"condition must use {' or '.join(allowed)}, e.g. {example}")
            return None
        try:
            unacc = _parse_limit(mm["limit"], metric, metric_text)
        except _Bad as exc:
            self.error(line, upath, str(exc))
            return None
        if unacc.unit == UNIT_PCT_RX:
            unacc = Limit(unacc.value, unacc.unit, unacc.level or rx, unacc.text)
        if unacc.unit != limit.unit or unacc.level != limit.level:
            self.error(line, upath, f"write the unacceptable limit in the unit of the limit "
                       f"({limit.text!r})")
            return None
        beyond = unacc.value < limit.value if floor else unacc.value > limit.value
        if not beyond:
            side = "below" if floor else "above"
            self.error(line, upath, f"the unacceptable limit {unacc.text!r} must lie {side} "
                       f"the limit {limit.text!r}")
            return None
        if acceptable is not None:
            if floor:
                ok = unacc.value < acceptable.value or (
                    unacc.value == acceptable.value and uop == "<")
            else:
                ok = unacc.value > acceptable.value or (
                    unacc.value == acceptable.value and uop == ">")
            if not ok:
                side = "below" if floor else "above"
                self.error(line, upath, f"the unacceptable condition {raw.strip()!r} overlaps "
                           f"the acceptable limit {acceptable.text!r}: it must lie {side} it")
                return None
        return unacc, uop

    def citation(self, keys: Sequence[str], detail: str | None) -> str:
        text = "; ".join(self.sources[k].short for k in keys if k in self.sources)
        return f"{text}, {detail}" if detail and text else (detail or text)

    # -- alternatives
    def read_alternatives(
        self, seq: _Seq | None, structures: list[StructureSpec], conditions: dict[str, str]
    ) -> list[Alternative]:
        out: list[Alternative] = []
        by_name = {s.name: s for s in structures}
        replaced: list[tuple[int, str, tuple[str, ...]]] = []  # checked once all ids are known
        for i, item in enumerate(seq or ()):
            line = seq.item_lines[i]
            if not isinstance(item, _Map):
                self.error(line, f"alternatives[{i}]", "expected a mapping with id, when, ...")
                continue
            label = item.get("id") if isinstance(item.get("id"), str) else str(i)
            path = f"alternatives[{label}]"
            self.keys(item, path, ALTERNATIVE_KEYS)
            aid = self.get(item, "id", path, "str")
            if aid is None:
                continue
            present: tuple[str, ...] = ()
            condition = None
            when = self.get(item, "when", path, "map")
            if when is not None:
                wpath = f"{path}.when"
                self.keys(when, wpath, WHEN_KEYS)
                present = self.get(when, "present", wpath, "strs", ())
                self.structure_refs(present, by_name, self.key_line(when, "present"),
                                    f"{wpath}.present")
                condition = self.get(when, "condition", wpath, "str")
                if condition is not None and condition not in conditions:
                    self.error(self.key_line(when, "condition"), f"{wpath}.condition",
                               f"undeclared condition {condition!r}; declare it under conditions")
                if not present and condition is None:
                    self.error(when.line, wpath, "give 'present' and/or 'condition'")
            replaces = self.get(item, "replaces", path, "strs", ())
            replaced.append((self.key_line(item, "replaces"), f"{path}.replaces", replaces))
            optional = self.get(item, "makes_optional", path, "strs", ())
            self.structure_refs(optional, by_name, self.key_line(item, "makes_optional"),
                                f"{path}.makes_optional")
            sources = self.get(item, "source", path, "strs", ())
            self.source_refs(sources, self.key_line(item, "source"), f"{path}.source")
            constraints = []
            cseq = self.get(item, "constraints", path, "list", ())
            for j, c in enumerate(cseq):
                cpath, cline = f"{path}.constraints[{j}]", cseq.item_lines[j]
                sname = c.get("structure") if isinstance(c, _Map) else None
                spec = by_name.get(sname) if isinstance(sname, str) else None
                if isinstance(c, _Map) and spec is None:
                    if "structure" in c:
                        self.error(self.key_line(c, "structure"), f"{cpath}.structure",
                                   f"unknown structure {sname!r}{_hint(str(sname), by_name)}")
                    else:
                        self.error(c.line, cpath, "missing required key 'structure'")
                    continue
                ctx = _Ctx(sname, spec.alpha_beta, spec.prescription) if spec else None
                got = self.read_constraint(c, cline, cpath, ctx, aid)
                if got is not None:
                    constraints.append(got)
            out.append(Alternative(
                id=aid,
                description=self.get(item, "description", path, "str", ""),
                present=present,
                condition=condition,
                replaces=replaces,
                makes_optional=optional,
                constraints=tuple(constraints),
                citation=self.citation(sources, None),
                line=line,
            ))
        for line, path, ids in replaced:
            for cid in ids:
                if cid not in self.ids:
                    self.error(line, path, f"no constraint has id {cid!r}{_hint(cid, self.ids)}")
        return out

    def structure_refs(
        self, names: Sequence[str], known: dict[str, StructureSpec], line: int, path: str
    ) -> None:
        for s in names:
            if s not in known:
                self.error(line, path, f"unknown structure {s!r}{_hint(s, known)}")

    def source_refs(self, keys: Sequence[str], line: int, path: str) -> None:
        for s in keys:
            if s not in self.sources:
                self.error(line, path, f"unknown source {s!r}{_hint(s, self.sources)}; "
                           f"defined: {', '.join(self.sources) or 'none'}")


# ------------------------------------------------------------------ loading
def _too_large(file: str, size: int | None) -> ProtocolError:
    got = f"{size} bytes" if size is not None else f"more than {MAX_FILE_BYTES} bytes"
    return ProtocolError(f"the file is too large ({got}; a protocol may have at most "
                         f"{MAX_FILE_BYTES} bytes)", file)


def _read_bounded(source: Any) -> bytes:
    """The bytes of a protocol file, reading at most one byte past the size cap.

    Raises
    ------
    ProtocolError
        The file cannot be read or is larger than :data:`MAX_FILE_BYTES`.
    """
    try:
        with source.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ProtocolError(f"cannot read: {exc.strerror or exc}", str(source)) from exc
    if len(data) > MAX_FILE_BYTES:
        try:
            size = source.stat().st_size
        except (OSError, AttributeError):
            size = None
        raise _too_large(str(source), size)
    return data


def _read_protocol_bytes(data: bytes, file: str) -> tuple[Protocol | None, list[ProtocolError]]:
    errors: list[ProtocolError] = []
    if len(data) > MAX_FILE_BYTES:
        return None, [_too_large(file, len(data))]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [ProtocolError(f"not UTF-8 text ({exc.reason} at column {column}, byte "
                                    f"{exc.start})", file, line)]
    bad = _control_char_error(text, file)
    if bad is not None:
        return None, [bad]
    root = _parse_yaml(text, file, errors)
    if errors:
        return None, errors
    reader = _Reader(file)
    protocol = reader.build(root, hashlib.sha256(data).hexdigest())
    return protocol, reader.errors


def shipped_protocol_dir() -> Any:
    """Folder of the protocols shipped with dvheval.

    The top-level ``protocols/`` folder of a source checkout when it exists,
    else the ``protocols`` folder inside the installed package.

    Returns
    -------
    pathlib.Path or importlib.resources.abc.Traversable
    """
    here = Path(__file__).resolve().parents[2] / "protocols"
    if here.is_dir():
        return here
    return importlib.resources.files("dvheval") / "protocols"


def _shipped_files() -> list[Any]:
    folder = shipped_protocol_dir()
    if not folder.is_dir():
        return []
    return sorted(
        (f for f in folder.iterdir() if f.name.endswith((".yaml", ".yml"))), key=lambda f: f.name
    )


def _stem(name: str) -> str:
    return re.sub(r"\.ya?ml$", "", name)


def _resolve(name_or_path: str | Path) -> Any:
    """A path (has a separator or a .yaml/.yml suffix) or a shipped protocol's name."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or "\\" in text or re.search(
        r"\.ya?ml$", text, re.I
    ):
        path = Path(name_or_path)
        if not path.is_file():
            raise ProtocolError("no such protocol file", path)
        return path
    for f in _shipped_files():
        if _stem(f.name) == text:
            return f
    names = ", ".join(_stem(f.name) for f in _shipped_files()) or "none"
    raise ProtocolError(f"unknown protocol {text!r}{_hint(text, names.split(', '))}; "
                        f"shipped protocols: {names}")


def load_protocol(name_or_path: str | Path) -> Protocol:
    """Load and validate a protocol.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped protocol's name (``"bone-sib-30-40-10fx"``) or the path of
        a YAML file. A value with a path separator or a ``.yaml``/``.yml``
        suffix is a path.

    Returns
    -------
    Protocol

    Raises
    ------
    ProtocolError
        The first problem, with file, line and field; ``.errors`` holds all.
    """
    source = _resolve(name_or_path)
    data = _read_bounded(source)
    protocol, errors = _read_protocol_bytes(data, str(source))
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first = ProtocolError(
                f"{first.message} (and {len(errors) - 1} more problem(s))",
                first.file, first.line, first.field,
            )
        first.errors = errors
        raise first
    assert protocol is not None
    return protocol


def validate_protocol_file(path: str | Path) -> list[ProtocolError]:
    """Every problem of a protocol file; an empty list when it is valid.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    list of ProtocolError
        Each with ``file``, ``line`` (when known) and ``field``.
    """
    path = Path(path)
    try:
        data = _read_bounded(path)
    except ProtocolError as exc:
        return [exc]
    return _read_protocol_bytes(data, str(path))[1]


def list_protocols() -> list[ProtocolSummary]:
    """The shipped protocols, sorted by name (invalid files carry ``error``).

    Returns
    -------
    list of ProtocolSummary
    """
    out = []
    for f in _shipped_files():
        try:
            data = _read_bounded(f)
        except ProtocolError as exc:
            out.append(ProtocolSummary(_stem(f.name), str(f), "", error=str(exc)))
            continue
        sha = hashlib.sha256(data).hexdigest()
        protocol, errors = _read_protocol_bytes(data, str(f))
        if errors or protocol is None:
            out.append(ProtocolSummary(_stem(f.name), str(f), sha, error=str(errors[0])))
            continue
        out.append(ProtocolSummary(
            name=protocol.name,
            file=str(f),
            sha256=sha,
            title=protocol.title,
            version=protocol.version,
            date=protocol.date,
            fractions=protocol.fractions,
            prescriptions={k: v.dose_gy for k, v in protocol.prescriptions.items()},
            constraints=sum(not c.is_report for c in protocol.constraints()),
        ))
    return out


# ----------------------------------------------------------------- matching
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

    def status(self, structure: str) -> str:
        """``"matched"``, ``"ambiguous"`` or ``"missing"``."""
        if structure in self.matched:
            return "matched"
        return "ambiguous" if structure in self.ambiguous else "missing"

    def present(self, structure: str) -> bool:
        """True when at least one ROI matched the structure."""
        return bool(self.candidates.get(structure))

    def to_dict(self) -> dict[str, Any]:
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
        hits = []
        for spec in protocol.structures:
            hit = _roi_hits(spec, roi)
            if hit:
                hits.append(RoiMatch(spec.name, roi, hit[0], hit[1], i))
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
    for spec in protocol.structures:
        found = cands[spec.name]
        result.candidates[spec.name] = list(found)
        if len(found) == 1 and not conflicts[spec.name]:
            result.matched[spec.name] = found[0]
            continue
        if not found and not conflicts[spec.name]:
            result.missing.append(spec.name)
            continue
        by_name = [c for c in found if c.how == "name"]
        if len(by_name) == 1:
            result.matched[spec.name] = by_name[0]
            others = ", ".join(repr(c.roi) for c in found if c is not by_name[0])
            extra = [*([f"also matched: {others}"] if others else []), *conflicts[spec.name]]
            result.notes.append(
                f"{spec.name}: used ROI {by_name[0].roi!r} (exact name); " + "; ".join(extra)
            )
            continue
        reasons = list(conflicts[spec.name])
        if found:
            listed = ", ".join(f"{c.roi!r} ({c.how} {c.by!r})" for c in found)
            reasons.insert(0, f"{len(found)} ROIs match: {listed}")
        result.ambiguous[spec.name] = "; ".join(reasons) + "; rename or remove all but one"
    return result
