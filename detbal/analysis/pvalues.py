"""Bootstrap p-values with an honest tail.

A parametric bootstrap with R simulations estimates p = P(T >= t_obs) as
(1 + k) / (1 + R), k the simulations at least as extreme as the data.  When k = 0
that number is only a bound (p is probably below about 1/(R + 1)), not the value.
:func:`bootstrap_p_value` then reports both the bound and a tail estimate: a
scaled chi-squared a * chi2(nu), with a and nu fitted by moments to the simulated
statistics (mean a nu, variance 2 a^2 nu), evaluated at t_obs.  It is what the
simulations say about the shape of the null distribution, extrapolated; the
asymptotic chi^2(df) tail is kept apart (``p_asymptotic`` of each test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import chdtrc

#: ``method`` of a p-value taken from the simulations, and of one extrapolated
SIMULATED = "simulated"
TAIL = "scaled_chi2_tail"


@dataclass(frozen=True)
class BootstrapPValue:
    """``value`` is what to report: the simulated p-value, or the tail estimate when
    no simulation was as extreme as the data (then ``bound`` = 1/(R+1) too)."""

    value: float
    method: str
    empirical: float
    n_simulations: int
    n_as_extreme: int
    bound: float | None
    tail_estimate: float
    tail_scale: float
    tail_df: float

    def as_dict(self) -> dict[str, object]:
        return {
            "p_value": self.value, "p_value_method": self.method,
            "p_simulated": self.empirical, "n_simulations": self.n_simulations,
            "n_as_extreme": self.n_as_extreme, "p_upper_bound": self.bound,
            "p_tail_estimate": self.tail_estimate,
            "tail_model": {"kind": "scaled chi-squared fitted by moments",
                           "scale": self.tail_scale, "df": self.tail_df},
        }

    def describe(self) -> str:
        """One phrase for a report: the value and where it comes from."""
        if not math.isfinite(self.value):
            return "n/a"
        if self.method == TAIL:
            return (f"{self.value:.3g} (tail estimate: scaled chi-squared fitted to {self.n_simulations}"
                    f" simulations, none as extreme; simulated bound p < {self.bound:.3g})")
        return f"{self.value:.3g} (bootstrap, {self.n_simulations} simulations)"


def scaled_chi2_fit(simulated: np.ndarray) -> tuple[float, float]:
    """(a, nu) with a * chi2(nu) matching the mean and variance of ``simulated``."""
    x = np.asarray(simulated, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 3:
        return math.nan, math.nan
    mean, var = float(x.mean()), float(x.var(ddof=1))
    if not (mean > 0 and var > 0):
        return math.nan, math.nan
    return var / (2.0 * mean), 2.0 * mean * mean / var


def bootstrap_p_value(observed: float, simulated: np.ndarray | list[float],
                      extreme: np.ndarray | list[float] | None = None,
                      observed_extreme: float | None = None) -> BootstrapPValue:
    """P-value of ``observed`` (large = extreme) against ``simulated`` statistics.

    ``extreme``/``observed_extreme`` optionally give another ordering of the same
    simulations (small = extreme, e.g. their asymptotic p-values when the degrees of
    freedom vary between simulations; NaN where a simulation has none); the tail is
    always fitted to ``simulated``.
    """
    sims = np.asarray(simulated, dtype=float)
    nan = BootstrapPValue(math.nan, SIMULATED, math.nan, 0, 0, None, math.nan, math.nan, math.nan)
    if not math.isfinite(observed):
        return nan
    if extreme is not None:
        if observed_extreme is None or not math.isfinite(observed_extreme):
            return nan
        order = np.asarray(extreme, dtype=float)
        ok = np.isfinite(order) & np.isfinite(sims)
        k = int(np.count_nonzero(order[ok] <= observed_extreme))
    else:
        ok = np.isfinite(sims)
        k = int(np.count_nonzero(sims[ok] >= observed))
    R = int(np.count_nonzero(ok))
    if R == 0:
        return nan
    empirical = (1 + k) / (1 + R)
    a, nu = scaled_chi2_fit(sims[ok])
    # chdtrc(nu, x) is scipy.stats.chi2.sf(x, nu) without importing scipy.stats (~0.5 s)
    tail = float(chdtrc(nu, observed / a)) if math.isfinite(a) else math.nan
    if k == 0 and math.isfinite(tail):
        return BootstrapPValue(tail, TAIL, empirical, R, 0, 1.0 / (R + 1), tail, a, nu)
    return BootstrapPValue(empirical, SIMULATED, empirical, R, k, 1.0 / (R + 1) if k == 0 else None,
                           tail, a, nu)
