"""Per-plane regions of derived structures: booleans on polygons and 3D margins."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from dvheval.dicom import ROI

#: Contour planes within this distance (mm, or 1 % of the plane spacing) of the
#: grid count as on it.
GRID_TOLERANCE_MM = 0.05
#: Polygons and holes smaller than this (mm^2) are numerical slivers and dropped.
MIN_AREA_MM2 = 0.01
#: Largest sub-plane spacing (mm) of the shape interpolation of margins.
MAX_SUBPLANE_MM = 0.5
#: In-plane pixel size range (mm) of the signed-distance rasters of margins.
PIXEL_RANGE_MM = (0.2, 1.0)
#: Target number of pixels of one signed-distance raster.
TARGET_PIXELS = 60_000


# ------------------------------------------------------------------- geometry
class Unusable(Exception):
    """The derived structure cannot be built; the message says why."""


@dataclass
class PlaneGrid:
    z0: float
    t: float

    def index(self, z: float, what: str) -> int:
        k = round((z - self.z0) / self.t)
        tol = max(GRID_TOLERANCE_MM, 0.01 * self.t)
        if abs(self.z0 + k * self.t - z) > tol:
            raise Unusable(f"{what} has a contour plane at z = {z:g} mm, off the structure "
                            f"set's {self.t:g} mm plane grid (planes at {self.z0:g} mm + k * "
                            f"{self.t:g} mm); derived structures need operands on one grid")
        return k

    def z(self, k: int) -> float:
        return self.z0 + k * self.t


Stack = dict[int, shapely.Geometry]


def _even_odd(rings: Sequence[np.ndarray]) -> shapely.Geometry:
    region = shapely.Polygon()
    for p in rings:
        poly = shapely.make_valid(shapely.Polygon(p))
        region = shapely.symmetric_difference(region, poly)
    return region


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Only the area of ``geom``: slivers, lines and points dropped."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon)]
    keep = []
    for p in parts:
        if p.area < MIN_AREA_MM2:
            continue
        holes = [h for h in p.interiors if shapely.Polygon(h).area >= MIN_AREA_MM2]
        keep.append(shapely.Polygon(p.exterior, holes))
    if not keep:
        return shapely.Polygon()
    return shapely.union_all(keep) if len(keep) > 1 else keep[0]


def _roi_planes(roi: ROI) -> tuple[dict[float, list[np.ndarray]], list[str]]:
    planes: dict[float, list[np.ndarray]] = {}
    notes: list[str] = []
    for c in roi.contours:
        if not c.geometric_type.startswith("CLOSED") or len(c.points) < 3:
            continue
        p = c.points
        if float(p[:, 2].max() - p[:, 2].min()) > GRID_TOLERANCE_MM:
            raise Unusable(f"{roi.name!r} has a contour that is not axial")
        z = float(np.round(p[:, 2].mean() / GRID_TOLERANCE_MM) * GRID_TOLERANCE_MM)
        planes.setdefault(z, []).append(p[:, :2])
    return planes, notes


def leaf_stack(roi: ROI, grid: PlaneGrid, warnings: list[str]) -> Stack:
    planes, _ = _roi_planes(roi)
    stack: Stack = {}
    for z, rings in planes.items():
        region = _polygonal(_even_odd(rings))
        if not region.is_empty:
            stack[grid.index(z, repr(roi.name))] = region
    if not stack:
        raise Unusable(f"operand {roi.name!r} has no closed contours enclosing an area")
    ks = sorted(stack)
    for a, b in zip(ks, ks[1:], strict=False):
        if b - a == 2:
            stack[a + 1] = stack[a]
            warnings.append(f"operand {roi.name!r} skips the plane at z = {grid.z(a + 1):g} "
                            "mm; the region of the plane below is used there")
    return stack


def boolean_stack(op: str, a: Stack, b: Stack) -> Stack:
    out: Stack = {}
    empty = shapely.Polygon()
    for k in sorted(set(a) | set(b)):
        ra, rb = a.get(k, empty), b.get(k, empty)
        if op == "|":
            r = shapely.union(ra, rb)
        elif op == "&":
            r = shapely.intersection(ra, rb)
        else:
            r = shapely.difference(ra, rb)
        r = _polygonal(r)
        if not r.is_empty:
            out[k] = r
    return out


# ---------------------------------------------------------------- margins
def _edt(feature: np.ndarray, spacing: Sequence[float], limit: float) -> np.ndarray:
    """Euclidean distance (mm) of every pixel to the nearest ``feature`` pixel, capped.

    Exact separable squared-distance transform with a window: distances up
    to ``limit`` are exact, larger ones are ``limit``.
    """
    g = np.where(feature, 0.0, np.inf)
    for ax, s in enumerate(spacing):
        k_max = min(int(math.ceil(limit / s)), g.shape[ax] - 1)
        out = g.copy()
        for k in range(1, k_max + 1):
            add = (k * s) ** 2
            hi = [slice(None)] * g.ndim
            lo = [slice(None)] * g.ndim
            hi[ax], lo[ax] = slice(k, None), slice(None, -k)
            np.minimum(out[tuple(hi)], g[tuple(lo)] + add, out=out[tuple(hi)])
            np.minimum(out[tuple(lo)], g[tuple(hi)] + add, out=out[tuple(lo)])
        g = out
    return np.sqrt(np.minimum(g, limit * limit))


@dataclass
class _Raster:
    x0: float
    y0: float
    h: float
    nx: int
    ny: int
    limit: float

    @property
    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.x0 + self.h * np.arange(self.nx)
        y = self.y0 + self.h * np.arange(self.ny)
        return np.meshgrid(x, y)

    def sdf(self, region: shapely.Geometry) -> np.ndarray:
        """Signed in-plane distance (mm) to the region's boundary; negative inside.

        Distance transforms of the pixel mask, replaced by the exact distance
        to the boundary's segments near the boundary (where the zero level is
        taken from).
        """
        xx, yy = self.xy
        inside = shapely.contains_xy(region, xx, yy)
        d_out = _edt(inside, (self.h, self.h), self.limit)
        d_in = _edt(~inside, (self.h, self.h), self.limit)
        s = np.where(inside, -(d_in - 0.5 * self.h), d_out - 0.5 * self.h)
        band = np.abs(s) <= 2.0 * self.h
        if band.any():
            segs = _segments(region)
            tree = shapely.STRtree(segs)
            pts = shapely.points(xx[band], yy[band])
            _, dist = tree.query_nearest(pts, return_distance=True, all_matches=False)
            s[band] = np.where(inside[band], -dist, dist)
        return s

    def region(self, s: np.ndarray) -> shapely.Geometry:
        """The region where ``s < 0`` as polygons (sub-pixel contours of level 0)."""
        from skimage.measure import find_contours

        if not (s < 0).any():
            return shapely.Polygon()
        padded = np.pad(s, 1, constant_values=self.limit)
        rings = []
        contours: list[np.ndarray] = find_contours(padded, 0.0)  # type: ignore[no-untyped-call]
        for c in contours:
            if len(c) < 4:
                continue
            rings.append(np.column_stack((self.x0 + (c[:, 1] - 1) * self.h,
                                          self.y0 + (c[:, 0] - 1) * self.h)))
        return _polygonal(_even_odd(rings))


def _segments(region: shapely.Geometry) -> np.ndarray:
    coords = []
    for ring in shapely.get_parts(shapely.boundary(region)):
        for part in shapely.get_parts(ring):
            c = shapely.get_coordinates(part)
            if len(c) >= 2:
                coords.append(np.stack((c[:-1], c[1:]), axis=1))
    lines: np.ndarray = shapely.linestrings(np.concatenate(coords))
    return lines


def _raster_for(stack: Stack, pad_xy: tuple[float, float], t: float) -> _Raster:
    bounds = np.array([r.bounds for r in stack.values()])
    xmin, ymin = bounds[:, 0].min(), bounds[:, 1].min()
    xmax, ymax = bounds[:, 2].max(), bounds[:, 3].max()
    h0 = math.sqrt(max((xmax - xmin) * (ymax - ymin), 1.0) / TARGET_PIXELS)
    h = float(np.clip(h0, *PIXEL_RANGE_MM))
    px, py = pad_xy[0] + 3 * h, pad_xy[1] + 3 * h
    x0, y0 = xmin - px, ymin - py
    nx = int(math.ceil((xmax + px - x0) / h)) + 1
    ny = int(math.ceil((ymax + py - y0) / h)) + 1
    return _Raster(x0, y0, h, nx, ny, limit=max(10.0, 3.0 * t))


def _subplanes(stack: Stack, grid: PlaneGrid, nsub: int, end_caps: bool,
               raster: _Raster) -> dict[int, shapely.Geometry]:
    """The operand on sub-planes ``z0 + q * t / nsub`` (shape-based interpolation)."""
    sdf: dict[int, np.ndarray] = {}

    def s_of(k: int) -> np.ndarray:
        if k not in sdf:
            sdf[k] = raster.sdf(stack[k])
        return sdf[k]

    out: dict[int, shapely.Geometry] = {}
    ks = sorted(stack)
    for k in ks:
        out[k * nsub] = stack[k]
    for k in range(ks[0] - 1, ks[-1] + 1):
        lower, upper = k in stack, (k + 1) in stack
        if not (lower or upper):
            continue
        for j in range(1, nsub):
            f = j / nsub
            if lower and upper:
                s = _cubic(s_of(k - 1) if k - 1 in stack else None, s_of(k), s_of(k + 1),
                           s_of(k + 2) if k + 2 in stack else None, f)
            else:
                u = f if lower else 1 - f  # distance from the last plane, in slices
                if not end_caps or u > 0.5 + 1e-9:
                    continue
                last = k if lower else k + 1
                prev = last - 1 if lower else last + 1
                s = s_of(last)
                if prev in stack:
                    s = np.maximum(s, s + (s - s_of(prev)) * u)
            region = raster.region(s)
            if not region.is_empty:
                out[k * nsub + j] = region
    return out


def _cubic(p0: np.ndarray | None, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray | None,
           f: float) -> np.ndarray:
    """Catmull-Rom interpolation between p1 (f = 0) and p2 (f = 1).

    A missing outer neighbour is extrapolated linearly, so that between the
    last two planes of a structure the interpolation is quadratic (linear
    for a structure of two planes).
    """
    if p0 is None:
        p0 = 2 * p1 - p2
    if p3 is None:
        p3 = 2 * p2 - p1
    out: np.ndarray = 0.5 * (2 * p1 + (p2 - p0) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f * f
                             + (3 * p1 - p0 - 3 * p2 + p3) * f ** 3)
    return out


def _scaled_buffer(region: shapely.Geometry, a: float, b: float, sign: float
                   ) -> shapely.Geometry:
    """``region`` grown (sign +1) or shrunk (-1) by the ellipse of semi-axes a (x), b (y)."""
    if a <= 0 and b <= 0:
        return region
    a, b = max(a, 1e-2), max(b, 1e-2)
    if abs(a - b) <= 1e-9 * max(a, b):
        return shapely.buffer(region, sign * a, quad_segs=16)
    from shapely import affinity

    squeezed = affinity.scale(region, xfact=b / a, yfact=1.0, origin=(0.0, 0.0))
    grown = shapely.buffer(squeezed, sign * b, quad_segs=16)
    return affinity.scale(grown, xfact=a / b, yfact=1.0, origin=(0.0, 0.0))


def margin_stack(stack: Stack, mm: tuple[float, float, float], grow: bool, grid: PlaneGrid,
            end_caps: bool) -> Stack:
    mx, my, mz = mm
    if not stack or (mx == 0 and my == 0 and mz == 0):
        return dict(stack)
    step = max(MAX_SUBPLANE_MM, mz / 12.0)
    nsub = max(1, int(math.ceil(grid.t / step - 1e-9)))
    dz = grid.t / nsub
    raster = _raster_for(stack, (mx, my) if grow else (0.0, 0.0), grid.t)
    sub = _subplanes(stack, grid, nsub, end_caps, raster)
    reach = int(math.floor(mz / dz + 1e-9))
    ks = sorted(stack)
    outputs: Sequence[int] = ks
    if grow:
        extra = int(math.ceil((mz + (0.5 * grid.t if end_caps else 0.0)) / grid.t))
        outputs = range(ks[0] - extra, ks[-1] + extra + 1)
    out: Stack = {}
    for k in outputs:
        q0 = k * nsub
        pieces: list[shapely.Geometry] = []
        for q in range(q0 - reach, q0 + reach + 1):
            region = sub.get(q)
            if region is None:
                if grow:
                    continue
                pieces = []
                break
            h = abs(q - q0) * dz
            scale = math.sqrt(max(0.0, 1.0 - (h / mz) ** 2)) if mz > 0 else 1.0
            pieces.append(_scaled_buffer(region, mx * scale, my * scale, 1.0 if grow else -1.0))
        if not pieces:
            continue
        r = shapely.union_all(pieces) if grow else shapely.intersection_all(pieces)
        r = _polygonal(shapely.simplify(r, 0.005, preserve_topology=True))
        if not r.is_empty:
            out[k] = r
    return out
