"""Reading a run's results: its outcome, the plans not passed, the export tables.

:class:`ResultQueries` holds the queries :class:`~dvheval.batch.store.ResultStore`
answers about a stored run; every verdict order in them comes from
:data:`dvheval.vocab.VERDICT_SEVERITY` (FAIL, NOT_EVALUATED, ACCEPTABLE, PASS).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from itertools import groupby
from pathlib import PurePath
from typing import Any, NamedTuple

from dvheval.vocab import (
    JUDGED_VERDICTS,
    VERDICT_SEVERITY,
    Priority,
    Verdict,
    sql_in,
    verdict_from_rank_sql,
    verdict_rank_sql,
)

#: Columns of the tidy export (:meth:`ResultQueries.tidy_rows`), in order.
TIDY_COLUMNS = ("plan_key", "patient_id", "rtplan_label", "plan_verdict", "structure",
                "protocol_structure", "structure_status", "metric", "value", "unit", "verdict",
                "constraint_ids", "protocol_name", "protocol_version", "protocol_sha256",
                "tool_version", "input_sha256", "plan_id")
#: Columns of the per-constraint summary (:meth:`ResultQueries.summary_rows`).
SUMMARY_COLUMNS = ("constraint_id", "protocol_structure", "metric", "priority", "operator",
                   "limit_text", "plans", "PASS", "ACCEPTABLE", "FAIL", "NOT_EVALUATED",
                   "NOT_APPLICABLE", "pass_rate", "pass_rate_all")

_JUDGED = sql_in(JUDGED_VERDICTS)
#: Verdicts of a constraint that did not simply pass: worse than PASS in severity order.
_NOT_MET = sql_in(VERDICT_SEVERITY[:VERDICT_SEVERITY.index(Verdict.PASS)])

_NOT_PASSED_SQL = f"""
SELECT p.plan_id, p.plan_key, p.patient_id, p.rtplan_label, p.verdict,
       v.protocol_structure, v.metric, v.verdict
FROM run_plans r
JOIN plans p USING (plan_id)
LEFT JOIN verdicts v ON v.plan_id = p.plan_id AND v.priority != '{Priority.REPORT.value}'
     AND v.verdict IN {_NOT_MET}
WHERE r.run_id = :run AND p.verdict != '{Verdict.PASS.value}'
ORDER BY {verdict_rank_sql("p.verdict")}, p.patient_id, p.plan_key, v.rowid
"""

_TIDY_SQL = f"""
WITH sel AS (SELECT plan_id FROM run_plans WHERE run_id = :run),
judged AS (
    SELECT plan_id, roi_number, metric, min({verdict_rank_sql("verdict")}) AS rank,
           group_concat(constraint_id, ';') AS constraint_ids
    FROM verdicts WHERE plan_id IN sel AND verdict IN {_JUDGED} AND roi_number IS NOT NULL
    GROUP BY plan_id, roi_number, metric
),
t AS (
    SELECT p.plan_key, p.patient_id, p.rtplan_label, p.verdict AS plan_verdict,
           m.roi_name AS structure, m.protocol_structure, s.status AS structure_status,
           m.metric, m.value, m.unit,
           {verdict_from_rank_sql("j.rank")} AS verdict,
           j.constraint_ids, p.protocol_name, p.protocol_version, p.protocol_sha256,
           p.tool_version, p.input_sha256, p.plan_id, 0 AS part, m.rowid AS pos
    FROM metrics m
    JOIN plans p ON p.plan_id = m.plan_id
    LEFT JOIN structures s ON s.plan_id = m.plan_id AND s.roi_number IS m.roi_number
         AND s.roi_name = m.roi_name
    LEFT JOIN judged j ON j.plan_id = m.plan_id AND j.roi_number IS m.roi_number
         AND j.metric = m.metric
    WHERE m.plan_id IN sel
    UNION ALL
    SELECT p.plan_key, p.patient_id, p.rtplan_label, p.verdict, NULL, v.protocol_structure,
           NULL, v.metric, NULL, v.unit, v.verdict, v.constraint_id, p.protocol_name,
           p.protocol_version, p.protocol_sha256, p.tool_version, p.input_sha256, p.plan_id,
           1, v.rowid
    FROM verdicts v JOIN plans p ON p.plan_id = v.plan_id
    WHERE v.plan_id IN sel AND v.roi_number IS NULL AND v.verdict IN {_JUDGED}
)
SELECT {", ".join(TIDY_COLUMNS)} FROM t ORDER BY patient_id, plan_key, part, pos
"""

_SUMMARY_SQL = f"""
WITH sel AS (SELECT plan_id FROM run_plans WHERE run_id = :run),
c AS (
    SELECT constraint_id, protocol_structure, metric, priority, operator, limit_text,
           count(*) AS plans,
           sum(verdict = '{Verdict.PASS.value}') AS n_pass,
           sum(verdict = '{Verdict.ACCEPTABLE.value}') AS n_acc,
           sum(verdict = '{Verdict.FAIL.value}') AS n_fail,
           sum(verdict = '{Verdict.NOT_EVALUATED.value}') AS n_ne,
           sum(verdict = '{Verdict.NOT_APPLICABLE.value}') AS n_na, min(rowid) AS first
    FROM verdicts WHERE plan_id IN sel AND verdict != '{Verdict.REPORT.value}'
    GROUP BY constraint_id, protocol_structure, metric, priority, operator, limit_text
)
SELECT constraint_id, protocol_structure, metric, priority, operator, limit_text, plans,
       n_pass, n_acc, n_fail, n_ne, n_na,
       CAST(n_pass AS REAL) / nullif(n_pass + n_acc + n_fail, 0),
       CAST(n_pass AS REAL) / nullif(plans - n_na, 0)
