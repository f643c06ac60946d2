"""Figures of an analysis, drawn on the caller's matplotlib Axes.

Every function takes a :class:`detbal.AnalysisResult` (or the one result object it
draws, such as a :class:`~detbal.analysis.balance.PairTest`) and ``ax``: the Axes to
draw on.  It returns that Axes.  Only when ``ax`` is None is a new figure made, with
``matplotlib.pyplot.subplots``.  Nothing here switches matplotlib's backend or
saves files; ``detbal analyze`` and :meth:`AnalysisResult.save` write their PNGs
with these same functions (:mod:`detbal.analysis.report`).

>>> import matplotlib.pyplot as plt
>>> fig, axes = plt.subplots(1, 2, figsize=(10, 5))
>>> detbal.plot.pairs(res, ax=axes[0]); detbal.plot.potential_histogram(res, ax=axes[1])

Scatter plots draw at most :data:`MAX_POINTS` points (a fixed random subset beyond,
said in the title).  Labels are plain text (no mathtext: faster to draw).  Error bars
are drawn by :func:`_errorbar` and histograms as one filled outline
(``histtype="stepfilled"``): the same pixels as ``Axes.errorbar`` and bar histograms
(tests/test_plot.py), for fewer Python objects.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from detbal.analysis.balance import OneSidedTest, PairTest, TripletTest
    from detbal.analysis.counts import Kernel
    from detbal.analysis.nonequilibrium import Nonequilibrium
    from detbal.analysis.potential import PotentialFit

__all__ = ["MAX_POINTS", "cycle_affinities", "estimators", "levels", "one_sided", "pairs",
           "potential_histogram", "top_cycles", "triplets"]

#: most points drawn in one scatter plot (a fixed random subset beyond)
MAX_POINTS = 5000
#: largest number of kept states drawn by :func:`levels`
LEVELS_MAX_STATES = 30


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _part(obj: Any, field: str) -> Any:
    """``obj.<field>`` for an AnalysisResult, else ``obj`` itself (the part already)."""
    from detbal.analysis.result import AnalysisResult

    return getattr(obj, field) if isinstance(obj, AnalysisResult) else obj


def _nothing(ax: Axes, why: str) -> Axes:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    return ax


def subset(n: int) -> tuple[np.ndarray, str]:
    """Indices of the points to draw and a note for the title (empty when all are drawn)."""
    if n <= MAX_POINTS:
        return np.arange(n), ""
    idx = np.sort(np.random.default_rng(0).choice(n, MAX_POINTS, replace=False))
    return idx, f" ({MAX_POINTS:,} of {n:,} drawn)"


def _errorbar(ax: Axes, x: np.ndarray, y: np.ndarray, *, xerr: np.ndarray | None = None,
              yerr: np.ndarray | None = None, alpha: float, elinewidth: float) -> None:
    """What ``ax.errorbar(x, y, yerr, xerr, fmt="o", ms=3, alpha=alpha, elinewidth=elinewidth)``
    draws: the next colour of the cycle, symmetric bars (x first) under round markers.  The
    bars are built here as one array of segments; errorbar builds them as a masked array,
    which LineCollection then walks row by row (about 70 ms for 3,000 bars)."""
    from matplotlib.collections import LineCollection

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    (line,) = ax.plot(x, y, "o", ms=3, alpha=alpha, zorder=2.1)
    for err, along in ((xerr, 0), (yerr, 1)):
        if err is None:
            continue
        centre = (x, y)[along]
        seg = np.empty((len(x), 2, 2))
        seg[:, :, 1 - along] = (y, x)[along][:, None]
        seg[:, 0, along] = centre - err
        seg[:, 1, along] = centre + err
        ax.add_collection(LineCollection(seg, colors=line.get_color(), linewidths=elinewidth,
                                         alpha=alpha, zorder=2, label="_nolegend_"))


def _diagonal(ax: Axes, *values: np.ndarray, **style: Any) -> None:
    """The line y = x across the range of ``values`` (with a margin)."""
    lo = float(min(v.min() for v in values)) - 0.5
    hi = float(max(v.max() for v in values)) + 0.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, **style)


def triplets(result: Any, ax: Axes | None = None) -> Axes:
    """The paper's 3-cycle test: backward against forward log-path sums, with the diagonal."""
    test: TripletTest = _part(result, "triplet_test")
    ax = _axes(ax, (5, 5))
    if test.n_triplets == 0:
        return _nothing(ax, "no 3-cycle observed both ways")
    i, note = subset(test.n_triplets)
    _errorbar(ax, test.L_fwd[i], test.L_bwd[i], xerr=np.sqrt(test.sigma2_fwd[i]),
              yerr=np.sqrt(test.sigma2_bwd[i]), alpha=0.6, elinewidth=0.7)
    _diagonal(ax, test.L_fwd, test.L_bwd)
    ax.set_xlabel("L_fwd = Σ log T  (f → g → h → f)")
    ax.set_ylabel("L_bwd  (f → h → g → f)")
    ax.set_title(f"{test.n_triplets} triplets, χ²/ndf = {test.chi2_per_ndf:.2f}{note}", fontsize=10)
    return ax


