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


def direction_stats(
    V: np.ndarray,
    kernel: Kernel,
    threshold: float = 0.05,
    *,
    tol: float = 0.0,
) -> dict[str, float]:
    """Down/up/equal counts and fractions of V along the edges with ``T > threshold``.

    ``V`` is indexed like ``kernel.states``.  An edge f -> g goes down when
    V(f) - V(g) > tol, up when V(f) - V(g) < -tol, else it is equal; edges with a
    non-finite V at either end are counted in ``undefined`` and left out of the
    fractions.  Fractions are NaN when no edge qualifies.
    """
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (kernel.n_states,):
        raise ValueError(f"V has shape {V.shape}, expected ({kernel.n_states},)")
    sel = kernel.T > threshold
    src, dst = kernel.src[sel], kernel.dst[sel]
    diff = V[src] - V[dst]
    finite = np.isfinite(diff)
    d = diff[finite]
    down = int(np.count_nonzero(d > tol))
    up = int(np.count_nonzero(d < -tol))
    n = int(d.size)
    equal = n - down - up

    def frac(k: int) -> float:
        return k / n if n else math.nan

    return {
        "threshold": float(threshold),
        "n": n,
        "down": down,
        "up": up,
        "equal": equal,
        "undefined": int(np.count_nonzero(~finite)),
        "frac_down": frac(down),
        "frac_up": frac(up),
        "frac_equal": frac(equal),
    }


def summarise(kernel: Kernel, fit: PotentialFit) -> PotentialSummary:
    beta_v = fit.beta * fit.V
    used = np.isfinite(beta_v) & (kernel.counts.attempts > 1)
    mean, sigma = gaussian_width(beta_v[used])
    d = direction_stats(fit.V, kernel)
    flags: dict[str, int] = {}
    for flag in fit.flags:
        key = flag or "identifiable"
        flags[key] = flags.get(key, 0) + 1
    return PotentialSummary(
        action=fit.action, k0=fit.k0, n_width_states=int(used.sum()), mean_beta_v=mean,
        sigma_beta_v=sigma, expected_action=expected_minimal_action(fit.k0, sigma),
        n_strong_transitions=d["n"], downhill_fraction=d["frac_down"],
        uphill_fraction=d["frac_up"], level_fraction=d["frac_equal"], n_identifiable=int(np.isfinite(fit.V).sum()), flag_counts=flags,
    )
