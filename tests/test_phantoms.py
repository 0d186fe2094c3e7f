"""DVH metrics of analytic phantoms against their closed-form values.

Accuracy bar: D-metrics within 1 % or 0.2 Gy; volumes within 1 % for
structures of 1 cc or more and within 3 % below.
"""

from __future__ import annotations

import pytest

from dvheval import compute_dvhs

from .phantoms import (
    LinearDose,
    PhantomGrid,
    cone,
    cylinder,
    dose_at_volume,
    islands,
    shell,
    sphere,
    volume_at_least,
)


def dose_ok(value, truth):
    return abs(value - truth) <= max(0.01 * abs(truth), 0.2)


def volume_tol(truth_cc):
    return 0.01 if truth_cc >= 1.0 else 0.03


def check_against_truth(result, shape, dose, z_range=(-1e9, 1e9)):
    v_mm3 = volume_at_least(shape, dose, -1e9, z_range)
    vol_cc = shape.volume_mm3() / 1000
    assert result.volume_cc == pytest.approx(vol_cc, rel=volume_tol(vol_cc))
    lo, hi = -1e3, 1e3
    for name, frac in (("D98%", 0.98), ("D50%", 0.50), ("D2%", 0.02)):
        truth = dose_at_volume(shape, dose, frac * v_mm3, lo, hi, z_range)
        assert dose_ok(result.metrics[name], truth), (name, result.metrics[name], truth)
    if v_mm3 / 1000 > 0.03:
        truth = dose_at_volume(shape, dose, 30.0, lo, hi, z_range)
        assert dose_ok(result.metrics["D0.03cc"], truth), (result.metrics["D0.03cc"], truth)
    # extremes: the slab stack's extreme doses
    tmax = dose_at_volume(shape, dose, 1e-9, lo, hi, z_range)
    tmin = dose_at_volume(shape, dose, v_mm3 * (1 - 1e-12), lo, hi, z_range)
    assert dose_ok(result.metrics["Dmax"], tmax), (result.metrics["Dmax"], tmax)
    assert dose_ok(result.metrics["Dmin"], tmin), (result.metrics["Dmin"], tmin)


GRADIENTS = [
    pytest.param(LinearDose(30.0, 0.6, 0), id="x"),
    pytest.param(LinearDose(30.0, -0.6, 1), id="y"),
    pytest.param(LinearDose(30.0, 0.6, 2), id="z"),
]

SHAPES = [
    pytest.param(sphere("Sphere", 15.0, 3.0), id="sphere-14cc"),
    pytest.param(sphere("Small", 3.0, 1.0), id="sphere-0.1cc"),
    pytest.param(cylinder("Cyl", 10.0, -15.0, 15.0, 3.0), id="cylinder"),
    pytest.param(cone("Cone", 12.0, -12.0, 24.0, 2.0), id="cone"),
    pytest.param(shell("Shell", 15.0, 9.0, -12.0, 12.0, 3.0), id="shell"),
    pytest.param(islands("Islands", 6.0, 4.0, 24.0, -9.0, 9.0, 3.0), id="islands"),
]


@pytest.mark.parametrize("dose", GRADIENTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_linear_gradient_phantoms(tmp_path, write, shape, dose):
    folder = write(tmp_path, [shape], dose)
    res = compute_dvhs([folder]).structures[0]
    assert res.status == "ok"
    assert res.coverage == 1.0
    check_against_truth(res, shape, dose)


def test_uniform_dose_every_metric_is_that_dose(tmp_path, write):
    shape = sphere("Sphere", 8.0, 2.0)
    dose = LinearDose(27.3, 0.0, 0)
    res = compute_dvhs([write(tmp_path, [shape], dose)],
                       metrics=["Dmax", "Dmin", "Mean", "D98%", "D2%", "D0.03cc",
                                "gEUD(a=-10)", "V27.3Gy[%]"]).structures[0]
    for k in ("Dmax", "Dmin", "Mean", "D98%", "D2%", "D0.03cc", "gEUD(a=-10)"):
        assert res.metrics[k] == pytest.approx(27.3, abs=1e-3), k
    assert res.metrics["V27.3Gy[%]"] == pytest.approx(100.0)


def test_mean_dose_of_z_gradient_cylinder_is_dose_at_centre(tmp_path, write):
    shape = cylinder("Cyl", 10.0, -15.0, 15.0, 3.0)
    dose = LinearDose(30.0, 0.6, 2)
    res = compute_dvhs([write(tmp_path, [shape], dose)]).structures[0]
    assert res.metrics["Dmean"] == pytest.approx(30.0, abs=0.02)


def test_structure_partly_outside_grid_reports_coverage(tmp_path, write):
    # grid voxel centres z = -40 .. 40 mm, so it covers z up to 41.25 mm;
    # the cylinder runs from -1.5 to 61.5 mm (planes 0..60 mm, 3 mm slices)
    grid = PhantomGrid()
    shape = cylinder("Long", 8.0, 0.0, 60.0, 3.0)
    dose = LinearDose(30.0, 0.3, 2)
    res = compute_dvhs([write(tmp_path, [shape], dose, grid=grid)]).structures[0]
    assert res.status == "partial"
    z_range = (-1e9, 41.25)
    expected = (41.25 + 1.5) / 63.0
    assert res.coverage == pytest.approx(expected, abs=0.002)
    assert any("partly outside the dose grid" in w for w in res.warnings)
    v_in = volume_at_least(shape, dose, -1e9, z_range)
    truth = dose_at_volume(shape, dose, 0.5 * v_in, -1e3, 1e3, z_range)
    assert dose_ok(res.metrics["D50%"], truth)
    # the maximum is where the grid ends, not extrapolated beyond it
    assert res.metrics["Dmax"] <= 30.0 + 0.3 * 41.25 + 1e-6


def test_structure_entirely_outside_grid(tmp_path, write):
    shape = cylinder("Far", 5.0, 100.0, 110.0, 2.0)
    res = compute_dvhs([write(tmp_path, [shape], LinearDose(10, 0, 0))]).structures[0]
    assert res.status == "outside"
    assert res.coverage == 0.0
    assert all(v is None for v in res.metrics.values())


def test_end_caps_off_removes_half_slices(tmp_path, write):
    shape = cylinder("Cyl", 10.0, -15.0, 15.0, 3.0)
    folder = write(tmp_path, [shape], LinearDose(30.0, 0.0, 0))
    with_caps = compute_dvhs([folder]).structures[0].volume_cc
    without = compute_dvhs([folder], end_caps=False).structures[0].volume_cc
    area = shape.volume_mm3() / 1000 / (11 * 3.0)  # cc per mm of height
    assert with_caps == pytest.approx(area * 33.0, rel=1e-6)
    assert without == pytest.approx(area * 30.0, rel=1e-6)
