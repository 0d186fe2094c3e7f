"""Protocol checks on hand-built DVHs; expected values are computed by hand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from dvheval import __version__
from dvheval.check import CheckError, Verdict, check_plan
from dvheval.engine.dvh import DVH
from dvheval.engine.metrics import eqd2
from dvheval.engine.results import DoseInfo, PlanDVHs, PlanInfo, Prescription, StructureResult
from dvheval.protocol import load_protocol


# ----------------------------------------------------------------- helpers
def roi(name, doses, volumes=None, status="ok", coverage=1.0, number=1):
    """A structure whose voxels get ``doses`` (Gy) with ``volumes`` (cc; 1 cc each by default)."""
    doses = np.atleast_1d(np.asarray(doses, dtype=float))
    volumes = np.ones_like(doses) if volumes is None else np.asarray(volumes, dtype=float)
    total = float(volumes.sum()) / coverage
    dvh = DVH.from_samples(doses, volumes, total)
    return StructureResult(name, number, "ORGAN", status, total, coverage, dvh=dvh)


def make_plan(*structures, rx=None, fractions=None):
    """PlanDVHs with the given structures; ``rx`` [(name, Gy)] makes an RTPLAN."""
    dose = DoseInfo(
        files=["RD.dcm"], units="GY", summation="PLAN", summation_types=["PLAN"],
        frame_of_reference_uid="1.2.3", grid_shape=(10, 10, 10),
        grid_spacing_mm=(3.0, 2.5, 2.5), grid_origin_mm=(0.0, 0.0, 0.0),
        sha256={"RD.dcm": "a" * 64},
    )
    plan = None
    if rx is not None or fractions is not None:
        plan = PlanInfo("RP.dcm", "Plan 1", "1.2.3.4",
                        [Prescription(n, d, fractions) for n, d in (rx or [])], fractions)
    return PlanDVHs("PAT1", "Test^Patient", dose, "RS.dcm", "RS", "1.2.3", plan,
                    list(structures))


def sib_plan(cord=30.0, *extra, drop=(), **kw):
    """A complete SIB plan: targets at their prescription, cord uniform at ``cord`` Gy."""
    base = [roi("GTV40", 40.0), roi("CTV30", 30.0), roi("PTV40", 40.0), roi("PTV30", 30.0),
            roi("Myelon", cord), roi("BODY", 5.0)]
    return make_plan(*[s for s in base if s.name not in drop], *extra, **kw)


@pytest.fixture(scope="module")
def sib():
    return load_protocol("bone-sib-30-40-10fx")


def result(check, cid):
    for r in check.results:
        if r.constraint.id == cid:
            return r
    raise KeyError(cid)


def report(check, structure, metric):
    for r in check.results:
        c = r.constraint
        if c.structure == structure and c.metric_name == metric and c.is_report:
            return r
    raise KeyError((structure, metric))


def write_protocol(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return load_protocol(path)


CORD_TIERS = """\
format_version: 1
name: cord-tiers
title: Cord with an acceptable variation
version: "1"
date: "2026-01-01"
sources:
  ref: {short: Ref, reference: A published reference with volume and pages.}
fractions: 10
prescriptions:
  PTV: {dose_gy: 30}
structures:
  - name: SpinalCord
    aliases: [Myelon]
    constraints:
      - id: cord-max
        check: Dmax <= 34 Gy
        acceptable: 35 Gy
        source: ref
      - id: cord-mean
        check: Mean <= 20 Gy
        priority: objective
        source: ref
