"""Dose-grid geometry: slabs of contour planes, plane regions, rasterization.

The dose grid is described by the affine matrix DICOM defines (see
:mod:`dvheval.dicom.grid`); every axis-aligned grid is brought to one
canonical layout, an array indexed ``[z, y, x]`` with increasing patient
coordinates along each axis, so that HFS, FFS, HFP, FFP and decubitus grids
of the same physical dose give the same DVH.

* each contour plane stands for a slab; neighbouring slabs meet half way
  between their planes, and by default the first and last plane of a
  structure get half a slice of end cap beyond them (``end_caps=False``
  ends the structure at its outermost contours);
* in plane, the even-odd region of all contours of that plane is rasterized
  on a grid finer than the dose grid, and the weights are scaled so that
  every plane's area equals the exact polygon area.

:mod:`dvheval.engine.sampling` turns these into dose samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

from dvheval.dicom.grid import (
    CanonicalGrid,
    axis_permutation,
    canonicalize,
    dicom_affine,
    trilinear,
)

__all__ = ["CanonicalGrid", "axis_permutation", "canonicalize", "dicom_affine",
           "even_odd_region", "plane_regions", "rasterize_plane", "slab_bounds", "trilinear"]

#: Fine cells of a plane's bounding box above which the plane is clipped to
#: the dose grid before it is rasterized.
MAX_PLANE_CELLS = 1 << 22


# ------------------------------------------------------------------- slabs
def slab_bounds(
    plane_z: np.ndarray, thickness: float, end_caps: bool = True, gap_factor: float = 2.0
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Lower and upper z of the slab each contour plane stands for.

    Parameters
    ----------
    plane_z : ndarray
        Sorted z (mm) of the structure's contour planes.
    thickness : float
        Nominal slice thickness of the structure set (mm).
    end_caps : bool
        Extend the outermost planes of each contiguous run by half a slice.
    gap_factor : float
        Consecutive planes further apart than ``gap_factor * thickness`` are
        taken as separate parts of the structure (each with its own ends).

    Returns
    -------
    lo, hi : ndarray
    gaps : list of float
        z of planes after which a gap was found.
    """
    z = np.asarray(plane_z, dtype=float)
    n = len(z)
    lo = np.empty(n)
    hi = np.empty(n)
    half = 0.5 * thickness
    gaps = []
    for i in range(n):
        if i > 0 and z[i] - z[i - 1] <= gap_factor * thickness + 1e-6:
            lo[i] = 0.5 * (z[i] + z[i - 1])
        else:
            lo[i] = z[i] - half if end_caps else z[i]
        if i < n - 1 and z[i + 1] - z[i] <= gap_factor * thickness + 1e-6:
            hi[i] = 0.5 * (z[i] + z[i + 1])
        else:
            hi[i] = z[i] + half if end_caps else z[i]
            if i < n - 1:
                gaps.append(float(z[i]))
    return lo, hi, gaps


# ---------------------------------------------------------------- polygons
def even_odd_region(polygons: Sequence[np.ndarray]) -> shapely.Geometry:
    """Region inside an odd number of the given closed polygons (x, y)."""
    region = None
    for p in polygons:
        poly = shapely.make_valid(shapely.Polygon(p))
        region = poly if region is None else shapely.symmetric_difference(region, poly)
    if region is None:
        return shapely.Polygon()
    return region


def plane_regions(planes: Sequence[Sequence[np.ndarray]]) -> list[shapely.Geometry]:
    """:func:`even_odd_region` of each plane's polygons, built in one vectorised pass."""
    polys = [p for plane in planes for p in plane]
    if not polys:
        return [shapely.Polygon() for _ in planes]
    counts = [len(p) for p in polys]
    rings = shapely.linearrings(np.concatenate(polys)[:, :2],
                                indices=np.repeat(np.arange(len(polys)), counts))
    valid = shapely.make_valid(shapely.polygons(rings))
    out, i = [], 0
    for plane in planes:
        region = None
        for poly in valid[i:i + len(plane)]:
            region = poly if region is None else shapely.symmetric_difference(region, poly)
        out.append(shapely.Polygon() if region is None else region)
        i += len(plane)
    return out


