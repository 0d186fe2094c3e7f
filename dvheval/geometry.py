"""Dose-grid geometry and structure sampling.

The dose grid is described by the affine matrix DICOM defines (Image Position
/ Orientation (Patient), Pixel Spacing, Grid Frame Offset Vector). Every
axis-aligned grid is brought to one canonical layout: an array indexed
``[z, y, x]`` with increasing patient coordinates along each axis, so that
HFS, FFS, HFP, FFP and decubitus grids of the same physical dose give the
same DVH.

Structures are sampled onto that grid with partial volumes:

* each contour plane stands for a slab; neighbouring slabs meet half way
  between their planes, and by default the first and last plane of a
  structure get half a slice of end cap beyond them (``end_caps=False``
  ends the structure at its outermost contours);
* in plane, the even-odd region of all contours of that plane is rasterized
  on a grid finer than the dose grid (the refinement is chosen per
  structure so that small structures get as many samples as large ones),
  and the weights are scaled so that every plane's area equals the exact
  polygon area;
* through the slab, the dose is sampled at several sub-planes with
  trilinear interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

#: Target number of in-plane samples on a structure's typical plane.
TARGET_CELLS_PER_PLANE = 1000
#: Largest in-plane refinement of the dose pixel (per axis).
MAX_SUBDIVISION = 16
#: Upper bound on the number of dose samples of one structure.
MAX_SAMPLES = 6_000_000
#: Samples interpolated per block (keeps temporaries small and in cache).
CHUNK_SAMPLES = 1 << 16


# --------------------------------------------------------------------- grid
def dicom_affine(
    image_position: Sequence[float],
    image_orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    frame_spacing: float,
) -> np.ndarray:
    """Affine matrix mapping voxel indices ``(col, row, frame, 1)`` to patient mm.

    Parameters
    ----------
    image_position : (3,) ImagePositionPatient of the first voxel.
    image_orientation : (6,) ImageOrientationPatient (row then column cosines).
    pixel_spacing : (2,) PixelSpacing (between rows, between columns).
    frame_spacing : float
        Distance between frames along the normal ``row x column``.

    Returns
    -------
    ndarray, shape (4, 4)
    """
    row = np.asarray(image_orientation[:3], dtype=float)
    col = np.asarray(image_orientation[3:6], dtype=float)
    normal = np.cross(row, col)
    a = np.eye(4)
    a[:3, 0] = row * float(pixel_spacing[1])
    a[:3, 1] = col * float(pixel_spacing[0])
    a[:3, 2] = normal * float(frame_spacing)
    a[:3, 3] = np.asarray(image_position, dtype=float)
    return a


def axis_permutation(image_orientation: Sequence[float], tol: float = 1e-4) -> np.ndarray | None:
    """Patient axis (0=x, 1=y, 2=z) of each array axis (col, row, frame).

    Returns None when the orientation is not aligned with the patient axes.
    """
    row = np.asarray(image_orientation[:3], dtype=float)
    col = np.asarray(image_orientation[3:6], dtype=float)
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3)
            and np.isclose(np.linalg.norm(col), 1, atol=1e-3)):
        return None
    normal = np.cross(row, col)
    axes = []
    for v in (row, col, normal):
        k = int(np.argmax(np.abs(v)))
        if abs(abs(v[k]) - 1.0) > tol or np.sum(np.abs(v)) - abs(v[k]) > tol:
            return None
        axes.append(k)
    if sorted(axes) != [0, 1, 2]:
        return None
    return np.array(axes)


@dataclass(frozen=True)
class CanonicalGrid:
    """Coordinates (mm) of a dose grid in canonical ``[z, y, x]`` order.

    Each coordinate array is strictly increasing; ``z`` may be non-uniform.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.z), len(self.y), len(self.x))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Median spacing along z, y, x (mm)."""
        return tuple(float(np.median(np.diff(c))) if len(c) > 1 else 0.0
                     for c in (self.z, self.y, self.x))

    def same_as(self, other: CanonicalGrid, tol: float = 1e-3) -> bool:
        return all(
            a.shape == b.shape and np.allclose(a, b, atol=tol)
            for a, b in ((self.x, other.x), (self.y, other.y), (self.z, other.z))
        )


def canonicalize(
    values: np.ndarray,
    image_position: Sequence[float],
    image_orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    frame_offsets: Sequence[float],
) -> tuple[np.ndarray, CanonicalGrid]:
    """Reorder a DICOM dose array ``[frame, row, col]`` to canonical ``[z, y, x]``.

    Parameters
    ----------
    values : ndarray, shape (frames, rows, cols)
    image_position, image_orientation, pixel_spacing
        As in the DICOM file.
    frame_offsets : sequence of float
        Position of each frame along the normal ``row x column``, relative to
        ``image_position`` (convert the absolute form before calling).

    Returns
    -------
    dose : ndarray, shape (nz, ny, nx)
    grid : CanonicalGrid

    Raises
    ------
    ValueError
        If the orientation is oblique or the coordinates of an axis are not
        strictly monotonic.
    """
    perm = axis_permutation(image_orientation)
    if perm is None:
        raise ValueError(
            f"oblique orientation {list(map(float, image_orientation))} is not supported; "
            "only grids aligned with the patient axes can be evaluated"
        )
    offsets = np.asarray(frame_offsets, dtype=float)
    nf, nr, nc = values.shape
    aff = dicom_affine(image_position, image_orientation, pixel_spacing, 1.0)
    origin = aff[:3, 3]
    # patient coordinate along its own axis for each array axis
    coords = []
    steps = (aff[:3, 0], aff[:3, 1], aff[:3, 2])
    counts = (nc, nr, nf)
    for axis_idx, (step, count) in enumerate(zip(steps, counts, strict=True)):
        k = perm[axis_idx]
        if axis_idx == 2:
            c = origin[k] + offsets * step[k]
        else:
            c = origin[k] + np.arange(count) * step[k]
        coords.append(c)
    # array axes are (frame, row, col) = (2, 1, 0) in the order above
    arr_axis_of = {2: 0, 1: 1, 0: 2}
    out = values
    # move array axes so that they become z, y, x
    order = [arr_axis_of[int(np.where(perm == k)[0][0])] for k in (2, 1, 0)]
    out = np.transpose(out, order)
    final_coords = []
    for pos, k in enumerate((2, 1, 0)):
        c = coords[int(np.where(perm == k)[0][0])]
        if len(c) > 1 and c[1] < c[0]:
            c = c[::-1]
            out = np.flip(out, axis=pos)
        if len(c) > 1 and np.any(np.diff(c) <= 0):
            raise ValueError("grid coordinates are not strictly monotonic")
        final_coords.append(np.ascontiguousarray(c, dtype=float))
    z, y, x = final_coords
    return np.ascontiguousarray(out), CanonicalGrid(x=x, y=y, z=z)


# -------------------------------------------------------------- interpolation
def _axis_weights(c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, fraction and validity of positions ``v`` on axis ``c``.

    A position is valid when it lies within the outermost voxels, i.e. up to
    half a voxel beyond the first and last voxel centre; there the edge
    voxel's value is used.
    """
    n = len(c)
    if n == 1:
        valid = np.abs(v - c[0]) <= 0.5
        return np.zeros(v.shape, np.intp), np.zeros(v.shape, np.float32), valid
    lo = c[0] - 0.5 * (c[1] - c[0])
    hi = c[-1] + 0.5 * (c[-1] - c[-2])
    valid = (v >= lo - 1e-9) & (v <= hi + 1e-9)
    d = np.diff(c)
    if np.allclose(d, d[0], rtol=1e-6, atol=1e-6):
        t = (v - c[0]) * (1.0 / d[0])
        np.clip(t, 0.0, n - 1.0, out=t)
        i0 = np.minimum(t.astype(np.intp), n - 2)
        f = (t - i0).astype(np.float32)
    else:
        vc = np.clip(v, c[0], c[-1])
        i0 = np.clip(np.searchsorted(c, vc, side="right") - 1, 0, n - 2)
        f = ((vc - c[i0]) / (c[i0 + 1] - c[i0])).astype(np.float32)
    return i0, f, valid


