"""Analytic phantoms written as DICOM-RT for the tests, and their closed-form DVHs.

A phantom is a set of structures contoured on axial planes (regular polygons
with many vertices standing for circles) and a dose that is a closed-form
function of position (uniform or linear). Each contour plane stands for a
slab of one slice thickness centred on it (half-slice end caps), so the
truth below integrates the dose over that stack of slabs exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvheval.testing.synthetic import (
    ROISpec,
    axial_grid,
    new_uid,
    reorient_dose,
    write_rtdose,
    write_rtplan,
    write_rtstruct,
)

N_VERTICES = 360


def disc(cx: float, cy: float, r: float, n: int = N_VERTICES) -> np.ndarray:
    """Regular n-gon of circumradius r, first vertex at angle 0."""
    a = 2 * np.pi * np.arange(n) / n
    return np.column_stack((cx + r * np.cos(a), cy + r * np.sin(a)))


def polygon_area(r: float, n: int = N_VERTICES) -> float:
    return 0.5 * n * r * r * math.sin(2 * math.pi / n)


@dataclass
class Shape:
    """A structure as planes of discs: ``planes[i] = (z, [(cx, cy, r, sign), ...])``.

    ``sign`` is +1 for a filled disc and -1 for a hole.
    """

    name: str
    planes: list[tuple[float, list[tuple[float, float, float, int]]]]
    thickness: float
    interpreted_type: str = "ORGAN"

    def rois_contours(self, z_shift: float = 0.0) -> tuple[tuple[str, np.ndarray], ...]:
        out = []
        for z, discs in self.planes:
            for cx, cy, r, _sign in discs:
                p = disc(cx, cy, r)
                pts = np.column_stack((p, np.full(len(p), z + z_shift)))
                out.append(("CLOSED_PLANAR", pts))
        return tuple(out)

    # ---------------------------------------------------------- truth
    def slabs(self) -> list[tuple[float, float, list]]:
        h = self.thickness / 2
        return [(z - h, z + h, d) for z, d in self.planes]

    def volume_mm3(self) -> float:
        return sum((hi - lo) * sum(s * polygon_area(r) for _, _, r, s in d)
                   for lo, hi, d in self.slabs())


def cylinder(name, r, z0, z1, t, cx=0.0, cy=0.0) -> Shape:
    zs = np.arange(z0, z1 + 1e-9, t)
    return Shape(name, [(float(z), [(cx, cy, r, 1)]) for z in zs], t)


def sphere(name, radius, t, cx=0.0, cy=0.0, cz=0.0) -> Shape:
    k = int(np.floor(radius / t))
    planes = []
    for i in range(-k, k + 1):
        z = i * t
        rr = math.sqrt(max(radius**2 - z**2, 0.0))
        if rr > 0.05 * radius:
            planes.append((cz + z, [(cx, cy, rr, 1)]))
    return Shape(name, planes, t)


def cone(name, r_base, z_base, height, t) -> Shape:
    zs = np.arange(z_base, z_base + height - 1e-9, t)
    return Shape(name, [(float(z), [(0.0, 0.0, r_base * (1 - (z - z_base) / height), 1)])
                        for z in zs], t)


def shell(name, r_out, r_in, z0, z1, t) -> Shape:
    zs = np.arange(z0, z1 + 1e-9, t)
    return Shape(name, [(float(z), [(0.0, 0.0, r_out, 1), (0.0, 0.0, r_in, -1)]) for z in zs], t)


def islands(name, r1, r2, sep, z0, z1, t) -> Shape:
    """Two separate discs of radii r1 and r2 on every plane, centres ``sep`` apart in x."""
    zs = np.arange(z0, z1 + 1e-9, t)
    return Shape(name, [(float(z), [(-sep / 2, 0.0, r1, 1), (sep / 2, 0.0, r2, 1)])
                        for z in zs], t)


def _segment_fraction(r: float, a: float) -> float:
    """Fraction of a disc of radius r with x - cx >= a."""
    if a <= -r:
        return 1.0
    if a >= r:
        return 0.0
    return (r * r * math.acos(a / r) - a * math.sqrt(r * r - a * a)) / (math.pi * r * r)


@dataclass
class LinearDose:
    """Dose ``d0 + gradient * (coordinate along axis)`` in Gy (axis 0=x, 1=y, 2=z)."""

    d0: float
    gradient: float
    axis: int

    def __call__(self, x, y, z):
        c = (x, y, z)[self.axis]
        return self.d0 + self.gradient * c


def volume_at_least(shape: Shape, dose: LinearDose, d: float, z_range=(-np.inf, np.inf)):
    """Closed-form volume (mm^3) of ``shape`` receiving at least ``d``.

    Only the part with z inside ``z_range`` counts (partial coverage).
    """
    total = 0.0
    g = dose.gradient
    for lo, hi, discs in shape.slabs():
        lo_c, hi_c = max(lo, z_range[0]), min(hi, z_range[1])
        if hi_c <= lo_c:
            continue
        for cx, cy, r, s in discs:
            area = polygon_area(r)
            if g == 0:
                frac_len = (hi_c - lo_c) if dose.d0 >= d else 0.0
                total += s * area * frac_len
            elif dose.axis == 2:
                zstar = (d - dose.d0) / g
                if g > 0:
                    length = max(0.0, hi_c - max(lo_c, zstar))
                else:
                    length = max(0.0, min(hi_c, zstar) - lo_c)
                total += s * area * length
            else:
                c = (cx, cy)[dose.axis]
                cstar = (d - dose.d0) / g
                if g > 0:
                    frac = _segment_fraction(r, cstar - c)
                else:
                    frac = 1.0 - _segment_fraction(r, cstar - c)
                total += s * area * (hi_c - lo_c) * frac
    return total


def dose_at_volume(shape: Shape, dose: LinearDose, v_mm3: float, lo: float, hi: float,
                   z_range=(-np.inf, np.inf)) -> float:
    """Invert :func:`volume_at_least` by bisection between doses lo and hi."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if volume_at_least(shape, dose, mid, z_range) >= v_mm3:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------ writing
