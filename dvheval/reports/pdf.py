"""The PDF report: the check on A4 portrait pages, for the plan's record.

Page one carries the header (patient, plan, protocol with its version and
date, report date, tool version), the verdict banner with the gate sentence
of the text report's last line and the exit code, the prescriptions and
fractions used, and the integrity findings; the constraint table follows,
continued on as many pages as it needs with its header repeated and every
cell wrapped to its column. The last page(s) hold the DVH plot of
:func:`~dvheval.reports.plot.dvh_figure` and the numbered list of its limits.

Everything is drawn with matplotlib's PDF backend from the dict of
:func:`~dvheval.reports.json.report_view` (strings already shown with
visible escapes) and the sentences of :mod:`~dvheval.reports.summary`.
The file carries no creation date, so the same check on the same date gives
the same bytes. (About 550 lines: page layout, text wrapping with measured
widths and the table's page breaks are one drawing job on one figure API.)
"""

from __future__ import annotations

import datetime as _dt
import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dvheval.check import CheckResult
from dvheval.reports.common import fmt_limit, fmt_margin, fmt_value
from dvheval.reports.json import report_view
from dvheval.reports.plot import VERDICT_COLOUR, LimitMark, dvh_figure
from dvheval.reports.summary import (
    constraint_note,
    constraint_rows,
    finding_text,
    fractions_text,
    gate_text,
    integrity_findings,
    overrides_text,
    patient_text,
    plan_label,
    plan_text,
    prescriptions_text,
    protocol_text,
    severity_word,
    summary_text,
)
from dvheval.sanitize import visible
from dvheval.vocab import Verdict

#: A4 portrait in points, and the margins of the flowing text.
PAGE_W, PAGE_H = 595.28, 841.89
_MARGIN = 40.0
_TOP = 52.0  # below the running header
_BOTTOM = PAGE_H - 46.0  # above the footer
_WIDTH = PAGE_W - 2 * _MARGIN

#: Font sizes (pt) of body text and table cells, and their line heights.
_BODY_PT, _TABLE_PT = 8.5, 7.0
_BODY_LEAD, _TABLE_LEAD = 11.0, 8.8
_CELL_PAD = 2.5

#: Light verdict colours of the banner background (the text takes the plot's
#: dark :data:`~dvheval.reports.plot.VERDICT_COLOUR`).
_BANNER_FILL = {
    Verdict.PASS.value: "#dafbe1",
    Verdict.ACCEPTABLE.value: "#fff8c5",
    Verdict.FAIL.value: "#ffebe9",
    Verdict.NOT_EVALUATED.value: "#fbefff",
}

#: Columns of the constraint table: header and width (pt); the widths sum to the text width.
_COLUMNS = (("Structure", 60.0), ("ROI", 56.0), ("Metric", 52.0), ("Limit", 76.0),
            ("Value", 42.0), ("Margin", 42.0), ("Verdict", 56.0), ("Priority", 38.0),
            ("Note", _WIDTH - 422.0))

_MUTED = "#57606a"

#: Widest line (pt) of a curve's name in the legend beside the DVH plot.
_LEGEND_PT = 110.0
#: Side margins (pt) of the DVH plot, narrower than the text's.
_PLOT_MARGIN = 20.0