def _blend(dose: np.ndarray, ix, fx, iy, fy, iz, fz):
    """Trilinear blend of the 8 voxels around each point.

    Returns the interpolated dose (float32) and the dose differences across
    the voxel along x, y and z at the point (for the local gradient).
    """
    nz, ny, nx = dose.shape
    flat = np.ascontiguousarray(dose, dtype=np.float32).reshape(-1)
    sx = 1 if nx > 1 else 0
    sy = nx if ny > 1 else 0
    sz = nx * ny if nz > 1 else 0
    base = (iz * ny + iy) * nx + ix

    def lerp_x(off):
        a = flat.take(base + off)
        b = flat.take(base + (off + sx))
        return a + (b - a) * fx, b - a

    c00, dx00 = lerp_x(0)
    c01, _ = lerp_x(sy)
    c10, _ = lerp_x(sz)
    c11, _ = lerp_x(sz + sy)
    c0 = c00 + (c01 - c00) * fy
    c1 = c10 + (c11 - c10) * fy
    return c0 + (c1 - c0) * fz, dx00, c01 - c00, c1 - c0


def trilinear(dose: np.ndarray, grid: CanonicalGrid, x: np.ndarray, y: np.ndarray,
              z: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a canonical dose array at patient points.

    Returns NaN for points outside the grid (beyond half a voxel of the
    outermost voxel centres) and wherever a contributing voxel is NaN.
    """
    ix, fx, vx = _axis_weights(grid.x, np.asarray(x, dtype=float))
    iy, fy, vy = _axis_weights(grid.y, np.asarray(y, dtype=float))
    iz, fz, vz = _axis_weights(grid.z, np.asarray(z, dtype=float))
    out = _blend(dose, ix, fx, iy, fy, iz, fz)[0].astype(np.float64)
    out[~(vx & vy & vz)] = np.nan
    return out


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


def rasterize_plane(
    polygons: Sequence[np.ndarray],
    x0: float,
    y0: float,
    hx: float,
    hy: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine cells whose centres lie inside the even-odd region of ``polygons``.

    The fine grid has cell size ``hx`` x ``hy`` and cell ``(i, j)`` has its
    centre at ``(x0 + (i + 0.5) hx, y0 + (j + 0.5) hy)``. A scan line
    through each row of cell centres crosses the contours; a cell is inside
    when an odd number of crossings lie to its left (even-odd rule, so holes
    and separate islands on one plane are both handled).

    Returns
    -------
    cols, rows : ndarray of int
        Indices ``(i, j)`` of the cells inside the region.
    """
    # vertices in fine-cell units, cell centres at integers
    starts, ends = [], []
    for p in polygons:
        q = np.column_stack(((p[:, 0] - x0) / hx - 0.5, (p[:, 1] - y0) / hy - 0.5))
        starts.append(q)
        ends.append(np.roll(q, -1, axis=0))
    a = np.concatenate(starts)
    b = np.concatenate(ends)
    ya, yb = a[:, 1], b[:, 1]
    keep = ya != yb
    a, b, ya, yb = a[keep], b[keep], ya[keep], yb[keep]
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if a.size == 0:
        return none
    # rows j crossed by an edge: min(ya, yb) <= j < max(ya, yb)
    j0 = np.ceil(np.minimum(ya, yb)).astype(np.int64)
    j1 = np.ceil(np.maximum(ya, yb)).astype(np.int64)
    counts = np.maximum(j1 - j0, 0)
    total = int(counts.sum())
    if total == 0:
        return none
    edge = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    rows = j0[edge] + (np.arange(total) - first)
    t = (rows - ya[edge]) / (yb[edge] - ya[edge])
    xs_cross = a[edge, 0] + t * (b[edge, 0] - a[edge, 0])
    order = np.lexsort((xs_cross, rows))
    rows, xs_cross = rows[order], xs_cross[order]
    # crossings pair up within each row (closed contours cross a line evenly)
    r = rows[0::2]
    c0 = np.ceil(xs_cross[0::2]).astype(np.int64)
    c1 = np.ceil(xs_cross[1::2]).astype(np.int64)
    lengths = np.maximum(c1 - c0, 0)
    n = int(lengths.sum())
    if n == 0:
        return none
    offs = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = np.repeat(c0, lengths) + (np.arange(n) - offs)
    return cols, np.repeat(r, lengths)


def _grid_edges(c: np.ndarray) -> tuple[float, float]:
    """Outer boundaries of a grid axis: half a voxel beyond the outer centres."""
    if len(c) == 1:
        return float(c[0] - 0.5), float(c[0] + 0.5)
    return float(c[0] - 0.5 * (c[1] - c[0])), float(c[-1] + 0.5 * (c[-1] - c[-2]))


def _split(lo: float, hi: float, edges: tuple[float, float]) -> list[tuple[float, float]]:
    """Split the interval [lo, hi] at the given edges that fall inside it."""
    cuts = [lo] + [e for e in edges if lo < e < hi] + [hi]
    return list(zip(cuts[:-1], cuts[1:], strict=False))


def _lattice_table(n: int, s: int, lo: int, hi: int):
    """Interpolation index, fraction and validity for fine cells ``lo..hi``.

    Fine cell ``i`` (``s`` per dose voxel, cell 0 starting at the grid's outer
    edge) has its centre at ``t = (i + 0.5) / s - 0.5`` voxels from the first
    voxel centre.
    """
    i = np.arange(lo, hi + 1)
    t = (i + 0.5) / s - 0.5
    valid = (i >= 0) & (i < n * s)
    if n == 1:
        return np.zeros(i.shape, np.intp), np.zeros(i.shape, np.float32), valid
    tc = np.clip(t, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(tc).astype(np.intp), n - 2)
    return i0, (tc - i0).astype(np.float32), valid


def _interp_cells(dose, grid, s, cols, rows, iz, fz, vz, dz_local, cell):
    """Trilinear dose at fine-cell centres and its spread over each cell.

    The spread is half the dose range across the cell ``cell = (hx, hy, hz)``
    from the local gradient: ``0.5 * sqrt(sum((grad_i * h_i) ** 2))``.
    """
    nz, ny, nx = dose.shape
    c_lo, c_hi = int(cols.min()), int(cols.max())
    r_lo, r_hi = int(rows.min()), int(rows.max())
    ixt, fxt, vxt = _lattice_table(nx, s, c_lo, c_hi)
    iyt, fyt, vyt = _lattice_table(ny, s, r_lo, r_hi)
    ci, ri = cols - c_lo, rows - r_lo
    ix, fx = ixt[ci], fxt[ci]
    iy, fy = iyt[ri], fyt[ri]
    valid = vxt[ci] & vyt[ri] & vz
    value, ddx, ddy, ddz = _blend(dose, ix, fx, iy, fy, iz, fz)
    out = value.astype(np.float64)
    out[~valid] = np.nan
    hx, hy, hz = cell
    dxs, dys = grid.spacing[2], grid.spacing[1]
    spread = (ddx * np.float32(hx / dxs)) ** 2
    spread += (ddy * np.float32(hy / dys)) ** 2
    spread += (ddz * (hz / dz_local).astype(np.float32)) ** 2
    return out, 0.5 * np.sqrt(spread, dtype=np.float64)


@dataclass(frozen=True)
class StructureSamples:
    """Dose samples of one structure.

    Attributes
    ----------
    doses_gy : ndarray
        Dose at each covered sample.
    weights_cc : ndarray
        Volume each covered sample stands for.
    total_cc : float
        Volume of the whole structure (covered or not).
    surface_doses_gy : ndarray
        Dose at contour vertices on the slab faces (for Dmin/Dmax).
    subdivision : int
        In-plane refinement used (fine cells per dose pixel, per axis).
    n_samples : int
        Number of samples including uncovered ones.
    spreads_gy : ndarray
        Half-width of the dose range over each covered sample's volume
        element (see :func:`trilinear`).
    """

    doses_gy: np.ndarray
    weights_cc: np.ndarray
    total_cc: float
    surface_doses_gy: np.ndarray
    subdivision: int
    n_samples: int
    spreads_gy: np.ndarray


def choose_subdivision(mean_area_mm2: float, n_planes: int, pixel_area_mm2: float,
                       slab_mm: float, dz_mm: float) -> int:
    """In-plane refinement (power of two) for a structure.

    Aims at ``TARGET_CELLS_PER_PLANE`` cells on a typical plane, from 1 (dose
    pixel) to ``MAX_SUBDIVISION``, and keeps the total sample count below
    ``MAX_SAMPLES``.
    """
    if mean_area_mm2 <= 0:
        return MAX_SUBDIVISION
    s = 1
    while s < MAX_SUBDIVISION and mean_area_mm2 / (pixel_area_mm2 / s**2) < TARGET_CELLS_PER_PLANE:
        s *= 2

    def count(s_: int) -> float:
        nz = max(1, int(np.ceil(slab_mm / (dz_mm / s_))))
        return n_planes * mean_area_mm2 / (pixel_area_mm2 / s_**2) * nz

    while s > 1 and count(s) > MAX_SAMPLES:
        s //= 2
    return s


def sample_structure(
    planes: Sequence[tuple[float, Sequence[np.ndarray]]],
    dose: np.ndarray,
    grid: CanonicalGrid,
    thickness: float,
    end_caps: bool = True,
    subdivision: int | None = None,
) -> tuple[StructureSamples, list[str]]:
    """Sample the dose over a structure given by axial contours.

    Parameters
    ----------
    planes : sequence of (z, polygons)
        Sorted by z; polygons are (N, 2) arrays of x, y in mm.
    dose : ndarray
        Canonical dose array ``[z, y, x]`` in Gy (NaN where unknown).
    grid : CanonicalGrid
    thickness : float
        Nominal slice thickness (mm).
    end_caps : bool
        Half-slice caps beyond the outermost planes.
    subdivision : int, optional
        Force the in-plane refinement (default: chosen per structure).

    Returns
    -------
    StructureSamples, list of str
        The samples and any warnings.
    """
    warnings: list[str] = []
    z = np.array([p[0] for p in planes], dtype=float)
    lo, hi, gaps = slab_bounds(z, thickness, end_caps)
    if gaps:
        warnings.append(
            "contour planes have gaps larger than two slices after z = "
            + ", ".join(f"{g:g}" for g in gaps) + " mm; parts are treated as separate"
        )
    regions = [even_odd_region(polys) for _, polys in planes]
    areas = np.array([r.area for r in regions])
    dzs, dys, dxs = grid.spacing
    dx = dxs if dxs > 0 else 1.0
    dy = dys if dys > 0 else 1.0
    dz = dzs if dzs > 0 else thickness
    if subdivision is None:
        nonzero = areas[areas > 0]
        mean_area = float(nonzero.mean()) if nonzero.size else 0.0
        subdivision = choose_subdivision(mean_area, len(z), dx * dy, thickness, dz)
    s = int(subdivision)
    hx, hy = dx / s, dy / s
    hz = dz / s
    x0 = grid.x[0] - 0.5 * dx
    y0 = grid.y[0] - 0.5 * dy

    # sub-slabs never straddle the end of the dose grid, so that the covered
    # fraction is exact
    z_edges = _grid_edges(grid.z)
    zc = grid.z
    dz_steps = np.diff(zc) if len(zc) > 1 else np.array([dz])
    pending: list[tuple] = []
    n_pending = 0
    doses_out, weights_out, spreads_out = [], [], []
    n_total = 0

    def flush() -> None:
        # interpolate in blocks that stay in cache and bound the memory used
        nonlocal pending, n_pending
        if not pending:
            return
        cols, rows, iz, fz, vz, dzl, w, hzs = (np.concatenate(a) for a in zip(*pending,
                                                                              strict=True))
        d, spread = _interp_cells(dose, grid, s, cols, rows, iz, fz, vz, dzl, (hx, hy, hzs))
        ok = np.isfinite(d)
        doses_out.append(d[ok])
        weights_out.append(w[ok])
        spreads_out.append(spread[ok])
        pending, n_pending = [], 0

    sx, sy, sz = [], [], []
    for k, (_, polys) in enumerate(planes):
        thick = hi[k] - lo[k]
        if areas[k] <= 0 or thick <= 0:
            continue
        cols, rows = rasterize_plane(polys, x0, y0, hx, hy)
        if cols.size == 0:
            rp = regions[k].representative_point()
            cols = np.array([int(np.floor((rp.x - x0) / hx))])
            rows = np.array([int(np.floor((rp.y - y0) / hy))])
        m = cols.size
        w_area = areas[k] / m
        for zlo, zhi in _split(lo[k], hi[k], z_edges):
            part = zhi - zlo
            nzs = max(1, int(np.ceil(part / hz - 1e-9)))
            zq = zlo + (np.arange(nzs) + 0.5) * (part / nzs)
            izq, fzq, vzq = _axis_weights(zc, zq)
            pending.append((
                np.tile(cols, nzs), np.tile(rows, nzs), np.repeat(izq, m), np.repeat(fzq, m),
                np.repeat(vzq, m), np.repeat(dz_steps[np.minimum(izq, len(dz_steps) - 1)], m),
                np.full(m * nzs, w_area * part / nzs / 1000.0), np.full(m * nzs, part / nzs),
            ))
            n_pending += m * nzs
            n_total += m * nzs
            if n_pending >= CHUNK_SAMPLES:
                flush()
        verts = np.concatenate(polys, axis=0)
        for zf in (lo[k], hi[k]):
            sx.append(verts[:, 0])
            sy.append(verts[:, 1])
            sz.append(np.full(len(verts), zf))
    flush()
    if not n_total:
        empty = np.zeros(0)
        return StructureSamples(empty, empty, 0.0, empty, s, 0, empty), warnings
    W = np.concatenate(weights_out)
    d = np.concatenate(doses_out)
    spread = np.concatenate(spreads_out)
    total = float(sum(areas[k] * (hi[k] - lo[k]) for k in range(len(planes))
                      if areas[k] > 0 and hi[k] > lo[k])) / 1000.0
    surf = trilinear(dose, grid, np.concatenate(sx), np.concatenate(sy), np.concatenate(sz))
    surf = surf[np.isfinite(surf)]
    return (
        StructureSamples(d, W, total, surf, s, n_total, spread),
        warnings,
    )
