"""Dose-volume histograms built from weighted dose samples.

A :class:`DVH` is a fine differential histogram of the part of a structure
that lies inside the dose grid, plus the exact minimum, maximum and mean dose
of the samples it was built from. All look-ups (Dx%, Dxcc, Vx) interpolate on
the cumulative curve, which is piecewise linear between bin edges: a dose
that is uniform over a structure gives that dose for every Dx, never the
nearest bin edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Finest histogram bin (Gy). Bins are never narrower than this.
MIN_BIN_GY = 0.001
#: Doses within this relative difference (at least 1e-6 Gy) count as equal in
#: V-look-ups: DICOM stores dose as scaled integers and dvheval keeps it in
#: single precision, so a dose meant as 27.3 Gy may read as 27.2999992.
DOSE_TOLERANCE = 1e-6
#: Most bins a histogram uses; wider bins above ``MIN_BIN_GY * MAX_BINS`` Gy.
MAX_BINS = 20000


@dataclass(frozen=True)
class DVH:
    """Differential dose-volume histogram of a structure.

    Attributes
    ----------
    edges_gy : ndarray, shape (n + 1,)
        Non-decreasing bin edges in Gy. The first edge is the minimum dose
        and the last the maximum dose of the structure.
    volumes_cc : ndarray, shape (n,)
        Volume (cm^3) whose dose lies in each bin. Their sum is the covered
        volume.
    total_cc : float
        Volume of the whole structure, including any part outside the dose
        grid.
    min_gy, max_gy, mean_gy : float
        Exact minimum, maximum and volume-weighted mean dose.
    """

    edges_gy: np.ndarray
    volumes_cc: np.ndarray
    total_cc: float
    min_gy: float
    max_gy: float
    mean_gy: float

    # ------------------------------------------------------------------ build
    @classmethod
    def from_samples(
        cls,
        doses_gy: np.ndarray,
        weights_cc: np.ndarray,
        total_cc: float,
        extreme_doses_gy: np.ndarray | None = None,
        spreads_gy: np.ndarray | None = None,
    ) -> DVH:
        """Build a DVH from dose samples and the volume each stands for.

        Parameters
        ----------
        doses_gy : ndarray
            Dose at each sample point (finite values only).
        weights_cc : ndarray
            Volume represented by each sample, same shape as ``doses_gy``.
        total_cc : float
            Full structure volume (covered or not).
        extreme_doses_gy : ndarray, optional
            Doses at points on the structure's surface (e.g. contour
            vertices). They carry no volume but widen the minimum and
            maximum, which are point values.
        spreads_gy : ndarray, optional
            Half-width of the dose range over each sample's own volume
            element. A sample then stands for doses spread evenly over
            ``dose +/- spread`` (within the structure's minimum and maximum)
            instead of a single value, which removes the staircase that a
            finite sampling grid leaves in the DVH of a dose gradient.

        Returns
        -------
        DVH
        """
        doses = np.asarray(doses_gy, dtype=np.float64).ravel()
        weights = np.asarray(weights_cc, dtype=np.float64).ravel()
        if doses.shape != weights.shape:
            raise ValueError("doses and weights must have the same shape")
        keep = weights > 0
        doses, weights = doses[keep], weights[keep]
        spreads = None
        if spreads_gy is not None:
            spreads = np.abs(np.asarray(spreads_gy, dtype=np.float64).ravel()[keep])
        if doses.size == 0:
            return cls.empty(total_cc)
        lo = float(doses.min())
        hi = float(doses.max())
        if extreme_doses_gy is not None and len(extreme_doses_gy):
            ext = np.asarray(extreme_doses_gy, dtype=np.float64)
            ext = ext[np.isfinite(ext)]
            if ext.size:
                lo = min(lo, float(ext.min()))
                hi = max(hi, float(ext.max()))
        covered = float(weights.sum())
        mean = min(max(float(np.dot(doses, weights) / covered), lo), hi)
        width = max(MIN_BIN_GY, hi / MAX_BINS)
        first = np.floor(lo / width)
        nbins = int(np.floor(hi / width) - first) + 1
        edges = (first + np.arange(nbins + 1)) * width
        edges[0] = lo
        edges[-1] = hi
        edges = np.maximum.accumulate(np.clip(edges, lo, hi))

        def bins_of(values):
            return np.clip(np.floor(values / width) - first, 0, nbins - 1).astype(np.intp)

        if spreads is None:
            volumes = np.bincount(bins_of(doses), weights=weights, minlength=nbins)
            return cls(edges, volumes, float(total_cc), lo, hi, mean)
        a = np.clip(doses - spreads, lo, hi)
        b = np.clip(doses + spreads, lo, hi)
        point = (b - a) < width
        # point masses: all volume at the sample's dose
        cdf = np.concatenate([[0.0], np.cumsum(np.bincount(
            bins_of(doses[point]), weights=weights[point], minlength=nbins))])
        # even spreads: the mass below e is sum s * ((e - a)+ - (e - b)+), s = w / (b - a)
        a, b, w = a[~point], b[~point], weights[~point]
        if a.size:
            slope = w / (b - a)

            def ramp(x):
                idx = bins_of(x)
                s1 = np.bincount(idx, weights=slope, minlength=nbins)
                s2 = np.bincount(idx, weights=slope * x, minlength=nbins)
                return (np.concatenate([[0.0], np.cumsum(s1)]),
                        np.concatenate([[0.0], np.cumsum(s2)]))

            a1, a2 = ramp(a)
            b1, b2 = ramp(b)
            cdf = cdf + edges * (a1 - b1) - (a2 - b2)
        cdf[-1] = covered
        cdf = np.maximum.accumulate(np.clip(cdf, 0.0, covered))
        volumes = np.diff(cdf)
        return cls(edges, volumes, float(total_cc), lo, hi, mean)

    @classmethod
    def empty(cls, total_cc: float = 0.0) -> DVH:
        """A DVH with no covered volume (every look-up is undefined)."""
        nan = float("nan")
        return cls(np.zeros(1), np.zeros(0), float(total_cc), nan, nan, nan)

    # ------------------------------------------------------------ properties
    @property
    def covered_cc(self) -> float:
        """Volume inside the dose grid (cm^3)."""
        return float(self.volumes_cc.sum())

    @property
    def coverage(self) -> float:
        """Fraction of the structure volume inside the dose grid (0..1)."""
        if self.total_cc <= 0:
            return 0.0
        return min(1.0, self.covered_cc / self.total_cc)

    @property
    def is_empty(self) -> bool:
        return self.volumes_cc.size == 0 or self.covered_cc <= 0

    def _cumulative_at_edges(self) -> np.ndarray:
        c = np.concatenate([np.cumsum(self.volumes_cc[::-1])[::-1], [0.0]])
        return c

    # -------------------------------------------------------------- look-ups
    def volume_at_dose(self, dose_gy: float) -> float:
        """Volume (cm^3) receiving at least ``dose_gy``.

        Within a bin the dose is taken as uniformly distributed, so the
        cumulative curve is linear between bin edges.
        """
        if self.is_empty:
            return float("nan")
        dose_gy = dose_gy - DOSE_TOLERANCE * max(1.0, abs(dose_gy))
        if dose_gy <= self.min_gy:
            return self.covered_cc
        if dose_gy > self.max_gy:
            return 0.0
        cum = self._cumulative_at_edges()
        e = self.edges_gy
        j = int(np.searchsorted(e, dose_gy, side="right")) - 1
        j = min(max(j, 0), len(self.volumes_cc) - 1)
        span = e[j + 1] - e[j]
        frac = 0.0 if span <= 0 else (dose_gy - e[j]) / span
        return float(cum[j] - self.volumes_cc[j] * frac)

    def dose_at_volume(self, volume_cc: float) -> float:
        """Dose (Gy) that at least ``volume_cc`` of the structure receives.

        Returns NaN when ``volume_cc`` exceeds the covered volume.
        """
        if self.is_empty or volume_cc > self.covered_cc * (1 + 1e-12):
            return float("nan")
        if volume_cc <= 0:
            return self.max_gy
        cum = self._cumulative_at_edges()
        # last edge whose cumulative volume is still >= the requested volume
        j = int(np.searchsorted(-cum, -volume_cc, side="right")) - 1
        j = min(max(j, 0), len(self.volumes_cc) - 1)
        drop = cum[j] - cum[j + 1]
        frac = 0.0 if drop <= 0 else (cum[j] - volume_cc) / drop
        frac = min(max(frac, 0.0), 1.0)
        e = self.edges_gy
        return float(e[j] + frac * (e[j + 1] - e[j]))

    def geud(self, a: float) -> float:
        """Generalised equivalent uniform dose (Gy) with parameter ``a``.

        ``gEUD = (sum_i v_i D_i^a)^(1/a)`` over fractional volumes ``v_i``.
        """
        if self.is_empty:
            return float("nan")
        if a == 0:
            raise ValueError("gEUD parameter a must not be 0")
        if a == 1:
            return self.mean_gy
        centres = 0.5 * (self.edges_gy[:-1] + self.edges_gy[1:])
        frac = self.volumes_cc / self.covered_cc
        with np.errstate(divide="ignore", over="ignore"):
            if a < 0 and np.any((centres <= 0) & (frac > 0)):
                return 0.0
            return float(np.sum(frac * centres**a) ** (1.0 / a))

    def cumulative(self, step_gy: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative DVH sampled at regular doses.

        Parameters
        ----------
        step_gy : float, optional
            Dose step; by default a round step giving at most ~1000 points.

        Returns
        -------
        dose_gy, volume_cc : ndarray
            ``volume_cc[i]`` is the volume receiving at least ``dose_gy[i]``.
        """
        if self.is_empty:
            return np.zeros(0), np.zeros(0)
        if step_gy is None:
            step_gy = _round_step(self.max_gy / 1000.0)
        n = int(np.ceil(self.max_gy / step_gy)) + 1
        doses = np.round(np.arange(n + 1) * step_gy, 10)
        cum = self._cumulative_at_edges()
        e = self.edges_gy
        # V(d) is linear between edges; edges may repeat (zero-width bins)
        vols = np.interp(doses, e, cum, left=self.covered_cc, right=0.0)
        vols[doses <= self.min_gy] = self.covered_cc
        vols[doses > self.max_gy] = 0.0
        return doses, vols

    def transformed(self, func: Callable[[np.ndarray], np.ndarray]) -> DVH:
        """DVH of ``func(dose)`` for a monotonically increasing ``func``.

        Used for per-voxel EQD2 and BED histograms.
        """
        if self.is_empty:
            return self
        edges = np.asarray(func(self.edges_gy), dtype=np.float64)
        centres = func(0.5 * (self.edges_gy[:-1] + self.edges_gy[1:]))
        mean = float(np.dot(self.volumes_cc, centres) / self.covered_cc)
        lo = float(func(np.array([self.min_gy]))[0])
        hi = float(func(np.array([self.max_gy]))[0])
        return DVH(edges, self.volumes_cc.copy(), self.total_cc, lo, hi, mean)


def _round_step(raw: float) -> float:
    """Smallest of 0.01, 0.02, 0.05, 0.1, ... Gy not below ``raw``."""
    step = 0.01
    while True:
        for m in (1.0, 2.0, 5.0):
            if step * m >= raw:
                return step * m
        step *= 10.0
