"""Generate the synthetic sample plan shipped in ``sample_dicom/``.

The plan is a 30/40 Gy simultaneous-integrated-boost treatment in 10
fractions of a metastasis in the L1 vertebral body: analytic anatomy
contoured on 3 mm planes, an analytic dose on a 2.5 mm grid and an RT Plan
with both prescriptions. Everything is deterministic: fixed UIDs, fixed
random seed, no dates, so running the script again gives identical files.

Usage::

    python tools/make_sample_dicom.py [OUTDIR]          # write and check
    python tools/make_sample_dicom.py [OUTDIR] --check  # only check

The check reads the files back with pydicom alone, rasterises the contours
on the dose grid (voxel centres, nearest contour plane) and prints volumes
and dose metrics: a crude calculation, independent of the dvheval reader
and DVH engine, to confirm the plan meets the protocol.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage, special
from shapely.geometry import Polygon
from skimage.draw import polygon as fill_polygon
from skimage.measure import points_in_poly

from dvheval.testing.synthetic import (
    ROISpec,
    axial_grid,
    circle_contour,
    derived_uid,
    ellipse_contour,
    write_rtdose,
    write_rtplan,
    write_rtstruct,
)

#: Fixed source of every UID of the sample plan.
UID_ROOT = "dvheval sample plan: L1 vertebral metastasis, SIB 30/40 Gy in 10 fractions, v1"
SEED = 20240611
PLAN_DIR = "sample_plan"
PATIENT_ID = "DVHEVAL-SAMPLE-01"
PATIENT_NAME = "SAMPLE^L1 SIB"
FRACTIONS = 10
PRESCRIPTIONS = (("PTV40", 40.0), ("PTV30", 30.0))

CONTOUR_STEP_MM = 3.0
DOSE_SPACING_MM = 2.5
#: Dose grid voxel centres (HFS): x and y cover the BODY, z -75..+75 mm.
DOSE_ORIGIN_MM = (-172.5, -122.5, -75.0)
DOSE_SHAPE_ZYX = (61, 99, 139)
#: Resolution of the fine grids on which target distances are computed.
FINE_MM = 0.5


def sample_uid(name: str) -> str:
    """UID of one object of the sample plan, fixed by ``UID_ROOT``."""
    return derived_uid(UID_ROOT, name)


# ------------------------------------------------------------------ anatomy


@dataclass(frozen=True)
class Shape:
    """A solid whose axial sections are axis-aligned ellipses.

    ``section(z)`` returns the centre (cx, cy) and semi-axes (a, b) of the
    section at each z (arrays); a or b <= 0 where the solid is absent.
    """

    section: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    z_range: tuple[float, float]

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Whether points (broadcast arrays, mm) lie inside the solid."""
        z = np.asarray(z, dtype=float)
        cx, cy, a, b = self.section(z)
        present = (a > 0) & (b > 0) & (z >= self.z_range[0]) & (z <= self.z_range[1])
        a = np.where(present, a, 1.0)
        b = np.where(present, b, 1.0)
        return present & (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0)