# ------------------------------------------------------------------- text
@functools.lru_cache(maxsize=8192)
def text_width(text: str, size: float, bold: bool = False) -> float:
    """Width in points of one line of text in the report's sans-serif font.

    Parameters
    ----------
    text : str
    size : float
        Font size in points.
    bold : bool

    Returns
    -------
    float
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(family="sans-serif", size=size, weight="bold" if bold else "normal")
    width, _height, _descent = text_to_path.get_text_width_height_descent(text, prop,
                                                                          ismath=False)
    return float(width)


def wrap(text: str, width: float, size: float, bold: bool = False) -> list[str]:
    """``text`` broken into lines no wider than ``width`` points.

    Lines break at spaces; a word wider than a line is cut between
    characters, so nothing is ever wider than the column.

    Parameters
    ----------
    text : str
    width : float
        Points.
    size : float
        Font size in points.
    bold : bool

    Returns
    -------
    list of str
        At least one line (an empty string for empty text).
    """
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if text_width(candidate, size, bold) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while len(word) > 1 and text_width(word, size, bold) > width:
            cut = _fitting_prefix(word, width, size, bold)
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    lines.append(line)
    return lines


def _fitting_prefix(word: str, width: float, size: float, bold: bool) -> int:
    """Length of the prefix of ``word`` to put on a line of ``width`` points.

    The longest prefix that fits (at least one character), shortened to end
    after its last ``_``, ``-`` or ``/`` when it holds one (``NOT_`` then
    ``APPLICABLE``).
    """
    lo, hi = 1, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_width(word[:mid], size, bold) <= width:
            lo = mid
        else:
            hi = mid - 1
    soft = max(word.rfind(ch, 0, lo) for ch in "_-/") + 1
    return soft if soft > 1 else lo


def _text(ax: Any, x: float, y: float, s: str, size: float, **kw: Any) -> None:
    """One line of text, its top at ``y`` points from the top of the page; never math."""
    ax.text(x, y, s, fontsize=size, va="top", ha=kw.pop("ha", "left"), parse_math=False,
            color=kw.pop("color", "black"), fontweight=kw.pop("weight", "normal"), **kw)


# ------------------------------------------------------------------ blocks
@dataclass(frozen=True)
class Block:
    """A piece of a page: its height (pt) and how to draw it with its top at ``y``.

    ``table`` names the table a row belongs to: when a page break falls
    inside it, the table's header row is repeated. ``keep`` keeps a heading
    on the page of what follows it.
    """

    height: float
    draw: Callable[[Any, float], None]
    table: str | None = None
    keep: bool = False


def _lines_block(lines: Sequence[str], size: float, lead: float, x: float = _MARGIN,
                 colour: str = "black", bold: bool = False) -> list[Block]:
    """One block per line of text, so that a paragraph may continue on the next page."""
    def draw_line(line: str) -> Callable[[Any, float], None]:
        return lambda ax, y: _text(ax, x, y, line, size, color=colour,
                                   weight="bold" if bold else "normal")

    return [Block(lead, draw_line(line)) for line in lines]


def _heading(title: str) -> Block:
    """A section heading, kept with what follows it."""
    return Block(20.0, lambda ax, y: _text(ax, _MARGIN, y + 6.0, title, 11.0, weight="bold"),
                 keep=True)


def _gap(height: float) -> Block:
    return Block(height, lambda ax, y: None)


def _field_blocks(label: str, value: str, label_width: float = 78.0) -> list[Block]:
    """``label  value`` with the value wrapped beside its label."""
    lines = wrap(value, _WIDTH - label_width, _BODY_PT)
    blocks = _lines_block(lines, _BODY_PT, _BODY_LEAD, x=_MARGIN + label_width)
    first = blocks[0]

    def draw(ax: Any, y: float) -> None:
        _text(ax, _MARGIN, y, label, _BODY_PT, weight="bold")
        first.draw(ax, y)

    return [Block(first.height, draw), *blocks[1:]]


# ------------------------------------------------------------------ content
def _header_blocks(d: dict[str, Any], date: str) -> list[Block]:
    """Title and the plan, protocol, prescriptions and fractions of the check."""
    title = wrap(f"Plan check: {patient_text(d)}, {plan_label(d)}", _WIDTH, 14.0, bold=True)
    blocks = _lines_block(title, 14.0, 18.0, bold=True)
    blocks.append(_gap(6.0))
    fields = [("Patient", patient_text(d)), ("Plan", plan_text(d)),
              ("Protocol", protocol_text(d)), ("Report date", date),
              ("Tool", f"{d['tool']['name']} {d['tool']['version']}"),
              ("Prescriptions", prescriptions_text(d)), ("Fractions", fractions_text(d))]
    if overrides_text(d):
        fields.append(("Overrides", overrides_text(d)))
    if d.get("conditions"):
        fields.append(("Conditions", f"asserted: {', '.join(d['conditions'])}"))
    fields.append(("Summary", summary_text(d)))
    for label, value in fields:
        blocks += _field_blocks(label, value)
    return blocks


def _banner(d: dict[str, Any]) -> Block:
    """The verdict, the exit code and the gate sentence on the verdict's colour."""
    verdict = d["verdict"]
    colour = VERDICT_COLOUR.get(verdict, "black")
    lines = wrap(gate_text(d), _WIDTH - 16.0, 9.0)
    height = 12.0 + 20.0 + len(lines) * 11.5 + 6.0

    def draw(ax: Any, y: float) -> None:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((_MARGIN, y + 4.0), _WIDTH, height - 8.0, lw=1.2,
                               facecolor=_BANNER_FILL.get(verdict, "#f6f8fa"),
                               edgecolor=colour))
        _text(ax, _MARGIN + 8.0, y + 10.0, verdict, 15.0, weight="bold", color=colour)
        _text(ax, _MARGIN + _WIDTH - 8.0, y + 12.0, f"exit code {d['exit_code']}", 11.0,
              weight="bold", color=colour, ha="right")
        for i, line in enumerate(lines):
            _text(ax, _MARGIN + 8.0, y + 32.0 + i * 11.5, line, 9.0)

    return Block(height, draw)


