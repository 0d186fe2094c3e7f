"""Several RTPLANs with their doses: a plan sum, or the physical doses of treatment courses.

A *plan sum* adds the physical doses of plans that share one structure set
and one Frame of Reference (e.g. a primary plan and a boost plan planned on
the same CT). The doses of each plan are first read and summed as for a
single plan (:func:`dvheval.dicom.dose_sum.load_dose`: BEAM doses checked
against the plan's beams); the plans' doses are then put on one grid, the
grid of the first plan (in the order the files were found: command-line
order, names sorted within a folder), resampled trilinearly where a grid
differs, and added. A point outside any plan's grid has no known dose
(NaN), never zero, so structures there come out ``partial``.

*Courses* of different fractionation cannot be added in Gy: each course's
physical dose is put on the common grid the same way
(:func:`load_course_doses`) and the engine converts each to EQD2 or BED at
the course's own fraction count before adding them
(:mod:`dvheval.engine.courses`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dvheval.dicom.dose import DoseGrid
from dvheval.dicom.dose_sum import _dose_maximum, load_dose
from dvheval.dicom.files import InputSet, read_header
from dvheval.dicom.grid import CanonicalGrid, trilinear
from dvheval.dicom.info import DoseInfo, PlanInfo, Prescription
from dvheval.dicom.plan import plan_summary, read_plan
from dvheval.errors import InputError


@dataclass(frozen=True)
class PlanPart:
    """One RTPLAN and the RTDOSE files calculated for it.

    Attributes
    ----------
    plan : PlanInfo
    doses : tuple of Path
        The RTDOSE files that reference the plan (one PLAN dose, or BEAM doses).
    recovery : float
        For a treatment course: the fraction of its dose still counted (0..1).
    """

    plan: PlanInfo
    doses: tuple[Path, ...]
    recovery: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (an item of ``dose.components``)."""
        return {
            "label": self.plan.label,
            "file": self.plan.file,
            "sop_instance_uid": self.plan.sop_instance_uid,
            "fractions": self.plan.fractions,
            "prescriptions": [{"name": p.name, "dose_gy": p.dose_gy}
                              for p in self.plan.prescriptions],
            "dose_files": [str(d) for d in self.doses],
            "recovery": self.recovery,
        }


def split_by_plan(inputs: InputSet, repeat: bool = False) -> list[PlanPart]:
    """The RTPLANs of ``inputs`` with the doses that reference each.

    Every dose must reference exactly one of the RTPLANs given, and every
    RTPLAN must have a dose: otherwise which dose belongs to which plan is
    unknown, and nothing is guessed. With ``repeat`` (a plan sum), a plan
    given several times (identical copies of its files) is listed as often.

    Raises
    ------
    InputError
        A dose without a reference, or referencing no (or several) of the
        plans; a plan without dose; two RTPLANs with one SOP Instance UID.
    """
    plans = [read_plan(f.path) for f in inputs.plans]
    by_uid: dict[str, int] = {}
    for i, p in enumerate(plans):
        if p.sop_instance_uid in by_uid:
            raise InputError(f"carries the SOP Instance UID {p.sop_instance_uid} of "
                             f"{plans[by_uid[p.sop_instance_uid]].file}, but different "
                             "contents; which plan is meant is unknown",
                             p.file, "SOPInstanceUID")
        by_uid[p.sop_instance_uid] = i
    doses: list[list[Path]] = [[] for _ in plans]
    listing = "; ".join(f"({i}) {plan_summary(p)}" for i, p in enumerate(plans, start=1))
    for d in inputs.doses:
        refs = [r for r in read_header(d.path).referenced_plan_uids if r in by_uid]
        if len(refs) != 1:
            what = ("references none of the RTPLANs given" if not refs
                    else "references several of the RTPLANs given (a dose that is already "
                    "a sum of plans cannot be added to them)")
            raise InputError(f"{what}, so the plan it belongs to is unknown; the plans: "
                             f"{listing}", d.path, "ReferencedRTPlanSequence")
        doses[by_uid[refs[0]]].append(d.path)
    for p, ds in zip(plans, doses, strict=True):
        if not ds:
            raise InputError("no RTDOSE references this RTPLAN; its dose cannot be added",
                             p.file, "ReferencedRTPlanSequence")
    times = _times_given(inputs, doses) if repeat else [1] * len(plans)
    return [PlanPart(p, tuple(ds)) for p, ds, n in zip(plans, doses, times, strict=True)
            for _ in range(n)]


