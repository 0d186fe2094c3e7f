"""The prescription doses and fraction count a check uses, and where they come from."""

from __future__ import annotations

import math
from collections.abc import Sequence

from dvheval.check.courses import summed_plan_fraction_problem
from dvheval.check.results import CheckError, FractionsUsed, PrescriptionUsed
from dvheval.engine.results import PlanDVHs, Prescription
from dvheval.integrity import Finding, finding
from dvheval.protocol import (
    Protocol,
)


# ------------------------------------------------------------- resolution
def resolve_fractions(
    plan: PlanDVHs, protocol: Protocol, override: int | None, warnings: list[str],
    findings: list[Finding],
) -> FractionsUsed:
    """The fraction count used: the caller's, else the RTPLAN's, else the protocol's.

    An RTPLAN that plans another number of fractions than the protocol is
    written for closes the gate (``fractions-mismatch``) unless the caller
    gives the count explicitly.
    """
    if override is not None and (
        isinstance(override, bool) or not isinstance(override, int) or not 1 <= override <= 1000
    ):
        raise CheckError(f"fractions must be a whole number from 1 to 1000, got {override!r}")
    mixed = summed_plan_fraction_problem(plan)
    if mixed:
        if override is not None:
            raise CheckError(f"fractions {override}: {mixed}")
        findings.append(finding("plan-sum-fractions", mixed, plan.plan.file if plan.plan else None))
        return FractionsUsed(protocol.fractions, "protocol", protocol.fractions)
    rtplan = plan.plan.fractions if plan.plan is not None else None
    if override is not None:
        used, source = override, "override"
    elif rtplan is not None and rtplan != protocol.fractions:
        used, source = rtplan, "rtplan"
    else:
        used, source = protocol.fractions, "protocol"
    if override is None and plan.plan is not None and rtplan is None:
        findings.append(finding(
            "fractions-mismatch",
            f"the RTPLAN gives no Number of Fractions Planned, so the protocol's "
            f"{protocol.fractions} fractions cannot be verified (give --fractions explicitly)",
            plan.plan.file))
    elif override is None and rtplan is not None and rtplan != protocol.fractions:
        findings.append(finding(
            "fractions-mismatch",
            f"the RTPLAN plans {rtplan} fractions, protocol {protocol.name} is written for "
            f"{protocol.fractions}: its limits do not hold for this plan (give --fractions "
            "explicitly to evaluate limits written in EQD2/BED)",
            plan.plan.file if plan.plan is not None else None))
    elif override is not None and override != (rtplan or protocol.fractions):
        warnings.append(
            f"fractions: using {override} (given explicitly); the RTPLAN plans "
            f"{rtplan if rtplan is not None else 'no count'}, the protocol {protocol.fractions}"
        )
    return FractionsUsed(used, source, protocol.fractions, rtplan, override)


#: Relative difference above which an RTPLAN prescription contradicts the protocol.
RX_TOLERANCE = 0.01


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.005  # half a cGy


def resolve_prescriptions(
    plan: PlanDVHs,
    protocol: Protocol,
    overrides: dict[str, float] | None,
    warnings: list[str],
    findings: list[Finding],
) -> dict[str, PrescriptionUsed]:
    """The dose of every prescription level, and where it comes from.

    An override wins, then the protocol's dose, then the RTPLAN's (for
    levels the protocol leaves open). An RTPLAN dose more than
    :data:`RX_TOLERANCE` from the protocol's closes the gate
    (``prescription-mismatch``) unless overridden.
    """
    given = _checked_overrides(protocol, overrides)
    plan_file = plan.plan.file if plan.plan is not None else None
    from_plan = _plan_prescriptions(plan, protocol, given, warnings, findings, plan_file)
    out: dict[str, PrescriptionUsed] = {}
    if plan.plan is not None and not plan.plan.prescriptions and plan.dose.quantity == "physical":
        warnings.append(f"the RTPLAN {plan.plan.file} gives no Target Prescription Dose: the "
                        "protocol's prescriptions cannot be compared with the plan's")
    for name, level in protocol.prescriptions.items():
        out[name] = _prescription_used(name, level.dose_gy, from_plan.get(name), given.get(name),
                                       protocol.name, plan_file, warnings, findings)
    return out


def _checked_overrides(protocol: Protocol, overrides: dict[str, float] | None
                       ) -> dict[str, float]:
    """``--rx`` overrides keyed by level name; unknown levels and bad doses raise."""
    given: dict[str, float] = {}
    for key, dose in (overrides or {}).items():
        level = protocol.find_level(key)
        if level is None:
            raise CheckError(
                f"prescription {key!r} is not a level of protocol {protocol.name} "
                f"(levels: {', '.join(protocol.prescriptions)})"
            )
        if isinstance(dose, bool) or not isinstance(dose, int | float) or not (
            math.isfinite(dose) and 0 < dose <= 1000
        ):
            raise CheckError(f"prescription {key!r}: the dose must be positive and at most "
                             f"1000 Gy, got {dose!r}")
        given[level] = float(dose)
    return given