def _integrity_blocks(d: dict[str, Any]) -> list[Block]:
    """The integrity findings that close the gate or warn, closing ones first."""
    findings = integrity_findings(d)
    if not findings:
        return []
    blocks = [_heading("Integrity")]
    for f in findings:
        closes = f.get("severity") == "close"
        word = severity_word(f, d)
        label_width = text_width(word, _BODY_PT, True) + 8.0
        lines = wrap(finding_text(f), _WIDTH - label_width, _BODY_PT)
        rest = _lines_block(lines, _BODY_PT, _BODY_LEAD, x=_MARGIN + label_width)
        colour = VERDICT_COLOUR["FAIL"] if closes else VERDICT_COLOUR["ACCEPTABLE"]

        def draw(ax: Any, y: float, word: str = word, colour: str = colour,
                 first: Block = rest[0]) -> None:
            _text(ax, _MARGIN, y, word, _BODY_PT, weight="bold", color=colour)
            first.draw(ax, y)

        blocks += [Block(rest[0].height, draw), *rest[1:]]
    return blocks


def _row_block(cells: Sequence[tuple[str, str, bool]], table: str, shade: bool) -> Block:
    """One table row: (text, colour, bold) per column of :data:`_COLUMNS`, wrapped."""
    wrapped = [wrap(text, width - 2 * _CELL_PAD, _TABLE_PT, bold)
               for (text, _c, bold), (_h, width) in zip(cells, _COLUMNS, strict=True)]
    height = max(len(lines) for lines in wrapped) * _TABLE_LEAD + 2 * _CELL_PAD

    def draw(ax: Any, y: float) -> None:
        from matplotlib.patches import Rectangle

        if shade:
            ax.add_patch(Rectangle((_MARGIN, y), _WIDTH, height, lw=0, facecolor="#f3f4f6"))
        ax.plot([_MARGIN, _MARGIN + _WIDTH], [y + height] * 2, color="#d0d7de", lw=0.4)
        x = _MARGIN
        for lines, (_t, colour, bold), (_h, width) in zip(wrapped, cells, _COLUMNS, strict=True):
            for i, line in enumerate(lines):
                _text(ax, x + _CELL_PAD, y + _CELL_PAD + i * _TABLE_LEAD, line, _TABLE_PT,
                      color=colour, weight="bold" if bold else "normal")
            x += width

    return Block(height, draw, table=table)


def _constraint_blocks(d: dict[str, Any]) -> tuple[list[Block], Block]:
    """The constraint rows (with the heading before them) and the table's header row."""
    header = _row_block([(h, "black", True) for h, _w in _COLUMNS], "", False)
    head = Block(header.height + 1.0, header.draw, table=None)
    blocks = [_heading("Constraints"), head]
    for i, c in enumerate(constraint_rows(d)):
        verdict = c["verdict"]
        grey = _MUTED if verdict == Verdict.NOT_APPLICABLE else "black"
        cells = [(c["structure"], grey, False), (c["roi"] or "-", grey, False),
                 (c["metric"], grey, False), (fmt_limit(c), grey, False),
                 (fmt_value(c["value"], c["limit_unit"]), grey, False),
                 (fmt_margin(c["margin"], c["limit_unit"]), grey, False),
                 (verdict, VERDICT_COLOUR.get(verdict, "black"), True),
                 (c["priority"], grey, False), (constraint_note(c), grey, False)]
        blocks.append(_row_block(cells, "constraints", i % 2 == 1))
    missing = d["gate"]["unresolved_required_structures"]
    if missing:
        blocks.append(_gap(6.0))
        text = f"NOT_EVALUATED: required structure(s) missing or ambiguous: {', '.join(missing)}"
        blocks += _lines_block(wrap(text, _WIDTH, _BODY_PT, True), _BODY_PT, _BODY_LEAD,
                               colour=VERDICT_COLOUR["NOT_EVALUATED"], bold=True)
    if not constraint_rows(d):
        blocks += _lines_block(["no constraints with a limit"], _BODY_PT, _BODY_LEAD)
    return blocks, head


