"""The DVH plot of the HTML report: cumulative DVHs with each limit as a numbered marker.

:func:`dvh_figure` draws the plot (curves in colours that are never a
verdict's, cycling line styles; a numbered marker per limit and, under the
plot, the table of those numbers); :func:`dvh_svg` is that figure as an
inline SVG. matplotlib is imported inside these functions only, so that the
other report formats (and ``import dvheval.reports``) do not need it.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from dvheval.check import CheckResult, ConstraintResult
from dvheval.engine.metrics import Metric, physical_dose
from dvheval.reports.common import fmt_number, unit_text
from dvheval.sanitize import visible
from dvheval.vocab import MetricKind, Verdict

#: Dark verdict colours, readable on white and in print (plot marks, PDF text).
VERDICT_COLOUR = {
    Verdict.PASS.value: "#1a7f37",
    Verdict.ACCEPTABLE.value: "#9a6700",
    Verdict.FAIL.value: "#cf222e",
    Verdict.NOT_EVALUATED.value: "#8250df",
    Verdict.NOT_APPLICABLE.value: "#6e7781",
    Verdict.REPORT.value: "#6e7781",
}

#: Colours of the structures' curves, in the order they are drawn. No red,
#: amber/orange or green: those mean FAIL, ACCEPTABLE and PASS, and a curve
#: must never look like a verdict.
CURVE_COLOURS = ("#1f4e9c", "#17becf", "#6a3d9a", "#7f7f7f", "#4f9fdc", "#222222", "#b07cc6")

#: Line styles and widths cycled with the colours (7 colours x 3 styles: 21
#: distinct curves). Every third curve the widths shrink (x 0.65), so that
#: neighbouring curves never have the same width; a narrower line is drawn
#: above a wider one, so that two identical DVHs still show both.
_LINE_STYLES = (("-", 2.4), ("--", 1.8), ((0, (1.0, 1.4)), 1.7))

#: Font size (pt) of the limit numbers on the plot.
_LABEL_PT = 8.0

#: Verdicts whose limits are drawn, in the order of the legend.
_DRAWN = (Verdict.PASS, Verdict.ACCEPTABLE, Verdict.FAIL)

#: One DVH curve: dose (Gy), volume (% of the covered volume), colour, covered volume (cc).
_Curve = tuple[np.ndarray, np.ndarray, str, float]


@dataclass(frozen=True)
class LimitMark:
    """One limit drawn on the DVH plot, numbered as in the plot's limit table.

    ``dose_gy`` and ``volume_pct`` are where the marker sits (physical dose,
    per cent of the structure's covered volume); ``label`` is the table's
    text, e.g. ``"3: SpinalCord Dmax \u2264 34 Gy (PASS)"``.
    """

    number: int
    structure: str
    verdict: str
    kind: str
    operator: str | None
    dose_gy: float
    volume_pct: float
    label: str


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

    See :func:`dvh_figure` for what is drawn.

    Parameters
    ----------
    result : CheckResult

    Returns
    -------
    str
        An ``<svg>`` element without XML declaration, DOCTYPE, metadata or
        namespace URLs, ready to be inlined in HTML.
    """
    with _style():
        fig, _marks = dvh_figure(result)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return _inline_svg(buf.getvalue())


def _style() -> Any:
    """matplotlib settings of the plot: text as text, reproducible ids, small sans-serif."""
    import matplotlib

    return matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "dvheval",
                                  "font.family": "sans-serif", "font.size": 9})