"""


# ------------------------------------------------------------- basic verdicts
def test_complete_plan_passes(sib):
    res = check_plan(sib_plan(30.0), sib)
    cord = result(res, "cord-dmax")
    assert (cord.verdict, cord.value, cord.limit, cord.unit) == (Verdict.PASS, 30.0, 34.0, "Gy")
    assert cord.margin == pytest.approx(4.0)
    assert cord.roi == "Myelon" and cord.matched_by == "alias 'Myelon'"
    # PTV30 uniform 30 Gy: D98% = 30 >= 27 and D2% = 30 <= 32.1
    cov = result(res, "PTV_Low: D98% >= 90% of PTV30")
    assert (cov.verdict, cov.limit, cov.unit) == (Verdict.PASS, pytest.approx(27.0), "Gy")
    assert cov.margin == pytest.approx(3.0)
    hot = result(res, "PTV_Low: D2% <= 107% of PTV30")
    assert hot.limit == pytest.approx(32.1) and hot.margin == pytest.approx(2.1)
    # optional kidneys not contoured: not applicable, never PASS
    kid = result(res, "Kidney_L: Mean <= 12 Gy")
    assert kid.verdict == Verdict.NOT_APPLICABLE and "optional" in kid.reason
    assert res.verdict == Verdict.PASS and res.exit_code == 0
    assert res.matching.unmatched == ["BODY"]


def test_cord_above_limit_fails(sib):
    res = check_plan(sib_plan(35.0), sib)
    cord = result(res, "cord-dmax")
    assert cord.verdict == Verdict.FAIL
    assert cord.margin == pytest.approx(-1.0)
    assert res.verdict == Verdict.FAIL and res.exit_code == 1


def test_limit_is_inclusive_for_le_and_exclusive_for_lt(tmp_path):
    p = write_protocol(tmp_path, CORD_TIERS.replace("Dmax <= 34 Gy\n        acceptable: 35 Gy",
                                                    "Dmax < 34 Gy"))
    at_limit = make_plan(roi("Myelon", 34.0))
    assert result(check_plan(at_limit, p), "cord-max").verdict == Verdict.FAIL
    p = write_protocol(tmp_path, CORD_TIERS)
    assert result(check_plan(at_limit, p), "cord-max").verdict == Verdict.PASS


def test_acceptable_tier(tmp_path):
    p = write_protocol(tmp_path, CORD_TIERS)
    res = check_plan(make_plan(roi("Myelon", 34.5)), p)
    cord = result(res, "cord-max")
    assert cord.verdict == Verdict.ACCEPTABLE
    assert (cord.limit, cord.acceptable_limit) == (34.0, 35.0)
    assert cord.margin == pytest.approx(-0.5)
    assert res.verdict == Verdict.ACCEPTABLE and res.exit_code == 0
    strict = check_plan(make_plan(roi("Myelon", 34.5)), p, acceptable_fails_gate=True)
    assert strict.verdict == Verdict.ACCEPTABLE and strict.exit_code == 1
    res = check_plan(make_plan(roi("Myelon", 35.5)), p)
    assert result(res, "cord-max").verdict == Verdict.FAIL and res.exit_code == 1


def test_failed_objective_makes_the_plan_acceptable_not_failed(tmp_path):
    p = write_protocol(tmp_path, CORD_TIERS)
    # 1 cc at 10 Gy and 1 cc at 33 Gy: Dmax 33 (PASS), mean 21.5 > 20 (objective FAIL)
    res = check_plan(make_plan(roi("Myelon", [10.0, 33.0])), p)
    assert result(res, "cord-max").verdict == Verdict.PASS
    mean = result(res, "cord-mean")
    assert mean.verdict == Verdict.FAIL and mean.value == pytest.approx(21.5)
    assert mean.margin == pytest.approx(-1.5)
    assert res.verdict == Verdict.ACCEPTABLE and res.exit_code == 0
    assert check_plan(make_plan(roi("Myelon", [10.0, 33.0])), p,
                      acceptable_fails_gate=True).exit_code == 1
    assert res.summary()["objective"] == {"FAIL": 1}


def test_shipped_acceptable_tier_on_optic_chiasm():
    brain = load_protocol("brain-postop-srs-1x20")
    plan = make_plan(roi("PTV20", 20.0), roi("Brain", [1.0] * 100), roi("Brainstem", 5.0),
                     roi("Chiasm", 11.0))
    res = check_plan(plan, brain)
    (dmax,) = [r for r in res.results
               if r.constraint.structure == "OpticChiasm" and r.constraint.acceptable]
    assert dmax.verdict == Verdict.ACCEPTABLE  # 11 Gy: above 10 Gy, within 12 Gy
    # D0.2cc of a uniform 11 Gy chiasm is 11 Gy >= 8 Gy: FAIL
    (d02,) = [r for r in res.results
              if r.constraint.structure == "OpticChiasm" and r.constraint.metric_name == "D0.2cc"]
    assert d02.verdict == Verdict.FAIL and res.exit_code == 1


# ---------------------------------------------------------- not evaluable
def test_missing_cord_is_not_evaluated_and_fails_the_gate(sib):
    res = check_plan(sib_plan(drop=("Myelon",)), sib)
    cord = result(res, "cord-dmax")
    assert cord.verdict == Verdict.NOT_EVALUATED
    assert "required structure SpinalCord not found" in cord.reason
    assert res.verdict == Verdict.NOT_EVALUATED and res.exit_code == 1
    assert res.unresolved_required == ["SpinalCord"]
    assert report(res, "SpinalCord", "Dmax").value is None


def test_missing_required_structure_with_report_metrics_only_blocks(sib):
    res = check_plan(sib_plan(drop=("GTV40",)), sib)
    assert all(r.verdict != Verdict.FAIL for r in res.results)
    assert res.unresolved_required == ["GTV_High"]
    assert res.verdict == Verdict.NOT_EVALUATED and res.exit_code == 1


def test_partial_coverage_is_not_evaluated(sib):
    cord = roi("Myelon", 30.0, status="partial", coverage=0.8)
    plan = make_plan(roi("GTV40", 40.0), roi("CTV30", 30.0), roi("PTV40", 40.0),
                     roi("PTV30", 30.0), cord)
    res = check_plan(plan, sib)
    r = result(res, "cord-dmax")
    assert r.verdict == Verdict.NOT_EVALUATED
    assert "dose grid" in r.reason and "80.0 % covered" in r.reason
    assert res.verdict == Verdict.NOT_EVALUATED and res.exit_code == 1
    # dose metrics of a partly covered structure are not reported either
    assert report(res, "SpinalCord", "Dmax").value is None
    assert "dose grid" in report(res, "SpinalCord", "Dmax").reason
    assert [s.roi_status for s in res.structures if s.structure == "SpinalCord"] == ["partial"]


@pytest.mark.parametrize("status", ["outside", "empty", "no_dvh", "error"])
def test_other_unusable_statuses(sib, status):
    cord = StructureResult("Myelon", 5, "ORGAN", status, None, None, ["no usable contour"])
    plan = make_plan(roi("GTV40", 40.0), roi("CTV30", 30.0), roi("PTV40", 40.0),
                     roi("PTV30", 30.0), cord)
    res = check_plan(plan, sib)
    r = result(res, "cord-dmax")
    assert r.verdict == Verdict.NOT_EVALUATED and "no usable contour" in r.reason
    assert res.exit_code == 1


def test_ambiguous_cord_is_not_guessed(sib):
    res = check_plan(sib_plan(30.0, roi("cord", 36.0)), sib)
    r = result(res, "cord-dmax")
    assert r.verdict == Verdict.NOT_EVALUATED and "ambiguous" in r.reason
    assert "'Myelon'" in r.reason and "'cord'" in r.reason
    assert res.exit_code == 1 and "SpinalCord" in res.unresolved_required


def test_exact_canonical_name_resolves_two_cord_rois(sib):
    res = check_plan(sib_plan(36.0, roi("SpinalCord", 30.0)), sib)
    r = result(res, "cord-dmax")
    assert (r.roi, r.verdict) == ("SpinalCord", Verdict.PASS)
    assert any("also matched: 'Myelon'" in w for w in res.warnings)


def test_metric_not_computable_is_not_evaluated():
    brain = load_protocol("brain-postop-srs-1x20")
    # a 0.02 cc cochlea has no D0.035cc
    plan = make_plan(roi("PTV20", 20.0), roi("Brain", [1.0] * 100), roi("Brainstem", 5.0),
                     roi("Cochlea_L", 3.0, volumes=[0.02]))
    res = check_plan(plan, brain)
    (r,) = [r for r in res.results if r.constraint.structure == "Cochlea_L"
            and not r.constraint.is_report]
    assert r.verdict == Verdict.NOT_EVALUATED and "smaller than 0.035 cc" in r.reason
    assert res.exit_code == 1


# ------------------------------------------------------------ radiobiology
def test_eqd2_of_cord_limit_reported():
    # 34 Gy in 10 fractions, a/b 0.87: 34 (3.4 + 0.87) / 2.87 = 50.585... Gy
    expected = 34.0 * (3.4 + 0.87) / 2.87
    assert expected == pytest.approx(50.6, abs=0.05)
    res = check_plan(sib_plan(34.0), load_protocol("bone-sib-30-40-10fx"))
    r = report(res, "SpinalCord", "Dmax[EQD2, a/b=0.87]")
    assert r.verdict == Verdict.REPORT
    assert r.value == pytest.approx(expected, rel=1e-9)
    assert round(r.value, 1) == 50.6
    assert eqd2(34.0, 10, 0.87) == pytest.approx(expected)


def test_cauda_equina_adds_its_limit_and_the_contoured_cord_keeps_its_own(sib):
    # cauda: 5 cc at 20 Gy, 1 cc at 40 Gy -> Dmax 40 Gy -> EQD2 40 (4 + 2) / 4 = 60.0 Gy
    cauda = roi("Cauda", [20.0, 40.0], volumes=[5.0, 1.0])
    res = check_plan(sib_plan(30.0, cauda), sib)
    c = result(res, "cauda-eqd2")
    assert c.verdict == Verdict.PASS
    assert c.value == pytest.approx(60.0, abs=1e-9) and c.margin == pytest.approx(0.0, abs=1e-9)
    alt = {a.alternative.id: a for a in res.alternatives}
    assert alt["cauda-equina"].active and "'Cauda'" in alt["cauda-equina"].reason
    assert result(res, "cord-dmax").verdict == Verdict.PASS
    assert res.verdict == Verdict.PASS and res.exit_code == 0
    # the cord at 38 Gy fails its own 34 Gy limit although a cauda equina is contoured
    res = check_plan(sib_plan(38.0, cauda), sib)
    cord = result(res, "cord-dmax")
    assert cord.verdict == Verdict.FAIL and cord.value == pytest.approx(38.0)
    assert res.verdict == Verdict.FAIL and res.exit_code == 1
    # 40.1 Gy: EQD2 = 40.1 (4.01 + 2) / 4 = 60.25 Gy > 60 Gy
    res = check_plan(sib_plan(30.0, roi("Cauda", [20.0, 40.1])), sib)
    c = result(res, "cauda-eqd2")
    assert c.verdict == Verdict.FAIL
    assert c.value == pytest.approx(40.1 * 6.01 / 4) and c.margin == pytest.approx(-0.25025)


def test_without_cauda_the_cord_limit_applies(sib):
    res = check_plan(sib_plan(30.0), sib)
    assert result(res, "cord-dmax").verdict == Verdict.PASS
    cauda = result(res, "cauda-eqd2")
    assert cauda.verdict == Verdict.NOT_APPLICABLE and "CaudaEquina is not in the plan" in \
        cauda.reason


def test_the_cord_is_optional_only_when_lumbosacral_is_asserted_with_a_cauda(sib):
    plan = sib_plan(30.0, roi("Cauda", 35.0), drop=("Myelon",))
    res = check_plan(plan, sib)  # a cauda contour alone does not excuse a missing cord
    assert res.unresolved_required == ["SpinalCord"]
    assert res.verdict == Verdict.NOT_EVALUATED and res.exit_code == 1
    res = check_plan(plan, sib, conditions=["lumbosacral"])
    assert res.unresolved_required == []
    assert result(res, "cauda-eqd2").verdict == Verdict.PASS
    assert res.verdict == Verdict.PASS


def test_lumbosacral_condition_judges_the_cord_contour_by_the_cauda_limit(sib):
    # 39.89 Gy at the sacrum: EQD2 (a/b 2) = 39.89 (3.989 + 2) / 4 = 59.725 Gy <= 60 Gy
    plan = sib_plan(39.89)
    assert check_plan(plan, sib).verdict == Verdict.FAIL  # 39.89 > 34 Gy
    res = check_plan(plan, sib, conditions=["lumbosacral"])
    r = result(res, "canal-cauda-eqd2")
    assert r.verdict == Verdict.PASS and r.value == pytest.approx(39.89 * 5.989 / 4)
    assert result(res, "cord-dmax").verdict == Verdict.NOT_APPLICABLE
    assert res.verdict == Verdict.PASS and res.conditions == ["lumbosacral"]
    with pytest.raises(CheckError, match="unknown condition"):
        check_plan(plan, sib, conditions=["thoracic"])


def test_fraction_override_changes_eqd2(sib):
    # 40 Gy in 5 fractions, a/b 2: 40 (8 + 2) / 4 = 100 Gy
    res = check_plan(sib_plan(30.0, roi("Cauda", 40.0)), sib, fractions=5)
    c = result(res, "cauda-eqd2")
    assert c.value == pytest.approx(100.0) and c.verdict == Verdict.FAIL
    assert res.fractions.source == "override" and res.fractions.fractions == 5
    assert any("using 5 (given explicitly)" in w for w in res.warnings)
    # the physical 34 Gy cord limit holds for 10 fractions only: not evaluated in 5
    cord = result(res, "cord-dmax")
    assert cord.verdict == Verdict.NOT_EVALUATED and "10 fractions" in cord.reason
    assert not any(f.check == "fractions-mismatch" for f in res.findings)
    with pytest.raises(CheckError):
        check_plan(sib_plan(), sib, fractions=0)


# ------------------------------------------------------------ prescriptions
def test_relative_limit_with_rx_override(sib):
    # PTV30 overridden to 35 Gy: D98% limit 31.5 Gy, PTV30 receives 30 Gy -> objective FAIL
    res = check_plan(sib_plan(30.0), sib, rx_overrides={"PTV_3000": 35.0})
    cov = result(res, "PTV_Low: D98% >= 90% of PTV30")
    assert cov.limit == pytest.approx(31.5) and cov.margin == pytest.approx(-1.5)
    assert cov.verdict == Verdict.FAIL and cov.prescription_gy == 35.0
    used = res.prescriptions["PTV30"]
    assert (used.dose_gy, used.source, used.protocol_gy) == (35.0, "override", 30.0)
    assert res.prescriptions["PTV40"].source == "protocol"
    assert res.verdict == Verdict.ACCEPTABLE and res.exit_code == 0
    with pytest.raises(CheckError, match="not a level"):
        check_plan(sib_plan(), sib, rx_overrides={"PTV50": 50.0})
    with pytest.raises(CheckError, match="positive"):
        check_plan(sib_plan(), sib, rx_overrides={"PTV30": -3.0})


def test_rtplan_fractions_or_prescription_mismatch_closes_the_gate(sib):
    # RTPLAN 38 Gy to PTV40 (5 % below the protocol's 40 Gy) in 12 fractions
    plan = sib_plan(30.0, rx=[("PTV40", 38.0), ("PTV30", 30.0)], fractions=12)
    res = check_plan(plan, sib)
    assert res.prescriptions["PTV40"].dose_gy == 40.0
    assert res.prescriptions["PTV40"].rtplan_gy == 38.0
    assert res.prescriptions["PTV40"].source == "protocol"
    assert (res.fractions.fractions, res.fractions.rtplan) == (12, 12)
    closed = {f.check: f.message for f in res.findings if f.closes}
    assert set(closed) == {"fractions-mismatch", "prescription-mismatch"}
    assert "12 fractions" in closed["fractions-mismatch"] and "10" in closed["fractions-mismatch"]
    assert "38 Gy" in closed["prescription-mismatch"] and "40 Gy" in closed[
        "prescription-mismatch"]
    assert res.verdict == Verdict.NOT_EVALUATED and res.exit_code == 1
    # 30.2 Gy to PTV30 is within 1 % of 30 Gy: a warning only
    ok = check_plan(sib_plan(30.0, rx=[("PTV40", 40.0), ("PTV30", 30.2)], fractions=10), sib)
    assert not [f for f in ok.findings if f.closes]
    assert any("PTV30" in w and "30.2 Gy" in w for w in ok.warnings)
    assert ok.verdict == Verdict.PASS
    # explicit --rx and --fractions open it again, and are recorded
    res = check_plan(plan, sib, rx_overrides={"PTV40": 38.0}, fractions=10)
    assert not [f for f in res.findings if f.closes]
    assert res.prescriptions["PTV40"].source == "override"
    assert res.fractions.source == "override"
    assert result(res, "PTV_High: D2% <= 107%").limit == pytest.approx(1.07 * 38.0)


def test_rtplan_prescription_fills_a_level_the_protocol_leaves_open():
    sbrt = load_protocol("sbrt-3fx")
    ptv = roi("PTV_27Gy", 27.0)
    cord = roi("SpinalCord", [5.0] * 10)
    # no RTPLAN, no override: the PTV objective cannot be evaluated
    res = check_plan(make_plan(ptv, cord), sbrt)
    d95 = result(res, "PTV: D95% >= 100%")
    assert d95.verdict == Verdict.NOT_EVALUATED and "no dose for prescription PTV" in d95.reason
    assert res.prescriptions["PTV"].source == "none"
    assert res.verdict == Verdict.NOT_EVALUATED  # never a pass on an unevaluated objective
    # RTPLAN with one dose reference pairs with the single level, whatever its name
    res = check_plan(make_plan(ptv, cord, rx=[("Dose reference 1", 27.0)], fractions=3), sbrt)
    d95 = result(res, "PTV: D95% >= 100%")
    assert res.prescriptions["PTV"].source == "rtplan"
    assert d95.verdict == Verdict.PASS and d95.limit == pytest.approx(27.0)
    assert res.warnings == []
    # an override wins over the RTPLAN, with a warning
    res = check_plan(make_plan(ptv, cord, rx=[("PTV", 27.0)], fractions=3), sbrt,
                     rx_overrides={"PTV": 30.0})
    d95 = result(res, "PTV: D95% >= 100%")
    assert d95.limit == pytest.approx(30.0) and d95.verdict == Verdict.FAIL
    assert any("RTPLAN gives 27 Gy" in w and "(override)" in w for w in res.warnings)


def test_unmatched_rtplan_prescription_is_reported(sib):
    res = check_plan(sib_plan(30.0, rx=[("Boost", 40.0), ("PTV30", 30.0)], fractions=10), sib)
    assert any("'Boost'" in w and "matches no prescription level" in w for w in res.warnings)


# ---------------------------------------------------------- other metrics
def test_kidney_mean_and_volume_limits():
    conv = load_protocol("bone-conv-25x2")
    # kidneys: 30 cc at 25 Gy, 70 cc at 10 Gy -> V20Gy = 30 %, mean = 14.5 Gy
    kidneys = roi("Kidneys", [25.0, 10.0], volumes=[30.0, 70.0])
    plan = make_plan(roi("PTV", 50.0), roi("SpinalCord", 45.0), kidneys)
    res = check_plan(plan, conv)
    mean = result(res, "Kidneys: Mean <= 15 Gy")
    v20 = result(res, "Kidneys: V20Gy[%] < 32")
    assert (mean.verdict, v20.verdict) == (Verdict.PASS, Verdict.PASS)
    assert mean.value == pytest.approx(14.5) and mean.margin == pytest.approx(0.5)
    assert v20.value == pytest.approx(30.0) and v20.unit == "%" and v20.margin == pytest.approx(2)
    # 50/50 at 25 and 8 Gy: mean 16.5 Gy -> ACCEPTABLE (15-18 Gy); V20 = 50 % -> objective FAIL
    plan = make_plan(roi("PTV", 50.0), roi("SpinalCord", 45.0),
                     roi("Kidneys", [25.0, 8.0], volumes=[50.0, 50.0]))
    res = check_plan(plan, conv)
    assert result(res, "Kidneys: Mean <= 15 Gy").verdict == Verdict.ACCEPTABLE
    assert result(res, "Kidneys: V20Gy[%] < 32").verdict == Verdict.FAIL
    assert res.verdict == Verdict.ACCEPTABLE and res.exit_code == 0


def test_sib_kidney_mean(sib):
    # 10 cc at 5 Gy and 10 cc at 15 Gy: mean 10 Gy <= 12 Gy
    res = check_plan(sib_plan(30.0, roi("Niere li", [5.0, 15.0], volumes=[10, 10])), sib)
    r = result(res, "Kidney_L: Mean <= 12 Gy")
    assert (r.verdict, r.roi) == (Verdict.PASS, "Niere li")
    assert r.value == pytest.approx(10.0) and r.margin == pytest.approx(2.0)
    res = check_plan(sib_plan(30.0, roi("Niere li", [5.0, 25.0], volumes=[10, 10])), sib)
    assert result(res, "Kidney_L: Mean <= 12 Gy").verdict == Verdict.FAIL


def test_report_metrics(sib):
    gtv = roi("GTV40", [36.0, 40.0], volumes=[10.0, 10.0])
    plan = make_plan(gtv, roi("CTV30", 30.0), roi("PTV40", 40.0), roi("PTV30", 30.0),
                     roi("Myelon", 30.0))
    res = check_plan(plan, sib)
    assert report(res, "GTV_High", "Volume").value == pytest.approx(20.0)
    assert report(res, "GTV_High", "Volume").unit == "cc"
    geud = (0.5 * 36.0 ** -10 + 0.5 * 40.0 ** -10) ** (-1 / 10)
    assert report(res, "GTV_High", "gEUD(a=-10)").value == pytest.approx(geud, abs=0.01)
    assert report(res, "GTV_High", "D2%").value == pytest.approx(40.0, abs=0.01)
    assert report(res, "SpinalCord", "D0.5cc").value == pytest.approx(30.0)
    assert all(r.verdict == Verdict.REPORT for r in res.results if r.constraint.is_report)
    kid = report(res, "Kidney_L", "Mean")
    assert kid.value is None and "not in the plan" in kid.reason


# ---------------------------------------------------------------- JSON form
def test_to_dict_is_stable_json(sib):
    plan = sib_plan(35.0, rx=[("PTV40", 40.0), ("PTV30", 30.0)], fractions=10)
    res = check_plan(plan, sib)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["tool"] == {"name": "dvheval", "version": __version__}
    path = Path(sib.file)
    assert d["protocol"]["name"] == "bone-sib-30-40-10fx" and d["protocol"]["version"] == "1.0"
    assert d["protocol"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d["protocol"]["file"] == sib.file
    assert d["plan"]["patient"] == {"id": "PAT1", "name": "Test^Patient"}
    assert d["plan"]["dose"] == {"files": ["RD.dcm"], "sha256": {"RD.dcm": "a" * 64}}
    assert d["plan"]["structure_set"]["file"] == "RS.dcm"
    assert d["plan"]["rtplan"]["file"] == "RP.dcm"
    assert d["fractions"] == {"used": 10, "source": "protocol", "protocol": 10, "rtplan": 10,
                              "override": None}
    assert {p["name"]: (p["dose_gy"], p["source"]) for p in d["prescriptions"]} == {
        "PTV40": (40.0, "protocol"), "PTV30": (30.0, "protocol")}
    cord = next(c for c in d["constraints"] if c["id"] == "cord-dmax")
    assert cord == {
        "id": "cord-dmax", "structure": "SpinalCord", "roi": "Myelon",
        "matched_by": "alias 'Myelon'", "metric": "Dmax", "operator": "<=", "limit": 34.0,
        "limit_unit": "Gy", "limit_text": "34 Gy", "acceptable_limit": None, "value": 35.0,
        "margin": -1.0, "verdict": "FAIL", "reason": cord["reason"], "priority": "hard",
        "prescription": None, "prescription_gy": None, "citation": cord["citation"],
        "sources": ["sib"], "checked_against": cord["checked_against"], "note": None,
        "alternative": None, "unacceptable_operator": None, "unacceptable_limit": None,
        "unacceptable": False,
    }
    assert "Radiol Oncol" in cord["citation"]
    assert d["verdict"] == "FAIL" and d["exit_code"] == 1
    assert d["unmatched_rois"] == ["BODY"]
    assert {s["structure"]: s["match"] for s in d["structures"]}["CaudaEquina"] == "missing"
    assert d["summary"]["hard"]["FAIL"] == 1


def test_tg101_critical_volume_limits_hand_computed():
    """Lungs: 2000 cc at 5 Gy and 500 cc at 20 Gy -> 2000 cc stay below 7 Gy."""
    sbrt = load_protocol("sbrt-1fx")
    lungs = roi("Lungs", [5.0, 20.0], [2000.0, 500.0], number=2)
    ok = check_plan(make_plan(roi("PTV", 20.0), roi("SpinalCord", 5.0, number=3), lungs,
                              rx=[("PTV", 20.0)], fractions=1), sbrt)
    rows = {r.constraint.metric_name: r for r in ok.results
            if r.constraint.structure == "Lungs" and not r.constraint.is_report}
    assert rows["CV7Gy"].value == pytest.approx(2000.0)
    assert rows["CV7Gy"].verdict == Verdict.PASS
    assert rows["CV7Gy"].margin == pytest.approx(500.0)
    # only 1200 cc spared below 7 Gy: the 1500 cc limit fails, the 1000 cc one passes
    small = roi("Lungs", [5.0, 20.0], [1200.0, 1300.0], number=2)
    bad = check_plan(make_plan(roi("PTV", 20.0), roi("SpinalCord", 5.0, number=3), small,
                               rx=[("PTV", 20.0)], fractions=1), sbrt)
    rows = {r.constraint.metric_name: r for r in bad.results
            if r.constraint.structure == "Lungs" and not r.constraint.is_report}
    assert rows["CV7Gy"].verdict == Verdict.FAIL
    assert rows["CV7.4Gy"].verdict == Verdict.PASS
    assert bad.exit_code == 1
