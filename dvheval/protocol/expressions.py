"""Parsing the expressions of a constraint: metric, check, limit and unacceptable condition.

Every function here is pure: it returns the parsed value or raises
:class:`~dvheval.protocol.problems._Bad` with a message; the reader adds the
file, line and field.
"""

from __future__ import annotations

import math
import re
from typing import Any

from dvheval.engine.metrics import Metric, parse_metric
from dvheval.errors import MetricError
from dvheval.protocol.model import Limit
from dvheval.protocol.problems import _Bad, _short
from dvheval.protocol.schema import (
    MAX_ALPHA_BETA,
    MAX_DOSE_GY,
    MAX_EXPRESSION,
    MAX_GEUD_A,
    MAX_INDEX,
    MAX_PERCENT_RX,
    MAX_VOLUME_CC,
    OPERATORS,
    UNIT_CC,
    UNIT_GY,
    UNIT_INDEX,
    UNIT_PCT,
    UNIT_PCT_RX,
)
from dvheval.vocab import MetricKind

_CHECK_RE = re.compile(
    r"^(?P<metric>[^<>≤≥]+?)\s*(?P<op><=|>=|=<|=>|==|=|<|>|≤|≥)\s*(?P<limit>[^<>=≤≥]+?)\s*$"
)
_LIMIT_RE = re.compile(
    r"^(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[A-Za-z%][A-Za-z0-9]*|%)?"
    r"(?:\s+of\s+(?P<level>\S+))?$"
)
_UNACCEPTABLE_RE = re.compile(r"^(?P<op><=|>=|=<|=>|==|=|<|>|≤|≥)\s*(?P<limit>[^<>=≤≥]+?)$")
_UNITS = {"gy": "Gy", "cgy": "cGy", "cc": "cc", "cm3": "cc", "%": "%"}


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
    """The metric as evaluated (alpha/beta filled in) and its parsed form."""
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
        if metric.kind == MetricKind.GEUD and abs(v) > MAX_GEUD_A:
            raise _Bad(f"{_short(name)}: gEUD's a must lie between -{MAX_GEUD_A:g} and "
                       f"{MAX_GEUD_A:g}")
        if (metric.kind == MetricKind.DOSE_AT_VOLUME and metric.value_unit == "cc"
                and v > MAX_VOLUME_CC):
            raise _Bad(f"{_short(name)}: a volume above {MAX_VOLUME_CC:g} cc is not plausible")
        if metric.kind in (MetricKind.VOLUME_AT_DOSE, MetricKind.VOLUME_BELOW_DOSE,
                           MetricKind.PADDICK_CI, MetricKind.RTOG_CI,
                           MetricKind.GRADIENT_INDEX, MetricKind.ISODOSE_VOLUME):
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
    if limit.unit == UNIT_INDEX and v > MAX_INDEX:
        raise _Bad(f"an index limit must lie in [0, {MAX_INDEX:g}], got {_short(text)}")
    if limit.unit == UNIT_CC and v > MAX_VOLUME_CC:
        raise _Bad(f"a volume limit must lie in [0, {MAX_VOLUME_CC:g}] cc, got {_short(text)}")
    return limit


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
    """Metric, operator and limit of a ``check`` such as ``Dmax <= 34 Gy``."""
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


def _limit_in_unit(value: float, m: re.Match[str], text: str, metric: Metric, metric_text: str
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
    if metric.is_index:
        if raw_unit:
            raise _Bad(f"{metric_text} is a ratio without unit; write its limit as a plain "
                       f"number, e.g. '{metric_text} >= 0.7'")
        return Limit(value, UNIT_INDEX, None, str(text).strip())
    written = unit or _explicit_unit(metric_text)
    if written is None:
        raise _Bad(
            f"limit {text!r} needs a unit (Gy, cGy, cc or %), or the metric must name its "
            "output unit in brackets, e.g. V20Gy[%]"
        )
    if metric.is_dose:
        return _dose_limit(value, written, level, text, metric, metric_text)
    return _volume_limit(value, written, level, text, metric, metric_text)


def _dose_limit(value: float, written: str, level: str | None, text: str, metric: Metric,
                metric_text: str) -> Limit:
    """A limit on a dose metric: in Gy (cGy converted) or in per cent of a prescription."""
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


def _volume_limit(value: float, written: str, level: str | None, text: str, metric: Metric,
                  metric_text: str) -> Limit:
    """A limit on a volume metric: in cc, or in per cent of the structure volume."""
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


def _parse_unacceptable(raw: Any, op: str, metric: Metric, metric_text: str
                        ) -> tuple[str, Limit]:
    """Operator and limit of an ``unacceptable`` condition such as ``'> 115%'``.

    The operator must point away from the constraint's ``op``: ``<``/``<=``
    for a floor (``>=``, ``>``), ``>``/``>=`` for a ceiling. The limit's
    level is left None when the text names none.
    """
    floor = op in (">=", ">")
    example = "'< 80%'" if floor else "'> 115%'"
    if not (isinstance(raw, str) and raw.strip()):
        raise _Bad(f"expected an operator and a limit such as {example}, got {_short(raw)}")
    if len(raw) > MAX_EXPRESSION:
        raise _Bad(f"longer than {MAX_EXPRESSION} characters: {_short(raw)}")
    mm = _UNACCEPTABLE_RE.match(raw.strip())
    if not mm:
        raise _Bad(f"{_short(raw)} is not '<operator> <limit>', e.g. {example}")
    uop = mm["op"]
    if uop not in OPERATORS:
        raise _Bad(f"operator {uop!r} is not allowed; use one of {', '.join(OPERATORS)}")
    allowed = ("<", "<=") if floor else (">", ">=")
    if uop not in allowed:
        kind = "a floor" if floor else "a ceiling"
        raise _Bad(f"the constraint ({op}) is {kind}: its unacceptable condition must use "
                   f"{' or '.join(allowed)}, e.g. {example}")
    return uop, _parse_limit(mm["limit"], metric, metric_text)
