"""The DVH plot of the HTML report: cumulative DVHs with each limit as a marker.

matplotlib is imported inside :func:`dvh_svg` only, so that the other
report formats (and ``import dvheval.reports``) do not need it.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import numpy as np

from dvheval.check import CheckResult, ConstraintResult
from dvheval.engine.metrics import Metric, physical_dose
from dvheval.reports.common import fmt_number
from dvheval.sanitize import visible
from dvheval.vocab import MetricKind, Verdict

_VERDICT_COLOUR = {  # dark text colours, readable on white and in print
    Verdict.PASS.value: "#1a7f37",
    Verdict.ACCEPTABLE.value: "#9a6700",
    Verdict.FAIL.value: "#cf222e",
    Verdict.NOT_EVALUATED.value: "#8250df",
    Verdict.NOT_APPLICABLE.value: "#6e7781",
    Verdict.REPORT.value: "#6e7781",
}

#: Colours of the structures' curves, in protocol order.
_CURVE_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#1f77b4", "#2ca02c", "#17becf",
                  "#e377c2", "#7f7f7f", "#bcbd22")

#: Verdicts whose limits are drawn, in the order of the legend.
_DRAWN = (Verdict.PASS, Verdict.ACCEPTABLE, Verdict.FAIL)

#: One DVH curve: dose (Gy), volume (% of the covered volume), colour, covered volume (cc).
_Curve = tuple[np.ndarray, np.ndarray, str, float]


def _physical(dose: float, model: str, fractions: int, ab: float) -> float:
    """Physical dose whose EQD2 or BED (in ``fractions`` fractions) is ``dose``.

    See :func:`dvheval.engine.metrics.physical_dose`.
    """
    return physical_dose(dose, fractions, ab, model)


def limit_marker(
    r: ConstraintResult, covered_cc: float, fractions: int
) -> tuple[str, float, float] | None:
    """Where a constraint's limit lies on its structure's cumulative DVH.

    Parameters
    ----------
    r : ConstraintResult
        An evaluated constraint (with a limit).
    covered_cc : float
        Volume of the structure inside the dose grid (100 % of its DVH).
    fractions : int
        Fractions used for EQD2/BED limits.

    Returns
    -------
    tuple or None
        ``(kind, dose_gy, volume_pct)`` in physical dose and per cent of the
        volume: ``"dose"`` for a D-metric limit (dose ``limit`` at volume
        ``x``), ``"volume"`` for a V-metric limit (volume ``limit`` at dose
        ``x``), ``"max"``/``"min"`` for a vertical tick at the limit dose,
        ``"mean"`` for the limit dose (the volume is left to the caller).
        None when the limit cannot be shown (gEUD, no limit, unknown unit).
    """
    m = r.constraint.metric
    if m is None or r.limit is None or r.unit is None or covered_cc <= 0:
        return None
    if m.kind in (MetricKind.DOSE_AT_VOLUME, MetricKind.MAX, MetricKind.MIN, MetricKind.MEAN):
        return _dose_limit_marker(r, m, r.limit, covered_cc, fractions)
    if m.kind == MetricKind.VOLUME_AT_DOSE:
        return _volume_limit_marker(r, m, r.limit, covered_cc, fractions)
    return None


def _to_physical(dose: float, m: Metric, fractions: int) -> float:
    """A dose of the metric's model (EQD2, BED) as physical dose; a physical dose unchanged."""
    if m.model and m.alpha_beta:
        return _physical(dose, m.model, fractions, float(m.alpha_beta))
    return dose


def _dose_limit_marker(r: ConstraintResult, m: Metric, limit: float, covered_cc: float,
                       fractions: int) -> tuple[str, float, float] | None:
    """The marker of a limit on a dose: D-metric, Dmax, Dmin or mean (see :func:`limit_marker`)."""
    if r.unit == "Gy":
        dose = limit
    elif r.unit == "%Rx" and r.prescription_gy:
        dose = limit / 100.0 * r.prescription_gy
    else:
        return None
    dose = _to_physical(dose, m, fractions)
    if m.kind == MetricKind.DOSE_AT_VOLUME:
        assert m.value is not None
        pct = m.value if m.value_unit == "%" else 100.0 * m.value / covered_cc
        return "dose", dose, min(pct, 100.0)
    return str(m.kind), dose, math.nan