def ellipsoid(center: tuple[float, float, float], semi: tuple[float, float, float]) -> Shape:
    """Axis-aligned ellipsoid."""
    cx, cy, cz = center
    sa, sb, sc = semi

    def section(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        f = np.sqrt(np.clip(1.0 - ((z - cz) / sc) ** 2, 0.0, None))
        return np.full_like(z, cx), np.full_like(z, cy), sa * f, sb * f

    return Shape(section, (cz - sc, cz + sc))


def rounded_cylinder(
    center_xy: tuple[float, float],
    semi: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    half_length: float,
    end_radius: float,
) -> Shape:
    """Elliptic cylinder along z, centred on z = 0, with rounded ends."""
    flat = half_length - end_radius

    def section(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        excess = np.clip(np.abs(z) - flat, 0.0, None) / end_radius
        f = np.sqrt(np.clip(1.0 - excess**2, 0.0, None))
        a, b = semi(z)
        return np.full_like(z, center_xy[0]), np.full_like(z, center_xy[1]), a * f, b * f

    return Shape(section, (-half_length, half_length))


def _body_section(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t = z / 90.0
    return np.zeros_like(z), np.zeros_like(z), 170.0 + 3.0 * t - 8.0 * t**2, 120.0 - 6.0 * t**2


def _vertebra_semi(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # the vertebral body is slightly waisted: wider at the end plates
    t = z / 15.0
    return 22.0 + 1.2 * t**2, 16.0 + 0.6 * t**2


def _ptv30_semi(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vertebra_semi(z)
    return a + 5.0, b + 5.0


def _cord_section(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # canal slightly closer to the skin away from L1 (lumbar lordosis)
    t = z / 90.0
    r = 5.0 - 0.3 * t**2
    return np.zeros_like(z), 48.0 + 3.0 * t**2, r, r


VERTEBRA_CENTER = (0.0, 20.0)
BOOST_CENTER = (4.0, 18.0, 0.0)
GTV_SEMI = (12.0, 9.0, 10.0)

BODY = Shape(_body_section, (-90.0, 90.0))
CTV30 = rounded_cylinder(VERTEBRA_CENTER, _vertebra_semi, 15.0, 6.0)
PTV30_OUTER = rounded_cylinder(VERTEBRA_CENTER, _ptv30_semi, 20.0, 11.0)
GTV40 = ellipsoid(BOOST_CENTER, GTV_SEMI)
PTV40 = ellipsoid(BOOST_CENTER, tuple(s + 2.0 for s in GTV_SEMI))
#: PTV40 + 5 mm: removed from PTV30 so that PTV30 is the 30 Gy ring.
BOOST_EXCLUSION = ellipsoid(BOOST_CENTER, tuple(s + 7.0 for s in GTV_SEMI))
#: contoured over the length the dose grid covers, as a planner would
CORD = Shape(_cord_section, (-72.0, 72.0))
KIDNEY_L = ellipsoid((75.0, 45.0, -10.0), (25.0, 30.0, 55.0))
KIDNEY_R = ellipsoid((-75.0, 45.0, -20.0), (25.0, 30.0, 55.0))
#: upper abdomen, kept inside the dose grid
LIVER = replace(ellipsoid((-65.0, -35.0, 45.0), (80.0, 50.0, 32.0)), z_range=(15.0, 72.0))
ISOCENTER = (0.0, 20.0, 0.0)


def _planes(shape: Shape) -> np.ndarray:
    lo = np.ceil(shape.z_range[0] / CONTOUR_STEP_MM - 1e-9)
    hi = np.floor(shape.z_range[1] / CONTOUR_STEP_MM + 1e-9)
    return np.arange(lo, hi + 1) * CONTOUR_STEP_MM


def _ellipses(shape: Shape, n: int) -> list[np.ndarray]:
    """Contours of ``shape`` with ``n`` vertices on the 3 mm planes, 0.01 mm precision."""
    z = _planes(shape)
    cx, cy, a, b = shape.section(z)
    keep = (a >= 1.0) & (b >= 1.0) & (z >= shape.z_range[0]) & (z <= shape.z_range[1])
    return [
        np.round(ellipse_contour((cx[i], cy[i]), (a[i], b[i]), z[i], n), 2)
        for i in np.flatnonzero(keep)
    ]


def build_rois() -> list[ROISpec]:
    """The structures of the sample plan, contoured on 3 mm planes."""
    closed = "CLOSED_PLANAR"

    def planar(contours: list[np.ndarray]) -> tuple[tuple[str, np.ndarray], ...]:
        return tuple((closed, c) for c in contours)

    ptv30 = []
    outer = _ellipses(PTV30_OUTER, 96)
    holes = {float(c[0, 2]): c for c in _ellipses(BOOST_EXCLUSION, 96)}
    for contour in outer:
        ptv30.append(contour)
        hole = holes.get(float(contour[0, 2]))
        if hole is not None:
            ptv30.append(hole)
    cz = _planes(CORD)
    cx, cy, r, _ = CORD.section(cz)
    cord = [np.round(circle_contour((cx[i], cy[i]), r[i], cz[i], 48), 2) for i in range(cz.size)]
    return [
        ROISpec(1, "BODY", "EXTERNAL", planar(_ellipses(BODY, 128))),
        ROISpec(2, "CTV30", "CTV", planar(_ellipses(CTV30, 96))),
        ROISpec(3, "PTV30", "PTV", planar(ptv30)),
        ROISpec(4, "GTV40", "GTV", planar(_ellipses(GTV40, 64))),
        ROISpec(5, "PTV40", "PTV", planar(_ellipses(PTV40, 64))),
        ROISpec(6, "SpinalCord", "ORGAN", planar(cord)),
        ROISpec(7, "Kidney_L", "ORGAN", planar(_ellipses(KIDNEY_L, 64))),
        ROISpec(8, "Kidney_R", "ORGAN", planar(_ellipses(KIDNEY_R, 64))),
        ROISpec(9, "Liver", "ORGAN", planar(_ellipses(LIVER, 96))),
        ROISpec(10, "Iso", "MARKER", (("POINT", np.array([ISOCENTER])),)),
        ROISpec(11, "Duodenum", "ORGAN", ()),
    ]


def check_geometry(rois: list[ROISpec]) -> None:
    """Assert the contours nest and avoid each other as intended."""
    by_name = {r.name: r for r in rois}

    def polygons(name: str) -> dict[float, list[Polygon]]:
        out: dict[float, list[Polygon]] = {}
        for _, pts in by_name[name].contours:
            out.setdefault(float(pts[0, 2]), []).append(Polygon(pts[:, :2]))
        return out

    ptv30 = polygons("PTV30")
    for z, polys in ptv30.items():
        if len(polys) == 2:
            outer, hole = polys
            assert outer.contains(hole), z
            assert outer.exterior.distance(hole) >= 1.5, (z, outer.exterior.distance(hole))
    body = polygons("BODY")
    organs = ("SpinalCord", "Kidney_L", "Kidney_R", "Liver")
    for name in (*organs, "CTV30", "GTV40", "PTV40"):
        for z, polys in polygons(name).items():
            for p in polys:
                assert body[z][0].contains(p), (name, z)
    for i, first in enumerate((*organs, "PTV30")):
        for second in organs[i + 1 :]:
            a, b = polygons(first), polygons(second)
            for z in set(a) & set(b):
                assert a[z][0].distance(b[z][0]) > 1.0, (first, second, z)
    for z, polys in polygons("GTV40").items():
        assert polygons("PTV40")[z][0].contains(polys[0])
        assert polygons("CTV30")[z][0].contains(polys[0])


# --------------------------------------------------------------------- dose


def _grid_axes(
    origin: tuple[float, float, float], shape_zyx: tuple[int, int, int], step: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(origin[i] + step * np.arange(shape_zyx[2 - i]) for i in range(3))


def _signed_distance(
    shape: Shape, lo: tuple[float, float, float], hi: tuple[float, float, float]
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Signed distance (mm, negative inside) to ``shape`` on a fine grid.

    The grid runs from ``lo`` to ``hi`` (x, y, z; on the dose grid's
    lattice). Returns the distance array [z, y, x] and ``lo``.
    """
    n = tuple(int(round((hi[i] - lo[i]) / FINE_MM)) + 1 for i in range(3))
    x, y, z = (lo[i] + FINE_MM * np.arange(n[i]) for i in range(3))
    mask = shape.inside(x[None, None, :], y[None, :, None], z[:, None, None])
    outside = ndimage.distance_transform_edt(~mask, sampling=FINE_MM)
    inside = ndimage.distance_transform_edt(mask, sampling=FINE_MM)
    # distances between voxel centres overshoot the surface by ~half a voxel
    sd = np.where(mask, -(inside - FINE_MM / 2), outside - FINE_MM / 2)
    return sd, lo


def _sample_fine(sd: np.ndarray, lo: tuple[float, float, float], far: float) -> np.ndarray:
    """Values of a fine-grid distance at the dose voxel centres (``far`` outside)."""
    x, y, z = _grid_axes(DOSE_ORIGIN_MM, DOSE_SHAPE_ZYX, DOSE_SPACING_MM)
    out = np.full(DOSE_SHAPE_ZYX, far)
    idx = [np.rint((ax - lo[i]) / FINE_MM).astype(int) for i, ax in enumerate((x, y, z))]
    ok = [(ix >= 0) & (ix < sd.shape[2 - i]) for i, ix in enumerate(idx)]
    sub = sd[np.ix_(idx[2][ok[2]], idx[1][ok[1]], idx[0][ok[0]])]
    out[np.ix_(ok[2], ok[1], ok[0])] = sub
    return out


def _falloff(sd: np.ndarray, shift: np.ndarray | float, sigma: float) -> np.ndarray:
    """Error-function dose profile: 1 deep inside, 0.5 at ``sd == shift``."""
    return 0.5 * special.erfc((sd - shift) / (sigma * np.sqrt(2.0)))


#: Dose model parameters (Gy, mm).
P30_GY = 30.7  # plateau in the 30 Gy region
P40_GY = 40.7  # plateau in the boost
SIGMA30_MM = 3.0  # penumbra width
SHIFT30_MM = 4.0  # 50 % level of the 30 Gy fall-off outside PTV30 ...
SHIFT30_POST_MM = 7.0  # ... plus this much posteriorly (posterior beam entrance)
SIGMA40_MM = 3.0
SHIFT40_MM = 0.6
BATH_GY = 7.5  # low-dose bath at the PTV30 surface
BATH_DECAY_MM = 90.0  # e-folding length of the bath in the axial plane
BATH_Z_STRETCH = 1.5  # the bath falls this much faster cranio-caudally
NOISE = 0.010  # relative amplitude of the smooth inhomogeneity


def build_dose() -> np.ndarray:
    """Analytic dose (Gy) on the HFS dose grid, indexed [z, y, x]."""
    x, y, z = _grid_axes(DOSE_ORIGIN_MM, DOSE_SHAPE_ZYX, DOSE_SPACING_MM)
    X, Y, Z = x[None, None, :], y[None, :, None], z[:, None, None]

    sd30, lo30 = _signed_distance(PTV30_OUTER, (-50.0, -25.0, -50.0), (50.0, 80.0, 50.0))
    sd30 = _sample_fine(sd30, lo30, far=1e3)
    sd40, lo40 = _signed_distance(PTV40, (-25.0, -10.0, -35.0), (35.0, 45.0, 35.0))
    sd40 = _sample_fine(sd40, lo40, far=1e3)

    # 0 anterior, 1 posterior of the vertebral body's posterior half
    posterior = 1.0 / (1.0 + np.exp(-(Y - (VERTEBRA_CENTER[1] + 10.0)) / 4.0))
    p30 = _falloff(sd30, SHIFT30_MM + SHIFT30_POST_MM * posterior, SIGMA30_MM)
    p40 = _falloff(sd40, SHIFT40_MM, SIGMA40_MM)

    # coarse distance for the slowly varying bath, z distances stretched
    inside30 = PTV30_OUTER.inside(X, Y, Z)
    dist = ndimage.distance_transform_edt(
        ~inside30, sampling=(DOSE_SPACING_MM * BATH_Z_STRETCH, DOSE_SPACING_MM, DOSE_SPACING_MM)
    )
    bath = BATH_GY * np.exp(-dist / BATH_DECAY_MM)

    dose = P30_GY * p30 + (P40_GY - P30_GY) * p40 + (1.0 - p30) * bath
    rng = np.random.default_rng(SEED)
    field = ndimage.gaussian_filter(rng.standard_normal(DOSE_SHAPE_ZYX), sigma=2.0)
    dose *= 1.0 + NOISE * field / field.std()
    dose *= BODY.inside(X, Y, Z)
    return dose


# ---------------------------------------------------------------- writing


def write_sample(
    out_dir: Path,
    *,
    rois: list[ROISpec] | None = None,
    dose: np.ndarray | None = None,
    fractions: int = FRACTIONS,
    prescriptions: tuple[tuple[str, float], ...] = PRESCRIPTIONS,
    identity: dict[str, dict[str, str]] | None = None,
    plan_options: dict | None = None,
) -> Path:
    """Write RTSTRUCT.dcm, RTPLAN.dcm and RTDOSE.dcm to ``out_dir/sample_plan``.

    The keyword arguments write variants of the sample plan (for tests):
    other ``rois`` or ``dose`` (Gy, ``[z, y, x]`` on the sample grid),
    another fraction count or prescriptions, per-file identity attributes
    (``identity={"RTDOSE": {"patient_id": ...}}``; keys ``patient_id``,
    ``patient_name``, ``study_uid``, ``frame_of_reference_uid``) and extra
    ``write_rtplan`` options (``approval_status``, ``structure_set_uid``,
    ``isocenter_mm``).
    """
    plan_dir = out_dir / PLAN_DIR
    if rois is None:
        rois = build_rois()
        check_geometry(rois)
    common = {
        "frame_of_reference_uid": sample_uid("frame of reference"),
        "study_uid": sample_uid("study"),
        "patient_id": PATIENT_ID,
        "patient_name": PATIENT_NAME,
    }
    identity = identity or {}
    ss_uid = write_rtstruct(
        plan_dir / "RTSTRUCT.dcm",
        rois,
        label="L1 SIB",
        sop_instance_uid=sample_uid("structure set"),
        series_uid=sample_uid("structure set series"),
        referenced_series_uid=sample_uid("planning CT series"),
        **{**common, **identity.get("RTSTRUCT", {})},
    )
    plan_uid = write_rtplan(
        plan_dir / "RTPLAN.dcm",
        **{
            "prescriptions": prescriptions,
            "fractions": fractions,
            "structure_set_uid": ss_uid,
            "label": "L1 SIB 30/40",
            "sop_instance_uid": sample_uid("plan"),
            "series_uid": sample_uid("plan series"),
            "roi_numbers": {r.name: r.number for r in rois},
            "isocenter_mm": ISOCENTER,
            **common,
            **identity.get("RTPLAN", {}),
            **(plan_options or {}),
        },
    )
    grid = axial_grid(DOSE_ORIGIN_MM, (DOSE_SPACING_MM,) * 3, DOSE_SHAPE_ZYX, "HFS")
    write_rtdose(
        plan_dir / "RTDOSE.dcm",
        build_dose() if dose is None else dose,
        grid,
        summation_type="PLAN",
        units="GY",
        referenced_plan_uid=plan_uid,
        bits=16,
        sop_instance_uid=sample_uid("dose"),
        series_uid=sample_uid("dose series"),
        **{**common, **identity.get("RTDOSE", {})},
    )
    return plan_dir


# ------------------------------------------------------------ crude check


def _plane_area(contours: list[np.ndarray]) -> float:
    """Area (mm^2) enclosed by the contours of one plane, holes by nesting."""
    total = 0.0
    for i, c in enumerate(contours):
        x, y = c[:, 0], c[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
        depth = sum(
            bool(points_in_poly(c[:1, :2], other[:, :2])[0])
            for j, other in enumerate(contours)
            if j != i
        )
        total += area if depth % 2 == 0 else -area
    return total


def crude_check(plan_dir: Path) -> dict[str, dict[str, float]]:
    """Volumes and dose metrics of every contoured ROI, from the files alone.

    Masks are voxel centres inside the contours of the nearest contour
    plane (within half the contour spacing), holes by even-odd nesting;
    percentiles of the voxel doses give D98% and D2%.

    Returns
    -------
    dict
        ROI name -> {"volume_cc", "in_grid_cc", "D98", "D2", "Dmax",
        "Dmean", "D0.5cc"} (Gy, cm^3); empty for ROIs without closed
        contours.
    """
    dose_ds = pydicom.dcmread(plan_dir / "RTDOSE.dcm")
    ss = pydicom.dcmread(plan_dir / "RTSTRUCT.dcm")
    if [float(v) for v in dose_ds.ImageOrientationPatient] != [1, 0, 0, 0, 1, 0]:
        raise ValueError("the crude check handles HFS dose grids only")
    dose = dose_ds.pixel_array.astype(float) * float(dose_ds.DoseGridScaling)
    x0, y0, z0 = (float(v) for v in dose_ds.ImagePositionPatient)
    dy, dx = (float(v) for v in dose_ds.PixelSpacing)
    zs = z0 + np.array([float(v) for v in dose_ds.GridFrameOffsetVector])
    voxel_cc = dx * dy * abs(zs[1] - zs[0]) / 1000.0
    rows, cols = dose.shape[1:]

    names = {int(r.ROINumber): str(r.ROIName) for r in ss.StructureSetROISequence}
    results: dict[str, dict[str, float]] = {}
    for item in ss.ROIContourSequence:
        name = names[int(item.ReferencedROINumber)]
        planes: dict[float, list[np.ndarray]] = {}
        for c in getattr(item, "ContourSequence", []):
            if c.ContourGeometricType != "CLOSED_PLANAR":
                continue
            pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
            planes.setdefault(round(float(pts[0, 2]), 3), []).append(pts)
        if not planes:
            results[name] = {}
            continue
        plane_z = np.array(sorted(planes))
        step = float(np.min(np.diff(plane_z))) if plane_z.size > 1 else CONTOUR_STEP_MM
        volume = sum(_plane_area(planes[z]) for z in plane_z) * step / 1000.0
        mask = np.zeros(dose.shape, dtype=bool)
        for f, z in enumerate(zs):
            nearest = plane_z[np.argmin(np.abs(plane_z - z))]
            if abs(nearest - z) > step / 2 + 1e-6:
                continue
            for pts in planes[float(nearest)]:
                plane = np.zeros((rows, cols), dtype=bool)
                rr, cc = fill_polygon((pts[:, 1] - y0) / dy, (pts[:, 0] - x0) / dx, (rows, cols))
                plane[rr, cc] = True
                mask[f] ^= plane
        d = dose[mask]
        hottest = np.sort(d)[::-1]
        k = min(hottest.size, max(1, int(round(0.5 / voxel_cc))))
        results[name] = {
            "volume_cc": volume,
            "in_grid_cc": d.size * voxel_cc,
            "D98": float(np.percentile(d, 2)),
            "D2": float(np.percentile(d, 98)),
            "Dmax": float(d.max()),
            "Dmean": float(d.mean()),
            "D0.5cc": float(hottest[k - 1]),
        }
    return results


#: Protocol checks of the 30/40 Gy regimen: (ROI, metric, limit, "min"/"max").
PROTOCOL_CHECKS = (
    ("GTV40", "D2", 42.8, "max"),
    ("PTV30", "D98", 27.0, "min"),
    ("PTV30", "D2", 32.1, "max"),
    ("SpinalCord", "Dmax", 34.0, "max"),
    ("Kidney_L", "Dmean", 12.0, "max"),
    ("Kidney_R", "Dmean", 12.0, "max"),
)


def protocol_failures(results: dict[str, dict[str, float]]) -> list[str]:
    """Protocol checks the crude metrics break (empty when the plan passes)."""
    failures = []
    for roi, metric, limit, kind in PROTOCOL_CHECKS:
        value = results[roi][metric]
        if (value < limit) if kind == "min" else (value > limit):
            failures.append(f"{roi} {metric} = {value:.2f} Gy ({kind} {limit} Gy)")
    return failures


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown table of the crude check."""
    lines = [
        "| ROI | volume cc | in dose grid cc | D98% Gy | D2% Gy | Dmax Gy | Dmean Gy | D0.5cc Gy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in results.items():
        if not m:
            lines.append(f"| {name} | - | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {name} | {m['volume_cc']:.1f} | {m['in_grid_cc']:.1f} | {m['D98']:.2f} | "
            f"{m['D2']:.2f} | {m['Dmax']:.2f} | {m['Dmean']:.2f} | {m['D0.5cc']:.2f} |"
        )
    return "\n".join(lines)


README_TEMPLATE = """\
# Sample DICOM-RT plan

`sample_plan/` holds a synthetic but realistic plan for trying dvheval:
dose-escalated hypofractionated IMRT with a simultaneous integrated boost,
**30/40 Gy in 10 fractions**, to a metastasis in the L1 vertebral body.
There is no CT: the anatomy is analytic (ellipses per plane) and the dose is
an analytic model, so everything can be regenerated exactly.

| File | Content |
|---|---|
| `sample_plan/RTSTRUCT.dcm` | RT Structure Set, 11 ROIs, contours on 3 mm planes |
| `sample_plan/RTPLAN.dcm` | RT Plan: PTV40 40 Gy and PTV30 30 Gy, 10 fractions, no beams |
| `sample_plan/RTDOSE.dcm` | RT Dose, PLAN sum in Gy, 2.5 mm grid, 16-bit, references the plan |

Patient position head-first supine; patient coordinates x towards the
patient's left, y posterior, z superior, L1 centred at z = 0.

## Structures

- `BODY` (EXTERNAL): abdomen about 340 x 240 mm, contoured z -90..+90 mm.
  The dose grid covers z -75..+75 mm only, so BODY sticks out of the dose
  grid cranio-caudally (partial coverage); every other structure lies inside.
- `CTV30` (CTV): the vertebral body, about 44 x 32 x 30 mm.
- `PTV30` (PTV): CTV30 + 5 mm, with the boost region removed: on every plane
  where PTV40 + 5 mm exists PTV30 has a second, inner contour (a hole), so
  PTV30 is the ring that receives 30 Gy. Holes are marked only by nesting.
- `GTV40` (GTV): ellipsoid about 24 x 18 x 20 mm in the anterior left part
  of the vertebral body. `PTV40` (PTV): GTV40 + 2 mm.
- `SpinalCord` (ORGAN): circle of radius about 5 mm in the canal, z -72..+72
  mm, 2 mm behind PTV30 at its closest.
- `Kidney_L`, `Kidney_R` (ORGAN): ellipsoids 50 x 60 x 110 mm at x = +/-75 mm.
- `Liver` (ORGAN): large ellipsoid on the patient's right, upper abdomen.
- `Iso` (MARKER): a single POINT contour at the isocentre.
- `Duodenum` (ORGAN): declared but without contours.

## Dose

An analytic model on a 2.5 mm grid (z -75..+75 mm, zero outside BODY):
error-function fall-offs (sigma 3 mm) from a ~30.7 Gy plateau around PTV30
and a ~40.7 Gy plateau in PTV40, the 30 Gy region reaching further
posteriorly (as with posterior beams), a low-dose bath decaying over several
centimetres, and a smooth +/-1 % inhomogeneity.

## Crude check

Volumes and dose metrics below come from the generator's own crude,
independent calculation (`python tools/make_sample_dicom.py --check`), not
from dvheval: volumes are contour areas times the 3 mm plane spacing; dose
metrics use the dose at the voxel centres inside the contours of the nearest
contour plane (percentiles for D98% and D2%). A finer DVH calculation gives
slightly different numbers.

{table}

Protocol (30/40 Gy in 10 fractions): GTV40 D2% <= 42.8 Gy, PTV30 D98% >= 27
Gy and D2% <= 32.1 Gy, SpinalCord Dmax < 34 Gy, each kidney Dmean <= 12 Gy.
By this check the plan meets all of them.

## Regenerate

```
python tools/make_sample_dicom.py            # writes sample_dicom/
python tools/make_sample_dicom.py OUTDIR     # writes OUTDIR/sample_plan
python tools/make_sample_dicom.py --check    # re-check existing files
```

The generator is deterministic (fixed UIDs, fixed random seed, no dates):
rerunning it reproduces the files byte for byte.
"""


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir",
        nargs="?",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "sample_dicom",
        help="output folder (default: sample_dicom/ of the repository)",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check the existing files, write nothing"
    )
    args = parser.parse_args(argv)
    if args.check:
        plan_dir = args.out_dir / PLAN_DIR
    else:
        plan_dir = write_sample(args.out_dir)
    results = crude_check(plan_dir)
    table = format_table(results)
    print(table)
    failures = protocol_failures(results)
    if not args.check:
        if failures:
            raise SystemExit("the sample plan fails its protocol: " + "; ".join(failures))
        (args.out_dir / "README.md").write_text(README_TEMPLATE.format(table=table))
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
