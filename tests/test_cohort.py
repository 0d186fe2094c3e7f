"""Cohort analytics from the DVH curves a batch run stores.

A cohort of four copies of the sample plan, each with its own UIDs and
patient id and its dose scaled by a known factor, is batched once. The truth
of every check is computed here, independently: each plan's own DVHs from
``compute_dvhs`` on its folder, and numpy's median and percentiles over them.
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dvheval.batch import batch_command
from dvheval.batch.cohort import load_cohort, population
from dvheval.batch.cohort_command import cohort_command
from dvheval.batch.curves import CURVE_STEP_GY, curve_dvh
from dvheval.engine.compute import compute_dvhs
from dvheval.testing.synthetic import new_uid

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"
PROTOCOL = "bone-sib-30-40-10fx"
#: Dose scale factor of each plan, by patient id.
FACTORS = {"COH01": 0.9, "COH02": 1.0, "COH03": 1.1, "COH04": 1.2}
#: Protocol structure -> ROI of the sample plan.
ROI = {"SpinalCord": "SpinalCord", "PTV_Low": "PTV30", "Kidney_L": "Kidney_L",
       "GTV_High": "GTV40"}


def _variant(dest: Path, factor: float, patient: str) -> str:
    """The sample plan with new UIDs, another patient id and its dose times ``factor``."""
    files = {role: pydicom.dcmread(SAMPLE / f"{role}.dcm")
             for role in ("RTSTRUCT", "RTPLAN", "RTDOSE")}
    uids = {}
    for role, ds in files.items():
        uids[role] = ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.PatientID = patient
    files["RTPLAN"].ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = uids["RTSTRUCT"]
    files["RTDOSE"].ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = uids["RTPLAN"]
    files["RTDOSE"].DoseGridScaling = float(files["RTDOSE"].DoseGridScaling) * factor
    dest.mkdir(parents=True)
    for role, ds in files.items():
        ds.save_as(dest / f"{role}.dcm")
    return uids["RTPLAN"]


@pytest.fixture(scope="module")
def cohort_db(tmp_path_factory) -> dict:
    """The archive, its batch database and each plan's own DVHs (the truth)."""
    base = tmp_path_factory.mktemp("cohort")
    root = base / "archive"
    plans = {}
    for patient, f in FACTORS.items():
        folder = root / patient / "RT"
        uid = _variant(folder, f, patient)
        plans[patient] = {"folder": folder, "uid": uid,
                          "truth": compute_dvhs(folder, metrics=["D1cc"])}
    db = base / "results.sqlite"
    code = batch_command(root, PROTOCOL, db=db, jobs=2)
    assert code == 1  # COH04 (dose x 1.2) breaks the cord limit
    return {"base": base, "root": root, "db": db, "plans": plans}