def _times_given(inputs: InputSet, doses: list[list[Path]]) -> list[int]:
    """How many times each plan is given: a plan whose RTPLAN and RTDOSE files are
    all given twice (the same folder twice, or identical copies) is added twice.

    Raises
    ------
    InputError
        When a plan's RTPLAN and its RTDOSE files are given different numbers
        of times: how often it counts is unknown.
    """
    given = Counter(f.sop_instance_uid for f in [*inputs.plans, *inputs.doses, *inputs.copies])
    uid_of = {f.path: f.sop_instance_uid for f in inputs.doses}
    out = []
    for f, ds in zip(inputs.plans, doses, strict=True):
        n = given[f.sop_instance_uid]
        if any(given[uid_of[d]] != n for d in ds):
            counts = ", ".join(f"{d.name} {given[uid_of[d]]}" for d in ds)
            raise InputError(f"the RTPLAN is given {n} time(s) but its RTDOSE files {counts} "
                             "time(s); how many times the plan counts in the sum is unknown",
                             f.path)
        out.append(n)
    return out


def resample_onto(dose: DoseGrid, grid: CanonicalGrid) -> np.ndarray:
    """A dose resampled (trilinear) onto the voxel centres of ``grid``; NaN outside its own grid.

    Parameters
    ----------
    dose : DoseGrid
    grid : CanonicalGrid

    Returns
    -------
    ndarray of float64, shape ``grid.shape``
    """
    if dose.grid.same_as(grid):
        return np.asarray(dose.dose_gy, dtype=np.float64)
    zz, yy, xx = np.meshgrid(grid.z, grid.y, grid.x, indexing="ij")
    out = trilinear(np.asarray(dose.dose_gy, dtype=np.float64), dose.grid, xx.ravel(),
                    yy.ravel(), zz.ravel())
    return out.reshape(grid.shape)


@dataclass(frozen=True)
class CommonGridDoses:
    """The physical doses of several plans on one grid (that of the first plan).

    Attributes
    ----------
    parts : list of PlanPart
    doses_gy : list of ndarray
        Each plan's physical dose (Gy) on ``reference.grid``; NaN where unknown.
    reference : DoseGrid
        The first plan's dose (its grid, affine and Frame of Reference).
    resampled : list of str
        Dose files of the plans that were resampled onto the first plan's grid.
    sha256 : dict of str to str
        SHA-256 of every dose and plan file read.
    part_infos : tuple of DoseInfo
        What was read for each plan.
    """

    parts: list[PlanPart]
    doses_gy: list[np.ndarray]
    reference: DoseGrid
    resampled: list[str]
    sha256: dict[str, str]

    part_infos: tuple[DoseInfo, ...]

    def dose_info(self, total: np.ndarray, summation: str, quantity: str) -> DoseInfo:
        """The :class:`DoseInfo` of a combined dose ``total`` on the common grid."""
        ref = self.reference
        max_gy, max_pos = _dose_maximum(total, ref.grid)
        return DoseInfo(
            files=[f for info in self.part_infos for f in info.files], units="GY",
            summation=summation,
            summation_types=[t for info in self.part_infos for t in info.summation_types],
            frame_of_reference_uid=ref.frame_of_reference_uid,
            grid_shape=ref.grid.shape, grid_spacing_mm=ref.grid.spacing,
            grid_origin_mm=(float(ref.grid.x[0]), float(ref.grid.y[0]), float(ref.grid.z[0])),
            resampled_files=list(self.resampled), sha256=dict(self.sha256),
            max_gy=max_gy, max_position_mm=max_pos,
            components=[p.to_dict() for p in self.parts], quantity=quantity)