def rasterize_plane(
    polygons: Sequence[np.ndarray],
    x0: float,
    y0: float,
    hx: float,
    hy: float,
    spans: bool = False,
    plane_ids: Sequence[int] | None = None,
) -> tuple[np.ndarray, ...]:
    """Fine cells whose centres lie inside the even-odd region of ``polygons``.

    The fine grid has cell size ``hx`` x ``hy`` and cell ``(i, j)`` has its
    centre at ``(x0 + (i + 0.5) hx, y0 + (j + 0.5) hy)``. A scan line
    through each row of cell centres crosses the contours; a cell is inside
    when an odd number of crossings lie to its left (even-odd rule, so holes
    and separate islands on one plane are both handled).

    Parameters
    ----------
    polygons : sequence of (N, 2) arrays
    x0, y0, hx, hy : float
        Origin and cell size of the fine grid.
    spans : bool
        Return runs of inside cells instead of the cells.
    plane_ids : sequence of int, optional
        Plane of each polygon, to rasterize several planes in one pass: the
        even-odd rule applies within each plane, and the result starts with
        the plane of each cell or run (non-decreasing).

    Returns
    -------
    cols, rows : ndarray of int
        Indices ``(i, j)`` of the cells inside the region.
    rows, starts, stops : ndarray of int
        With ``spans=True``: the inside cells as runs ``starts <= i < stops``
        on row ``rows``, disjoint and in order along each row.
    """
    # vertices in fine-cell units, cell centres at integers; each edge runs from a
    # vertex to the next one of its polygon
    polys = [np.asarray(p) for p in polygons]
    n_out = (3 if spans else 2) + (plane_ids is not None)
    none = tuple(np.zeros(0, np.int64) for _ in range(n_out))
    counts = np.array([len(p) for p in polys], dtype=np.int64)
    if counts.sum() == 0:
        return none
    pts = np.concatenate([p[:, :2] for p in polys])
    first_pt = (np.cumsum(counts) - counts)[counts > 0]
    nxt = np.arange(1, len(pts) + 1)
    nxt[first_pt + counts[counts > 0] - 1] = first_pt
    xa = (pts[:, 0] - x0) / hx - 0.5
    ya = (pts[:, 1] - y0) / hy - 0.5
    xb, yb = xa[nxt], ya[nxt]
    pid = None
    if plane_ids is not None:
        pid = np.repeat(np.asarray(plane_ids, dtype=np.int64), counts)
    keep = ya != yb
    xa, xb, ya, yb = xa[keep], xb[keep], ya[keep], yb[keep]
    if xa.size == 0:
        return none
    # rows j crossed by an edge: min(ya, yb) <= j < max(ya, yb)
    j0 = np.ceil(np.minimum(ya, yb)).astype(np.int64)
    j1 = np.ceil(np.maximum(ya, yb)).astype(np.int64)
    counts = np.maximum(j1 - j0, 0)
    total = int(counts.sum())
    if total == 0:
        return none
    edge = np.repeat(np.arange(len(counts)), counts)
    rows = concatenated_ranges(j0, counts)
    t = (rows - ya[edge]) / (yb[edge] - ya[edge])
    # first cell right of each crossing (ceil keeps the order of the crossings)
    xc = np.ceil(xa[edge] + t * (xb[edge] - xa[edge])).astype(np.int64)
    if pid is None:
        rows, xc = sort_pairs(rows, xc)
    else:
        pid, rows, xc = sort_triples(pid[keep][edge], rows, xc)
        pid = pid[0::2]
    # crossings pair up within each row (closed contours cross a line evenly)
    r = rows[0::2]
    c0 = xc[0::2]
    c1 = xc[1::2]
    lead = () if pid is None else (pid,)
    if spans:
        full = c1 > c0
        return *(x[full] for x in lead), r[full], c0[full], c1[full]
    lengths = np.maximum(c1 - c0, 0)
    n = int(lengths.sum())
    if n == 0:
        return none
    cols = concatenated_ranges(c0, lengths)
    return *(np.repeat(x, lengths) for x in lead), cols, np.repeat(r, lengths)