def _curves(db: Path) -> dict[tuple[str, str], tuple]:
    """(patient, ROI name) -> the stored columns curve_dvh takes."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT p.patient_id, c.roi_name, c.total_cc, c.covered_cc, c.min_gy, c.max_gy, "
            "c.mean_gy, c.dose_start_gy, c.dose_step_gy, c.curve_cc FROM dvh_curves c "
            "JOIN plans p USING (plan_id) WHERE c.curve_cc IS NOT NULL").fetchall()
    return {(r[0], r[1]): r[2:] for r in rows}


def test_stored_curves_reproduce_each_plans_metrics(cohort_db):
    curves = _curves(cohort_db["db"])
    checked = 0
    for patient, plan in cohort_db["plans"].items():
        for s in plan["truth"].structures:
            if s.dvh is None or s.dvh.is_empty:
                assert (patient, s.name) not in curves
                continue
            h = curve_dvh(*curves[(patient, s.name)])
            for name in ("Dmax", "Dmin", "Dmean"):  # stored exactly
                assert h.metric(name) == pytest.approx(s.dvh.metric(name), abs=1e-9)
            for name in ("D0.03cc", "D2%", "D50%", "D98%", "D0.5cc"):  # within one grid step
                assert abs(h.metric(name) - s.dvh.metric(name)) <= CURVE_STEP_GY, (s.name, name)
            assert h.metric("V20Gy") == pytest.approx(s.dvh.metric("V20Gy"), rel=1e-3, abs=1e-3)
            checked += 1
    assert checked == 4 * 9  # 9 ROIs of the sample plan have a DVH


def test_curves_are_compact_and_on_the_grid(cohort_db):
    with sqlite3.connect(cohort_db["db"]) as conn:
        per_plan = conn.execute("SELECT plan_id, sum(length(curve_cc)), count(*), "
                                "sum(curve_cc IS NULL) FROM dvh_curves GROUP BY plan_id"
                                ).fetchall()
        cord = conn.execute("SELECT min_gy, max_gy, dose_start_gy, n_points, "
                            "length(curve_cc) FROM dvh_curves WHERE roi_name = 'SpinalCord'"
                            ).fetchall()
    assert len(per_plan) == 4
    for _, size, n, without in per_plan:
        assert n == 11 and without == 2  # every ROI has a row; Iso and Duodenum no curve
        assert 30_000 < size < 60_000
    for lo, hi, start, n, size in cord:
        assert size == 4 * n
        last = start + (n - 1) * CURVE_STEP_GY  # grid doses strictly inside (min, max)
        assert lo < start <= lo + CURVE_STEP_GY + 1e-9
        assert last < hi <= last + CURVE_STEP_GY + 1e-9


def test_population_median_and_quartiles_equal_numpy_over_the_plans(cohort_db):
    cohort = load_cohort(cohort_db["db"])
    assert [p.patient_id for p in cohort.plans] == list(FACTORS)
    doses = np.array([3.0, 10.0, 20.0, 25.0, 29.5, 31.0])
    for structure in ("SpinalCord", "PTV_Low"):
        by_patient = {p.patient_id: cohort.curves[structure][p.plan_id] for p in cohort.plans}
        for relative in (True, False):
            matrix, median, q25, q75 = population(list(by_patient.values()), doses, relative)
            truth = []
            for patient in by_patient:
                h = cohort_db["plans"][patient]["truth"][ROI[structure]].dvh
                # the plan's own cumulative DVH: linear between its bin edges
                cum = np.append(np.cumsum(h.volumes_cc[::-1])[::-1], 0.0)
                v = np.interp(doses, h.edges_gy, cum)
                truth.append(100.0 * v / h.total_cc if relative else v)
            t = np.array(truth)
            tol = 1e-3 if relative else 1e-4
            np.testing.assert_allclose(matrix, t, atol=tol)
            np.testing.assert_allclose(median, np.median(t, axis=0), atol=tol)
            np.testing.assert_allclose(q25, np.percentile(t, 25, axis=0), atol=tol)
            np.testing.assert_allclose(q75, np.percentile(t, 75, axis=0), atol=tol)
    # the cord at 29.5 Gy: the hotter plans still have volume there, the coolest none
    cord = population([cohort.curves["SpinalCord"][p.plan_id] for p in cohort.plans],
                      np.array([29.5]))[0][:, 0]
    assert cord[0] == 0.0 and np.all(np.diff(cord) > 0)


def test_cohort_metrics_equal_compute_dvhs_per_plan(cohort_db, tmp_path, capsys):
    out = tmp_path / "cohort.csv"
    metrics = ["D1cc", "V20Gy[%]", "Dmax[EQD2, a/b=2]", "D95%[%]"]
    code = cohort_command(cohort_db["db"], structures=["spinalcord", "PTV_Low"],
                          metrics=metrics, export=out)
    text = capsys.readouterr().out
    assert code == 0
    assert "SpinalCord     D1cc                    4" in text
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 2 * len(metrics)
    for r in rows:
        plan = cohort_db["plans"][r["patient_id"]]
        assert r["rtplan_uid"] == r["plan_key"] == plan["uid"]
        assert r["plan_folder"] == f"{r['patient_id']}/RT"
        assert r["rtdose_files"] == str(plan["folder"] / "RTDOSE.dcm")
        assert r["rtplan_label"] == "L1 SIB 30/40" and r["evaluated_at"]
        roi = ROI[r["structure"]]
        truth = plan["truth"]  # compute_dvhs(folder, metrics=["D1cc"])
        h = truth[roi].dvh
        value = float(r["value"]) if r["value"] else None
        if r["metric"] == "D1cc":
            assert value == pytest.approx(truth[roi].metrics["D1cc"], abs=0.01)
        elif r["metric"] == "V20Gy[%]":
            assert value == pytest.approx(100 * h.volume_at_dose(20.0) / h.total_cc, abs=0.01)
        elif r["metric"].startswith("Dmax[EQD2"):
            d, n, ab = h.max_gy, 10, 2.0  # EQD2 = D (d + a/b) / (2 + a/b), d = D / n
            assert value == pytest.approx(d * (d / n + ab) / (2 + ab), rel=1e-9)
        elif r["structure"] == "PTV_Low":  # D95% in % of the 30 Gy level
            assert value == pytest.approx(100 * h.dose_at_volume(0.95 * h.covered_cc) / 30.0,
                                          abs=0.05)
        else:  # the cord has no prescription level: no value, and why
            assert value is None and "prescription" in r["error"]


def test_parquet_export_holds_the_same_table(cohort_db, tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    csv_out, pq_out = tmp_path / "t.csv", tmp_path / "t.parquet"
    for out in (csv_out, pq_out):
        assert cohort_command(cohort_db["db"], metrics=["Dmean"], export=out) == 0
    table = pq.read_table(pq_out).to_pydict()
    with open(csv_out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(table["value"]) == len(rows) == 4 * 7  # 7 protocol structures matched
    assert table["value"] == pytest.approx([float(r["value"]) for r in rows])
    assert table["structure"] == [r["structure"] for r in rows]


def test_limits_are_attached_to_boxes_and_markers(cohort_db):
    from dvheval.batch.cohort import box_groups, limit_markers

    cohort = load_cohort(cohort_db["db"], structures=["SpinalCord", "PTV_Low", "Kidney_L"])
    groups = {(g.structure, g.metric): g for g in box_groups(cohort, ["Dmax[EQD2, a/b=2]"])}
    cord = groups[("SpinalCord", "Dmax")]
    assert cord.limits == [("<=", 34.0)] and cord.values.size == 4
    truth = [cohort_db["plans"][p]["truth"]["SpinalCord"].dvh.max_gy for p in FACTORS]
    np.testing.assert_allclose(np.sort(cord.values), np.sort(truth))
    assert groups[("SpinalCord", "Dmax[EQD2, a/b=2]")].unit == "Gy EQD2 (α/β 2 Gy)"
    assert groups[("PTV_Low", "D98%")].limits == [(">=", 27.0)]
    ptv = [lim for lim in cohort.limits if lim[0] == "PTV_Low"]
    points, undrawn = limit_markers(ptv, relative=True)
    assert sorted((x, y) for x, y, _ in points) == [(27.0, 98.0), (32.1, 2.0)]
    points, undrawn = limit_markers(ptv, relative=False)  # % volumes are not cm³ points
    assert points == [] and len(undrawn) == 2
    kidney = [lim for lim in cohort.limits if lim[0] == "Kidney_L"]
    assert limit_markers(kidney, relative=True) == ([], ["not drawn: Mean <= 12 Gy"])


def test_figures_are_written(cohort_db, tmp_path, capsys):
    pop, pop_abs, box = tmp_path / "pop.png", tmp_path / "abs.png", tmp_path / "box.png"
    assert cohort_command(cohort_db["db"], structures=["SpinalCord", "PTV_Low"], plot=pop,
                          boxplots=box, metrics=["D1cc"]) == 0
    assert cohort_command(cohort_db["db"], structures=["Kidney_L"], plot=pop_abs,
                          absolute=True, lines=True) == 0
    assert "written: " in capsys.readouterr().out
    for f in (pop, pop_abs, box):
        data = f.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000, f


def test_bad_structure_metric_and_run_are_clear_errors(cohort_db, capsys):
    db = cohort_db["db"]
    assert cohort_command(db, structures=["Brainstem"]) == 2
    err = capsys.readouterr().err
    assert "no protocol structure 'Brainstem'" in err and "SpinalCord" in err
    assert cohort_command(db, metrics=["D95"]) == 2
    assert "unknown metric 'D95'; allowed: Dmax" in capsys.readouterr().err
    assert cohort_command(db, run=7) == 2
    assert f"{db}: no run 7" in capsys.readouterr().err


def test_database_without_curves_says_so_and_batch_adds_them(cohort_db, tmp_path, capsys):
    old = tmp_path / "old.sqlite"
    shutil.copy(cohort_db["db"], old)
    with sqlite3.connect(old) as conn:  # the layout of a dvheval that stored no curves
        conn.execute("DROP TABLE dvh_curves")
    assert cohort_command(old) == 2
    assert "holds no DVH curves" in capsys.readouterr().err
    # opened for writing, the table is created; the plan stored without curves is
    # evaluated again (not skipped) and gets them
    one = cohort_db["plans"]["COH02"]["folder"]
    batch_command(one, PROTOCOL, db=old, jobs=1)
    assert "evaluated     1" in capsys.readouterr().out
    assert cohort_command(old, run=1) == 2
    assert "run 1 has no DVH curves" in capsys.readouterr().err
    assert cohort_command(old, structures=["SpinalCord"], metrics=["Dmax"]) == 0
    assert "SpinalCord     Dmax                    1" in capsys.readouterr().out
    batch_command(one, PROTOCOL, db=old, jobs=1)  # now stored with curves: skipped
    assert "skipped       1" in capsys.readouterr().out


def test_a_plan_without_the_structure_keeps_its_rows_with_the_reason(cohort_db, tmp_path):
    from dvheval.batch.cohort import metric_rows, population_panels

    db = tmp_path / "nocord.sqlite"
    shutil.copy(cohort_db["db"], db)
    with sqlite3.connect(db) as conn:  # as if COH03 had no ROI matching SpinalCord
        conn.execute("DELETE FROM dvh_curves WHERE roi_name = 'SpinalCord' AND plan_id = "
                     "(SELECT plan_id FROM plans WHERE patient_id = 'COH03')")
    cohort = load_cohort(db, structures=["SpinalCord"])
    rows = {r[3]: r for r in metric_rows(cohort, ["Dmax"])}
    assert sorted(rows) == list(FACTORS)
    assert rows["COH03"][17] is None and rows["COH03"][19] == "no ROI matched this structure"
    assert rows["COH02"][17] == pytest.approx(
        cohort_db["plans"]["COH02"]["truth"]["SpinalCord"].dvh.max_gy)
    (panel,) = population_panels(cohort, relative=True)
    assert panel.curves.shape[0] == 3 and "left out: 1 plan(s) no ROI" in panel.notes