FROM c ORDER BY first
"""

_PLOT_SQL = """
WITH sel AS (SELECT plan_id FROM run_plans WHERE run_id = :run),
first AS (SELECT plan_id, min(rowid) AS r0 FROM protocol_structures
          WHERE plan_id IN sel GROUP BY plan_id)
SELECT CASE WHEN ps.type = 'target' AND m.unit = 'cc' THEN 1
            WHEN ps.type = 'target' THEN 0
            WHEN m.unit = 'cc' THEN 3 ELSE 2 END AS panel,
       m.protocol_structure, m.metric, m.unit, m.value, ps.rowid - f.r0 AS structure_pos
FROM metrics m
JOIN structures s ON s.plan_id = m.plan_id AND s.roi_number IS m.roi_number
     AND s.roi_name = m.roi_name
JOIN protocol_structures ps ON ps.plan_id = m.plan_id AND ps.structure = m.protocol_structure
JOIN first f ON f.plan_id = m.plan_id
WHERE m.plan_id IN sel AND m.in_protocol = 1 AND m.value IS NOT NULL AND s.status = 'ok'
      AND m.unit IN ('Gy', 'cc', '%', '%Rx')
ORDER BY panel, structure_pos, m.protocol_structure, m.metric
"""


class NotPassed(NamedTuple):
    """A plan of a run whose verdict is not PASS (see :meth:`ResultQueries.not_passed`)."""

    plan_key: str
    patient_id: str
    rtplan_label: str
    verdict: str
    reasons: str
    folder: str


def plan_folder(paths: Sequence[str], roots: Sequence[str]) -> str:
    """The folder holding a plan's files, relative to the root it was found under.

    Parameters
    ----------
    paths : sequence of str
        The plan's files, as discovery recorded them.
    roots : sequence of str
        The folders the run searched.

    Returns
    -------
    str
        The deepest folder common to all ``paths``, relative to the most
        specific root holding it (``"."`` for the root itself); the folder
        as recorded when no root holds it; ``""`` without paths.

    Examples
    --------
    >>> plan_folder(["arch/P1/a/RD.dcm", "arch/P1/a/RS.dcm"], ["arch"])
    'P1/a'
    >>> plan_folder(["arch/P1/a/RD.dcm", "arch/P1/b/RS.dcm"], ["arch"])
    'P1'
    """
    if not paths:
        return ""
    parents = [os.path.dirname(p) for p in paths]
    try:
        common = PurePath(os.path.commonpath(parents))
    except ValueError:  # absolute and relative paths mixed
        return parents[0]
    for root in sorted(roots, key=lambda r: len(PurePath(r).parts), reverse=True):
        try:
            return common.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(common)


class ResultQueries:
    """The read-only queries of a results database (a base of ``ResultStore``)."""

    conn: sqlite3.Connection

    def run_verdicts(self, run_id: int) -> tuple[dict[str, int], int]:
        """Plan verdict counts of a run's plans (evaluated or skipped).

        Returns
        -------
        counts : dict
            verdict -> number of plans.
        failing : int
            Plans with a non-zero exit code.
        """
        rows = self.conn.execute(
            "SELECT p.verdict, count(*), sum(p.exit_code != 0) FROM run_plans r "
            "JOIN plans p USING (plan_id) WHERE r.run_id = ? GROUP BY p.verdict",
            (run_id,)).fetchall()
        return {v: int(n) for v, n, _ in rows}, sum(int(f or 0) for _, _, f in rows)

    def not_passed(self, run_id: int) -> list[NotPassed]:
        """A run's plans whose verdict is not PASS, with the constraints that stopped them.

        Returns
        -------
        list of NotPassed
            In the order of :data:`dvheval.vocab.VERDICT_SEVERITY` (FAIL, then
            NOT_EVALUATED, then ACCEPTABLE), each by patient and plan key;
            ``reasons`` lists the constraints (not report-only rows) that were
            not met, e.g. ``"SpinalCord Dmax FAIL"``; ``folder`` is the plan's
            folder (see :func:`plan_folder`) relative to the run's root.
        """
        rows = self.conn.execute(_NOT_PASSED_SQL, {"run": run_id}).fetchall()
        roots = self.run_roots(run_id)
        folders = self._plan_folders(run_id, roots)
        out = []
        for plan_id, plan_rows in groupby(rows, key=lambda r: r[0]):
            group = list(plan_rows)
            _, key, patient, label, verdict = group[0][:5]
            why = ", ".join(f"{st} {m} {v}" for *_, st, m, v in group if v is not None)
            out.append(NotPassed(key, patient or "", label or "", verdict,
                                 why or "see table protocol_structures",
                                 folders.get(plan_id, "")))
        return out

    def run_roots(self, run_id: int) -> list[str]:
        """The folders a run searched (empty for an unknown run)."""
        row = self.conn.execute("SELECT roots FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None or not row[0]:
            return []
        roots = json.loads(row[0])
        return [str(r) for r in roots] if isinstance(roots, list) else []

    def _plan_folders(self, run_id: int, roots: Sequence[str]) -> dict[int, str]:
        """plan_id -> folder of the files of each plan of the run that did not pass."""
        rows = self.conn.execute(
            "SELECT f.plan_id, f.path FROM run_plans r JOIN plans p USING (plan_id) "
            "JOIN plan_files f ON f.plan_id = p.plan_id "
            f"WHERE r.run_id = ? AND p.verdict != '{Verdict.PASS.value}' "
            "ORDER BY f.plan_id, f.rowid", (run_id,)).fetchall()
        return {plan_id: plan_folder([path for _, path in group], roots)
                for plan_id, group in groupby(rows, key=lambda r: r[0])}

    # --------------------------------------------------------------- export
    def has_run(self, run_id: int) -> bool:
        """Whether the database holds run ``run_id``."""
        return self.conn.execute("SELECT 1 FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone() is not None

    def run_protocol(self, run_id: int) -> tuple[str, str | None] | None:
        """(protocol name, protocol version) of a run, or None for an unknown run."""
        row = self.conn.execute("SELECT protocol_name, protocol_version FROM runs "
                                "WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def run_plan_count(self, run_id: int) -> int:
        """Number of plans a run evaluated or skipped."""
        return int(self.conn.execute("SELECT count(*) FROM run_plans WHERE run_id = ?",
                                     (run_id,)).fetchone()[0])

    def tidy_rows(self, run_id: int) -> list[tuple[Any, ...]]:
        """Rows of the tidy table (:data:`TIDY_COLUMNS`) of one run's plans.

        One row per plan x ROI x metric; ``verdict`` is the worst (in
        :data:`~dvheval.vocab.VERDICT_SEVERITY` order) of the judged
        constraints on that metric of that ROI. Constraints on a protocol
        structure no ROI matched follow, one row each. The run's plans are
        those it evaluated and those it skipped because the database already
        held them.
        """
        return self.conn.execute(_TIDY_SQL, {"run": run_id}).fetchall()

    def summary_rows(self, run_id: int) -> list[tuple[Any, ...]]:
        """Rows of the per-constraint summary (:data:`SUMMARY_COLUMNS`) of one run's plans."""
        return self.conn.execute(_SUMMARY_SQL, {"run": run_id}).fetchall()

    def plot_rows(self, run_id: int) -> list[tuple[Any, ...]]:
        """(panel, protocol structure, metric, unit, value, structure position) to plot.

        Every value of a metric the protocol reports or limits, of ROIs fully
        inside the dose grid; panel 0 target doses, 1 target volumes, 2
        organ-at-risk doses, 3 organ-at-risk volumes; ordered by panel, the
        structure's place in the protocol and metric.
        """
        return self.conn.execute(_PLOT_SQL, {"run": run_id}).fetchall()

    # ---------------------------------------------------------------- cohort
    def has_curve_table(self) -> bool:
        """Whether the database has table ``dvh_curves`` (databases of earlier versions do not)."""
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                 "name = 'dvh_curves'").fetchone() is not None

    def run_plans(self, run_id: int) -> list[tuple[Any, ...]]:
        """(plan_id, plan_key, patient_id, rtplan_label, rtplan_uid, verdict, fractions,
        evaluated_at) of a run's plans, by patient and plan key."""
        return self.conn.execute(
            "SELECT p.plan_id, p.plan_key, p.patient_id, p.rtplan_label, p.rtplan_uid, "
            "p.verdict, p.fractions, p.evaluated_at FROM run_plans r JOIN plans p "
            "USING (plan_id) WHERE r.run_id = ? ORDER BY p.patient_id, p.plan_key, p.plan_id",
            (run_id,)).fetchall()

    def run_plan_files(self, run_id: int) -> list[tuple[int, str, str]]:
        """(plan_id, role, path) of every file of a run's plans, in the order stored."""
        return self.conn.execute(
            "SELECT f.plan_id, f.role, f.path FROM run_plans r JOIN plan_files f "
            "USING (plan_id) WHERE r.run_id = ? ORDER BY f.plan_id, f.rowid",
            (run_id,)).fetchall()

    def run_curves(self, run_id: int) -> list[tuple[Any, ...]]:
        """Stored DVH curves of the ROIs of a run's plans that a protocol structure matched.

        Returns
        -------
        list of tuple
            (plan_id, protocol_structure, roi_name, roi_number, status, total_cc,
            covered_cc, min_gy, max_gy, mean_gy, prescription_gy, dose_start_gy,
            dose_step_gy, curve_cc), ordered by plan and ROI.
        """
        return self.conn.execute(
            "SELECT c.plan_id, c.protocol_structure, c.roi_name, c.roi_number, c.status, "
            "c.total_cc, c.covered_cc, c.min_gy, c.max_gy, c.mean_gy, c.prescription_gy, "
            "c.dose_start_gy, c.dose_step_gy, c.curve_cc FROM run_plans r "
            "JOIN dvh_curves c USING (plan_id) WHERE r.run_id = ? "
            "AND c.protocol_structure IS NOT NULL ORDER BY c.plan_id, c.rowid",
            (run_id,)).fetchall()

    def run_structure_order(self, run_id: int) -> list[str]:
        """The protocol structures of a run's plans, in the protocol's order."""
        rows = self.conn.execute(
            "SELECT ps.structure, min(ps.rowid - f.r0) AS pos FROM protocol_structures ps "
            "JOIN (SELECT plan_id, min(rowid) AS r0 FROM protocol_structures GROUP BY plan_id) f "
            "USING (plan_id) WHERE ps.plan_id IN (SELECT plan_id FROM run_plans "
            "WHERE run_id = ?) GROUP BY ps.structure ORDER BY pos, ps.structure",
            (run_id,)).fetchall()
        return [r[0] for r in rows]

    def run_limits(self, run_id: int) -> list[tuple[Any, ...]]:
        """Distinct protocol limits applied in a run's plans.

        Returns
        -------
        list of tuple
            (protocol_structure, metric, operator, limit_value, limit_unit,
            prescription_gy, priority), for constraints with a numeric limit,
            in the order first stored.
        """
        return self.conn.execute(
            "SELECT protocol_structure, metric, operator, limit_value, limit_unit, "
            "prescription_gy, priority FROM verdicts WHERE plan_id IN (SELECT plan_id "
            "FROM run_plans WHERE run_id = ?) AND operator IS NOT NULL "
            "AND limit_value IS NOT NULL GROUP BY protocol_structure, metric, operator, "
            "limit_value, limit_unit, prescription_gy, priority ORDER BY min(rowid)",
            (run_id,)).fetchall()

    def plans_with_curves(self, run_id: int) -> set[int]:
        """The plans of a run that have rows in ``dvh_curves`` (stored by this dvheval)."""
        return {int(r[0]) for r in self.conn.execute(
            "SELECT DISTINCT c.plan_id FROM run_plans r JOIN dvh_curves c USING (plan_id) "
            "WHERE r.run_id = ?", (run_id,))}
