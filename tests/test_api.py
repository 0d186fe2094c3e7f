"""The library API as a notebook uses it, checked on an analytic phantom.

A cylinder of radius 10 mm along z from -10 to +10 mm (2 mm planes, half-slice
end caps, so 22 mm long) in a dose that rises linearly with x: 20 Gy at the
axis, 0.5 Gy/mm. By symmetry its mean dose is 20 Gy; its volume is
pi r^2 L = 6.91 cm^3 (the 360-gon's area is 0.005 % smaller); Dmax is
25 Gy at x = +10 mm.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvheval import DVH, compute_dvhs

from .phantoms import LinearDose, cylinder, polygon_area

R, Z0, Z1, T = 10.0, -10.0, 10.0, 2.0
VOLUME_CC = polygon_area(R) * (Z1 - Z0 + T) / 1000.0
DOSE = LinearDose(20.0, 0.5, axis=0)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    from .phantoms import write_phantom

    folder = tmp_path_factory.mktemp("api") / "plan"
    return write_phantom(folder, [cylinder("Cyl", R, Z0, Z1, T), cylinder("Other", 5, -4, 4, T)],
                         DOSE)


@pytest.fixture(scope="module")
def plan(plan_dir):
    return compute_dvhs([plan_dir])


def test_a_folder_given_as_str_path_or_list(plan_dir, plan):
    for form in (str(plan_dir), plan_dir, [str(plan_dir)], [plan_dir]):
        got = compute_dvhs(form, structures=["Cyl"], metrics=["Dmean"])
        assert got.structure("Cyl").metrics["Dmean"] == pytest.approx(20.0, abs=0.02)


def test_structure_lookup_ignores_case_like_the_cli(plan):
    assert plan.structure("cyl") is plan.structure("Cyl") is plan["  CYL "]
    assert plan.structure("Cylinder") is None
    with pytest.raises(KeyError, match="no single structure named 'Cylinder'.*Cyl, Other"):
        plan["Cylinder"]
    with pytest.raises(TypeError, match="structure name must be a string"):
        plan.structure(3)


def test_metric_by_name_against_closed_form(plan):
    dvh = plan["Cyl"].dvh
    assert dvh.total_cc == pytest.approx(VOLUME_CC, rel=2e-3)
    assert dvh.metric("Dmean") == pytest.approx(20.0, abs=0.02)
    assert dvh.metric("Dmax") == pytest.approx(25.0, abs=0.1)
    # half of the cylinder (x >= 0) gets at least 20 Gy
    assert dvh.metric("V20Gy[%]") == pytest.approx(50.0, abs=0.3)
    assert dvh.metric("D50%") == pytest.approx(20.0, abs=0.05)
    assert dvh.metric("Dmean[%]", prescription_gy=40.0) == pytest.approx(50.0, abs=0.05)
    with pytest.raises(TypeError, match="metric name must be a string"):
        dvh.metric(95)


def test_relative_curve_is_the_absolute_one_over_the_volume(plan):
    dvh = plan["Cyl"].dvh
    dose, vol = dvh.cumulative()
    dose_r, pct = dvh.relative_cumulative()
    np.testing.assert_array_equal(dose, dose_r)
    np.testing.assert_allclose(pct, 100.0 * vol / dvh.total_cc)
    assert pct[0] == pytest.approx(100.0, abs=1e-6) and pct[-1] == 0.0


def test_dataframes(plan):
    pd = pytest.importorskip("pandas")
    long = plan.to_dataframe()
    assert list(long.columns) == ["structure", "roi_number", "type", "status", "metric",
                                  "value", "unit", "note"]
    n = sum(len(s.metrics) for s in plan.structures)
    assert len(long) == n
    row = long[(long.structure == "Cyl") & (long.metric == "Dmean")].iloc[0]
    assert row.value == pytest.approx(20.0, abs=0.02) and row.unit == "Gy"
    curve = plan["Cyl"].dvh.to_dataframe()
    assert list(curve.columns) == ["dose_gy", "volume_cc", "volume_pct"]
    at20 = np.interp(20.0, curve.dose_gy, curve.volume_pct)
    assert at20 == pytest.approx(50.0, abs=0.3)
    assert isinstance(curve, pd.DataFrame)


def test_plot_draws_the_relative_curve(plan):
    import matplotlib

    matplotlib.use("Agg")
    ax = plan["Cyl"].dvh.plot(label="Cyl")
    line = ax.get_lines()[0]
    assert line.get_ydata()[0] == pytest.approx(100.0, abs=1e-6)
    assert ax.get_ylabel() == "Volume (%)" and ax.get_legend() is not None
    ax2 = plan["Cyl"].dvh.plot(relative=False)
    assert ax2.get_lines()[0].get_ydata()[0] == pytest.approx(VOLUME_CC, rel=2e-3)


def test_dvh_from_samples_closed_form():
    # two equal volumes at 10 and 20 Gy: mean 15, V15Gy half
    h = DVH.from_samples(np.array([10.0, 20.0]), np.array([1.0, 1.0]), 2.0)
    assert h.metric("Dmean") == 15.0
    assert h.metric("V15Gy[%]") == 50.0
    assert math.isclose(h.metric("Dmax"), 20.0)


def test_pydicom_datasets_are_accepted_and_left_unchanged(plan_dir):
    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted(plan_dir.glob("*.dcm"))]
    before = [ds.to_json_dict() for ds in datasets]
    got = compute_dvhs(datasets, structures="Cyl", metrics="Dmean")
    assert got["Cyl"].metrics["Dmean"] == pytest.approx(20.0, abs=0.02)
    assert [ds.to_json_dict() for ds in datasets] == before


def test_a_generator_of_paths_is_read_once(plan_dir):
    got = compute_dvhs((p for p in [plan_dir]), structures=["Other"], metrics=["Dmean"])
    assert got["Other"].metrics["Dmean"] == pytest.approx(20.0, abs=0.02)


def test_wrong_arguments_are_type_errors(plan_dir, plan):
    from dvheval.check import check_plan
    from dvheval.protocol import load_protocol

    with pytest.raises(TypeError, match="got int"):
        compute_dvhs(3)
    with pytest.raises(TypeError, match="not a mix of paths and Datasets"):
        import pydicom

        compute_dvhs([plan_dir, pydicom.Dataset()])
    protocol = load_protocol("bone-sib-30-40-10fx")
    with pytest.raises(TypeError, match="got Protocol and PlanDVHs"):
        check_plan(protocol, plan)


def test_progress_is_reported_before_each_structure_and_at_the_end(plan_dir):
    calls = []
    compute_dvhs(plan_dir, metrics="Dmean", progress=lambda *a: calls.append(a))
    assert calls == [(0, 2, "Cyl"), (1, 2, "Other"), (2, 2, "")]


def test_no_progress_bar_off_a_terminal(plan_dir):
    from typer.testing import CliRunner

    from dvheval.cli import app

    res = CliRunner().invoke(app, ["dvh", str(plan_dir), "--metric", "Dmean"])
    assert res.exit_code == 0
    assert "DVHs" not in res.output and "\x1b" not in res.output


def test_recorded_hashes_are_those_of_the_files_read():
    import hashlib
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"
    plan = compute_dvhs(folder)
    expected = {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.glob("*.dcm"))}
    assert {str(Path(k)): v for k, v in plan.dose.sha256.items()} == expected