def load_common_grid(parts: Sequence[PlanPart], relative_reference_gy: float | None = None
                     ) -> CommonGridDoses:
    """Read each plan's dose (BEAM doses summed per plan) and put all on the first plan's grid.

    Raises
    ------
    InputError
        An unreadable dose, a dose that does not fit its plan (missing beam,
        dose counted twice), or plans in different Frames of Reference.
    """
    loaded = [load_dose(p.doses, relative_reference_gy=relative_reference_gy, plan=p.plan)
              for p in parts]
    ref = loaded[0]
    for part, dose in zip(parts[1:], loaded[1:], strict=True):
        if dose.frame_of_reference_uid != ref.frame_of_reference_uid:
            raise InputError(
                f"the dose of RTPLAN {part.plan.file} is in Frame of Reference "
                f"{dose.frame_of_reference_uid}, the dose of RTPLAN {parts[0].plan.file} in "
                f"{ref.frame_of_reference_uid}: the plans are not in one coordinate system "
                "and their doses cannot be added",
                dose.info.files[0], "FrameOfReferenceUID")
    grids = [resample_onto(d, ref.grid) for d in loaded]
    resampled = [f for d in loaded[1:] if not d.grid.same_as(ref.grid) for f in d.info.files]
    resampled += [f for d in loaded for f in d.info.resampled_files]
    sha = {k: v for d in loaded for k, v in d.info.sha256.items()}
    # (each plan's digest is of the bytes its prescription was read from)
    sha.update({p.plan.file: p.plan.sha256 for p in parts})
    return CommonGridDoses(list(parts), grids, ref, resampled, sha,
                           tuple(d.info for d in loaded))


def summed_plan(parts: Sequence[PlanPart]) -> PlanInfo:
    """The plan record of a physical sum of plans.

    Its label joins the plans' labels with ``+``; its fraction count is the
    plans' common count (the plans are taken as delivered in the same
    sessions; plans delivered one after the other are courses), None when
    they differ (the dose per fraction of the sum is then undefined). A
    prescription level named (case-insensitive) in every plan gets the sum
    of the plans' doses; a level missing from some plan is left out, as its
    total is unknown.
    """
    counts = {p.plan.fractions for p in parts}
    nfx = counts.pop() if len(counts) == 1 else None
    rx: list[Prescription] = []
    for first in parts[0].plan.prescriptions:
        key = first.name.strip().lower()
        same = [[q for q in p.plan.prescriptions if q.name.strip().lower() == key]
                for p in parts]
        if all(len(s) == 1 for s in same):
            rx.append(Prescription(first.name, sum(s[0].dose_gy for s in same), nfx))
    return PlanInfo(
        file=" + ".join(p.plan.file for p in parts),
        label=" + ".join(p.plan.label or Path(p.plan.file).name for p in parts),
        sop_instance_uid="",
        prescriptions=rx,
        fractions=nfx,
    )


def different_fractions(parts: Sequence[PlanPart]) -> str | None:
    """Why EQD2/BED of a physical sum is undefined (the plans' counts differ), else None."""
    return fraction_count_problem([(p.plan.label or p.plan.file, p.plan.fractions)
                                   for p in parts], "EQD2/BED cannot be computed from it")


def fraction_count_problem(plans: Sequence[tuple[str, int | None]], consequence: str
                           ) -> str | None:
    """Why a physical sum of ``plans`` (name, fraction count) has no dose per fraction:
    their counts differ or one is unknown; None when they share one count.
    ``consequence`` says what cannot be done (it ends the sentence's middle part)."""
    counts = [n for _, n in plans]
    if len(set(counts)) == 1 and counts[0] is not None:
        return None
    listing = ", ".join(f"{name}: {n or 'unknown'}" for name, n in plans)
    return (f"the summed plans have different or unknown fraction counts ({listing}): the "
            f"dose per fraction of their physical sum is undefined, so {consequence}; "
            "evaluate the plans as courses (--course)")


def load_plan_sum(parts: Sequence[PlanPart], relative_reference_gy: float | None = None
                  ) -> tuple[DoseGrid, PlanInfo]:
    """The physical sum of the plans' doses on the first plan's grid, and its plan record.

    Raises
    ------
    InputError
        See :func:`load_common_grid`.
    """
    common = load_common_grid(parts, relative_reference_gy)
    total = np.sum(np.stack(common.doses_gy), axis=0)
    labels = ", ".join(repr(p.plan.label or p.plan.file) for p in parts)
    info = common.dose_info(total, f"sum of {len(parts)} plans ({labels})", "physical")
    ref = common.reference
    return (DoseGrid(total.astype(np.float32), ref.grid, ref.affine,
                     ref.frame_of_reference_uid, info), summed_plan(parts))
