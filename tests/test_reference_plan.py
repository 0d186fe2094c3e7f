"""A real breast-boost plan against the planning system's own stored DVHs.

The data (from the dicompyler-core project) lives beside the checkout in
``shared/testdata/dicompyler-core``; the tests skip when it is absent.
That planning system's DVHs end each structure at its outermost contours,
so the comparison uses ``end_caps=False``.
"""

from __future__ import annotations

import pytest

from dvheval import compute_dvhs
from dvheval.engine.metrics import evaluate_metric
from dvheval.engine.stored import read_stored_dvhs

from .conftest import DCC_DATA

pytestmark = pytest.mark.skipif(
    not (DCC_DATA / "rtdose.dcm").exists(),
    reason=f"reference plan not found at {DCC_DATA}",
)

#: ROIs of 10 cc or more; smaller ones depend on each system's contour
#: interpolation more than on the dose.
LARGE = ["Breast", "Heart", "Lt Lung", "Tumor Bed", "Tumor Bed Block"]


@pytest.fixture(scope="module")
def plans():
    tps = read_stored_dvhs(DCC_DATA / "rtdose.dcm")
    no_caps = compute_dvhs([DCC_DATA], end_caps=False)
    caps = compute_dvhs([DCC_DATA])
    return tps, no_caps, caps


@pytest.mark.parametrize("name", LARGE)
def test_large_rois_agree_with_planning_system(plans, name):
    tps, plan, _ = plans
    s = plan.structure(name)
    ref = tps[s.number]
    assert s.status == "ok"
    assert s.volume_cc == pytest.approx(ref.total_cc, rel=0.01)
    for m in ("Dmean", "D98%", "D50%", "D2%"):
        expected = evaluate_metric(m, ref)
        assert abs(s.metrics[m] - expected) <= max(0.02 * expected, 0.1), (m, s.metrics[m],
                                                                           expected)


def test_tumor_bed_matches_closely(plans):
    # the boost volume sits in a flat 14 Gy region: D98/D2 agree to 0.01 Gy
    tps, plan, _ = plans
    s = plan.structure("Tumor Bed")
    ref = tps[s.number]
    for m in ("D98%", "D2%", "Dmean"):
        assert s.metrics[m] == pytest.approx(evaluate_metric(m, ref), abs=0.01)


def test_end_caps_add_volume_and_empty_roi_is_listed(plans):
    _, no_caps, caps = plans
    for name in LARGE:
        assert caps.structure(name).volume_cc > no_caps.structure(name).volume_cc
    areola = caps.structure("Areola")
    assert areola.status == "empty" and areola.volume_cc is None
    assert caps.plan.fractions == 7
    assert caps.dose.grid_shape == (98, 129, 194)