def _volume_limit_marker(r: ConstraintResult, m: Metric, limit: float, covered_cc: float,
                         fractions: int) -> tuple[str, float, float] | None:
    """The marker of a limit on the volume of a V-metric (see :func:`limit_marker`)."""
    assert m.value is not None
    x = m.value
    if m.value_unit == "cGy":
        x = x / 100.0
    elif m.value_unit == "%":
        if not r.prescription_gy:
            return None
        x = x / 100.0 * r.prescription_gy
    x = _to_physical(x, m, fractions)
    if r.unit == "%":
        pct = limit
    elif r.unit == "cc":
        pct = 100.0 * limit / covered_cc
    else:
        return None
    return "volume", x, min(pct, 100.0)


def dvh_svg(result: CheckResult) -> str:
    """Cumulative DVHs (% volume vs Gy) of the matched structures with their limits, as SVG.

    Curves are drawn for every protocol structure matched to a ROI with a
    DVH (targets solid, organs dashed). Each evaluated limit is a marker on
    its structure's curve: D-metric limits at (limit, x %), V-metric limits
    at (x Gy, limit), Dmax/Dmin limits as a vertical tick, mean-dose limits
    as a diamond on the curve; EQD2/BED limits are converted to physical
    dose. Markers are green (PASS), amber (ACCEPTABLE) or red (FAIL).

    Parameters
    ----------
    result : CheckResult

    Returns
    -------
    str
        An ``<svg>`` element without XML declaration, DOCTYPE, metadata or
        namespace URLs, ready to be inlined in HTML.
    """
    import matplotlib
    from matplotlib.figure import Figure

    # text as text, reproducible ids
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "dvheval",
                                "font.family": "sans-serif", "font.size": 9}):
        fig = Figure(figsize=(9.0, 5.0))
        ax = fig.add_subplot(1, 1, 1)
        curves, xmax = _draw_curves(ax, result)
        labels_at, verdict_seen, xmax = _draw_limits(ax, result, curves, xmax)
        ax.set_xlim(0, xmax * 1.05)
        ax.set_ylim(0, 105)
        _place_labels(ax, [(x, ty, _plot_text(f"{', '.join(names)} {text}"), vcol)
                           for (x, ty, text, vcol), names in labels_at.items()])
        ax.set_xlabel("Dose (Gy)")
        ax.set_ylabel("Volume (%)")
        ax.grid(True, color="#dddddd", lw=0.6)
        _legend(ax, verdict_seen)
        ax.set_title(_plot_text(f"Cumulative DVH: {result.protocol.name}"), fontsize=10)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return _inline_svg(buf.getvalue())


def _draw_curves(ax: Any, result: CheckResult) -> tuple[dict[str, _Curve], float]:
    """Plot the DVH of every matched protocol structure; the curves by structure, and max dose.

    The maximum dose is at least 1 Gy, so that an empty plot has an axis.
    """
    plan = result.plan
    curves: dict[str, _Curve] = {}
    xmax = 1.0
    for i, spec in enumerate(result.protocol.structures):
        m = result.matching.matched.get(spec.name)
        if m is None:
            continue
        sr = plan.structures[m.index]
        if sr.dvh is None or sr.dvh.is_empty or sr.dvh.covered_cc <= 0:
            continue
        dose, vol = sr.dvh.cumulative()
        covered = float(sr.dvh.covered_cc)
        pct = 100.0 * vol / covered
        colour = _CURVE_COLOURS[i % len(_CURVE_COLOURS)]
        style = "-" if spec.type == "target" else "--"
        label = _plot_text(spec.name if m.roi == spec.name else f"{spec.name} ({m.roi})")
        ax.plot(dose, pct, style, color=colour, lw=1.6, label=label)
        curves[spec.name] = (dose, pct, colour, covered)
        xmax = max(xmax, float(dose[-1]))
    return curves, xmax


