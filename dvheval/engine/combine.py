"""Doses of several plans: a physical plan sum, or the cumulative EQD2/BED of courses.

A **plan sum** (``compute_dvhs(..., sum_plans=True)``, ``--sum``) adds the
physical doses of RTPLANs given together (see :mod:`dvheval.dicom.plan_sum`).

**Courses** (``compute_dvhs(courses=[...])``, ``--course PATH[:RECOVERY]``)
are plans delivered one after the other with their own fractionation
(re-irradiation, a boost course). Their doses cannot be added in Gy; the
cumulative dose is, voxel by voxel::

    EQD2_cum = sum_i r_i * D_i (D_i / n_i + a/b) / (2 + a/b)
    BED_cum  = sum_i r_i * D_i (1 + D_i / (n_i a/b))

with ``D_i`` the physical dose of course ``i`` (resampled onto the first
course's grid), ``n_i`` its RTPLAN's Number of Fractions Planned and ``r_i``
its recovery factor: the fraction of that course's dose still counted (1 by
default, i.e. no recovery). The grid then holds Gy EQD2 (or BED) for one
alpha/beta; one grid is computed per alpha/beta needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dvheval.dicom import DoseGrid, InputSet, find_inputs
from dvheval.dicom.identity import Header, read_identity
from dvheval.dicom.info import PlanInfo
from dvheval.dicom.plan_sum import (
    CommonGridDoses,
    PlanPart,
    different_fractions,
    load_common_grid,
    load_plan_sum,
    split_by_plan,
)
from dvheval.engine.metrics import bed, eqd2
from dvheval.errors import InputError
from dvheval.integrity import Finding, header_findings

#: alpha/beta (Gy) of a cumulative dose of courses when none is given (late-responding tissue).
DEFAULT_ALPHA_BETA = 3.0
#: The radiobiological quantities a cumulative dose of courses can be expressed in.
MODELS = ("EQD2", "BED")


@dataclass(frozen=True)
class Course:
    """One treatment course: the files of one plan and its recovery factor.

    Attributes
    ----------
    paths : tuple of Path
        Files and/or folders holding the course's RTPLAN and RTDOSE(s) (and
        the structure set, which every course shares).
    recovery : float
        Fraction of the course's EQD2/BED still counted, 0 to 1 (1: no recovery).
    """

    paths: tuple[Path, ...]
    recovery: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Course:
        """A course from ``PATH`` or ``PATH:RECOVERY`` (e.g. ``course1/:0.5``).

        Raises
        ------
        InputError
            A recovery factor that is not a number from 0 to 1.

        Examples
        --------
        >>> Course.parse("course1/:0.5")
        Course(paths=(PosixPath('course1'),), recovery=0.5)
        """
        path, sep, tail = str(text).rpartition(":")
        if not sep or not path or "/" in tail:
            return cls((Path(text),))
        try:
            recovery = float(tail)
        except ValueError:
            raise InputError(f"--course {text}: {tail!r} is not a recovery factor (a number "
                             "from 0 to 1, e.g. course1/:0.5)") from None
        if not (math.isfinite(recovery) and 0.0 <= recovery <= 1.0):
            raise InputError(f"--course {text}: the recovery factor must be from 0 to 1 (the "
                             "fraction of the course's dose still counted)")
        return cls((Path(path),), recovery)


def as_course(course: Course | str | Path) -> Course:
    """A :class:`Course` from itself, ``"PATH[:RECOVERY]"`` or a path."""
    if isinstance(course, Course):
        if not (math.isfinite(course.recovery) and 0.0 <= course.recovery <= 1.0):
            raise InputError(f"course {', '.join(map(str, course.paths))}: the recovery "
                             "factor must be from 0 to 1")
        return course
    if isinstance(course, Path):
        return Course((course,))
    if isinstance(course, str):
        return Course.parse(course)
    raise TypeError(f"a course is a Course, a path or 'PATH[:RECOVERY]', not "
                    f"{type(course).__name__}")


# -------------------------------------------------------------------- sums
#: Treatment isocentres (x, y, z mm).
Points = tuple[tuple[float, float, float], ...]


def part_findings(sset: Header, parts: Sequence[PlanPart]) -> tuple[list[Finding], Points]:
    """Integrity findings of each plan with the shared structure set, and all isocentres."""
    findings: list[Finding] = []
    isocenters: list[tuple[float, float, float]] = []
    for part in parts:
        plan = read_identity(part.plan.file, "RTPLAN")
        doses = [read_identity(str(d), "RTDOSE") for d in part.doses]
        findings += header_findings(sset, doses, plan)
        isocenters += plan.isocenters_mm
    return findings, tuple(isocenters)


@dataclass(frozen=True)
class Combined:
    """The dose of several plans and what was read to build it."""

    dose: DoseGrid
    plan: PlanInfo
    findings: list[Finding]
    isocenters: Points
    #: Why EQD2/BED cannot be computed from this dose (None when it can).
    no_fraction_models: str | None = None


def load_sum(inputs: InputSet, prescription_gy: float | None) -> Combined:
    """The physical sum of the plans of ``inputs`` (several RTPLANs), with integrity findings.

    Raises
    ------
    InputError
        See :func:`dvheval.dicom.plan_sum.split_by_plan` and
        :func:`~dvheval.dicom.plan_sum.load_common_grid`.
    """
    parts = split_by_plan(inputs, repeat=True)
    sset = read_identity(str(inputs.structure_set.path), "RTSTRUCT")
    findings, isocenters = part_findings(sset, parts)
    dose, plan = load_plan_sum(parts, prescription_gy)
    return Combined(dose, plan, findings, isocenters, different_fractions(parts))


# ----------------------------------------------------------------- courses
@dataclass(frozen=True)
class LoadedCourses:
    """The physical doses of the courses on one grid, ready to be combined."""

    common: CommonGridDoses
    inputs: InputSet
    findings: list[Finding]
    isocenters: Points

    def cumulative(self, model: str, alpha_beta: float) -> Combined:
        """The cumulative EQD2 or BED grid at one alpha/beta (see the module docstring)."""
        if model not in MODELS:
            raise ValueError(f"unknown dose model {model!r}; {' or '.join(MODELS)}")
        if not (math.isfinite(alpha_beta) and alpha_beta > 0):
            raise ValueError(f"alpha/beta must be a positive number of Gy, not {alpha_beta}")
        convert = eqd2 if model == "EQD2" else bed
        total = np.zeros(self.common.reference.grid.shape, dtype=np.float64)
        for part, physical in zip(self.common.parts, self.common.doses_gy, strict=True):
            assert part.plan.fractions is not None  # checked by load_courses
            total += part.recovery * convert(physical, part.plan.fractions, alpha_beta)
        quantity = f"{model}, a/b={alpha_beta:g} Gy"
        listing = " + ".join(
            f"{p.plan.label or p.plan.file} ({p.plan.fractions} fx"
            + (f", recovery {p.recovery:g}" if p.recovery != 1.0 else "") + ")"
            for p in self.common.parts)
        info = self.common.dose_info(
            total, f"cumulative {quantity} of {len(self.common.parts)} courses: {listing}",
            quantity)
        ref = self.common.reference
        dose = DoseGrid(total.astype(np.float32), ref.grid, ref.affine,
                        ref.frame_of_reference_uid, info)
        plan = PlanInfo(file=" + ".join(p.plan.file for p in self.common.parts),
                        label=" + ".join(p.plan.label or Path(p.plan.file).name
                                         for p in self.common.parts),
                        sop_instance_uid="", prescriptions=[], fractions=None)
        return Combined(dose, plan, self.findings, self.isocenters,
                        f"the dose is already the cumulative {quantity} of courses")


def course_parts(courses: Sequence[Course]) -> tuple[InputSet, list[PlanPart]]:
    """The shared structure set and one plan per course, with its recovery factor.

    Every course's files are read together: they must hold one structure set
    (identical copies count once), and each course exactly one RTPLAN with a
    known fraction count and the doses that reference it. Two courses may
    name the same plan (a plan delivered twice): each counts.

    Raises
    ------
    InputError
        No course, a course without (or with several) RTPLANs, an unknown
        fraction count, two structure sets, a dose of no course's plan.
    """
    if not courses:
        raise InputError("no course given")
    paths = [p for c in courses for p in c.paths]
    inputs = find_inputs(paths, several_plans=True)
    parts = split_by_plan(replace(inputs, plans=inputs.plans or (
        [inputs.plan] if inputs.plan else [])))
    out = []
    for course in courses:
        mine = [p for p in parts if _inside(Path(p.plan.file), course.paths)]
        where = ", ".join(str(p) for p in course.paths)
        if len(mine) != 1:
            raise InputError(f"course {where}: {len(mine)} RTPLANs found; a course is one "
                             "plan (its RTPLAN gives the fraction count)")
        if mine[0].plan.fractions is None:
            raise InputError(f"course {where}: the RTPLAN gives no Number of Fractions "
                             "Planned, so its EQD2/BED cannot be computed",
                             mine[0].plan.file, "NumberOfFractionsPlanned")
        out.append(replace(mine[0], recovery=course.recovery))
    return inputs, out


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    path = path.resolve()
    for root in roots:
        root = root.resolve()
        if path == root or root in path.parents:
            return True
    return False


def load_courses(courses: Sequence[Course | str | Path]) -> LoadedCourses:
    """Read the courses and put their physical doses on the first course's grid.

    Raises
    ------
    InputError
        See :func:`course_parts` and :func:`dvheval.dicom.plan_sum.load_common_grid`.
    """
    inputs, parts = course_parts([as_course(c) for c in courses])
    sset = read_identity(str(inputs.structure_set.path), "RTSTRUCT")
    findings, isocenters = part_findings(sset, parts)
    return LoadedCourses(load_common_grid(parts), inputs, findings, isocenters)
