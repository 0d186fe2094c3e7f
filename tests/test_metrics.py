"""Metric grammar and evaluation against hand-computed values."""

import numpy as np
import pytest

from dvheval.engine.dvh import DVH
from dvheval.engine.metrics import NotComputable, bed, eqd2, evaluate_metric, parse_metric
from dvheval.errors import MetricError


@pytest.mark.parametrize(
    "name, kind, value, value_unit, out_unit",
    [
        ("Dmax", "max", None, None, "Gy"),
        ("Max", "max", None, None, "Gy"),
        ("Dmin", "min", None, None, "Gy"),
        ("Mean", "mean", None, None, "Gy"),
        ("Dmean[cGy]", "mean", None, None, "cGy"),
        ("D98%", "dose_at_volume", 98.0, "%", "Gy"),
        ("D95%[Gy]", "dose_at_volume", 95.0, "%", "Gy"),
        ("D0.03cc", "dose_at_volume", 0.03, "cc", "Gy"),
        ("D2cc[cGy]", "dose_at_volume", 2.0, "cc", "cGy"),
        ("D95%[%]", "dose_at_volume", 95.0, "%", "%"),
        ("V20Gy", "volume_at_dose", 20.0, "Gy", "cc"),
        ("V20Gy[%]", "volume_at_dose", 20.0, "Gy", "%"),
        ("V2000cGy[cc]", "volume_at_dose", 2000.0, "cGy", "cc"),
        ("V95%", "volume_at_dose", 95.0, "%", "cc"),
        ("CV15.2Gy", "volume_below_dose", 15.2, "Gy", "cc"),
        ("CV15Gy[%]", "volume_below_dose", 15.0, "Gy", "%"),
        ("gEUD(a=-10)", "geud", -10.0, None, "Gy"),
        ("gEUD(a=4.5)", "geud", 4.5, None, "Gy"),
    ],
)
def test_grammar(name, kind, value, value_unit, out_unit):
    m = parse_metric(name)
    assert (m.kind, m.value, m.value_unit, m.output_unit) == (kind, value, value_unit, out_unit)
    assert m.name == name  # output key is exactly what the user wrote


def test_radiobiological_options():
    m = parse_metric("Dmax[EQD2, a/b=2]")
    assert (m.kind, m.model, m.alpha_beta) == ("max", "EQD2", 2.0)
    m = parse_metric("Mean[BED,a/b=3,cGy]")
    assert (m.model, m.alpha_beta, m.output_unit) == ("BED", 3.0, "cGy")


@pytest.mark.parametrize(
    "bad",
    ["D", "Dfoo", "D98", "V20", "V20Gy[Gy]", "D2%[cc]", "gEUD(a=0)", "D101%", "Dmax[EQD2]",
     "Dmax[a/b=2]", "Dmax[EQD2, a/b=-1]", "", "D2%]", "X20Gy"],
)
def test_malformed_names_say_what_is_allowed(bad):
    with pytest.raises(MetricError) as exc:
        parse_metric(bad)
    assert "allowed" in str(exc.value) or "needs" in str(exc.value) or "a/b" in str(exc.value) \
        or "between" in str(exc.value)


def _levels():
    # 3 cc at 10 Gy, 1 cc at 20 Gy
    doses = np.r_[np.full(300, 10.0), np.full(100, 20.0)]
    return DVH.from_samples(doses, np.full(400, 0.01), 4.0)


def test_evaluate_hand_computed():
    dvh = _levels()
    assert evaluate_metric("Mean", dvh) == pytest.approx(12.5)
    assert evaluate_metric("Dmean[cGy]", dvh) == pytest.approx(1250.0)
    assert evaluate_metric("V15Gy", dvh) == pytest.approx(1.0)
    assert evaluate_metric("V15Gy[%]", dvh) == pytest.approx(25.0)
    assert evaluate_metric("V1500cGy", dvh) == pytest.approx(1.0)
    # critical volume: 3 cc receive less than 15 Gy
    assert evaluate_metric("CV15Gy", dvh) == pytest.approx(3.0)
    assert evaluate_metric("CV15Gy[%]", dvh) == pytest.approx(75.0)
    assert evaluate_metric("D0.5cc", dvh) == pytest.approx(20.0, abs=1e-3)
    assert evaluate_metric("D50%", dvh) == pytest.approx(10.0, abs=1e-3)
    # relative to a 20 Gy prescription: V75% = V15Gy, Dmax[%] = 100
    assert evaluate_metric("V75%", dvh, prescription_gy=20) == pytest.approx(1.0)
    assert evaluate_metric("Dmax[%]", dvh, prescription_gy=20) == pytest.approx(100.0)