def concatenated_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``starts[i], starts[i] + 1, ..., starts[i] + counts[i] - 1`` for each ``i``, in turn.

    Examples
    --------
    >>> concatenated_ranges(np.array([5, 0, 10]), np.array([2, 0, 3])).tolist()
    [5, 6, 10, 11, 12]
    """
    counts = np.asarray(counts)
    out = np.repeat(np.asarray(starts) - (np.cumsum(counts) - counts), counts)
    out += np.arange(out.size)
    return out


def sort_triples(major: np.ndarray, middle: np.ndarray, minor: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer triples sorted lexicographically (``major`` first).

    The triples are packed into one integer key and sorted as such, which
    is several times faster than :func:`numpy.lexsort`; only the sorted
    values are returned (equal triples are interchangeable).
    """
    if major.size == 0:
        return major, middle, minor
    lo = [int(v.min()) for v in (major, middle, minor)]
    span = [int(v.max()) - m + 1 for v, m in zip((major, middle, minor), lo, strict=True)]
    if span[0] * span[1] * span[2] >= 1 << 62:
        order = np.lexsort((minor, middle, major))
        return major[order], middle[order], minor[order]
    key = (major - lo[0]) * span[1]
    key += middle - lo[1]
    key *= span[2]
    key += minor - lo[2]
    key.sort()
    rest, c = np.divmod(key, span[2])
    a, b = np.divmod(rest, span[1])
    return a + lo[0], b + lo[1], c + lo[2]


def sort_pairs(major: np.ndarray, minor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer pairs sorted lexicographically (see :func:`sort_triples`)."""
    _, a, b = sort_triples(np.zeros_like(major), major, minor)
    return a, b


def grid_edges(c: np.ndarray) -> tuple[float, float]:
    """Outer boundaries of a grid axis: half a voxel beyond the outer centres."""
    if len(c) == 1:
        return float(c[0] - 0.5), float(c[0] + 0.5)
    return float(c[0] - 0.5 * (c[1] - c[0])), float(c[-1] + 0.5 * (c[-1] - c[-2]))


def clip_to_grid(region: shapely.Geometry, grid: CanonicalGrid, hx: float,
                  hy: float) -> tuple[shapely.Geometry, list[np.ndarray]] | None:
    """The part of a plane's region near the dose grid, when the region is huge.

    A region whose bounding box holds more than ``MAX_PLANE_CELLS`` fine
    cells (e.g. a damaged contour reaching metres beyond the patient) is cut
    to the grid's in-plane extent plus one dose pixel, since samples beyond
    the grid are uncovered anyway. Smaller regions are not touched (None).

    Returns
    -------
    (shapely geometry, list of (N, 2) rings) or None
        The clipped region and its boundary rings (even-odd rule).
    """
    xmin, ymin, xmax, ymax = region.bounds
    if (xmax - xmin) / hx * ((ymax - ymin) / hy) <= MAX_PLANE_CELLS:
        return None
    gx, gy = grid_edges(grid.x), grid_edges(grid.y)
    mx = (gx[1] - gx[0]) / max(len(grid.x), 1)
    my = (gy[1] - gy[0]) / max(len(grid.y), 1)
    box = shapely.box(gx[0] - mx, gy[0] - my, gx[1] + mx, gy[1] + my)
    part = shapely.intersection(region, box)
    rings = [np.asarray(ring.coords)[:, :2]
             for poly in shapely.get_parts(part) if isinstance(poly, shapely.Polygon)
             for ring in (poly.exterior, *poly.interiors)]
    if not rings:
        return shapely.Polygon(), []
    return part, rings
