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
from typing import Any

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
            spreads = np.asarray(spreads_gy, dtype=np.float64).ravel()[keep]
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
        acc = DVHAccumulator(lo, hi)
        acc.add(doses, weights, spreads)
        acc.add_extremes(np.array([lo, hi]))
        return acc.result(total_cc)

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

    def relative_cumulative(self, step_gy: float | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative DVH in percent of the whole structure's volume.

        Same doses as :meth:`cumulative`; volumes divided by ``total_cc``
        (a structure partly outside the dose grid never reaches 100 %).

        Examples
        --------
        >>> import numpy as np
        >>> h = DVH.from_samples(np.array([10.0, 20.0]), np.array([1.0, 1.0]), 2.0)
        >>> dose, pct = h.relative_cumulative(step_gy=5.0)
        >>> [float(p) for p in pct[[0, 3, 5]]]
        [100.0, 50.0, 0.0]
        """
        dose, vol = self.cumulative(step_gy)
        pct = 100.0 * vol / self.total_cc if self.total_cc > 0 else np.zeros_like(vol)
        return dose, pct

    def metric(self, name: str, prescription_gy: float | None = None,
               fractions: int | None = None) -> float:
        """Evaluate a DVH metric by name, e.g. ``"D95%"``, ``"V20Gy[%]"``, ``"Dmean"``.

        See :func:`dvheval.engine.metrics.parse_metric` for the grammar;
        ``prescription_gy`` is needed for ``%``-of-prescription doses and
        ``fractions`` for EQD2/BED.

        Raises
        ------
        MetricError
            If the name does not parse.
        NotComputable
            If the metric cannot be computed for this DVH (the reason says why).

        Examples
        --------
        >>> import numpy as np
        >>> h = DVH.from_samples(np.array([10.0, 20.0]), np.array([1.0, 1.0]), 2.0)
        >>> h.metric("Dmean"), h.metric("V15Gy"), h.metric("V15Gy[%]")
        (15.0, 1.0, 50.0)
        """
        from dvheval.engine.metrics import evaluate_metric

        if not isinstance(name, str):
            raise TypeError(f"metric name must be a string such as 'D95%', got "
                            f"{type(name).__name__}")
        return evaluate_metric(name, self, prescription_gy, fractions)

    def to_dataframe(self, step_gy: float | None = None) -> Any:
        """The cumulative DVH as a pandas DataFrame.

        Columns ``dose_gy``, ``volume_cc`` and ``volume_pct`` (of the whole
        structure), at the doses of :meth:`cumulative`. Needs pandas
        (``pip install "dvheval[pandas]"``).
        """
        pd = _optional("pandas", "pandas")
        dose, vol = self.cumulative(step_gy)
        _, pct = self.relative_cumulative(step_gy)
        return pd.DataFrame({"dose_gy": dose, "volume_cc": vol, "volume_pct": pct})

    def plot(self, ax: Any = None, relative: bool = True, label: str | None = None,
             **style: Any) -> Any:
        """Draw the cumulative DVH with matplotlib and return the axes.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw; a new figure's axes by default.
        relative : bool
            Volume in percent of the structure (default) or in cm^3.
        label : str, optional
            Legend label.
        **style
            Passed to ``Axes.plot`` (colour, line width...).
        """
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots()
        dose, vol = self.relative_cumulative() if relative else self.cumulative()
        ax.plot(dose, vol, label=label, **style)
        ax.set_xlabel("Dose (Gy)")
        ax.set_ylabel("Volume (%)" if relative else "Volume (cm³)")
        if label is not None:
            ax.legend()
        return ax

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


def _optional(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module.split('.')[0]} is needed for this; install it with "
                          f"pip install \"dvheval[{extra}]\"") from exc


def _round_step(raw: float) -> float:
    """Smallest of 0.01, 0.02, 0.05, 0.1, ... Gy not below ``raw``."""
    step = 0.01
    while True:
        for m in (1.0, 2.0, 5.0):
            if step * m >= raw:
                return step * m
        step *= 10.0


class DVHAccumulator:
    """Differential histogram filled block by block from weighted dose samples.

    The bins are fixed up front from bounds that every added dose respects
    (e.g. the dose range of the grid around a structure), so samples can be
    produced and reduced in blocks of bounded size. :meth:`result` then cuts
    the histogram to the exact minimum and maximum seen, as
    :meth:`DVH.from_samples` does.

    Parameters
    ----------
    lo_gy, hi_gy : float
        Lower and upper bound of every dose that will be added (Gy).
    """

    def __init__(self, lo_gy: float, hi_gy: float) -> None:
        lo, hi = float(lo_gy), float(max(hi_gy, lo_gy))
        self.bounds = (lo, hi)
        self.width = max(MIN_BIN_GY, hi / MAX_BINS)
        self.first = float(np.floor(lo / self.width))
        self.nbins = int(np.floor(hi / self.width) - self.first) + 1
        # point masses, and the two sums that describe even spreads:
        # mass below e = sum over ramps started below e of slope * (e - start)
        self._points = np.zeros(self.nbins)
        self._slope = np.zeros(self.nbins)
        self._slope_x = np.zeros(self.nbins)
        self.covered = 0.0
        self._dose_volume = 0.0
        self.min_gy = np.inf
        self.max_gy = -np.inf

    def _bins(self, values: np.ndarray) -> np.ndarray:
        # floor(v / width) - first, cut to the bins: ``first`` is a whole number, so
        # the subtraction is exact and truncating the (clipped, non-negative) result
        # is the floor
        idx = values * (1.0 / self.width)
        idx -= self.first
        np.clip(idx, 0, self.nbins - 1, out=idx)
        return idx.astype(np.intp)

    def add(self, doses_gy: np.ndarray, weights_cc: np.ndarray,
            spreads_gy: np.ndarray | None = None) -> None:
        """Add samples: dose, volume and (optionally) the half-width of an even spread.

        Doses must lie within the bounds given at construction; spreads are
        cut to them.
        """
        d = np.asarray(doses_gy, dtype=np.float64).ravel()
        w = np.asarray(weights_cc, dtype=np.float64).ravel()
        if d.size == 0:
            return
        self.min_gy = min(self.min_gy, float(d.min()))
        self.max_gy = max(self.max_gy, float(d.max()))
        self.covered += float(w.sum())
        # (not np.dot: a multi-threaded BLAS would spin threads for a sum)
        self._dose_volume += float(np.sum(d * w))
        n = self.nbins
        if spreads_gy is None:
            self._points += np.bincount(self._bins(d), weights=w, minlength=n)
            return
        sp = np.abs(np.asarray(spreads_gy).ravel(), dtype=np.float64)
        lo, hi = self.bounds
        a = d - sp
        np.clip(a, lo, hi, out=a)
        b = np.add(d, sp, out=sp)
        np.clip(b, lo, hi, out=b)
        span = b - a
        point = span < self.width
        if point.all():
            self._points += np.bincount(self._bins(d), weights=w, minlength=n)
            return
        if point.any():
            self._points += np.bincount(self._bins(d[point]), weights=w[point], minlength=n)
            ramp = ~point
            a, b, w, span = a[ramp], b[ramp], w[ramp], span[ramp]
        slope = w / span
        ia, ib = self._bins(a), self._bins(b)
        self._slope += np.bincount(ia, weights=slope, minlength=n)
        self._slope -= np.bincount(ib, weights=slope, minlength=n)
        self._slope_x += np.bincount(ia, weights=slope * a, minlength=n)
        self._slope_x -= np.bincount(ib, weights=slope * b, minlength=n)

    def add_extremes(self, doses_gy: np.ndarray) -> None:
        """Widen the minimum and maximum with point doses that carry no volume."""
        ext = np.asarray(doses_gy, dtype=np.float64).ravel()
        ext = ext[np.isfinite(ext)]
        if ext.size:
            self.min_gy = min(self.min_gy, float(ext.min()))
            self.max_gy = max(self.max_gy, float(ext.max()))

    def result(self, total_cc: float) -> DVH:
        """The DVH of everything added, from the exact minimum to the maximum."""
        covered = self.covered
        if covered <= 0 or not np.isfinite(self.min_gy):
            return DVH.empty(total_cc)
        lo, hi = self.min_gy, self.max_gy
        width, first = self.width, self.first
        # cumulative mass at the lower edge of every bin and at the top
        e = (first + np.arange(self.nbins + 1)) * width
        cdf = np.concatenate([[0.0], np.cumsum(self._points)])
        cdf += e * np.concatenate([[0.0], np.cumsum(self._slope)])
        cdf -= np.concatenate([[0.0], np.cumsum(self._slope_x)])
        j_lo = int(np.clip(np.floor(lo / width) - first, 0, self.nbins - 1))
        j_hi = int(np.clip(np.floor(hi / width) - first, j_lo, self.nbins - 1))
        edges = np.concatenate([[lo], e[j_lo + 1:j_hi + 1], [hi]])
        edges = np.maximum.accumulate(np.clip(edges, lo, hi))
        cum = np.concatenate([[0.0], cdf[j_lo + 1:j_hi + 1], [covered]])
        cum = np.maximum.accumulate(np.clip(cum, 0.0, covered))
        mean = min(max(self._dose_volume / covered, lo), hi)
        return DVH(edges, np.diff(cum), float(total_cc), lo, hi, mean)
