"""Structure sampling: dose samples with partial volumes, reduced to a DVH.

* The in-plane refinement is chosen per structure so that small structures
  get as many samples as large ones, and long thin ones no more than compact
  ones (:func:`choose_subdivision`);
* slabs are cut at the dose grid's planes of voxel centres, so that each
  piece lies in one z cell of the trilinear interpolation;
* where a plane covers all fine cells between four voxel centres (a whole
  trilinear cell), those cells become one sample; the pieces of all slabs
  in one z cell are summed first, so a whole cell gives one sample per z
  cell at the centroid of its pieces. Only fine cells along the contours
  are sampled one by one;
* finished z cells are queued and sampled several at a time (whole cells
  and boundary cells alike), so the vectorised steps run on large arrays;
* every sample carries the dose spread over its volume element (from the
  local gradient), and the samples are reduced to a histogram block by
  block, so memory stays bounded.

The module is one algorithm (about 900 lines): the per-structure pass
:func:`sample_structure` and the small vectorised steps it is made of.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import shapely
from numpy.typing import NDArray

from dvheval.dicom.grid import (
    CanonicalGrid,
    axis_weights,
    plane_values,
)
from dvheval.dicom.grid import blend as _blend
from dvheval.engine.dvh import DVH, DVHAccumulator
from dvheval.engine.geometry import (
    MAX_PLANE_CELLS,
    clip_to_grid,
    concatenated_ranges,
    grid_edges,
    plane_regions,
    rasterize_plane,
    slab_bounds,
    sort_triples,
)

#: Target number of in-plane samples on a structure's typical plane.
TARGET_CELLS_PER_PLANE = 1000
#: Largest in-plane refinement of the dose pixel (per axis).
MAX_SUBDIVISION = 16
#: Smallest in-plane refinement; even, so that voxel centres fall on fine-cell
#: edges and whole trilinear cells can be told apart from boundary cells.
MIN_SUBDIVISION = 2
#: Estimated boundary samples of one structure above which the in-plane
#: refinement is lowered.
MAX_BOUNDARY_SAMPLES = 150_000
#: Samples interpolated per block (keeps temporaries small and in cache).
CHUNK_SAMPLES = 1 << 16
#: Planes of a structure rasterized together, and the most blocks (planes
#: times grid cells in the structure's bounding box) such a group may span.
GROUP_PLANES = 64
GROUP_BLOCKS = 1 << 21
#: Fine cells of a structure's bounding box up to which its boundary cells
#: are summed per z cell (like whole grid cells) before they are sampled.
MERGE_FINE_CELLS = 1 << 20
#: Mean number of slab pieces per z cell from which boundary cells are summed.
MERGE_PIECES_PER_CELL = 2.0
#: Most distinct planes' masks per z cell whose moments are looked up by code
#: (a table of 2 ** n sums per cell), beyond which they are multiplied out.
MAX_MASKS_PER_CELL = 6
#: Blocks (z cells times the blocks of a structure's window) whose whole grid
#: cells are sampled together.
FLUSH_BLOCKS = 1 << 16



def _lattice_table(n: int, s: int, lo: int, hi: int
                   ) -> tuple[NDArray[np.intp], NDArray[np.float32], NDArray[np.bool_]]:
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


def _interp_cells(dose: np.ndarray, grid: CanonicalGrid, s: int, cols: np.ndarray,
                  rows: np.ndarray, iz: np.ndarray, fz: np.ndarray, vz: np.ndarray,
                  dz_local: np.ndarray, cell: tuple[float, float, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray]:
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
    out, ddx, ddy, ddz = _blend(dose, ix, fx, iy, fy, iz, fz)
    out[~valid] = np.nan
    # the fine cell spans 1 / s of a voxel in x and y
    hz = cell[2]
    spread = ddx * ddx
    spread += ddy * ddy
    spread *= np.float32(1.0 / (s * s))
    ddz *= (hz / dz_local).astype(np.float32)
    spread += ddz * ddz
    return out, 0.5 * np.sqrt(spread)


@dataclass(frozen=True)
class StructureSamples:
    """Dose samples of one structure.

    Attributes
    ----------
    doses_gy : ndarray
        Dose at each covered sample (empty when the samples were reduced to
        ``histogram`` as they were produced).
    weights_cc : ndarray
        Volume each covered sample stands for.
    total_cc : float
        Volume of the whole structure (covered or not).
    surface_doses_gy : ndarray
        Lowest and highest point dose found on the structure (contour
        vertices on the slab faces and at grid planes, grid nodes inside the
        structure); they carry no volume and only bound Dmin and Dmax. A grid
        node whose dose cannot leave the range of the samples around it is
        not evaluated: Dmin and Dmax are the extremes of these doses and the
        samples' doses together.
    subdivision : int
        In-plane refinement used (fine cells per dose pixel, per axis).
    n_samples : int
        Number of samples including uncovered ones.
    spreads_gy : ndarray
        Half-width of the dose range over each covered sample's volume
        element (see :meth:`dvheval.engine.dvh.DVH.from_samples`).
    n_covered : int
        Number of covered samples (those with a known dose).
    histogram : DVH or None
        With ``reduce=True``: the DVH of the samples.
    """

    doses_gy: np.ndarray
    weights_cc: np.ndarray
    total_cc: float
    surface_doses_gy: np.ndarray
    subdivision: int
    n_samples: int
    spreads_gy: np.ndarray
    n_covered: int = 0
    histogram: DVH | None = None


def choose_subdivision(mean_area_mm2: float, pixel_area_mm2: float,
                       boundary_mm: float = 0.0) -> int:
    """In-plane refinement (fine cells per dose pixel and axis) for a structure.

    Aims at ``TARGET_CELLS_PER_PLANE`` fine cells on a typical plane, as a
    power of two from ``MIN_SUBDIVISION`` to ``MAX_SUBDIVISION``, then halves
    it while the estimated number of boundary samples exceeds
    ``MAX_BOUNDARY_SAMPLES``, so that a long thin structure costs no more
    than a compact one.

    Parameters
    ----------
    mean_area_mm2 : float
        Mean area of the structure's non-empty planes.
    pixel_area_mm2 : float
        Area of a dose pixel.
    boundary_mm : float
        Contour length summed over every slab piece that will be sampled.
    """
    if mean_area_mm2 <= 0:
        return MAX_SUBDIVISION
    s = MIN_SUBDIVISION
    while s < MAX_SUBDIVISION and mean_area_mm2 / (pixel_area_mm2 / s**2) < TARGET_CELLS_PER_PLANE:
        s *= 2
    pixel = float(np.sqrt(pixel_area_mm2))
    # a contour crosses about 4/pi cells per cell length; half of each is inside
    while s > MIN_SUBDIVISION and 0.64 * boundary_mm / pixel * s * s > MAX_BOUNDARY_SAMPLES:
        s //= 2
    return s


def _planes_between(zc: list[float], lo: float, hi: float) -> list[float]:
    """The centre planes' z (sorted ``zc``) strictly between ``lo`` and ``hi``."""
    return zc[bisect.bisect_right(zc, lo):bisect.bisect_left(zc, hi)]


