"""Summary figures of a fitted potential (METHOD.md section 4).

* width: sigma of beta*V over identifiable states used as a source more than once,
  from a Gaussian fit (maximum likelihood: mean and standard deviation);
* expected minimal action for a Gaussian beta*V of width sigma:
  S_min ~ K(0) / (sqrt(pi) * sigma), beside the measured action;
* the fraction of transitions with T > 0.05 that go downhill (V(f) > V(g)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detbal.analysis.counts import Kernel
from detbal.analysis.potential import PotentialFit


@dataclass(frozen=True)
class PotentialSummary:
    action: float
    k0: float
    n_width_states: int
    mean_beta_v: float
    sigma_beta_v: float
    expected_action: float
    n_strong_transitions: int
    downhill_fraction: float
    uphill_fraction: float
    level_fraction: float
    n_identifiable: int
    flag_counts: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action, "K0": self.k0, "action_over_K0": self.action / self.k0,
            "width_states": self.n_width_states, "mean_beta_V": self.mean_beta_v,
            "sigma_beta_V": self.sigma_beta_v,
            "expected_min_action_gaussian": self.expected_action,
            "strong_transitions": self.n_strong_transitions,
            "downhill_fraction": self.downhill_fraction, "uphill_fraction": self.uphill_fraction,
            "level_fraction": self.level_fraction, "identifiable_states": self.n_identifiable,
            "flags": self.flag_counts,
        }


def gaussian_width(beta_v: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood Gaussian (mean, sigma) of beta*V."""
    x = beta_v[np.isfinite(beta_v)]
    if len(x) < 2:
        return math.nan, math.nan
    return float(x.mean()), float(x.std())


def expected_minimal_action(k0: float, sigma: float) -> float:
    """K(0) / (sqrt(pi) sigma): the minimal action of a Gaussian potential of width sigma."""
    return k0 / (math.sqrt(math.pi) * sigma) if sigma and math.isfinite(sigma) and sigma > 0 else math.nan


def direction_fractions(kernel: Kernel, V: np.ndarray, threshold: float = 0.05,
                        tol: float = 1e-9) -> tuple[int, float, float, float]:
    """(n, downhill, uphill, level) over transitions with T > ``threshold`` and finite V."""
    strong = kernel.T > threshold
    f, g = kernel.src[strong], kernel.dst[strong]
    ok = np.isfinite(V[f]) & np.isfinite(V[g])
    dv = V[f[ok]] - V[g[ok]]
    n = len(dv)
    if n == 0:
        return 0, math.nan, math.nan, math.nan
    down = np.count_nonzero(dv > tol) / n
    up = np.count_nonzero(dv < -tol) / n
    return n, down, up, 1.0 - down - up


def summarise(kernel: Kernel, fit: PotentialFit) -> PotentialSummary:
    beta_v = fit.beta * fit.V
    used = np.isfinite(beta_v) & (kernel.counts.attempts > 1)
    mean, sigma = gaussian_width(beta_v[used])
    n, down, up, level = direction_fractions(kernel, fit.V)
    flags: dict[str, int] = {}
    for flag in fit.flags:
        key = flag or "identifiable"
        flags[key] = flags.get(key, 0) + 1
    return PotentialSummary(
        action=fit.action, k0=fit.k0, n_width_states=int(used.sum()), mean_beta_v=mean,
        sigma_beta_v=sigma, expected_action=expected_minimal_action(fit.k0, sigma),
        n_strong_transitions=n, downhill_fraction=down, uphill_fraction=up,
        level_fraction=level, n_identifiable=int(np.isfinite(fit.V).sum()), flag_counts=flags,
    )
