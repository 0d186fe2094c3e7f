"""Structure sampling: whole grid cells, slab pieces and block-wise DVH reduction."""

from __future__ import annotations

import numpy as np
import pytest

from dvheval.dicom.grid import axis_weights, plane_values, trilinear
from dvheval.engine.dvh import DVH, DVHAccumulator
from dvheval.engine.geometry import CanonicalGrid, rasterize_plane
from dvheval.engine.sampling import (
    MAX_MASKS_PER_CELL,
    _cell_blocks,
    _interior_blocks,
    _vertex_extremes,
    sample_structure,
)


def _grid(n=(21, 21, 21), spacing=(2.0, 2.5, 2.5), origin=(-20.0, -25.0, -25.0)):
    nz, ny, nx = n
    dz, dy, dx = spacing
    z = origin[0] + dz * np.arange(nz)
    y = origin[1] + dy * np.arange(ny)
    x = origin[2] + dx * np.arange(nx)
    return CanonicalGrid(x=x, y=y, z=z)


def _disc(cx, cy, r, n=90):
    a = 2 * np.pi * np.arange(n) / n
    return np.column_stack((cx + r * np.cos(a), cy + r * np.sin(a)))


@pytest.mark.parametrize("s", [2, 4, 8, 16])
def test_whole_blocks_and_boundary_cells_partition_the_inside_cells(s):
    # a disc with a hole and an island: every inside fine cell is either in a
    # whole block (s x s cells between four voxel centres) or a boundary cell
    polys = [_disc(1.0, -2.0, 14.0), _disc(3.0, 0.0, 5.0), _disc(3.5, 0.5, 2.0)]
    x0, y0, h = -26.25, -26.25, 2.5 / s
    cols, rows = rasterize_plane(polys, x0, y0, h, h)
    r, c0, c1 = rasterize_plane(polys, x0, y0, h, h, spans=True)
    # blocks between the 21 x 21 voxel centres, two planes: the second empty
    inside, bpl, bcols, brows = _interior_blocks(0 * r, r, c0, c1, s, 2, (0, 0, 20, 20))
    b_r0 = b_c0 = 0
    assert inside.shape == (2, 20, 20) and not inside[1].any() and not bpl.any()
    inside = inside[0]
    assert inside.sum() > 0
    bi, bj = np.nonzero(inside)
    off = s // 2
    q = np.arange(s)
    block_cols = (off + (bj + b_c0)[:, None, None] * s + q[None, None, :]) + 0 * q[None, :, None]
    block_rows = (off + (bi + b_r0)[:, None, None] * s + q[None, :, None]) + 0 * q[None, None, :]
    got = set(zip(block_cols.ravel().tolist(), block_rows.ravel().tolist(), strict=True))
    boundary = set(zip(bcols.tolist(), brows.tolist(), strict=True))
    assert not got & boundary
    assert len(got) == block_cols.size and len(boundary) == bcols.size
    assert got | boundary == set(zip(cols.tolist(), rows.tolist(), strict=True))
    # a whole block really is whole: none of its cells is missing from the raster
    assert len(got) == inside.sum() * s * s


@pytest.mark.parametrize("s", [2, 126, 256])
def test_a_rectangle_of_whole_blocks_at_any_refinement(s):
    # fine rows covering blocks 1-4 of block rows 2-4 exactly (each block row holds
    # s fine rows; s fine rows cover a block: the count must not wrap around)
    off = s // 2
    rows = off + 2 * s + np.arange(3 * s)
    starts = np.full(rows.size, off + s)
    stops = np.full(rows.size, off + 5 * s)
    inside, bpl, bcols, brows = _interior_blocks(0 * rows, rows, starts, stops, s, 1,
                                                 (0, 0, 8, 8))
    expected = np.zeros((1, 8, 8), bool)
    expected[0, 2:5, 1:5] = True
    assert np.array_equal(inside, expected)
    assert bpl.size == bcols.size == brows.size == 0