def test_volume_larger_than_structure_is_not_computable():
    with pytest.raises(NotComputable, match="smaller than 5 cc"):
        evaluate_metric("D5cc", _levels())


def test_relative_without_prescription_is_not_computable():
    with pytest.raises(NotComputable, match="prescription"):
        evaluate_metric("V95%", _levels())


def test_eqd2_formula_checks_from_clinical_facts():
    # 34 Gy in 10 fractions, a/b 0.87 Gy -> 50.6 Gy EQD2
    assert eqd2(34.0, 10, 0.87) == pytest.approx(34 * (3.4 + 0.87) / 2.87)
    assert round(eqd2(34.0, 10, 0.87), 1) == 50.6
    # a physical 40 Gy in 10 fractions with a/b 2 is 60 Gy EQD2
    assert eqd2(40.0, 10, 2.0) == pytest.approx(60.0)
    assert bed(40.0, 10, 2.0) == pytest.approx(120.0)


def test_eqd2_metric_on_uniform_cord_dose():
    dvh = DVH.from_samples(np.full(100, 34.0), np.full(100, 0.01), 1.0)
    v = evaluate_metric("Dmax[EQD2, a/b=0.87]", dvh, fractions=10)
    assert v == pytest.approx(34 * (3.4 + 0.87) / 2.87, abs=1e-9)
    with pytest.raises(NotComputable, match="fractions"):
        evaluate_metric("Dmax[EQD2, a/b=0.87]", dvh)


def test_physical_dose_inverts_eqd2_and_bed():
    from dvheval.engine.metrics import physical_dose

    # EQD2 60 Gy at a/b 2 Gy in n = 10 fractions: with d the dose per fraction,
    # n d^2 + n ab d - EQD2 (2 + ab) = 0 is 10 d^2 + 20 d - 240 = 0, i.e.
    # d^2 + 2 d - 24 = (d + 6)(d - 4) = 0, so d = 4 Gy and D = n d = 40 Gy.
    assert physical_dose(60.0, 10, 2.0) == pytest.approx(40.0, abs=1e-12)
    # EQD2 54 Gy at a/b 3 Gy in 5 fractions: 5 d^2 + 15 d - 270 = 0, i.e.
    # d^2 + 3 d - 54 = (d + 9)(d - 6) = 0, so d = 6 Gy and D = 30 Gy.
    assert physical_dose(54.0, 5, 3.0, "EQD2") == pytest.approx(30.0, abs=1e-12)
    # BED 90 Gy at a/b 3 Gy in 5 fractions: D (1 + D / 15) = 90, i.e.
    # D^2 + 15 D - 1350 = (D + 45)(D - 30) = 0, so D = 30 Gy.
    assert physical_dose(90.0, 5, 3.0, "BED") == pytest.approx(30.0, abs=1e-12)
    # the cord limit of the shipped SIB protocol: 34 Gy in 10 fractions at a/b 0.87
    assert physical_dose(float(eqd2(34.0, 10, 0.87)), 10, 0.87) == pytest.approx(34.0)
    assert physical_dose(float(bed(34.0, 10, 0.87)), 10, 0.87, "BED") == pytest.approx(34.0)
    assert physical_dose(0.0, 10, 2.0) == 0.0
    with pytest.raises(ValueError, match="unknown dose model"):
        physical_dose(60.0, 10, 2.0, "LQ")
    with pytest.raises(ValueError, match="fraction"):
        physical_dose(60.0, 0, 2.0)
    with pytest.raises(ValueError, match="alpha/beta"):
        physical_dose(60.0, 10, 0.0)
