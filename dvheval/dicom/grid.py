"""The geometry of a DICOM dose grid: affine, canonical layout, interpolation.

The dose grid is described by the affine matrix DICOM defines (Image Position
/ Orientation (Patient), Pixel Spacing, Grid Frame Offset Vector). Every
axis-aligned grid is brought to one canonical layout: an array indexed
``[z, y, x]`` with increasing patient coordinates along each axis, so that
HFS, FFS, HFP, FFP and decubitus grids of the same physical dose give the
same DVH.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def dicom_affine(
    image_position: Sequence[float] | np.ndarray,
    image_orientation: Sequence[float] | np.ndarray,
    pixel_spacing: Sequence[float] | np.ndarray,
    frame_spacing: float,
) -> FloatArray:
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


def axis_permutation(image_orientation: Sequence[float] | np.ndarray,
                     tol: float = 1e-4) -> NDArray[np.int_] | None:
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


def median_step(coords: np.ndarray) -> float:
    """Median difference between consecutive coordinates (0 for fewer than two).

    Equal to ``np.median(np.diff(coords))``, without the masked-array module
    that ``np.median`` imports on its first call.

    Examples
    --------
    >>> median_step(np.array([0.0, 2.5, 5.0, 10.0]))
    2.5
    >>> median_step(np.array([0.0, 1.0, 3.0, 6.0, 10.0]))
    2.5
    """
    d = np.sort(np.diff(np.asarray(coords, dtype=float)))
    n = d.size
    if n == 0:
        return 0.0
    return float(d[n // 2]) if n % 2 else float(0.5 * (d[n // 2 - 1] + d[n // 2]))


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
        """Number of voxels along z, y, x."""
        return (len(self.z), len(self.y), len(self.x))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Median spacing along z, y, x (mm)."""
        z, y, x = (median_step(c) for c in (self.z, self.y, self.x))
        return (z, y, x)

    def same_as(self, other: CanonicalGrid, tol: float = 1e-3) -> bool:
        """Whether both grids have the same voxel centres (within ``tol`` mm)."""
        return all(
            a.shape == b.shape and np.allclose(a, b, atol=tol)
            for a, b in ((self.x, other.x), (self.y, other.y), (self.z, other.z))
        )


def canonicalize(
    values: np.ndarray,
    image_position: Sequence[float] | np.ndarray,
    image_orientation: Sequence[float] | np.ndarray,
    pixel_spacing: Sequence[float] | np.ndarray,
    frame_offsets: Sequence[float] | np.ndarray,
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
    coords = _array_axis_coordinates(values.shape, image_position, image_orientation,
                                     pixel_spacing, frame_offsets, perm)
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


def _array_axis_coordinates(
    shape: tuple[int, ...],
    image_position: Sequence[float] | np.ndarray,
    image_orientation: Sequence[float] | np.ndarray,
    pixel_spacing: Sequence[float] | np.ndarray,
    frame_offsets: Sequence[float] | np.ndarray,
    perm: NDArray[np.int_],
) -> list[np.ndarray]:
    """Patient coordinate (mm) along its own axis of each array axis (col, row, frame)."""
    offsets = np.asarray(frame_offsets, dtype=float)
    nf, nr, nc = shape
    aff = dicom_affine(image_position, image_orientation, pixel_spacing, 1.0)
    origin = aff[:3, 3]
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
    return coords


# -------------------------------------------------------------- interpolation
def axis_weights(c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    # (np.allclose(d, d[0], rtol=1e-6, atol=1e-6), without its overhead per call)
    if bool(np.all(np.abs(d - d[0]) <= 1e-6 + 1e-6 * abs(d[0]))):
        t = (v - c[0]) * (1.0 / d[0])
        np.clip(t, 0.0, n - 1.0, out=t)
        i0 = np.minimum(t.astype(np.intp), n - 2)
        f = (t - i0).astype(np.float32)
    else:
        vc = np.clip(v, c[0], c[-1])
        i0 = np.clip(np.searchsorted(c, vc, side="right") - 1, 0, n - 2)
        f = ((vc - c[i0]) / (c[i0 + 1] - c[i0])).astype(np.float32)
    return i0, f, valid


def blend(dose: np.ndarray, ix: np.ndarray, fx: np.ndarray, iy: np.ndarray, fy: np.ndarray,
          iz: np.ndarray, fz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray]:
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
    c0, dx00, dy0 = _bilinear(flat, base, sx, sy, fx, fy)
    c1, _, _ = _bilinear(flat, base + sz, sx, sy, fx, fy)
    return c0 + (c1 - c0) * fz, dx00, dy0, c1 - c0


def _bilinear(flat: np.ndarray, base: np.ndarray, sx: int, sy: int, fx: np.ndarray,
              fy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear value on one plane of the flat dose, from lower corners ``base``
    (row step ``sy``, column step ``sx``), and the differences along x (on the
    lower row) and y that it used."""
    a = flat.take(base)
    b = flat.take(base + sx)
    dx = b - a
    c00 = a + dx * fx
    a = flat.take(base + sy)
    b = flat.take(base + (sy + sx))
    c01 = a + (b - a) * fx
    dy = c01 - c00
    return c00 + dy * fy, dx, dy


def plane_values(dose: np.ndarray, ix: np.ndarray, fx: np.ndarray, iy: np.ndarray,
                 fy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """Bilinear dose (float32) on the centre planes ``iz`` at in-plane positions.

    ``ix, fx, iy, fy`` are lower indices and fractions as :func:`axis_weights`
    gives them. :func:`blend` computes each of its two planes the same way
    (:func:`_bilinear`), so ``c0 + (c1 - c0) * fz`` of the values on planes
    ``iz`` and ``iz + 1`` is exactly the trilinear dose it gives.
    """
    nz, ny, nx = dose.shape
    flat = np.ascontiguousarray(dose, dtype=np.float32).reshape(-1)
    values, _, _ = _bilinear(flat, (iz * ny + iy) * nx + ix, 1 if nx > 1 else 0,
                             nx if ny > 1 else 0, fx, fy)
    return values


def trilinear(dose: np.ndarray, grid: CanonicalGrid, x: np.ndarray, y: np.ndarray,
              z: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a canonical dose array at patient points.

    Returns NaN for points outside the grid (beyond half a voxel of the
    outermost voxel centres) and wherever a contributing voxel is NaN.
    """
    ix, fx, vx = axis_weights(grid.x, np.asarray(x, dtype=float))
    iy, fy, vy = axis_weights(grid.y, np.asarray(y, dtype=float))
    iz, fz, vz = axis_weights(grid.z, np.asarray(z, dtype=float))
    out = blend(dose, ix, fx, iy, fy, iz, fz)[0].astype(np.float64)
    out[~(vx & vy & vz)] = np.nan
    return out