def dvh_figure(result: CheckResult) -> tuple[Any, list[LimitMark]]:
    """The DVH plot of a check as a matplotlib Figure, and the limits drawn on it.

    Curves are drawn for every protocol structure matched to a ROI with a
    DVH, in colours of :data:`CURVE_COLOURS` and cycling solid, dashed and
    dotted lines. Each judged limit (PASS, ACCEPTABLE, FAIL) is a marker at
    its point: D-metric limits at (limit, x %), V-metric limits at (x Gy,
    limit), Dmax limits at (limit, 0 %), Dmin limits at (limit, 100 %),
    mean-dose limits on the curve at the limit dose; EQD2/BED limits are
    converted to physical dose. Markers are green (PASS), amber
    (ACCEPTABLE) or red (FAIL), point to the allowed side, are drawn
    unclipped (whole on the axes' edges) and carry a number; the table under
    the plot lists every number with its structure, limit and verdict.

    Parameters
    ----------
    result : CheckResult

    Returns
    -------
    figure : matplotlib.figure.Figure
    marks : list of LimitMark
        The limits drawn, numbered from 1 in protocol order.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    curves, xmax = _draw_curves(ax, result)
    marks = _limit_marks(result, curves)
    xmax = max([xmax, *(m.dose_gy for m in marks)])
    ax.set_xlim(0, xmax * 1.05)
    ax.set_ylim(0, 105)
    _draw_marks(ax, curves, marks)
    ax.set_xlabel(_dose_axis_label(result))
    ax.set_ylabel("Volume (%)")
    ax.grid(True, color="#dddddd", lw=0.6)
    _legends(ax, curves, marks)
    ax.set_title(_plot_text(f"Cumulative DVH: {result.protocol.name}"), fontsize=10)
    return fig, marks


def _draw_curves(ax: Any, result: CheckResult) -> tuple[dict[str, _Curve], float]:
    """Plot the DVH of every matched protocol structure; the curves by structure, and max dose.

    The maximum dose is at least 1 Gy, so that an empty plot has an axis.
    """
    plan = result.plan
    curves: dict[str, _Curve] = {}
    xmax = 1.0
    for spec in result.protocol.structures:
        m = result.matching.matched.get(spec.name)
        if m is None:
            continue
        sr = plan.structures[m.index]
        if sr.dvh is None or sr.dvh.is_empty or sr.dvh.covered_cc <= 0:
            continue
        i = len(curves)
        dose, vol = sr.dvh.cumulative()
        covered = float(sr.dvh.covered_cc)
        pct = 100.0 * vol / covered
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        style, width = _LINE_STYLES[i % len(_LINE_STYLES)]
        if (i // len(_LINE_STYLES)) % 2:
            width *= 0.65
        label = _plot_text(spec.name if m.roi == spec.name else f"{spec.name} ({m.roi})")
        ax.plot(dose, pct, linestyle=style, color=colour, lw=width, zorder=2.0 + (3.0 - width) / 10,
                label=label)
        curves[spec.name] = (dose, pct, colour, covered)
        xmax = max(xmax, float(dose[-1]))
    return curves, xmax


def _dose_axis_label(result: CheckResult) -> str:
    """``Dose (Gy)``; for courses the cumulative quantity the curves are drawn in."""
    if result.fractions.source != "courses":
        return "Dose (Gy)"
    return f"Cumulative dose (Gy {result.plan.dose.quantity.split('; ')[0]})"


def _limit_marks(result: CheckResult, curves: dict[str, _Curve]) -> list[LimitMark]:
    """Number every judged limit that has a place on its structure's curve.

    For courses the curves are the cumulative EQD2/BED of one alpha/beta, while
    each limit is judged on the grid of its own: no limit is drawn (the table
    lists them).
    """
    fractions = result.fractions.fractions
    marks: list[LimitMark] = []
    if result.fractions.source == "courses":
        return marks
    for r in result.results:
        curve = curves.get(r.constraint.structure)
        if r.verdict not in _DRAWN or curve is None:
            continue
        dose, pct, _colour, covered = curve
        mark = limit_marker(r, covered, fractions)
        if mark is None:
            continue
        kind, x, y = mark
        if kind == "max":
            y = 0.0
        elif kind == "min":
            y = 100.0
        elif kind == "mean":
            y = float(np.interp(x, dose, pct))
        n = len(marks) + 1
        text = f"{n}: {r.constraint.structure} {_short_limit(r)} ({r.verdict.value})"
        marks.append(LimitMark(n, r.constraint.structure, r.verdict.value, kind,
                               r.constraint.operator, x, y, _plot_text(text)))
    return marks


def _draw_marks(ax: Any, curves: dict[str, _Curve], marks: list[LimitMark]) -> None:
    """A marker per limit at its point, unclipped, with its number beside it.

    Limits at the same point share one number label (``"3,4"``).
    """
    at: dict[tuple[float, float], list[LimitMark]] = {}
    for m in marks:
        vcol = VERDICT_COLOUR[m.verdict]
        ax.plot([m.dose_gy], [m.volume_pct], marker=_marker(m.kind, m.operator), ms=8,
                color=vcol, mec=curves[m.structure][2], mew=1.2, linestyle="none",
                clip_on=False, zorder=6)
        at.setdefault((round(m.dose_gy, 2), round(m.volume_pct, 1)), []).append(m)
    _place_labels(ax, [(group[0].dose_gy, group[0].volume_pct,
                        ",".join(str(m.number) for m in group),
                        VERDICT_COLOUR[_worst(group)]) for group in at.values()])


def _worst(group: list[LimitMark]) -> str:
    """The most severe verdict of limits drawn at one point."""
    order = [v.value for v in _DRAWN][::-1]  # FAIL, ACCEPTABLE, PASS
    return min((m.verdict for m in group), key=order.index)


def _marker(kind: str, operator: str | None) -> str:
    """The matplotlib marker of a limit: a diamond for a mean, else pointing to the allowed side."""
    if kind == "mean":
        return "D"
    upper = operator in ("<", "<=")
    if kind in ("dose", "max", "min"):
        return "<" if upper else ">"
    return "v" if upper else "^"


def _legends(ax: Any, curves: dict[str, _Curve], marks: list[LimitMark]) -> None:
    """The curves right of the plot; under it, the numbered table of the limits."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5,
                  frameon=False)
    if not marks:
        return
    rows = [Line2D([], [], marker=_marker(m.kind, m.operator), ms=6, linestyle="none",
                   color=VERDICT_COLOUR[m.verdict], mec=curves[m.structure][2], mew=1.0)
            for m in marks]
    ncol = 2 if max(len(m.label) for m in marks) <= 48 else 1
    # a figure legend, so that the tight bounding box of the saved figure includes it
    ax.figure.legend(rows, [m.label for m in marks], loc="upper left",
                     bbox_to_anchor=(0.0, -0.12), bbox_transform=ax.transAxes, ncol=ncol,
                     fontsize=8.5, frameon=False, alignment="left", title_fontsize=8.5,
                     title="Limits: number on the plot, structure, limit (verdict)")