@dataclass
class PhantomGrid:
    origin: tuple[float, float, float] = (-40.0, -40.0, -40.0)
    spacing: tuple[float, float, float] = (2.5, 2.5, 2.5)  # dz, dy, dx
    shape: tuple[int, int, int] = (33, 33, 33)  # nz, ny, nx

    def axes(self):
        nz, ny, nx = self.shape
        dz, dy, dx = self.spacing
        x = self.origin[0] + dx * np.arange(nx)
        y = self.origin[1] + dy * np.arange(ny)
        z = self.origin[2] + dz * np.arange(nz)
        return x, y, z


def write_phantom(
    folder: Path,
    shapes: Sequence[Shape],
    dose: Callable,
    grid: PhantomGrid | None = None,
    orientation: str = "HFS",
    absolute_offsets: bool = False,
    extra_rois: Sequence[ROISpec] = (),
    prescriptions: Sequence[tuple[str, float]] | None = None,
    fractions: int = 10,
    frame_of_reference_uid: str | None = None,
    dose_files: Sequence[tuple[str, float]] = (("PLAN", 1.0),),
    units: str = "GY",
) -> Path:
    """Write an RTSTRUCT (+ RTPLAN) and one or more RTDOSE files into ``folder``.

    ``dose_files`` lists (DoseSummationType, share): each file holds
    ``share`` times the dose. BEAM file k (from 0) is beam k + 1, and the
    RTPLAN, when written, delivers exactly those beams.
    """
    grid = grid or PhantomGrid()
    folder.mkdir(parents=True, exist_ok=True)
    for_uid = frame_of_reference_uid or new_uid()
    study = new_uid()
    x, y, z = grid.axes()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    dzyx = dose(xx, yy, zz) * np.ones_like(xx)
    rois = [ROISpec(i + 1, s.name, s.interpreted_type, s.rois_contours())
            for i, s in enumerate(shapes)]
    rois += list(extra_rois)
    ss_uid = write_rtstruct(folder / "rs.dcm", rois, frame_of_reference_uid=for_uid,
                            study_uid=study)
    plan_uid = None
    if prescriptions is not None:
        beams = {k + 1: 100.0 for k, (kind, _) in enumerate(dose_files) if kind == "BEAM"}
        plan_uid = write_rtplan(folder / "rp.dcm", prescriptions=prescriptions,
                                fractions=fractions, frame_of_reference_uid=for_uid,
                                study_uid=study, structure_set_uid=ss_uid,
                                beam_metersets=beams or None)
    g = axial_grid(grid.origin, grid.spacing, grid.shape, orientation, absolute_offsets)
    arr = reorient_dose(dzyx, g, grid.origin, grid.spacing)
    for k, (kind, share) in enumerate(dose_files):
        write_rtdose(folder / f"rd{k}.dcm", arr * share, g, frame_of_reference_uid=for_uid,
                     study_uid=study, summation_type=kind, units=units,
                     referenced_plan_uid=plan_uid or new_uid(),
                     referenced_beam_number=(k + 1) if kind == "BEAM" else None,
                     referenced_fraction_group=1 if kind in ("BEAM", "FRACTION") else None)
    return folder