def _warning_blocks(d: dict[str, Any]) -> list[Block]:
    """The check's warnings (each can change a value), one wrapped paragraph each."""
    if not d["warnings"]:
        return []
    blocks = [_heading("Warnings")]
    for w in d["warnings"]:
        blocks += _lines_block(wrap(f"warning: {w}", _WIDTH, _BODY_PT), _BODY_PT, _BODY_LEAD)
    return blocks


def _limit_blocks(marks: Sequence[LimitMark]) -> list[Block]:
    """The numbered limits drawn on the DVH plot, one wrapped line each."""
    if not marks:
        return _lines_block(["No limit is drawn on the plot."], _BODY_PT, _BODY_LEAD)
    blocks = [_heading("Limits on the plot: number, structure, limit (verdict)")]
    for m in marks:
        blocks += _lines_block(wrap(m.label, _WIDTH, _BODY_PT), _BODY_PT, _BODY_LEAD,
                               colour=VERDICT_COLOUR.get(m.verdict, "black"))
    return blocks


# ---------------------------------------------------------------- pages
def paginate(blocks: Sequence[Block], first_top: float = _TOP,
             headers: dict[str, Block] | None = None) -> list[list[tuple[Block, float]]]:
    """Place blocks top to bottom on as many pages as they need.

    Parameters
    ----------
    blocks : sequence of Block
    first_top : float
        Where the first page's content starts (points from the top).
    headers : dict, optional
        Table name -> its header row, repeated at the top of a page that
        continues the table.

    Returns
    -------
    list of list of (Block, float)
        Per page, the blocks and the top of each.
    """
    headers = headers or {}
    pages: list[list[tuple[Block, float]]] = [[]]
    y = first_top
    for i, block in enumerate(blocks):
        need = block.height
        if block.keep and i + 1 < len(blocks):
            need += blocks[i + 1].height
        if y + need > _BOTTOM and pages[-1]:
            pages.append([])
            y = _TOP
            if block.table in headers:
                pages[-1].append((headers[block.table], y))
                y += headers[block.table].height
        pages[-1].append((block, y))
        y += block.height
    return pages


def _page_axes(fig: Any) -> Any:
    """An invisible axes over the whole page, in points from the top-left corner."""
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0), zorder=10)
    ax.set_xlim(0, PAGE_W)
    ax.set_ylim(PAGE_H, 0)
    ax.set_axis_off()
    ax.patch.set_visible(False)
    return ax


def _draw_page(fig: Any, placed: Sequence[tuple[Block, float]], running: str, number: int,
               total: int) -> None:
    """The blocks of one page, the running header and the footer ``page n of N``."""
    ax = _page_axes(fig)
    for block, y in placed:
        block.draw(ax, y)
    head = wrap(running, _WIDTH, 7.0)[0]
    _text(ax, _MARGIN, 26.0, head, 7.0, color=_MUTED)
    ax.plot([_MARGIN, _MARGIN + _WIDTH], [38.0, 38.0], color="#d0d7de", lw=0.5)
    _text(ax, _MARGIN + _WIDTH, PAGE_H - 32.0, f"page {number} of {total}", 7.0,
          color=_MUTED, ha="right")