def test_accumulator_in_blocks_matches_hand_computed_levels():
    # 3 cc at 10 Gy and 1 cc at 20 Gy, added in three blocks with loose bounds
    acc = DVHAccumulator(0.0, 30.0)
    acc.add(np.full(150, 10.0), np.full(150, 0.01))
    acc.add(np.full(100, 20.0), np.full(100, 0.01))
    acc.add(np.full(150, 10.0), np.full(150, 0.01))
    dvh = acc.result(4.0)
    assert dvh.min_gy == 10.0 and dvh.max_gy == 20.0
    assert dvh.mean_gy == pytest.approx(12.5)
    assert dvh.volume_at_dose(15.0) == pytest.approx(1.0)
    assert dvh.dose_at_volume(0.5) == pytest.approx(20.0, abs=2e-3)
    assert dvh.dose_at_volume(2.0) == pytest.approx(10.0, abs=2e-3)


def test_accumulator_spreads_give_the_uniform_distribution():
    # samples at 11, 13, ..., 19 Gy, each spread evenly over +/- 1 Gy: together
    # a uniform distribution on [10, 20], so V(d) = 10 cc * (20 - d) / 10
    acc = DVHAccumulator(0.0, 25.0)
    d = np.arange(11.0, 20.0, 2.0)
    for k in range(len(d)):
        acc.add(d[k:k + 1], np.array([2.0]), np.array([1.0]))
    acc.add_extremes(np.array([10.0, 20.0]))
    dvh = acc.result(10.0)
    for dose in (10.5, 12.0, 15.0, 19.9):
        assert dvh.volume_at_dose(dose) == pytest.approx(20.0 - dose, abs=2e-3)
    assert dvh.dose_at_volume(9.8) == pytest.approx(10.2, abs=2e-3)


def _box_planes(z0, z1, step, half=7.0):
    square = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    return [(float(z), [square]) for z in np.arange(z0, z1 + 1e-9, step)]


@pytest.mark.parametrize("step", [1.0, 0.25])
def test_thin_slices_on_a_coarse_dose_grid_give_the_closed_form_dvh(step):
    # a 14 x 14 mm box contoured every `step` mm (end caps: 14 mm in all) on a 2 mm
    # dose grid; dose 20 + 0.5 z Gy, so the dose is uniform on [16.5, 23.5]. At
    # 0.25 mm, 8 planes fall in each z cell of the grid (more than a cell's code
    # table takes: the pieces are summed by their masks instead)
    grid = _grid()
    zz = grid.z[:, None, None] + 0 * grid.y[None, :, None] + 0 * grid.x[None, None, :]
    dose = (20.0 + 0.5 * zz).astype(np.float32)
    half = 7.0 - step / 2
    planes = _box_planes(-half, half, step)
    smp, _ = sample_structure(planes, dose, grid, thickness=step, reduce=True)
    dvh = smp.histogram
    assert smp.total_cc == pytest.approx(14 * 14 * 14 / 1000)
    assert dvh.covered_cc == pytest.approx(smp.total_cc)
    assert smp.n_covered == smp.n_samples
    assert dvh.mean_gy == pytest.approx(20.0, abs=1e-4)
    assert dvh.min_gy == pytest.approx(16.5, abs=1e-4)
    assert dvh.max_gy == pytest.approx(23.5, abs=1e-4)
    for frac in (0.98, 0.5, 0.02):
        truth = 23.5 - frac * 7.0
        assert dvh.dose_at_volume(frac * dvh.covered_cc) == pytest.approx(truth, abs=0.01)
    # slab pieces of one z cell become one sample per whole cell: far fewer
    # samples than fine cells times slab pieces
    assert smp.n_samples < 14 * 14 / (2.5 / smp.subdivision) ** 2 * 14


def test_reduced_histogram_matches_the_kept_samples():
    grid = _grid()
    zz, yy, xx = np.meshgrid(grid.z, grid.y, grid.x, indexing="ij")
    dose = (30.0 + 0.04 * (xx**2 + yy**2) - 0.3 * zz).astype(np.float32)
    planes = [(float(z), [_disc(2.0, -1.0, 9.0 - 0.2 * abs(z))]) for z in np.arange(-9, 9.1, 3)]
    kept, _ = sample_structure(planes, dose, grid, thickness=3.0)
    reduced, _ = sample_structure(planes, dose, grid, thickness=3.0, reduce=True)
    ref = DVH.from_samples(kept.doses_gy, kept.weights_cc, kept.total_cc,
                           kept.surface_doses_gy, kept.spreads_gy)
    got = reduced.histogram
    assert kept.n_samples == reduced.n_samples and kept.n_covered == kept.doses_gy.size
    assert got.covered_cc == pytest.approx(ref.covered_cc, rel=1e-12)
    assert got.mean_gy == pytest.approx(ref.mean_gy, rel=1e-6)
    assert (got.min_gy, got.max_gy) == pytest.approx((ref.min_gy, ref.max_gy))
    for v in (0.03, 0.5, 0.02 * ref.covered_cc, 0.5 * ref.covered_cc, 0.98 * ref.covered_cc):
        assert got.dose_at_volume(v) == pytest.approx(ref.dose_at_volume(v), abs=5e-3)