def _draw_limits(
    ax: Any, result: CheckResult, curves: dict[str, _Curve], xmax: float
) -> tuple[dict[tuple[Any, ...], list[str]], set[str], float]:
    """Plot a marker per judged limit on its structure's curve.

    Returns
    -------
    labels_at : dict
        ``(dose, volume, limit text, colour)`` -> the structures whose limit
        is there (one label for limits that coincide).
    verdict_seen : set of str
        The verdicts drawn, for the legend.
    xmax : float
        ``xmax`` widened to the limits drawn.
    """
    fractions = result.fractions.fractions
    verdict_seen: set[str] = set()
    labels_at: dict[tuple[Any, ...], list[str]] = {}
    for r in result.results:
        if r.verdict not in _DRAWN:
            continue
        curve = curves.get(r.constraint.structure)
        if curve is None:
            continue
        dose, pct, colour, covered = curve
        mark = limit_marker(r, covered, fractions)
        if mark is None:
            continue
        kind, x, y = mark
        vcol = _VERDICT_COLOUR[r.verdict.value]
        verdict_seen.add(r.verdict.value)
        if kind in ("max", "min"):
            y0, y1 = (0.0, 12.0) if kind == "max" else (88.0, 100.0)
            ax.plot([x, x], [y0, y1], color=vcol, lw=2.5, solid_capstyle="butt")
            ty = y1
        else:
            if kind == "mean":
                y = float(np.interp(x, dose, pct))
            ax.plot([x], [y], marker=_marker(kind, r.constraint.operator), ms=8, color=vcol,
                    mec=colour, mew=1.2, linestyle="none")
            ty = y
        xmax = max(xmax, x)
        key = (round(x, 2), round(ty, 1), _short_limit(r), vcol)
        labels_at.setdefault(key, []).append(r.constraint.structure)
    return labels_at, verdict_seen, xmax


def _marker(kind: str, operator: str | None) -> str:
    """The matplotlib marker of a limit: a diamond for a mean, else pointing to the allowed side."""
    if kind == "mean":
        return "D"
    upper = operator in ("<", "<=")
    if kind == "dose":
        return "<" if upper else ">"
    return "v" if upper else "^"


def _legend(ax: Any, verdict_seen: set[str]) -> None:
    """The legend, right of the plot: the curves, then a marker per verdict drawn."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    for v in _DRAWN:
        if v.value in verdict_seen:
            handles.append(Line2D([], [], marker="o", color=_VERDICT_COLOUR[v.value],
                                  linestyle="none"))
            labels.append(f"limit {v.value}")
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize=8, frameon=False)


def _short_limit(r: ConstraintResult) -> str:
    c = r.constraint
    op = {"<=": "\u2264", ">=": "\u2265"}.get(c.operator or "", c.operator or "")
    unit = "%" if r.unit == "%Rx" else r.unit
    return f"{c.metric_name} {op} {fmt_number(r.limit)} {unit}"


def _plot_text(text: str) -> str:
    """A label for matplotlib: control characters as escapes, ``$`` not read as math."""
    out = visible(text).replace("$", r"\$")
    return " " + out if out.startswith("_") else out  # a leading _ hides a legend entry


def _place_labels(ax: Any, labels: list[tuple[float, float, str, str]]) -> None:
    """Annotate limit markers, moving labels up or down so that they do not overlap.

    Label sizes are estimated from the font size (7 pt), which is enough to
    keep neighbouring limits (e.g. a Dmax tick next to a D2% marker) apart.
    """
    dpi = ax.figure.dpi
    pt = dpi / 72.0
    height = 9.0 * pt
    box = ax.bbox
    placed: list[tuple[float, float, float, float]] = []
    for x, y, text, colour in labels:
        px, py = ax.transData.transform((x, y))
        width = 0.56 * 7.0 * len(text) * pt
        right = px + (5.0 + 0.0) * pt + width <= box.x1
        x0 = px + 5.0 * pt if right else px - 5.0 * pt - width
        first = -11.0 if y > 90 else 3.0
        candidates = [first] + [first + sign * step * 10.0 for step in range(1, 8)
                                for sign in (1, -1)]
        chosen = first
        for dy in candidates:
            y0 = py + dy * pt
            if y0 < box.y0 or y0 + height > box.y1:
                continue
            if all(x0 + width <= a0 or x0 >= a1 or y0 + height <= b0 or y0 >= b1
                   for a0, b0, a1, b1 in placed):
                chosen = dy
                break
        y0 = py + chosen * pt
        placed.append((x0, y0, x0 + width, y0 + height))
        ax.annotate(text, (x, y), xytext=(5 if right else -5, chosen),
                    textcoords="offset points", fontsize=7, color=colour,
                    ha="left" if right else "right", va="bottom", zorder=5,
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.85,
                          "edgecolor": "none"})


def _inline_svg(svg: str) -> str:
    """matplotlib's SVG as an element to inline in HTML.

    Without XML declaration, DOCTYPE, metadata, namespace attributes and the
    fixed size (the CSS scales it).
    """
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)

    def root(match: re.Match[str]) -> str:
        tag = match.group(0)
        tag = re.sub(r'\s(width|height)="[^"]*"', "", tag)
        return tag[:-1] + ' role="img" aria-label="Cumulative DVH" class="dvh">'

    svg = re.sub(r"<svg\b[^>]*>", root, svg, count=1)
    return svg.strip()