def _dvh_page(result: CheckResult) -> tuple[Any, float, list[LimitMark]]:
    """The DVH figure moved onto an A4 page; where the text below it may start; its limits.

    The plot keeps its size and drawing (its limit labels were placed for
    that size); its list of limits is removed from the figure and written
    by this module instead, so that a long list continues on the next page.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig, marks = dvh_figure(result)
    for legend in list(fig.legends):
        legend.remove()
    FigureCanvasAgg(fig)
    ax = fig.axes[0]
    box = _fit_curve_legend(fig, ax)
    pos = ax.get_position()
    w_in, h_in = fig.get_size_inches()
    ax_in = (pos.x0 * w_in, pos.y0 * h_in, pos.width * w_in, pos.height * h_in)
    page_w, page_h = PAGE_W / 72.0, PAGE_H / 72.0
    left = max((page_w - box.width) / 2.0, _PLOT_MARGIN / 72.0) + ax_in[0] - box.x0
    top_gap = (_TOP + 24.0) / 72.0
    bottom = page_h - top_gap - (box.y1 - ax_in[1])
    fig.set_size_inches(page_w, page_h)
    ax.set_position((left / page_w, bottom / page_h, ax_in[2] / page_w, ax_in[3] / page_h))
    text_top = (top_gap + box.height) * 72.0 + 12.0
    return fig, text_top, marks


def _fit_curve_legend(fig: Any, ax: Any) -> Any:
    """Wrap the curves' legend so that the plot and legend fit the page; their box (inches).

    Labels are wrapped at :data:`_LEGEND_PT` points, less when the plot and
    its legend would still be wider than the page less :data:`_PLOT_MARGIN`
    on each side.
    """
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()] if legend is not None else []
    renderer = fig.canvas.get_renderer()
    width = _LEGEND_PT
    for _attempt in range(3):
        for text, label in zip(legend.get_texts() if legend else [], labels, strict=True):
            text.set_text("\n".join(wrap(label, width, 8.5)))
        box = fig.get_tightbbox(renderer)
        excess = box.width * 72.0 - (PAGE_W - 2 * _PLOT_MARGIN)
        if excess <= 0 or width <= 40.0 or legend is None:
            break
        width = max(40.0, width - excess - 2.0)
    return box


def _report_figures(d: dict[str, Any], result: CheckResult, date: str) -> list[Any]:
    """Every page of the report as a matplotlib Figure, in order."""
    from matplotlib.figure import Figure

    table, header = _constraint_blocks(d)
    blocks = [*_header_blocks(d, date), _gap(6.0), _banner(d), *_integrity_blocks(d),
              *table, *_warning_blocks(d)]
    pages = paginate(blocks, headers={"constraints": header})
    dvh_fig, text_top, marks = _dvh_page(result)
    dvh_heading = _heading("Dose-volume histogram")
    plot_pages = paginate(_limit_blocks(marks), first_top=text_top)
    plot_pages[0].insert(0, (dvh_heading, _TOP))
    total = len(pages) + len(plot_pages)
    running = visible(f"{patient_text(d)} | {plan_label(d)} | {d['protocol']['name']} "
                      f"{d['protocol']['version']} | {d['verdict']} (exit {d['exit_code']})")
    figures = []
    for i, placed in enumerate([*pages, *plot_pages]):
        fig = dvh_fig if i == len(pages) else Figure(figsize=(PAGE_W / 72.0, PAGE_H / 72.0))
        _draw_page(fig, placed, running, i + 1, total)
        figures.append(fig)
    return figures


def report_date(date: str | None = None) -> str:
    """The date printed on the report: ``date``, else ``SOURCE_DATE_EPOCH``'s, else today's (UTC).

    Parameters
    ----------
    date : str, optional
        Any text, e.g. ``"2026-12-02"``.

    Returns
    -------
    str
        An ISO date such as ``"2026-12-02"`` unless ``date`` is given.
    """
    if date is not None:
        return visible(date)
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).date().isoformat()
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def to_pdf(result: CheckResult, date: str | None = None) -> bytes:
    """The report of a check as a PDF document (A4 portrait).

    Parameters
    ----------
    result : CheckResult
    date : str, optional
        Report date printed in the header; see :func:`report_date`.

    Returns
    -------
    bytes
        The PDF. It has no creation date: the same check and date give the
        same bytes.
    """
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    d = report_view(result)
    buf = io.BytesIO()
    title = visible(f"Plan check {d['verdict']}: {patient_text(d)}, {plan_label(d)}")
    metadata = {"CreationDate": None, "Title": title,
                "Creator": f"{d['tool']['name']} {d['tool']['version']}"}
    with matplotlib.rc_context({"pdf.fonttype": 42, "font.family": "sans-serif",
                                "font.size": 9, "path.simplify": False}):
        figures = _report_figures(d, result, report_date(date))
        with PdfPages(buf, metadata=metadata) as pdf:
            for fig in figures:
                pdf.savefig(fig)
    return buf.getvalue()
