"""DVH look-ups against hand-computed histograms."""

import math

import numpy as np
import pytest

from dvheval.engine.dvh import DVH


def test_uniform_dose_gives_that_dose_for_every_dx():
    # 1000 samples of exactly 14 Gy, 0.01 cc each: a nearest-bin look-up
    # would give a bin edge; the exact answer is 14 Gy for every Dx.
    dvh = DVH.from_samples(np.full(1000, 14.0), np.full(1000, 0.01), 10.0)
    for v in (0.0, 0.03, 0.5, 5.0, 9.8, 10.0):
        assert dvh.dose_at_volume(v) == pytest.approx(14.0, abs=1e-12)
    assert dvh.min_gy == dvh.max_gy == dvh.mean_gy == 14.0
    assert dvh.volume_at_dose(14.0) == pytest.approx(10.0)
    assert dvh.volume_at_dose(14.0001) == 0.0
    assert dvh.volume_at_dose(0.0) == pytest.approx(10.0)


def test_two_dose_levels_hand_computed():
    # 3 cc at 10 Gy, 1 cc at 20 Gy (total 4 cc)
    doses = np.r_[np.full(300, 10.0), np.full(100, 20.0)]
    dvh = DVH.from_samples(doses, np.full(400, 0.01), 4.0)
    assert dvh.mean_gy == pytest.approx(12.5)
    assert dvh.volume_at_dose(15.0) == pytest.approx(1.0)
    assert dvh.volume_at_dose(20.0) == pytest.approx(1.0, abs=1e-9)
    # the hottest 0.5 cc receive 20 Gy; 2 cc receive at least 10 Gy
    assert dvh.dose_at_volume(0.5) == pytest.approx(20.0, abs=1e-3)
    assert dvh.dose_at_volume(2.0) == pytest.approx(10.0, abs=1e-3)
    assert dvh.dose_at_volume(4.0) == pytest.approx(10.0)
    assert math.isnan(dvh.dose_at_volume(4.5))


def test_uniform_distribution_interpolates_linearly():
    # doses uniformly spread on [10, 20] Gy: V(d) = 10 cc * (20 - d) / 10
    doses = np.linspace(10, 20, 100001)
    w = np.full(doses.size, 10.0 / doses.size)
    dvh = DVH.from_samples(doses, w, 10.0)
    for d in (10.5, 12.0, 15.0, 19.9):
        assert dvh.volume_at_dose(d) == pytest.approx(20.0 - d, abs=2e-3)
    # D98% of a uniform spread: 10 + 0.02 * 10
    assert dvh.dose_at_volume(9.8) == pytest.approx(10.2, abs=2e-3)
    assert dvh.geud(1) == pytest.approx(15.0, abs=1e-6)
    # gEUD with a = 2: sqrt(mean(d^2)) = sqrt((20^3 - 10^3) / 30)
    assert dvh.geud(2) == pytest.approx(math.sqrt((8000 - 1000) / 30), rel=1e-4)


def test_partial_coverage_fraction():
    dvh = DVH.from_samples(np.full(10, 5.0), np.full(10, 0.1), 4.0)
    assert dvh.covered_cc == pytest.approx(1.0)
    assert dvh.coverage == pytest.approx(0.25)


def test_surface_doses_widen_min_and_max_only():
    dvh = DVH.from_samples(np.array([10.0, 11.0]), np.array([1.0, 1.0]), 2.0,
                           extreme_doses_gy=np.array([9.0, 12.0]))
    assert dvh.min_gy == 9.0
    assert dvh.max_gy == 12.0
    assert dvh.mean_gy == pytest.approx(10.5)
    assert dvh.covered_cc == pytest.approx(2.0)


def test_empty_dvh_is_undefined_not_zero():
    dvh = DVH.from_samples(np.zeros(0), np.zeros(0), 3.0)
    assert dvh.is_empty
    assert math.isnan(dvh.dose_at_volume(0.1))
    assert dvh.coverage == 0.0


def test_cumulative_curve_is_monotone_and_starts_at_covered_volume():
    rng = np.random.default_rng(1)
    doses = rng.uniform(0, 40, 5000)
    dvh = DVH.from_samples(doses, np.full(5000, 0.002), 10.0)
    d, v = dvh.cumulative()
    assert v[0] == pytest.approx(10.0)
    assert np.all(np.diff(v) <= 1e-12)
    assert v[-1] == 0.0
    assert d[1] - d[0] == pytest.approx(0.05)


def test_transformed_maps_dose_axis():
    dvh = DVH.from_samples(np.full(10, 34.0), np.full(10, 0.1), 1.0)
    t = dvh.transformed(lambda d: 2 * d)
    assert t.max_gy == 68.0
    assert t.dose_at_volume(0.5) == pytest.approx(68.0)
    assert t.mean_gy == pytest.approx(68.0, abs=0.01)