def _slab_pieces(lo: float, hi: float, zc: list[float],
                 z_edges: tuple[float, float]) -> list[tuple[float, float, int | None]]:
    """Split a slab at the grid's outer edges and at its planes of voxel centres.

    Each piece lies within one z cell of the trilinear interpolation, where
    the dose is linear along z. Cell ``c`` spans from centre plane ``c`` to
    ``c + 1``; cell -1 and cell ``nz - 1`` are the outer half voxels. Pieces
    beyond the grid get cell None. ``zc`` holds the centre planes' z, sorted
    (a list: a slab spans a few planes, and bisecting a list is cheaper than
    a numpy call per piece).

    Examples
    --------
    >>> _slab_pieces(1.0, 4.0, [0.0, 2.0, 4.0, 6.0], (-1.0, 7.0))
    [(1.0, 2.0, 0), (2.0, 4.0, 1)]
    >>> _slab_pieces(-2.0, 0.5, [0.0, 2.0], (-1.0, 3.0))
    [(-2.0, -1.0, None), (-1.0, 0.0, -1), (0.0, 0.5, 0)]
    """
    lo, hi = float(lo), float(hi)
    cuts = sorted({lo, *[e for e in z_edges if lo < e < hi], *_planes_between(zc, lo, hi), hi})
    out: list[tuple[float, float, int | None]] = []
    for za, zb in zip(cuts[:-1], cuts[1:], strict=False):
        mid = 0.5 * (za + zb)
        if mid < z_edges[0] or mid > z_edges[1]:
            out.append((za, zb, None))
        else:
            out.append((za, zb, bisect.bisect_right(zc, mid) - 1))
    return out


