"""Ansatz states and potentials from the 49-parameter family, for the evo tests."""

from __future__ import annotations

import numpy as np

from detbal.analysis.counts import TransitionCounts, estimate_kernel
from detbal.evo.family49 import BOUNDS, PARAM_NAMES, family_potential, param_array
from detbal.evo.features import featurize
from detbal.evo.tokenize import random_ansatz


def random_expressions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        expr = random_ansatz(rng, max_depth=int(rng.integers(1, 6)), n_params=int(rng.integers(1, 13)))
        r = rng.random()
        if r < 0.05:            # damage some: drop a closing parenthesis
            expr = expr.replace(")", "", 1)
        elif r < 0.08:
            expr = "(" + expr
        out.append(expr)
    return out


def random_params(seed: int, spread: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = param_array()
    theta = d + spread * np.maximum(np.abs(d), 0.5) * rng.standard_normal(d.size)
    lo = np.array([BOUNDS[n][0] for n in PARAM_NAMES])
    hi = np.array([BOUNDS[n][1] for n in PARAM_NAMES])
    return np.clip(theta, lo, hi)



def synthetic_kernel(n_states: int = 80, seed: int = 0) -> tuple[object, object]:
    """Metropolis-like transitions driven by a perturbed family potential."""
    rng = np.random.default_rng(seed)
    states = list(dict.fromkeys(random_expressions(n_states, seed=seed + 100)))
    F = featurize(states, "ansatz")
    V_true = 1.5 * family_potential(F, random_params(seed + 5, 0.6))
    n = len(states)
    src, dst, cnt = [], [], []
    attempts = np.full(n, 30.0)
    for f in range(n):
        nbrs = rng.choice(np.delete(np.arange(n), f), size=6, replace=False)
        p = np.minimum(1.0, np.exp(V_true[f] - V_true[nbrs])) / 8.0
        counts = rng.multinomial(30, np.append(p, 1.0 - p.sum()))[:-1]
        for g, c in zip(nbrs, counts):
            if c > 0:
                src.append(f)
                dst.append(int(g))
                cnt.append(float(c))
    counts = TransitionCounts.from_arrays(states, np.array(src), np.array(dst), np.array(cnt), attempts)
    return estimate_kernel(counts, "empirical"), F
