"""Rendering a planning-system comparison (``dvheval compare-tps``): text, JSON, CSV, Markdown.

Every format holds the same facts: per ROI the planning system's value and
dvheval's side by side, the differences, the verdict and the quantities
that disagree, every note, the ROIs without a stored DVH and the one-line
outcome. Names from DICOM files are made safe for each format
(:mod:`dvheval.sanitize`); JSON keeps the true strings.
"""

from __future__ import annotations

import csv
import io

from dvheval.engine.tps_compare import DOSE_METRICS, Quantity, ROIComparison, TPSComparison
from dvheval.sanitize import dumps_json, for_csv, for_markdown, visible

HEADERS = ["ROI", "Volume cc TPS / dvheval", "Dmean Gy", "D98% Gy", "D50% Gy", "D2% Gy",
           "Curve diff (beyond dose tol)", "Verdict"]


def to_json(comparison: TPSComparison) -> str:
    """The JSON document (non-finite numbers as ``null``)."""
    return dumps_json(comparison.to_dict())


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _flag(q: Quantity) -> str:
    """`` !`` after a value outside its tolerance."""
    return " !" if q.agrees is False else ""


def _cells(r: ROIComparison) -> list[str]:
    """The table cells of one ROI (without its name), as plain text."""
    if not r.quantities:
        return ["-"] * (len(HEADERS) - 2) + [r.verdict]
    cells = []
    vol = r.quantity("volume")
    if vol is not None:
        judged = "" if vol.tolerance is not None else ", not judged"
        cells.append(f"{_num(vol.tps)} / {_num(vol.dvheval)} "
                     f"({vol.difference or 0:+.1f} %{judged}){_flag(vol)}")
    for name in DOSE_METRICS:
        q = r.quantity(name)
        cells.append("-" if q is None else f"{_num(q.tps)} / {_num(q.dvheval)}{_flag(q)}")
    curve = r.quantity("curve")
    if curve is not None:
        cells.append(f"{curve.difference or 0:+.1f} % at {_num(curve.at_gy, 2)} Gy "
                     f"({_num(curve.beyond, 1)} %){_flag(curve)}")
    bad = [q.name for q in r.disagreeing]
    cells.append(r.verdict + (": " + ", ".join(bad) if bad else ""))
    return cells


def _header_lines(c: TPSComparison) -> list[str]:
    """Patient, file, convention and tolerances, as plain text."""
    t = c.tolerances
    dose = f"{t.dose_gy:g} Gy"
    if t.dose_pct is not None:
        ref = f"{c.reference_gy:g} Gy, " if c.reference_gy is not None else ""
        dose += f" or {t.dose_pct:g} % of the reference dose ({ref}{c.reference_source})"
    caps = ("half-slice end caps (--end-caps)" if c.end_caps
            else "no end caps (--no-end-caps)")
    return [
        f"Patient     {c.patient_id} {c.patient_name}",
        f"Dose        {c.dose_file}",
        f"dvheval     {caps}; planning-system values from its stored DVHs, evaluated "
        f"like dvheval's",
        f"Tolerances  doses {dose}; volume {t.volume_pct:g} % (not judged below "
        f"{t.small_cc:g} cc); curve {t.curve_pct:g} % of the volume beyond the dose "
        f"tolerance",
    ]


def _note_lines(c: TPSComparison) -> list[str]:
    """Every note of every ROI, then the ROIs without a stored DVH."""
    out = []
    for r in c.rois:
        for note in r.notes:
            out.append(f"{r.name}: {note}")
        for q in r.quantities:
            if q.note and q.agrees is not None:  # "not judged" is in the table already
                out.append(f"{r.name}: {q.name}: {q.note}")
    if c.without_tps_dvh:
        out.append("no stored DVH (not compared): " + ", ".join(c.without_tps_dvh))
    return out


def to_text(comparison: TPSComparison) -> str:
    """A plain-text report: header, one row per ROI, notes and the outcome.

    Names, paths and notes are shown with control characters as escapes
    (:func:`dvheval.sanitize.visible`). A value outside its tolerance is
    marked ``!``.
    """
    c = comparison
    rows = [[visible(r.name), *(visible(x) for x in _cells(r))] for r in c.rois]
    lines = [visible(x) for x in _header_lines(c)] + [""]
    if rows:
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(HEADERS)]
        def line(cells: list[str]) -> str:
            return "  ".join(x.ljust(w) for x, w in zip(cells, widths, strict=True)).rstrip()

        lines.append(line(HEADERS))
        lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
        lines += [line(row) for row in rows]
        lines.append("")
    notes = _note_lines(c)
    if notes:
        lines += [visible(n) for n in notes] + [""]
    lines.append(visible(c.message))
    return "\n".join(lines) + "\n"


def to_markdown(comparison: TPSComparison) -> str:
    """The report as Markdown: a table, the notes as a list, the outcome in bold."""
    c = comparison
    lines = ["# Planning-system DVH comparison", ""]
    lines += [for_markdown(x) + "  " for x in _header_lines(c)] + [""]
    if c.rois:
        lines.append("| " + " | ".join(for_markdown(h) for h in HEADERS) + " |")
        lines.append("|" + "---|" * len(HEADERS))
        for r in c.rois:
            cells = [for_markdown(r.name), *(for_markdown(x) for x in _cells(r))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    notes = _note_lines(c)
    if notes:
        lines += ["- " + for_markdown(n) for n in notes] + [""]
    lines.append(f"**{for_markdown(c.message)}**")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["patient_id", "roi_number", "roi", "verdict", "quantity", "unit", "tps",
               "dvheval", "difference", "tolerance", "agrees", "at_gy",
               "beyond_dose_tolerance", "note"]


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def to_csv(comparison: TPSComparison) -> str:
    """One row per ROI and quantity (tidy long format); an ROI not compared is one row.

    ``difference`` is dvheval minus the planning system (Gy; % of the stored
    volume for ``volume``; percentage points for ``curve``); ``agrees`` is
    empty when the quantity is not judged. Text cells are guarded against
    formula injection (:func:`dvheval.sanitize.for_csv`).
    """
    c = comparison
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in c.rois:
        head = [for_csv(c.patient_id), "" if r.number is None else r.number, for_csv(r.name),
                r.verdict]
        if not r.quantities:
            w.writerow(head + [""] * 9 + [for_csv("; ".join(r.notes))])
            continue
        for q in r.quantities:
            agrees = "" if q.agrees is None else str(q.agrees).lower()
            note = "; ".join([n for n in (q.note, *r.notes) if n])
            w.writerow(head + [for_csv(q.name), for_csv(q.unit), _csv_number(q.tps),
                               _csv_number(q.dvheval), _csv_number(q.difference),
                               _csv_number(q.tolerance), agrees, _csv_number(q.at_gy),
                               _csv_number(q.beyond), for_csv(note)])
    return buf.getvalue()