def test_plane_regions_match_the_even_odd_region_of_each_plane():
    from dvheval.engine.geometry import even_odd_region, plane_regions

    bowtie = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # self-intersecting
    planes = [[_disc(0, 0, 10)], [_disc(0, 0, 10), _disc(1, 1, 3)],
              [_disc(0, 0, 10), _disc(1, 1, 3), _disc(1, 1, 1)], [bowtie], []]
    got = plane_regions(planes)
    assert [g.area for g in got] == pytest.approx([even_odd_region(p).area for p in planes])
    # ring of 10 and 3 (hole) plus an island of 1: areas add up by the even-odd rule
    ring = _disc(0, 0, 10)
    assert got[0].area == pytest.approx(abs(0.5 * np.sum(ring[:, 0] * np.roll(ring[:, 1], -1)
                                                         - ring[:, 1] * np.roll(ring[:, 0], -1))))
    assert got[4].is_empty


@pytest.mark.parametrize("planes_per_cell", [1, 3, MAX_MASKS_PER_CELL, MAX_MASKS_PER_CELL + 2])
def test_cell_blocks_sum_every_piece_of_a_block(planes_per_cell):
    # z cells made of slab pieces of random planes' masks: each used block's volume,
    # centroid and equivalent thickness are those of the pieces covering it, summed
    # directly (a uniform slab from fa to fb has mean (fa + fb) / 2 and variance
    # (fb - fa)^2 / 12)
    rng = np.random.default_rng(planes_per_cell)
    shape = (7, 9)
    masks = [rng.random(shape) < 0.6 for _ in range(12)]
    pending = []
    for c in range(5):
        keys = rng.choice(len(masks), size=planes_per_cell, replace=False)
        cuts = np.sort(rng.random(planes_per_cell + 1))
        pieces = [(int(k), masks[k], float(rng.uniform(1, 5)), float(a), float(b))
                  for k, a, b in zip(keys, cuts[:-1], cuts[1:], strict=True)]
        pending.append((c, pieces))
    blocks = _cell_blocks(pending, shape)
    vol = np.zeros((5, *shape))
    m1 = np.zeros((5, *shape))
    m2 = np.zeros((5, *shape))
    for c, pieces in pending:
        for _, mask, v, a, b in pieces:
            mid, length = 0.5 * (a + b), b - a
            vol[c] += mask * v
            m1[c] += mask * v * mid
            m2[c] += mask * v * (mid * mid + length * length / 12)
    used = vol > 0
    np.testing.assert_array_equal(blocks.used, used)
    np.testing.assert_array_equal(blocks.flat_index, np.flatnonzero(used))
    v = vol[used]
    centroid = m1[used] / v
    np.testing.assert_allclose(blocks.volume, v, rtol=1e-12)
    np.testing.assert_allclose(blocks.centroid, centroid, rtol=1e-12)
    thickness = np.sqrt(12 * np.maximum(m2[used] / v - centroid**2, 0))
    np.testing.assert_allclose(blocks.thickness, thickness, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", [(9, 11, 13), (1, 11, 13), (9, 1, 13), (9, 11, 1)])
def test_plane_values_blended_along_z_are_the_trilinear_dose(shape):
    rng = np.random.default_rng(7)
    nz, ny, nx = shape
    z = np.cumsum(rng.uniform(1.0, 3.0, nz))  # a non-uniform z
    grid = CanonicalGrid(x=2.5 * np.arange(nx), y=-10 + 2.0 * np.arange(ny), z=z)
    dose = rng.uniform(0, 40, shape).astype(np.float32)
    px = rng.uniform(grid.x[0] - 1, grid.x[-1] + 1, 500)
    py = rng.uniform(grid.y[0] - 1, grid.y[-1] + 1, 500)
    pz = rng.uniform(z[0] - 1, z[-1] + 1, 500)
    ix, fx, vx = axis_weights(grid.x, px)
    iy, fy, vy = axis_weights(grid.y, py)
    iz, fz, vz = axis_weights(grid.z, pz)
    c0 = plane_values(dose, ix, fx, iy, fy, iz)
    c1 = plane_values(dose, ix, fx, iy, fy, np.minimum(iz + 1, nz - 1))
    blended = (c0 + (c1 - c0) * fz).astype(np.float64)
    blended[~(vx & vy & vz)] = np.nan
    # bit for bit what the trilinear interpolation gives
    np.testing.assert_array_equal(blended, trilinear(dose, grid, px, py, pz))


def test_plane_values_of_a_linear_dose_are_exact():
    grid = _grid()
    zz, yy, xx = np.meshgrid(grid.z, grid.y, grid.x, indexing="ij")
    dose = (10 + 0.25 * xx - 0.125 * yy + 0.5 * zz).astype(np.float32)
    px, py = np.array([-7.3, 0.0, 12.6]), np.array([3.1, -14.2, 9.9])
    ix, fx, _ = axis_weights(grid.x, px)
    iy, fy, _ = axis_weights(grid.y, py)
    for k in (0, 7, 20):
        expected = 10 + 0.25 * px - 0.125 * py + 0.5 * grid.z[k]
        got = plane_values(dose, ix, fx, iy, fy, np.full(3, k))
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_vertex_extremes_are_those_of_every_vertex_at_every_face():
    rng = np.random.default_rng(3)
    grid = _grid()
    dose = rng.uniform(0, 40, grid.shape).astype(np.float32)
    planes = [(z, [_disc(rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(3, 30), n=37),
                   _disc(0, 0, 2, n=5)]) for z in (-19.0, -3.0, 4.0, 20.5)]
    face_plane = [0, 0, 1, 1, 1, 2, 3, 3]
    face_z = [-20.0, -18.5, -4.0, -3.0, -1.7, 5.0, 19.0, 21.0]
    brute = np.concatenate([
        trilinear(dose, grid, np.concatenate(planes[k][1])[:, 0],
                  np.concatenate(planes[k][1])[:, 1], np.full(42, z))
        for k, z in zip(face_plane, face_z, strict=True)])
    brute = brute[np.isfinite(brute)]
    got = _vertex_extremes(dose, grid, planes, face_plane, face_z)
    np.testing.assert_array_equal(got, [brute.min(), brute.max()])
    assert _vertex_extremes(dose, grid, planes, [], []).size == 0


def test_a_region_far_larger_than_the_grid_is_cut_to_it(monkeypatch):
    # a damaged contour 4 m wide over a 5 cm grid: only the grid's part is covered
    import dvheval.engine.sampling as sampling

    cut = []

    def clip(*args):
        out = original(*args)
        cut.append(out is not None)
        return out

    original = sampling.clip_to_grid
    monkeypatch.setattr(sampling, "clip_to_grid", clip)
    grid = _grid()
    dose = np.full(grid.shape, 10.0, np.float32)
    square = np.array([[-2000.0, -2000.0], [2000.0, -2000.0], [2000.0, 2000.0],
                       [-2000.0, 2000.0]])
    planes = [(z, [square]) for z in (-2.0, 0.0, 2.0)]
    samples, _ = sample_structure(planes, dose, grid, 2.0, True, reduce=True)
    assert samples.total_cc == pytest.approx(4000.0 ** 2 * 6.0 / 1000.0)
    # the grid's in-plane extent: 21 voxels of 2.5 mm each way; the slabs: -3 to 3 mm
    dvh = samples.histogram
    assert dvh.covered_cc == pytest.approx(52.5 ** 2 * 6.0 / 1000.0, rel=1e-9)
    assert dvh.min_gy == dvh.max_gy == pytest.approx(10.0)
    assert cut == [True, True, True]  # each plane was cut to the grid