def pairs(result: Any, ax: Axes | None = None) -> Axes:
    """Pair test: log T(g<-f)/T(f<-g) against beta (V(f) - V(g)); detailed balance is y = x."""
    test: PairTest = _part(result, "pair_test")
    ax = _axes(ax, (5, 5))
    if test.n_pairs == 0:
        return _nothing(ax, "no pair observed both ways")
    i, note = subset(test.n_pairs)
    _errorbar(ax, test.dV[i], test.log_ratio[i], yerr=test.sigma[i], alpha=0.6, elinewidth=0.7)
    _diagonal(ax, test.dV, test.log_ratio, label="detailed balance")
    ax.set_xlabel("β [V(f) − V(g)]")
    ax.set_ylabel("log T(g ← f) / T(f ← g)")
    ax.set_title(f"{test.n_pairs} pairs, r = {test.pearson_r:.3f}{note}", fontsize=10)
    ax.legend(loc="upper left")
    return ax


def one_sided(result: Any, ax: Axes | None = None) -> Axes:
    """beta (V(f) - V(g)) of pairs seen one way only against the bound log(T N0(g))."""
    test: OneSidedTest = _part(result, "one_sided")
    ax = _axes(ax, (5, 5))
    if test.n_pairs == 0:
        return _nothing(ax, "no one-sided pair")
    i, note = subset(test.n_pairs)
    bound, dV = test.bound[i], test.dV[i]
    within = dV >= bound
    ax.scatter(bound[within], dV[within], s=8, alpha=0.6, label="within bound")
    ax.scatter(bound[~within], dV[~within], s=8, alpha=0.6, c="C3", label="violates bound")
    _diagonal(ax, test.bound, test.dV)
    ax.set_xlabel("bound log[T(g ← f) N0(g)]")
    ax.set_ylabel("β [V(f) − V(g)]")
    ax.set_title(f"{test.n_pairs} one-sided pairs, {100 * test.fraction_within:.1f}% within{note}",
                 fontsize=10)
    ax.legend(loc="upper left")
    return ax


def histogram_values(kernel: Kernel, fit: PotentialFit) -> np.ndarray:
    """beta V of the states used as a source more than once (the width's sample)."""
    return fit.beta * fit.V[kernel.counts.attempts > 1]


def potential_histogram(result: Any, ax: Axes | None = None) -> Axes:
    """Histogram of beta V (states used as a source more than once) with its Gaussian fit."""
    s = result.potential_summary
    return gaussian_histogram(histogram_values(result.kernel, result.potential), s.mean_beta_v,
                              s.sigma_beta_v, ax)


