"""Summing the RTDOSE files of one plan: one grid, no dose counted twice or missed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dvheval.dicom.dose import DoseFile, DoseGrid, read_dose_file
from dvheval.dicom.grid import CanonicalGrid, trilinear
from dvheval.dicom.info import DoseInfo, PlanInfo
from dvheval.errors import InputError


def _resample(src: DoseFile, grid: CanonicalGrid) -> np.ndarray:
    zz, yy, xx = np.meshgrid(grid.z, grid.y, grid.x, indexing="ij")
    out = trilinear(src.values.astype(np.float64), src.grid, xx.ravel(), yy.ravel(), zz.ravel())
    return out.reshape(grid.shape).astype(np.float32)


def load_dose(
    paths: Sequence[str | Path],
    relative_reference_gy: float | None = None,
    plan: PlanInfo | None = None,
) -> DoseGrid:
    """Read one or more RTDOSE files of one plan and sum them.

    Several files are summed when they share the Frame of Reference; files
    on a different grid are resampled (trilinear) onto the grid of the first
    file, and points outside their grid are marked unknown (NaN) rather than
    taken as zero dose. Mixing a PLAN dose with BEAM/FRACTION doses, or two
    doses of the same plan/beam, would count dose twice and is refused.

    Parameters
    ----------
    paths : sequence of str or Path
        The RTDOSE files.
    relative_reference_gy : float, optional
        Dose a RELATIVE dose value of 1.0 stands for.
    plan : PlanInfo, optional
        The RTPLAN of the doses. Then every dose must reference it, and BEAM
        doses must cover every treatment beam of its fraction group: a
        missing beam would make the summed dose too low.

    Raises
    ------
    InputError
    """
    files = [read_dose_file(p, relative_reference_gy) for p in paths]
    if plan is not None:
        _check_against_plan(files, plan)
    ref = files[0]
    for f in files[1:]:
        if f.frame_of_reference_uid != ref.frame_of_reference_uid:
            raise InputError(
                f"Frame of Reference {f.frame_of_reference_uid} differs from "
                f"{ref.frame_of_reference_uid} of {ref.path}; doses cannot be summed",
                f.path,
                "FrameOfReferenceUID",
            )
    if len(files) > 1:
        _check_summable(files)
    total = ref.values.copy() if len(files) > 1 else ref.values
    resampled = []
    for f in files[1:]:
        if f.grid.same_as(ref.grid):
            total = total + f.values
        else:
            total = total + _resample(f, ref.grid)
            resampled.append(str(f.path))
    info = _dose_info(files, total, resampled)
    return DoseGrid(total, ref.grid, ref.affine,
                    ref.frame_of_reference_uid, info)


def _dose_info(files: Sequence[DoseFile], total: np.ndarray, resampled: list[str]) -> DoseInfo:
    """What dose was used: the files, how they were summed, the grid of the first."""
    ref = files[0]
    max_gy, max_pos = _dose_maximum(total, ref.grid)
    kinds = sorted({f.summation or "UNKNOWN" for f in files})
    if len(files) == 1:
        summation = ref.summation or "UNKNOWN"
    else:
        summation = f"sum of {len(files)} {'/'.join(kinds)} doses"
    info = DoseInfo(
        files=[str(f.path) for f in files],
        units="GY",
        summation=summation,
        summation_types=[f.summation for f in files],
        frame_of_reference_uid=ref.frame_of_reference_uid,
        grid_shape=ref.grid.shape,
        grid_spacing_mm=ref.grid.spacing,
        grid_origin_mm=(float(ref.grid.x[0]), float(ref.grid.y[0]), float(ref.grid.z[0])),
        resampled_files=resampled,
        sha256={str(f.path): f.sha256 for f in files},
        max_gy=max_gy,
        max_position_mm=max_pos,
    )
    return info


def _dose_maximum(
    dose: np.ndarray, grid: CanonicalGrid
) -> tuple[float | None, tuple[float, float, float] | None]:
    """Highest finite dose of the grid (Gy) and its voxel centre (x, y, z mm); 0 Gy and no
    position when the grid holds no finite dose."""
    # (NaN-skipping maximum, then its first voxel: no copy of the grid)
    value = float(np.fmax.reduce(dose, axis=None)) if dose.size else np.nan
    if value == np.inf:  # not a dose; the largest finite one, as for any other grid
        value = float(np.fmax.reduce(np.where(np.isfinite(dose), dose, np.nan), axis=None))
    if not np.isfinite(value):
        return 0.0, None
    k = int(np.argmax(dose == value))
    iz, iy, ix = np.unravel_index(k, dose.shape)
    return value, (float(grid.x[ix]), float(grid.y[iy]), float(grid.z[iz]))


def _check_against_plan(files: Sequence[DoseFile], plan: PlanInfo) -> None:
    for f in files:
        if (f.plan_uid and plan.sop_instance_uid and f.summation != "MULTI_PLAN"
                and f.plan_uid != plan.sop_instance_uid):
            raise InputError(
                f"references RTPLAN {f.plan_uid}, but the RTPLAN given ({plan.file}) is "
                f"{plan.sop_instance_uid}; give the RTPLAN this dose was calculated for, or "
                "leave the RTPLAN out",
                f.path,
                "ReferencedRTPlanSequence",
            )
    beam_files = [f for f in files if f.summation == "BEAM"]
    groups = {g: b for g, b in plan.treatment_beams.items() if b}
    if not beam_files:
        return
    if not groups:
        raise InputError(
            f"a BEAM dose (the dose of one beam), but the RTPLAN {plan.file} lists no "
            "treatment beams: it cannot be checked that the dose of every beam was given",
            beam_files[0].path,
            "DoseSummationType",
        )
    given: dict[str, set[str]] = {}
    for f in beam_files:
        if not f.beam:
            raise InputError(
                "a BEAM dose must name its beam (ReferencedBeamSequence) so that every "
                f"beam of the RTPLAN {plan.file} can be checked to have its dose",
                f.path,
                "ReferencedRTPlanSequence",
            )
        group = f.fraction_group or (next(iter(groups)) if len(groups) == 1 else "")
        if group not in groups:
            raise InputError(
                f"references fraction group {group or '(none)'}, which delivers no beams in "
                f"the RTPLAN {plan.file} (groups with beams: {', '.join(groups)})",
                f.path,
                "ReferencedFractionGroupNumber",
            )
        given.setdefault(group, set()).add(f.beam)
    for group, beams in given.items():
        missing = [b for b in groups[group] if b not in beams]
        if missing:
            raise InputError(
                f"the RTPLAN {plan.file} delivers beams {', '.join(groups[group])} in "
                f"fraction group {group}, but beam doses were given only for beam(s) "
                f"{', '.join(sorted(beams, key=_natural))}; beam(s) {', '.join(missing)} have "
                "no RTDOSE, so the summed dose would be too low",
                beam_files[0].path,
                "ReferencedBeamNumber",
            )


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 30, text)



def _check_summable(files: Sequence[DoseFile]) -> None:
    plan_like = [f for f in files if f.summation in ("PLAN", "MULTI_PLAN", "RECORD")]
    parts = [f for f in files if f not in plan_like]
    if plan_like and parts:
        raise InputError(
            "a plan dose ("
            + ", ".join(f"{f.path} [{f.summation}]" for f in plan_like)
            + ") cannot be summed with beam/fraction doses ("
            + ", ".join(f"{f.path} [{f.summation or 'no type'}]" for f in parts)
            + "): that would count the dose twice; give one or the other",
            plan_like[0].path,
            "DoseSummationType",
        )
    seen: dict[tuple[str, ...], Path] = {}
    for f in files:
        if f.summation in ("PLAN", "MULTI_PLAN", "RECORD"):
            key: tuple[str, ...] = (f.summation, f.plan_uid)
        elif f.summation == "BEAM":
            key = ("BEAM", f.plan_uid, f.fraction_group, f.beam)
        else:
            key = (f.summation, f.plan_uid, f.fraction_group, f.beam, str(f.path))
        if key[1] and key in seen:
            raise InputError(
                f"duplicates {seen[key]} ({f.summation} dose of the same plan"
                + (f", beam {f.beam}" if f.beam else "")
                + "); summing both would count the dose twice",
                f.path,
                "DoseSummationType",
            )
        seen[key] = f.path


