"""Cohort figures: one box plot per metric, and population DVHs per structure.

Both are drawn with matplotlib's Agg backend (no display needed) and written
as PNG (and SVG where asked). Each metric gets its own axis and its own unit,
so a kidney mean of 4 Gy is not squashed under a cord maximum of 34 Gy, and a
metric in EQD2 or BED says so on its axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dvheval.errors import DvhevalError

#: Colours of the plots: median, band, single plans, limits.
_MEDIAN, _BAND, _LINES, _LIMIT = "#1f4e79", "#9dc3e6", "#7f7f7f", "#c00000"


@dataclass
class BoxGroup:
    """The values of one metric of one structure over the plans of a cohort.

    Attributes
    ----------
    structure, metric : str
    unit : str
        Axis label of the values, e.g. ``Gy``, ``Gy EQD2 (α/β 2 Gy)``.
    values : ndarray
        One value per plan (plans without a value are left out and counted
        in ``missing``).
    limits : list of (str, float)
        Protocol limits on this metric: operator and value, in ``unit``.
    missing : int
        Plans of the cohort without a value.
    """

    structure: str
    metric: str
    unit: str
    values: np.ndarray
    limits: list[tuple[str, float]] = field(default_factory=list)
    missing: int = 0


def axis_unit(metric: str, unit: str | None) -> str:
    """The axis label of a metric's values: its unit, with EQD2/BED and α/β when modelled.

    Examples
    --------
    >>> axis_unit("Dmax[EQD2, a/b=2]", "Gy")
    'Gy EQD2 (α/β 2 Gy)'
    >>> axis_unit("V20Gy[%]", "%")
    '% of volume'
    """
    from dvheval.engine.metrics import parse_metric

    try:
        m = parse_metric(metric)
    except DvhevalError:
        return unit or ""
    text = {"%": "% of volume" if not m.is_dose else "% of Rx", "%Rx": "% of Rx",
            "cc": "cm³", "1": "index (no unit)"}.get(unit or "", unit or "")
    model = getattr(m, "model", None)
    if model:
        ab = getattr(m, "alpha_beta", None)
        text += f" {model}" + (f" (α/β {ab:g} Gy)" if ab is not None else "")
    return text


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("matplotlib is needed for the plots: pip install matplotlib"
                          ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def draw_boxplots(groups: Sequence[BoxGroup], paths: Sequence[Path], title: str) -> list[Path]:
    """One axis per metric: box, every plan as a dot, limits as lines, n per box.

    Parameters
    ----------
    groups : sequence of BoxGroup
    paths : sequence of Path
        Files to write (format from the extension: ``.png``, ``.svg``...).
    title : str

    Returns
    -------
    list of Path
        ``paths``, or none when no group has a value.
    """
    if not any(g.values.size for g in groups):
        return []
    plt = _pyplot()
    ncols = min(4, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 0.6, 3.3 * nrows),
                             squeeze=False, layout="constrained")
    for ax, g in zip(axes.flat, groups, strict=False):
        ax.set_title(f"{g.structure}\n{g.metric}", fontsize=9)
        if not g.values.size:
            ax.text(0.5, 0.5, f"no value in {g.missing} plans", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.boxplot([g.values], widths=0.5, showfliers=False, medianprops={"color": _MEDIAN})
        jitter = np.linspace(-0.12, 0.12, g.values.size) if g.values.size > 1 else np.zeros(1)
        ax.scatter(1 + jitter, g.values, s=12, color=_LINES, alpha=0.8, zorder=3)
        for op, limit in g.limits:
            ax.axhline(limit, color=_LIMIT, ls="--", lw=1.2)
            ax.annotate(f"{op} {limit:g}", (1.0, limit), xycoords=("axes fraction", "data"),
                        xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom",
                        fontsize=7, color=_LIMIT)
        n = f"n = {g.values.size}" + (f" ({g.missing} without value)" if g.missing else "")
        ax.set_xticks([1], [n], fontsize=8)
        ax.set_ylabel(g.unit, fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        lo, hi = _span([*g.values.tolist(), *(v for _, v in g.limits)])
        ax.set_ylim(lo, hi)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, plt, paths)


def _span(values: Sequence[float]) -> tuple[float, float]:
    """Axis range around the values and limits with a margin (never zero width)."""
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo) if hi > lo else max(0.5, 0.05 * abs(hi))
    return lo - pad, hi + pad


def _save(fig: Any, plt: Any, paths: Sequence[Path]) -> list[Path]:
    out = [Path(p) for p in paths]
    try:
        for p in out:
            fig.savefig(p, dpi=150)
    finally:
        plt.close(fig)
    return out


@dataclass
class PopulationPanel:
    """What one axis of the population DVH figure shows.

    Attributes
    ----------
    structure : str
    dose_gy : ndarray
        Common dose grid.
    curves : ndarray, shape (n_plans, n_doses)
        Each plan's cumulative DVH on the grid.
    median, q25, q75 : ndarray
        Median and quartiles over the plans at each dose.
    markers : list of (x_gy, y, label)
        Protocol limits that are points of the DVH plane in this volume unit.
    notes : list of str
        What could not be drawn, and plans left out.
    """

    structure: str
    dose_gy: np.ndarray
    curves: np.ndarray
    median: np.ndarray
    q25: np.ndarray
    q75: np.ndarray
    markers: list[tuple[float, float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def draw_population(panels: Sequence[PopulationPanel], path: Path, *, relative: bool,
                    lines: bool, title: str) -> Path:
    """Population DVH, one axis per structure: median, inter-quartile band, limits.

    Parameters
    ----------
    panels : sequence of PopulationPanel
    path : Path
        The PNG (or other matplotlib format) to write.
    relative : bool
        Volume axis in % of the structure (True) or cm³.
    lines : bool
        Draw every plan's curve as a thin line too.
    title : str

    Returns
    -------
    Path
    """
    plt = _pyplot()
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False,
                             layout="constrained")
    for ax, p in zip(axes.flat, panels, strict=False):
        if lines:
            for c in p.curves:
                ax.plot(p.dose_gy, c, color=_LINES, lw=0.5, alpha=0.6)
        ax.fill_between(p.dose_gy, p.q25, p.q75, color=_BAND, alpha=0.7, lw=0,
                        label="inter-quartile range")
        ax.plot(p.dose_gy, p.median, color=_MEDIAN, lw=1.8, label="median")
        for i, (x, y, label) in enumerate(p.markers):
            ax.plot([x], [y], marker="os^Dv"[i % 5], ms=7, color=_LIMIT, ls="none",
                    clip_on=False, zorder=4, label=label)
        ax.set_title(f"{p.structure} (n = {p.curves.shape[0]})", fontsize=10)
        ax.set_xlabel("Dose (Gy)", fontsize=9)
        ax.set_ylabel("Volume (%)" if relative else "Volume (cm³)", fontsize=9)
        right = max([float(p.dose_gy[-1]) if p.dose_gy.size else 1.0,
                     *(1.03 * x for x, _, _ in p.markers)])
        ax.set_xlim(0, right)
        ax.set_ylim(0, None)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        if p.notes:
            ax.text(0.01, 0.01, "\n".join(p.notes), transform=ax.transAxes, fontsize=6,
                    va="bottom", ha="left", color="#404040")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, plt, [path])[0]