def gaussian_histogram(beta_v: np.ndarray, mean: float, sigma: float, ax: Axes | None = None) -> Axes:
    """Histogram of ``beta_v`` with the Gaussian (mean, sigma) over it."""
    ax = _axes(ax, (6, 4))
    x = beta_v[np.isfinite(beta_v)]
    if len(x) < 2 or not math.isfinite(sigma) or sigma <= 0:
        return _nothing(ax, "fewer than two states with a spread in V")
    bins = max(10, min(60, int(np.sqrt(len(x)) * 2)))
    # one outline instead of a Rectangle per bin; the bars have no edges and meet, so the
    # pixels are the same
    ax.hist(x, bins=bins, density=True, alpha=0.7, histtype="stepfilled")
    grid = np.linspace(x.min(), x.max(), 200)
    ax.plot(grid, np.exp(-0.5 * ((grid - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)),
            "k-", lw=1.5, label=f"Gaussian, σ = {sigma:.2f}")
    ax.set_xlabel("β V")
    ax.set_ylabel("density")
    ax.legend()
    return ax


def levels_apply(kernel: Kernel) -> bool:
    """Whether :func:`levels` draws this kernel (1 to LEVELS_MAX_STATES kept states)."""
    return 0 < int(np.count_nonzero(kernel.kept)) <= LEVELS_MAX_STATES


def levels(result: Any, ax: Axes | None = None, *, kernel: Kernel | None = None,
           potential: PotentialFit | None = None) -> Axes:
    """Transition diagram of a small state space (at most 30 kept states) on its potential
    levels: arrows blue downhill, red uphill, width by T; flagged states at the edges.

    ``result`` may be None when ``kernel`` and ``potential`` are given.
    """
    k: Kernel = kernel if kernel is not None else result.kernel
    fit: PotentialFit = potential if potential is not None else result.potential
    ax = _axes(ax, (7, 5))
    if not levels_apply(k):
        return _nothing(ax, f"more than {LEVELS_MAX_STATES} states (or none) to draw")
    used = np.flatnonzero(k.kept)
    finite = fit.V[np.isfinite(fit.V)]
    top = float(finite.max()) + 1.5 if len(finite) else 1.0
    bottom = float(finite.min()) - 1.5 if len(finite) else -1.0
    y = np.where(np.isfinite(fit.V), fit.V,
                 np.where(np.array([f in ("never_entered", "one_sided") for f in fit.flags]), top, bottom))
    order = used[np.argsort(y[used], kind="stable")]
    x = np.zeros(k.n_states)
    x[order] = np.arange(len(order)) % 4 + 0.3 * (np.arange(len(order)) // 4)
    for e in range(len(k.src)):
        f, g = k.src[e], k.dst[e]
        down = y[f] > y[g]
        ax.annotate("", xy=(x[g], y[g]), xytext=(x[f], y[f]),
                    arrowprops={"arrowstyle": "->", "color": "C0" if down else "C3",
                                "lw": 0.5 + 3.0 * float(k.T[e]), "alpha": 0.6,
                                "connectionstyle": "arc3,rad=0.15"})
    for i in used:
        label = k.states[i] + ("" if fit.flags[i] == "" else f"\n({fit.flags[i]})")
        ax.plot(x[i], y[i], "o", color="k", ms=6)
        ax.annotate(label, (x[i], y[i]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.margins(x=0.25, y=0.08)
    ax.set_ylabel("β V (flagged states drawn at the edges)")
    ax.set_xticks([])
    ax.set_title("transitions on potential levels (blue downhill, red uphill)")
    return ax


def _z_scores(ne: Nonequilibrium) -> np.ndarray:
    t, b = ne.triangles, ne.basis
    z = np.concatenate([t.z, b.z]) if len(t.z) or len(b.z) else np.zeros(0)
    return z[np.isfinite(z)]


def cycle_affinities(result: Any, ax: Axes | None = None) -> Axes:
    """z = A / sigma(A) of every 3-cycle and basis cycle against N(0, 1) (balance), titled with
    the RMS affinity and its interval."""
    ne: Nonequilibrium = _part(result, "nonequilibrium")
    ax = _axes(ax, (5, 4.5))
    z = _z_scores(ne)
    if len(z) == 0:
        return _nothing(ax, "no cycle observed both ways")
    t, b = ne.triangles, ne.basis
    lim = max(4.0, float(np.quantile(np.abs(z), 0.995)))
    bins = np.linspace(-lim, lim, 41)
    if len(t.z):
        ax.hist(np.clip(t.z, -lim, lim), bins=bins, density=True, alpha=0.6, label=f"{len(t.z)} 3-cycles",
                histtype="stepfilled")
    if len(b.z):
        ax.hist(np.clip(b.z, -lim, lim), bins=bins, density=True, alpha=0.5, label=f"{len(b.z)} basis cycles",
                histtype="stepfilled")
    grid = np.linspace(-lim, lim, 200)
    ax.plot(grid, np.exp(-grid**2 / 2) / math.sqrt(2 * math.pi), "k-", lw=1.2, label="N(0, 1): balance")
    ax.set_xlabel("A / sigma(A)")
    ax.set_ylabel("density")
    ax.legend(loc="upper left", fontsize=8)
    rms = ne.rms_affinity
    ax.set_title(f"RMS affinity {rms.estimate:.2f} [{rms.ci_low:.2f}, {rms.ci_high:.2f}]")
    return ax


def top_cycles(result: Any, ax: Axes | None = None, *, top: int = 25) -> Axes:
    """The ``top`` cycles that break detailed balance most (largest |A| / sigma): A with its
    95% interval, 3-cycles blue, basis cycles orange."""
    ne: Nonequilibrium = _part(result, "nonequilibrium")
    ax = _axes(ax, (5, 4.5))
    rows = ne.top_cycles(top)
    if not rows:
        return _nothing(ax, "no cycle observed both ways")
    y = np.arange(len(rows))[::-1]
    A = np.array([r["affinity"] for r in rows])
    err = 1.96 * np.array([r["sigma"] for r in rows])
    colors = ["C0" if r["kind"] == "3-cycle" else "C1" for r in rows]
    ax.errorbar(A, y, xerr=err, fmt="none", ecolor=colors, elinewidth=1)
    ax.scatter(A, y, c=colors, s=12, zorder=3)
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y, [f"{r['kind']} ({r['length']})" for r in rows], fontsize=6)
    ax.set_xlabel("cycle affinity A (95% interval)")
    ax.set_title(f"{len(rows)} cycles breaking balance most (|A|/sigma)")
    return ax


def estimators(result: Any, ax: Axes | None = None, *, least_action: PotentialFit | None = None,
               likelihood: PotentialFit | None = None) -> Axes:
    """The likelihood potential against the least-action one on the states both give a number
    (needs ``estimator="likelihood"``; or pass both fits and ``result=None``)."""
    la = least_action if least_action is not None else result.potential
    if likelihood is None:
        if result is None or result.likelihood is None:
            raise ValueError("estimators: the result has no likelihood potential; analyze with"
                             " estimator='likelihood'")
        likelihood = result.likelihood.potential
    ax = _axes(ax, (5, 5))
    both = np.flatnonzero(np.isfinite(la.V) & np.isfinite(likelihood.V))
    if len(both) < 2:
        return _nothing(ax, "fewer than two states in both fits")
    idx, note = subset(len(both))
    sel = both[idx]
    x = la.beta * la.V[sel]
    y = likelihood.beta * likelihood.V[sel]
    _errorbar(ax, x, y, yerr=likelihood.beta * np.nan_to_num(likelihood.stderr[sel]), alpha=0.5,
              elinewidth=0.6)
    _diagonal(ax, x, y)
    only = int(np.count_nonzero(np.isfinite(likelihood.V) & ~np.isfinite(la.V)))
    ax.set_xlabel("beta V, least action")
    ax.set_ylabel("beta V, likelihood (Laplace 1 sigma)")
    ax.set_title(f"{len(both)} states in both{note}; {only} only in the likelihood fit", fontsize=9)
    return ax