def _short_limit(r: ConstraintResult) -> str:
    c = r.constraint
    op = {"<=": "\u2264", ">=": "\u2265"}.get(c.operator or "", c.operator or "")
    unit = "%" if r.unit == "%Rx" else unit_text(r.unit)
    return f"{c.metric_name} {op} {fmt_number(r.limit)} {unit}".rstrip()


def _plot_text(text: str) -> str:
    """A label for matplotlib: control characters as escapes, ``$`` not read as math."""
    out = visible(text).replace("$", r"\$")
    return " " + out if out.startswith("_") else out  # a leading _ hides a legend entry


def _place_labels(ax: Any, labels: list[tuple[float, float, str, str]]) -> None:
    """Number the limit markers, moving labels up or down so that they overlap nothing.

    Neither another label nor a marker (an 8 pt square around each labelled
    point) is covered. Label sizes are estimated from the font size
    (:data:`_LABEL_PT`), which is enough for labels of a few digits.
    """
    dpi = ax.figure.dpi
    pt = dpi / 72.0
    height = (_LABEL_PT + 2.0) * pt
    box = ax.bbox
    placed: list[tuple[float, float, float, float]] = []
    for x, y, _text, _colour in labels:
        px, py = ax.transData.transform((x, y))
        placed.append((px - 4.0 * pt, py - 4.0 * pt, px + 4.0 * pt, py + 4.0 * pt))
    for x, y, text, colour in labels:
        px, py = ax.transData.transform((x, y))
        width = 0.62 * _LABEL_PT * len(text) * pt
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
        # a label moved away from its marker is tied to it by a thin line
        leader = None if chosen == first else {"arrowstyle": "-", "color": colour, "lw": 0.6,
                                                "shrinkA": 0.0, "shrinkB": 4.0}
        ax.annotate(text, (x, y), xytext=(5 if right else -5, chosen),
                    textcoords="offset points", fontsize=_LABEL_PT, fontweight="bold",
                    color=colour, arrowprops=leader, annotation_clip=False,
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