def _plan_prescriptions(plan: PlanDVHs, protocol: Protocol, given: dict[str, float],
                        warnings: list[str], findings: list[Finding], plan_file: str | None
                        ) -> dict[str, Prescription]:
    """RTPLAN dose references matched to protocol levels by name (or as the only pair).

    A dose reference that matches no level by name is a warning, unless a
    protocol level is left without a dose reference and the unmatched one's
    dose is none of the protocol's (or ``--rx``) doses: the plan then
    prescribes, under another name, a dose the protocol does not know, and
    the gate closes (``prescription-mismatch``). Several dose references of
    one level that disagree close the gate too.
    """
    plan_rx = plan.plan.prescriptions if plan.plan is not None else []
    by_level: dict[str, list[Prescription]] = {}
    unmatched = []
    for p in plan_rx:
        level = protocol.find_level(p.name)
        if level is None:
            unmatched.append(p)
        else:
            by_level.setdefault(level, []).append(p)
    if len(protocol.prescriptions) == 1 and len(plan_rx) == 1 and unmatched:
        by_level[next(iter(protocol.prescriptions))] = unmatched
        unmatched = []
    known = [lv.dose_gy for lv in protocol.prescriptions.values() if lv.dose_gy is not None]
    known += list(given.values())
    levels = ", ".join(f"{n} {_gy(lv.dose_gy)}" for n, lv in protocol.prescriptions.items())
    # a protocol level with a dose that no dose reference names: an unmatched
    # reference may be that level under another name
    open_levels = [n for n, lv in protocol.prescriptions.items()
                   if lv.dose_gy is not None and n not in by_level]
    for p in unmatched:
        text = (f"the RTPLAN prescription {p.name!r} ({p.dose_gy:g} Gy) matches no prescription "
                f"level of the protocol ({levels})")
        if open_levels and not any(abs(p.dose_gy - k) <= RX_TOLERANCE * k for k in known):
            findings.append(finding("prescription-mismatch", text + " by name or by dose",
                                    plan_file))
        else:
            warnings.append(text)
    from_plan: dict[str, Prescription] = {}
    for level, found in by_level.items():
        doses = {p.dose_gy for p in found}
        if len(doses) == 1:
            from_plan[level] = found[0]
            continue
        names = ", ".join(f"{p.name!r} {_gy(p.dose_gy)}" for p in found)
        text = f"prescription {level}: the RTPLAN has several dose references for it ({names})"
        findings.append(finding("prescription-mismatch", text + " that disagree", plan_file))
    return from_plan


def _prescription_used(
    name: str,
    protocol_gy: float | None,
    rt: Prescription | None,
    override: float | None,
    protocol_name: str,
    plan_file: str | None,
    warnings: list[str],
    findings: list[Finding],
) -> PrescriptionUsed:
    """The dose used for one level; a contradicting RTPLAN dose closes the gate."""
    rt_name, rt_gy = (rt.name, float(rt.dose_gy)) if rt else (None, None)
    used: float | None
    if override is not None:
        used, source = override, "override"
    elif protocol_gy is not None:
        used, source = protocol_gy, "protocol"
    elif rt_gy is not None:
        used, source = rt_gy, "rtplan"
    else:
        used, source = None, "none"
        warnings.append(
            f"prescription {name}: the protocol leaves the dose to the plan and neither "
            "the RTPLAN nor the caller gives it; constraints relative to it are not evaluated"
        )
    if (rt_gy is not None and protocol_gy is not None and override is None
            and abs(rt_gy - protocol_gy) > RX_TOLERANCE * protocol_gy):
        findings.append(finding(
            "prescription-mismatch",
            f"prescription {name}: the RTPLAN gives {rt_gy:g} Gy ({rt_name!r}), protocol "
            f"{protocol_name} {protocol_gy:g} Gy (more than {100 * RX_TOLERANCE:g} % "
            f"apart); give --rx {name}=GY explicitly to evaluate with a chosen dose",
            plan_file))
    elif rt_gy is not None and used is not None and not _close(rt_gy, used):
        warnings.append(
            f"prescription {name}: the RTPLAN gives {rt_gy:g} Gy ({rt_name!r}), the "
            f"protocol {_gy(protocol_gy)}; using {used:g} Gy ({source})"
        )
    return PrescriptionUsed(name, used, source, protocol_gy, rt_gy, rt_name, override)


def _gy(v: float | None) -> str:
    return "none" if v is None else f"{v:g} Gy"


def parse_rx(values: Sequence[str], protocol: Protocol) -> dict[str, float]:
    """Prescription overrides written ``LEVEL=GY`` (or a bare ``GY``) as ``{level: Gy}``.

    Parameters
    ----------
    values : sequence of str
        E.g. ``["PTV30=32", "PTV40=42 Gy"]``; a level may be named by one of
        its aliases; a bare dose (``"32"``) is allowed when the protocol has a
        single prescription level.
    protocol : Protocol

    Returns
    -------
    dict
        Canonical level name -> dose in Gy, for ``check_plan(rx_overrides=...)``.

    Raises
    ------
    CheckError
        Malformed value, unknown level, a level given twice, a dose that is
        not positive, or a bare dose with a protocol of several levels.
    """
    levels = list(protocol.prescriptions)
    out: dict[str, float] = {}
    for raw in values:
        name, sep, dose_text = raw.rpartition("=")
        if not sep:
            if len(levels) != 1:
                raise CheckError(
                    f"--rx {raw}: protocol {protocol.name} has {len(levels)} prescription levels "
                    f"({', '.join(levels)}); write --rx LEVEL=GY, e.g. --rx {levels[0]}={raw}")
            name = levels[0]
        level = protocol.find_level(name.strip())
        if level is None:
            raise CheckError(f"--rx {raw}: {name.strip()!r} is not a prescription level of "
                             f"protocol {protocol.name} (levels: {', '.join(levels)})")
        text = dose_text.strip()
        if text.lower().endswith("gy"):
            text = text[:-2].strip()
        try:
            dose = float(text)
        except ValueError:
            raise CheckError(f"--rx {raw}: {dose_text.strip()!r} is not a dose in Gy") from None
        if not (math.isfinite(dose) and dose > 0):
            raise CheckError(f"--rx {raw}: the dose must be a positive number of Gy")
        if level in out:
            raise CheckError(f"--rx {raw}: prescription level {level} is given twice")
        out[level] = dose
    return out