def _interior_blocks(planes: np.ndarray, rows: np.ndarray, starts: np.ndarray,
                     stops: np.ndarray, s: int, n_planes: int,
                     box: tuple[int, int, int, int]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split the inside fine cells of several planes into whole grid cells and the rest.

    A block is the ``s x s`` fine cells between four neighbouring voxel
    centres (``s`` even, so that centres fall on fine-cell edges); block
    ``(R, B)`` spans voxel centres ``R..R+1`` along y and ``B..B+1`` along x.
    Inside a block the dose is one trilinear patch, so a block whose fine
    cells are all inside needs a single sample.

    Parameters
    ----------
    planes, rows, starts, stops : ndarray of int
        Runs of inside fine cells (see :func:`rasterize_plane`), planes
        numbered from 0 to ``n_planes - 1``.
    s : int
        Fine cells per voxel and axis.
    box : (R0, B0, n_rows, n_cols)
        The blocks considered (within the grid).

    Returns
    -------
    inside : ndarray of bool, shape (n_planes, n_rows, n_cols)
        The blocks entirely inside, block ``(R0, B0)`` first.
    planes, cols, rows : ndarray of int
        The inside fine cells that are not part of such a block, by plane.
    """
    r0, b0, nr, nb = box
    inside = np.zeros((n_planes, nr, nb), bool)
    if s % 2 or nr < 1 or nb < 1 or rows.size == 0:
        return inside, *_expand_spans(planes, rows, starts, stops)
    off = s // 2
    R = (rows - off) // s - r0
    bs = np.maximum(-((off - starts) // s) - b0, 0)
    be = np.minimum((stops - off) // s - b0, nb)
    ok = (R >= 0) & (R < nr) & (be > bs)
    if not ok.any():
        return inside, *_expand_spans(planes, rows, starts, stops)
    line = nb + 1
    key = (planes[ok] * nr + R[ok]) * line
    size = n_planes * nr * line
    # fine rows covering each block fully: +1 where a run of blocks starts, -1 after
    # (at most s: the runs of one fine row are disjoint, so bytes hold the counts)
    count = np.int8 if s <= np.iinfo(np.int8).max else np.intp
    diff = np.zeros(size, count)
    np.add.at(diff, key + bs[ok], 1)
    np.subtract.at(diff, key + be[ok], 1)
    # (each row's +1 and -1 cancel within the row, so one running sum over all rows is
    # each row's own, and faster than a sum along the last axis)
    inside = np.cumsum(diff, dtype=count).reshape(n_planes, nr, line)[:, :, :nb] == s
    if not inside.any():
        return inside, *_expand_spans(planes, rows, starts, stops)
    # runs of inside blocks per block row, as fine-cell runs on each fine row
    ext = np.zeros((n_planes, nr, nb + 2), np.int8)
    ext[:, :, 1:-1] = inside
    # starts (+1) and ends (-1) of the runs alternate along each row
    pr, run_b = np.divmod(np.flatnonzero(np.diff(ext, axis=2)), nb + 1)
    run_p, run_r = np.divmod(pr[0::2], nr)
    run_b0, run_b1 = run_b[0::2], run_b[1::2]
    q = np.arange(s)
    run_rows = (off + (run_r[:, None] + r0) * s + q).ravel()
    run_planes = np.repeat(run_p, s)
    run_c0 = np.repeat(off + (run_b0 + b0) * s, s)
    run_c1 = np.repeat(off + (run_b1 + b0) * s, s)
    # the runs lie within the spans: their symmetric difference is what is left,
    # and its runs are consecutive pairs of all end points sorted along each row
    ep = np.concatenate([planes, planes, run_planes, run_planes])
    er = np.concatenate([rows, rows, run_rows, run_rows])
    ec = np.concatenate([starts, stops, run_c0, run_c1])
    ep, er, ec = sort_triples(ep, er, ec)
    return inside, *_expand_spans(ep[0::2], er[0::2], ec[0::2], ec[1::2])


def _expand_spans(planes: np.ndarray, rows: np.ndarray, starts: np.ndarray, stops: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plane, column and row of every fine cell of the runs ``starts <= i < stops``."""
    lengths = np.maximum(stops - starts, 0)
    n = int(lengths.sum())
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.repeat(planes, lengths), concatenated_ranges(starts, lengths), \
        np.repeat(rows, lengths)


def _moments(volume: float, fa: float, fb: float) -> tuple[float, float, float]:
    """Volume of a slab piece from ``fa`` to ``fb`` (in units of its z cell) and its moments.

    The first moment is ``volume * mean(f)``, the second ``volume * mean(f ** 2)``.
    """
    fm, fl = 0.5 * (fa + fb), fb - fa
    return volume, volume * fm, volume * (fm * fm + fl * fl / 12.0)


class CellBlocks(NamedTuple):
    """The inside blocks of several z cells, each summed over its slab pieces.

    Attributes
    ----------
    used : ndarray of bool, shape (n_cells, n_rows, n_cols)
        Blocks with volume in the cell.
    flat_index : ndarray of int
        Flat indices of the used blocks into ``used``, ascending.
    volume : ndarray
        Volume (mm^3) of each used block.
    centroid : ndarray
        Mean position along z of its volume, in units of the cell (0 at
        the cell's lower centre plane).
    thickness : ndarray
        Equivalent thickness along z (same units): that of one slab with
        the same spread, ``sqrt(12 * variance)``.
    """

    used: np.ndarray
    flat_index: np.ndarray
    volume: np.ndarray
    centroid: np.ndarray
    thickness: np.ndarray


def _cell_blocks(pending: list[tuple[int, list[tuple[int, np.ndarray, float, float, float]]]],
                 shape: tuple[int, int]) -> CellBlocks:
    """The inside blocks of several z cells, with their volume and extent along z.

    All of a block's slab pieces in a cell become one sample at their
    centroid, with the same mean and spread along z (:func:`_moments`).

    Parameters
    ----------
    pending : list of (z cell, pieces)
        Per z cell, its slab pieces as ``(mask id, inside, volume, fa, fb)``:
        the blocks ``inside`` (bool, ``shape``) of the piece's plane, a key
        naming that mask, and the piece's block volume and extent along z
        in units of the cell (0 at its lower centre plane).
    shape : (n_rows, n_cols)

    Notes
    -----
    Which of a cell's planes cover a block is a code (one bit per plane),
    and a block's moments are those of its code, from a table of sums per
    cell: the per-block work is building the code and one lookup. Cells
    with more than ``MAX_MASKS_PER_CELL`` planes (slices much thinner than
    the voxels) sum the pieces' weights times the masks instead.
    """
    keys: dict[int, int] = {}
    masks: list[np.ndarray] = []
    n = len(pending)
    # per cell: its distinct masks (position among `masks`) and their summed moments
    slots: list[dict[int, list[float]]] = []
    for _, pieces in pending:
        here: dict[int, list[float]] = {}
        for key, inside, volume, fa, fb in pieces:
            col = keys.get(key)
            if col is None:
                col = keys[key] = len(masks)
                masks.append(inside)
            acc = here.setdefault(col, [0.0, 0.0, 0.0])
            for i, moment in enumerate(_moments(volume, fa, fb)):
                acc[i] += moment
        slots.append(here)
    stack = np.stack(masks).reshape(len(masks), -1)
    width = max(len(h) for h in slots)
    if width > MAX_MASKS_PER_CELL:
        weights = np.zeros((3, n, len(masks)))
        for j, here in enumerate(slots):
            for col, sums in here.items():
                weights[:, j, col] = sums
        # (einsum's own loop: a BLAS product would start threads that spin on the other core)
        table = np.einsum("km,mb->kb", weights.reshape(3 * n, -1),
                          stack.astype(np.float64)).reshape(3, -1)
        used = (table[0] > 0).reshape(n, *shape)
        index = np.flatnonzero(used)
        which = index
    else:
        # the bits of a block's code: which of its cell's planes cover it
        codes = np.zeros((n, stack.shape[1]), np.uint8)
        coef = np.zeros((3, n, width))
        for j, here in enumerate(slots):
            coef[:, j, :len(here)] = np.array(list(here.values())).T
        for b in range(width):
            cells = [j for j, h in enumerate(slots) if len(h) > b]
            cols = [list(slots[j])[b] for j in cells]
            bit = stack[cols].view(np.uint8) << np.uint8(b)
            if len(cells) == n:
                codes |= bit
            else:
                codes[cells] |= bit
        bits = (np.arange(1 << width)[:, None] >> np.arange(width)) & 1
        table = np.einsum("cb,kjb->kjc", bits.astype(np.float64), coef).reshape(3, -1)
        # every piece has volume, so a block has volume in its cell exactly when a
        # plane covers it (its code is not 0); its row of the table: cell * 2**width + code
        used = codes.reshape(n, *shape) != 0
        index = np.flatnonzero(used)
        per_cell = np.diff(np.searchsorted(index, np.arange(n + 1) * codes.shape[1]))
        which = codes.reshape(-1)[index].astype(np.intp)
        which += np.repeat(np.arange(n) << width, per_cell)
    total, first, second = table
    has = total > 0
    safe = np.where(has, total, 1.0)
    centroid = first / safe
    thickness = np.sqrt(12.0 * np.maximum(second / safe - centroid * centroid, 0.0))
    return CellBlocks(used, index, total.take(which), centroid.take(which),
                      thickness.take(which))


def _sum_pieces(pieces: list[tuple[np.ndarray, float, float, float]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sum slab pieces per fine cell.

    Parameters
    ----------
    pieces : list of (idx, volume, first, second)
        Per piece: its fine cells (distinct flat indices; a key may also
        number the z cell) and the volume and moments (:func:`_moments`)
        each of them gets.

    Returns
    -------
    idx, volume, first, second : ndarray
        The fine cells (sorted) and their summed volume and moments, summed
        in the order of the pieces.
    """
    keys = np.concatenate([p[0] for p in pieces])
    counts = [len(p[0]) for p in pieces]
    values = [np.repeat(np.array([p[j] for p in pieces]), counts) for j in (1, 2, 3)]
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    if keys.size == 0:
        return keys, np.zeros(0), np.zeros(0), np.zeros(0)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    volume, first, second = (np.add.reduceat(v[order], starts) for v in values)
    return keys[starts], volume, first, second


class _Sink:
    """Receives covered samples: keeps them, or reduces them to a histogram."""

    def __init__(self, accumulator: DVHAccumulator | None) -> None:
        self.acc = accumulator
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_parts = 0
        self.lo, self.hi = np.inf, -np.inf
        self.n_total = 0
        self.n_covered = 0

    def add(self, doses: np.ndarray, weights: np.ndarray, spreads: np.ndarray) -> None:
        ok = np.isfinite(doses)
        self.n_total += doses.size
        if not ok.all():
            doses, weights, spreads = doses[ok], weights[ok], spreads[ok]
        self.n_covered += doses.size
        self.parts.append((doses, weights, spreads))
        self.n_parts += doses.size
        if self.acc is not None and self.n_parts >= CHUNK_SAMPLES:
            self.reduce()

    def reduce(self) -> None:
        """Hand the samples kept so far to the histogram (in one block)."""
        if self.acc is not None and self.parts:
            self.acc.add(*(np.concatenate(a) for a in zip(*self.parts, strict=True)))
            self.parts, self.n_parts = [], 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every sample kept: doses, weights, spreads (float64)."""
        if not self.parts:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        d, w, spread = (np.concatenate(a).astype(np.float64)
                        for a in zip(*self.parts, strict=True))
        return d, w, spread

    def extremes(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        if values.size:
            self.lo = min(self.lo, float(values.min()))
            self.hi = max(self.hi, float(values.max()))


def _dose_bounds(dose: np.ndarray, grid: CanonicalGrid, bounds: np.ndarray, zlo: float,
                 zhi: float) -> tuple[float, float]:
    """Lowest and highest dose of the voxels around a structure (bounds its samples).

    ``bounds`` holds the in-plane bounds ``(xmin, ymin, xmax, ymax)`` of its planes.
    """
    xmin, ymin = np.nanmin(bounds[:, :2], axis=0)
    xmax, ymax = np.nanmax(bounds[:, 2:], axis=0)

    def span(c: np.ndarray, a: float, b: float) -> slice:
        i0 = int(np.searchsorted(c, a, side="right")) - 1
        i1 = int(np.searchsorted(c, b, side="left")) + 1
        return slice(max(i0, 0), max(min(i1, len(c) - 1), max(i0, 0)) + 1)

    part = dose[span(grid.z, zlo, zhi), span(grid.y, ymin, ymax), span(grid.x, xmin, xmax)]
    # (fmin and fmax skip NaN without the copy nanmin and nanmax make)
    lo = float(np.fmin.reduce(part, axis=None)) if part.size else np.nan
    if not np.isfinite(lo):
        return 0.0, 0.0
    return lo, float(np.fmax.reduce(part, axis=None))


def _block_terms(planes: np.ndarray, lower: np.ndarray, row: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sum of each block's 4 corner doses and its mean x and y differences.

    ``planes`` holds the dose at the voxel centres around the blocks (planes
    first); ``lower`` the flat index of each block's lower corner in it and
    ``row`` the length of a row.
    """
    flat = planes.reshape(-1)
    a00, a01 = flat.take(lower), flat.take(lower + 1)
    a10, a11 = flat.take(lower + row), flat.take(lower + (row + 1))
    return ((a11 + a10) + (a01 + a00), 0.5 * ((a11 - a10) + (a01 - a00)),
            0.5 * ((a11 - a01) + (a10 - a00)))


def _cell_samples(planes: NDArray[np.float32], k0: NDArray[np.intp], k1: NDArray[np.intp],
                  blocks: CellBlocks) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Samples of the whole grid cells of several z cells, and the extreme node doses.

    The dose is trilinear in a block, so its mean is the value at the
    centroid and the spread follows from the gradient there (full cell in x
    and y, the pieces' equivalent thickness along z). Voxel centres whose
    four surrounding blocks are all inside are inside the structure; within
    whole trilinear cells the dose peaks at voxel centres, so the dose there
    (at the lowest and highest z that all four blocks reach) bounds Dmin and
    Dmax of the structure's inner part.

    Parameters
    ----------
    planes : ndarray of float32, shape (n_planes, n_rows + 1, n_cols + 1)
        Dose at the voxel centres around the blocks, on every centre plane
        the z cells use.
    k0, k1 : ndarray of int, shape (n_cells,)
        Lower and upper centre plane (index into ``planes``) of each z cell;
        equal for the outer half voxels, where the dose is constant along z.
    blocks : CellBlocks
        The cells' inside blocks (:func:`_cell_blocks`).

    Returns
    -------
    doses, weights_cc, spreads, node_doses : ndarray
    """
    used, idx, v, fm, heq = blocks
    n_cells, nbr, nbx = used.shape
    n_blocks = nbr * nbx
    q, blk = np.divmod(idx, n_blocks)
    # the block's lower corner on a centre plane: plane * corners + row * (n_cols + 1) + col
    corner = blk + blk // nbx
    corners = (nbr + 1) * (nbx + 1)
    s0, gx, gy = _block_terms(planes, k0[q] * corners + corner, nbx + 1)
    s1, gx1, gy1 = _block_terms(planes, k1[q] * corners + corner, nbx + 1)
    f = fm.astype(np.float32)
    # (in the outer half voxels s1 = s0 etc.: the dose is the lower plane's)
    ds = s1 - s0
    value = 0.25 * (s0 + ds * f)
    gx += (gx1 - gx) * f
    gy += (gy1 - gy) * f
    gz = 0.25 * ds * heq.astype(np.float32)
    spread = 0.5 * np.sqrt(gx * gx + gy * gy + gz * gz)
    # voxel centres at the upper corner of a block whose three neighbours
    # towards it are inside too, and the z range all four blocks reach
    # (exact when each block's pieces are contiguous)
    quad = used[:, :-1, :-1] & used[:, :-1, 1:] & used[:, 1:, :-1] & used[:, 1:, 1:]
    # dose there on the z cell's lower and upper plane; a node dose lies between
    # the two, so only nodes that can reach beyond the samples' own range (with a
    # margin for rounding) can widen Dmin or Dmax and need their exact z range
    a = planes[k0, 1:-1, 1:-1]
    b = planes[k1, 1:-1, 1:-1]
    finite = value[np.isfinite(value)]
    top, bottom = (float(finite.max()), float(finite.min())) if finite.size else (0.0, 0.0)
    margin = 1e-5 * (abs(top) + abs(bottom) + 1.0)
    quad &= ((np.maximum(a, b) >= top - margin) | (np.minimum(a, b) <= bottom + margin)
             | (finite.size == 0))
    nodes = np.flatnonzero(quad)
    if nodes.size == 0:
        return value, v / 1000.0, spread, np.zeros(0)
    qc, rest = np.divmod(nodes, (nbr - 1) * (nbx - 1))
    qr, qb = np.divmod(rest, nbx - 1)
    # the four blocks around each node, as positions among the samples, and
    # the z range each reaches
    corner = (qc * nbr + qr) * nbx + qb
    near = [np.searchsorted(idx, corner + off) for off in (0, 1, nbx, nbx + 1)]
    reach = [(np.maximum(fm[j] - 0.5 * heq[j], 0.0), np.minimum(fm[j] + 0.5 * heq[j], 1.0))
             for j in near]
    lo = np.maximum(np.maximum(reach[0][0], reach[1][0]), np.maximum(reach[2][0], reach[3][0]))
    hi = np.minimum(np.minimum(reach[0][1], reach[1][1]), np.minimum(reach[2][1], reach[3][1]))
    a = a[qc, qr, qb]
    bz = b[qc, qr, qb] - a
    ok = ((lo <= hi) | (k0[qc] == k1[qc])) & np.isfinite(bz)
    node_doses = np.concatenate([(a + bz * lo)[ok], (a + bz * hi)[ok]])
    return value, v / 1000.0, spread, node_doses


def _vertex_extremes(dose: np.ndarray, grid: CanonicalGrid,
                     planes: Sequence[tuple[float, Sequence[np.ndarray]]],
                     face_plane: list[int], face_z: list[float]) -> np.ndarray:
    """Lowest and highest dose at the contour vertices of plane ``face_plane[j]``
    moved to ``face_z[j]`` (empty when none is in the grid).

    A vertex's in-plane weights are computed once, and its bilinear dose
    once on each centre plane its faces lie between; each face's dose is
    then the linear blend of two of these along z, exactly the trilinear
    dose (:func:`~dvheval.dicom.grid.plane_values`).
    """
    if not face_plane:
        return np.zeros(0)
    used = sorted(set(face_plane))
    verts = np.concatenate([p for k in used for p in planes[k][1]], axis=0)
    n = np.array([sum(len(p) for p in planes[k][1]) for k in used])
    start = np.cumsum(n) - n
    ix, fx, vx = axis_weights(grid.x, verts[:, 0])
    iy, fy, vy = axis_weights(grid.y, verts[:, 1])
    iz, fz, vz = axis_weights(grid.z, np.asarray(face_z, dtype=float))
    upper = np.minimum(iz + 1, len(grid.z) - 1)  # (one centre plane: both are that one)
    # every (plane, centre plane) pair the faces need, its vertices' bilinear doses in turn
    rank = np.searchsorted(used, face_plane)
    nz = len(grid.z)
    pairs = np.array(sorted(set((rank * nz + iz).tolist()) | set((rank * nz + upper).tolist())),
                     dtype=np.intp)
    pair_rank, pair_z = np.divmod(pairs, nz)
    counts = n[pair_rank]
    idx = concatenated_ranges(start[pair_rank], counts)
    values = plane_values(dose, ix[idx], fx[idx], iy[idx], fy[idx], np.repeat(pair_z, counts))
    offset = np.cumsum(counts) - counts
    # each face: the vertices of its plane on its two centre planes
    m = n[rank]
    k0 = concatenated_ranges(offset[np.searchsorted(pairs, rank * nz + iz)], m)
    k1 = concatenated_ranges(offset[np.searchsorted(pairs, rank * nz + upper)], m)
    c0 = values.take(k0)
    face = c0 + (values.take(k1) - c0) * np.repeat(fz, m)
    ok = np.repeat(vz, m) & (vx & vy)[concatenated_ranges(start[rank], m)]
    face = face[ok & np.isfinite(face)]
    if not face.size:
        return np.zeros(0)
    return np.array([float(face.min()), float(face.max())])


def sample_structure(
    planes: Sequence[tuple[float, Sequence[np.ndarray]]],
    dose: np.ndarray,
    grid: CanonicalGrid,
    thickness: float,
    end_caps: bool = True,
    subdivision: int | None = None,
    reduce: bool = False,
) -> tuple[StructureSamples, list[str]]:
    """Sample the dose over a structure given by axial contours.

    Each plane's slab is cut at the grid's planes of voxel centres, so that
    every piece lies within one z cell of the trilinear interpolation. In
    plane, the region is rasterized on fine cells (``subdivision`` per dose
    pixel); the cells between four voxel centres that are entirely inside
    become one sample per z cell (summed over all slab pieces there), and
    only the remaining cells along the contours are sampled one by one.

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
    reduce : bool
        Reduce the samples to a DVH (``histogram``) block by block instead
        of returning them, which bounds the memory used.

    Returns
    -------
    StructureSamples, list of str
        The samples and any warnings.

    Notes
    -----
    The function is long on purpose: it is one pass over the structure's
    planes, and its nested steps (flushing a z cell's whole grid cells or
    boundary cells, sampling boundary pieces) share the per-z-cell
    accumulators and the structure's block window; as separate functions
    they would pass a dozen arrays back and forth on the hot path.
    """
    warnings: list[str] = []
    z = np.array([p[0] for p in planes], dtype=float)
    lo, hi, gaps = slab_bounds(z, thickness, end_caps)
    if gaps:
        warnings.append(
            "contour planes have gaps larger than two slices after z = "
            + ", ".join(f"{g:g}" for g in gaps) + " mm; parts are treated as separate"
        )
    regions = plane_regions([polys for _, polys in planes])
    areas = shapely.area(np.array(regions, dtype=object)) if regions else np.zeros(0)
    dzs, dys, dxs = grid.spacing
    dx = dxs if dxs > 0 else 1.0
    dy = dys if dys > 0 else 1.0
    nz, ny, nx = dose.shape
    zc = grid.z
    z_edges = grid_edges(zc)
    used = [k for k in range(len(planes)) if areas[k] > 0 and hi[k] > lo[k]]
    bounds = shapely.bounds(np.array(regions, dtype=object)) if regions else np.zeros((0, 4))
    zc_list = zc.tolist()
    pieces = {k: _slab_pieces(lo[k], hi[k], zc_list, z_edges) for k in used}
    if subdivision is None:
        nonzero = areas[areas > 0]
        mean_area = float(nonzero.mean()) if nonzero.size else 0.0
        boundary = sum(regions[k].length * sum(c is not None for *_, c in pieces[k])
                       for k in used)
        subdivision = choose_subdivision(mean_area, dx * dy, boundary)
    s = int(subdivision)
    hx, hy = dx / s, dy / s
    x0 = grid.x[0] - 0.5 * dx
    y0 = grid.y[0] - 0.5 * dy
    total = float(sum(areas[k] * (hi[k] - lo[k]) for k in used)) / 1000.0
    empty = np.zeros(0)
    if not used:
        return StructureSamples(empty, empty, 0.0, empty, s, 0, empty), warnings

    acc = None
    if reduce:
        acc = DVHAccumulator(*_dose_bounds(dose, grid, bounds[used],
                                           min(lo[k] for k in used), max(hi[k] for k in used)))
    sink = _Sink(acc)
    n_outside = 0
    dose32 = np.ascontiguousarray(dose, dtype=np.float32)

    # inside blocks: dense per z cell over the blocks the structure can touch
    xmin, ymin = np.nanmin(bounds[used, :2], axis=0)
    xmax, ymax = np.nanmax(bounds[used, 2:], axis=0)
    bx0 = int(np.clip(np.floor((xmin - grid.x[0]) / dx), 0, max(nx - 2, 0)))
    bx1 = int(np.clip(np.ceil((xmax - grid.x[0]) / dx), bx0, max(nx - 2, 0)))
    by0 = int(np.clip(np.floor((ymin - grid.y[0]) / dy), 0, max(ny - 2, 0)))
    by1 = int(np.clip(np.ceil((ymax - grid.y[0]) / dy), by0, max(ny - 2, 0)))
    nbx, nbr = bx1 - bx0 + 1, by1 - by0 + 1
    # per z cell: its slab pieces' inside blocks (see _cell_blocks), summed at flush
    cells: dict[int, list[tuple[int, np.ndarray, float, float, float]]] = {}

    def cell_frame(c: int) -> tuple[int, int, float, float]:
        """Centre planes k0, k1 of z cell c, its lower z and its length along z."""
        if c < 0:
            return 0, 0, z_edges[0], zc[0] - z_edges[0]
        if c >= nz - 1:
            return nz - 1, nz - 1, zc[-1], z_edges[1] - zc[-1]
        return c, c + 1, zc[c], zc[c + 1] - zc[c]

    pending: list[tuple[int, list[tuple[int, np.ndarray, float, float, float]]]] = []

    def flush_cell(c: int | None) -> None:
        """Queue z cell c's whole grid cells; sample the queue when large (or c is None)."""
        if c is not None:
            pending.append((c, cells.pop(c)))
            if len(pending) * nbr * nbx < FLUSH_BLOCKS:
                return
        if not pending:
            return
        frames = np.array([cell_frame(c)[:2] for c, _ in pending], dtype=np.intp)
        # (not np.unique, which imports numpy.ma in every process that calls it)
        ks = np.array(sorted(set(frames.ravel().tolist())), dtype=np.intp)
        k01 = np.searchsorted(ks, frames)
        blocks = _cell_blocks(pending, (nbr, nbx))
        pending.clear()
        d, w, spread, node_doses = _cell_samples(
            dose32[ks, by0:by0 + nbr + 1, bx0:bx0 + nbx + 1], k01[:, 0], k01[:, 1], blocks)
        sink.add(d, w, spread)
        sink.extremes(node_doses)

    def boundary_samples(cols: np.ndarray, rows: np.ndarray, plane_of_piece: np.ndarray,
                         params: list[list[float]], counts: np.ndarray, first: np.ndarray
                         ) -> None:
        """Every boundary cell of a plane once per slab piece of that plane."""
        n = int(counts.sum())
        idx = concatenated_ranges(first[plane_of_piece], counts)
        iz, fz, dzl, w, hz = (np.repeat(np.asarray(v), counts) for v in params)
        for i in range(0, n, CHUNK_SAMPLES):
            sl = slice(i, i + CHUNK_SAMPLES)
            c, r = cols[idx[sl]], rows[idx[sl]]
            d, spread = _interp_cells(dose32, grid, s, c, r, iz[sl], fz[sl].astype(np.float32),
                                      np.ones(c.size, bool), dzl[sl], (hx, hy, hz[sl]))
            sink.add(d, w[sl], spread)
            sink.extremes(d)

    # boundary cells: summed per z cell like the blocks when the structure's
    # fine cells fit in a dense array, else sampled piece by piece
    fx0, fx1 = int(np.floor((xmin - x0) / hx) - 1), int(np.ceil((xmax - x0) / hx) + 1)
    fy0, fy1 = int(np.floor((ymin - y0) / hy) - 1), int(np.ceil((ymax - y0) / hy) + 1)
    nfx, nfy = fx1 - fx0 + 1, fy1 - fy0 + 1
    in_grid = [c for k in used for *_, c in pieces[k] if c is not None]
    # summing pays when slab pieces share z cells (slices thinner than voxels)
    merge_fine = (nfx * nfy <= MERGE_FINE_CELLS
                  and len(in_grid) >= MERGE_PIECES_PER_CELL * len(set(in_grid)))
    # per z cell: the boundary cells of each slab piece in it, with the piece's
    # volume per cell and its first and second moment along z (summed at flush)
    fine_cells: dict[int, list[tuple[np.ndarray, float, float, float]]] = {}
    fine_ready: list[tuple[int, list[tuple[np.ndarray, float, float, float]]]] = []
    n_ready = [0]

    def flush_fine(c: int | None) -> None:
        """Queue z cell c's boundary cells; sample the queue when large (or c is None)."""
        if c is not None:
            fine_ready.append((c, fine_cells.pop(c)))
            n_ready[0] += sum(len(p[0]) for p in fine_ready[-1][1])
            if n_ready[0] < CHUNK_SAMPLES:
                return
        if not fine_ready:
            return
        # the z cells one after the other: fine cell idx of the r-th is r * nf + idx
        nf = nfx * nfy
        cs = np.array([c for c, _ in fine_ready])
        k0s = np.array([cell_frame(c)[0] for c in cs.tolist()])
        lengths = np.array([cell_frame(c)[3] for c in cs.tolist()])
        key, v, m1, m2 = _sum_pieces([(p[0] + r * nf, p[1], p[2], p[3])
                                      for r, (_, ps) in enumerate(fine_ready) for p in ps])
        fine_ready.clear()
        n_ready[0] = 0
        rank, idx = np.divmod(key, nf)
        c_of, k0, length = cs[rank], k0s[rank], lengths[rank]
        fm = m1 / v
        hz = np.sqrt(12.0 * np.maximum(m2 / v - fm * fm, 0.0)) * length
        rows, cols = np.divmod(idx, nfx)
        # z cell c: centre planes c, c + 1; the outer half voxels take the edge
        # plane's dose, constant along z
        inner = (c_of >= 0) & (c_of < nz - 1)
        iz = np.where(inner, c_of, np.maximum(np.minimum(k0, nz - 2), 0))
        fz = np.where(inner, fm, (k0 > 0).astype(float))
        dzl = np.where(inner, length, np.inf)
        for i in range(0, key.size, CHUNK_SAMPLES):
            sl = slice(i, i + CHUNK_SAMPLES)
            d, spread = _interp_cells(dose32, grid, s, cols[sl] + fx0, rows[sl] + fy0, iz[sl],
                                      fz[sl].astype(np.float32), np.ones(cols[sl].size, bool),
                                      dzl[sl], (hx, hy, hz[sl]))
            sink.add(d, v[sl] / 1000.0, spread)
            sink.extremes(d)

    face_plane: list[int] = []
    face_z: list[float] = []
    block_box = (by0, bx0, nbr, nbx) if s % 2 == 0 and nx > 1 and ny > 1 else (0, 0, 0, 0)
    group = max(1, min(GROUP_PLANES, GROUP_BLOCKS // max(nbr * nbx, 1)))
    # planes whose region may need cutting to the grid (clip_to_grid decides)
    huge = ((bounds[:, 2] - bounds[:, 0]) / hx * ((bounds[:, 3] - bounds[:, 1]) / hy)
            > 0.5 * MAX_PLANE_CELLS) if len(bounds) else np.zeros(0, bool)
    for g0 in range(0, len(used), group):
        ks = used[g0:g0 + group]
        # rings of each plane (a huge plane is cut to the grid), rasterized together
        area = np.array([areas[k] for k in ks])
        region_of: list[shapely.Geometry] = []
        rings: list[np.ndarray] = []
        ids: list[int] = []
        for i, k in enumerate(ks):
            region, plane_rings = regions[k], planes[k][1]
            clipped = clip_to_grid(region, grid, hx, hy) if huge[k] else None
            if clipped is not None:
                # far larger than the grid: only the part near the grid is sampled,
                # the rest is outside (uncovered) and counted as such
                region, plane_rings = clipped
                area[i] = region.area
                n_outside += 1
            region_of.append(region)
            if area[i] > 0:
                rings.extend(plane_rings)
                ids.extend([i] * len(plane_rings))
        pl, rows, starts, stops = rasterize_plane(rings, x0, y0, hx, hy, spans=True,
                                                  plane_ids=ids)
        m = np.bincount(pl, weights=stops - starts, minlength=len(ks))
        tiny = np.flatnonzero((m == 0) & (area > 0))
        if tiny.size:
            # too small to hold a cell centre: one cell at a point inside
            pts = [region_of[i].representative_point() for i in tiny]
            tc = np.array([int(np.floor((p.x - x0) / hx)) for p in pts])
            pl = np.concatenate([pl, tiny])
            rows = np.concatenate([rows, [int(np.floor((p.y - y0) / hy)) for p in pts]])
            starts, stops = np.concatenate([starts, tc]), np.concatenate([stops, tc + 1])
            order = np.argsort(pl, kind="stable")
            pl, rows, starts, stops = pl[order], rows[order], starts[order], stops[order]
            m[tiny] = 1
        inside, bpl, bcols, brows = _interior_blocks(pl, rows, starts, stops, s, len(ks),
                                                     block_box)
        n_blocks = inside.sum(axis=(1, 2))
        n_cells = np.bincount(bpl, minlength=len(ks))
        first = np.cumsum(n_cells) - n_cells
        w_cell = area / np.maximum(m, 1)
        params: list[list[float]] = [[], [], [], [], []]
        plane_of_piece: list[int] = []
        for i, k in enumerate(ks):
            if area[i] <= 0:
                continue
            inner = [c for *_, c in pieces[k] if c is not None]
            for done in [c for c in cells if not inner or c < min(inner)]:
                flush_cell(done)
            for done in [c for c in fine_cells if not inner or c < min(inner)]:
                flush_fine(done)
            if merge_fine and n_cells[i]:
                sl = slice(first[i], first[i] + n_cells[i])
                fine_idx = (brows[sl] - fy0) * nfx + (bcols[sl] - fx0)
            for za, zb, c in pieces[k]:
                part = zb - za
                if c is None:
                    # beyond the grid along z: every sample would be uncovered
                    n_outside += int(n_cells[i] + n_blocks[i])
                    continue
                k0, _, zbase, length = cell_frame(c)
                if n_blocks[i]:
                    cells.setdefault(c, []).append(
                        (g0 + i, inside[i], s * s * w_cell[i] * part, (za - zbase) / length,
                         (zb - zbase) / length))
                if n_cells[i] and merge_fine:
                    fine_cells.setdefault(c, []).append(
                        (fine_idx, *_moments(w_cell[i] * part, (za - zbase) / length,
                                             (zb - zbase) / length)))
                elif n_cells[i]:
                    # z cell c: centre planes iz, iz + 1 (the outer half voxels
                    # take the edge plane's dose, constant along z)
                    if 0 <= c < nz - 1:
                        iz, fz, dzl = c, (0.5 * (za + zb) - zbase) / length, length
                    else:
                        iz, fz, dzl = max(min(k0, nz - 2), 0), float(k0 > 0), np.inf
                    plane_of_piece.append(i)
                    for lst, v in zip(params, (iz, fz, dzl, w_cell[i] * part / 1000.0, part),
                                      strict=True):
                        lst.append(v)
            # the plane's vertices at its slab faces and at the centre planes between
            faces = [float(lo[k]), *_planes_between(zc_list, lo[k], hi[k]), float(hi[k])]
            face_z.extend(faces)
            face_plane.extend([k] * len(faces))
        if plane_of_piece:
            pp = np.array(plane_of_piece)
            boundary_samples(bcols, brows, pp, params, n_cells[pp], first)
    for c in sorted(cells):
        flush_cell(c)
    flush_cell(None)
    for c in sorted(fine_cells):
        flush_fine(c)
    flush_fine(None)
    sink.extremes(_vertex_extremes(dose32, grid, planes, face_plane, face_z))
    n_total = sink.n_total + n_outside
    ext = np.array([sink.lo, sink.hi]) if np.isfinite(sink.lo) else empty
    if acc is not None:
        sink.reduce()
        acc.add_extremes(ext)
        return StructureSamples(empty, empty, total, ext, s, n_total, empty, sink.n_covered,
                                acc.result(total)), warnings
    d, W, spread = sink.arrays()
    return StructureSamples(d, W, total, ext, s, n_total, spread, sink.n_covered), warnings
