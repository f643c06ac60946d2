"""Ground-truth Markov chains with known potentials, sampled the way agents sample.

* :func:`metropolis_chain`: reversible.  On a random sparse graph with degrees
  deg(f), P(g|f) = (1 - escape) * min(1/deg f, exp(-(V_g - V_f)) / deg g), so
  pi(f) P(g|f) is symmetric for pi ~ exp(-V) and log[P(g|f)/P(f|g)] = V_f - V_g.
* :func:`driven_chain`: the same with an antisymmetric, non-gradient drive A:
  P(g|f) is multiplied by exp(drive * (A_fg - 1)), so
  log[P(g|f)/P(f|g)] = V_f - V_g + 2 drive A_fg and cycles carry affinity.
* :func:`driven_ring`: states on a ring, each linked to its neighbours at
  distance 1 and 2; every 3-cycle i -> i+1 -> i+2 -> i carries the same known
  affinity (the edges i -> i+1 carry half of it each).

:func:`sample_agent` reproduces the agents' protocol (METHOD.md section 1): the
source is drawn uniformly from the states found so far and several children
are drawn from it; rejected moves are self-loops and escapes are recorded.

:func:`planted_chain`: a reversible chain whose potential is a known formula of
random state features (the ground truth of explicit-potential discovery).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detbal.analysis.counts import TransitionCounts, reverse_index
from detbal.analysis.resample import row_pointer, sample_edge_counts


@dataclass(frozen=True)
class SyntheticChain:
    """A chain on states ``s0..s{n-1}`` with edge probabilities ``p`` (sorted by ``src``)."""

    potential: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    p: np.ndarray
    escape: float
    reversible: bool

    @property
    def n_states(self) -> int:
        return len(self.potential)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f"s{i}" for i in range(self.n_states))


def _random_graph(n: int, mean_degree: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Undirected connected sparse graph: a random spanning path plus random extra edges."""
    perm = rng.permutation(n)
    a = [perm[:-1]]
    b = [perm[1:]]
    extra = max(0, int(n * mean_degree / 2) - (n - 1))
    u = rng.integers(0, n, size=extra)
    v = rng.integers(0, n, size=extra)
    a.append(u)
    b.append(v)
    a, b = np.concatenate(a), np.concatenate(b)
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    key = np.unique(lo.astype(np.int64) * n + hi)
    lo, hi = key // n, key % n
    return np.concatenate([lo, hi]), np.concatenate([hi, lo])


def metropolis_chain(
    n_states: int = 200,
    *,
    mean_degree: float = 6.0,
    potential_scale: float = 1.5,
    escape: float = 0.1,
    drive: float = 0.0,
    seed: int | None = 0,
    potential: np.ndarray | None = None,
) -> SyntheticChain:
    """Reversible Metropolis chain with V ~ N(0, potential_scale^2) (``drive=0``).

    ``potential`` plants a given V instead (the random graph stays the one ``seed`` draws).
    """
    rng = np.random.default_rng(seed)
    V = rng.normal(0.0, potential_scale, size=n_states)
    if potential is not None:
        V = np.asarray(potential, dtype=np.float64)
        if V.shape != (n_states,):
            raise ValueError(f"potential has shape {V.shape}, expected ({n_states},)")
    src, dst = _random_graph(n_states, mean_degree, rng)
    deg = np.bincount(src, minlength=n_states).astype(float)
    p = np.minimum(1.0 / deg[src], np.exp(-(V[dst] - V[src])) / deg[dst])
    if drive:
        A = rng.uniform(-1.0, 1.0, size=len(src))
        # antisymmetrise: A(g,f) = -A(f,g) (the graph is undirected: every edge has its reverse)
        rev = reverse_index(src, dst, n_states)
        A = np.where(src < dst, A, -A[rev])
        p = p * np.exp(drive * (A - 1.0))
    p = p * (1.0 - escape)
    order = np.lexsort((dst, src))
    return SyntheticChain(
        potential=V - V.mean(), src=src[order].astype(np.int32), dst=dst[order].astype(np.int32),
        p=p[order], escape=escape, reversible=not drive,
    )


def driven_chain(n_states: int = 200, *, drive: float = 1.0, **kwargs: object) -> SyntheticChain:
    """Non-reversible variant of :func:`metropolis_chain` with a rotational drive."""
    return metropolis_chain(n_states, drive=drive, **kwargs)  # type: ignore[arg-type]


def driven_ring(
    n_states: int = 1000,
    *,
    affinity: float = 0.6,
    potential_scale: float = 1.0,
    escape: float = 0.1,
    seed: int | None = 0,
) -> SyntheticChain:
    """Ring of states linked to i +- 1 and i +- 2, Metropolis on V ~ N(0, scale^2), driven.

    log[P(g|f)/P(f|g)] = V_f - V_g + a_fg with a = affinity/2 on every edge i -> i+1
    (and -affinity/2 back), 0 on i -> i+2, so each 3-cycle i -> i+1 -> i+2 -> i has
    affinity ``affinity`` (and the loop around the ring n affinity / 2).  The drive
    only lowers probabilities (the backward step is multiplied by exp(-affinity/2)).
    """
    if n_states < 5:
        raise ValueError(f"n_states must be >= 5 for a ring with steps 1 and 2, got {n_states}")
    rng = np.random.default_rng(seed)
    V = rng.normal(0.0, potential_scale, size=n_states)
    i = np.arange(n_states)
    src = np.concatenate([i, i, i, i])
    dst = np.concatenate([(i + 1) % n_states, (i - 1) % n_states, (i + 2) % n_states,
                          (i - 2) % n_states])
    step = np.repeat([1, -1, 2, -2], n_states)
    p = np.minimum(0.25, np.exp(-(V[dst] - V[src])) / 4.0)
    p = p * np.where(step == -1, np.exp(-abs(affinity) / 2.0), 1.0) if affinity >= 0 else \
        p * np.where(step == 1, np.exp(-abs(affinity) / 2.0), 1.0)
    p = p * (1.0 - escape)
    order = np.lexsort((dst, src))
    return SyntheticChain(
        potential=V - V.mean(), src=src[order].astype(np.int32), dst=dst[order].astype(np.int32),
        p=p[order], escape=escape, reversible=affinity == 0,
    )


def sample_agent(
    chain: SyntheticChain,
    n_transitions: int,
    *,
    children: int = 3,
    start: int = 0,
    seed: int | None = 0,
) -> TransitionCounts:
    """Agent-style sampling until ``n_transitions`` attempts have been made.

    Each step draws a source uniformly from the states found so far and makes
    ``children`` attempts from it; a new state joins the found set.
    """
    rng = np.random.default_rng(seed)
    n = chain.n_states
    ptr = row_pointer(chain.src, n)
    cum = np.concatenate([[0.0], np.cumsum(chain.p)])
    found = np.zeros(n, dtype=bool)
    found_list = [start]
    found[start] = True
    edge_counts = np.zeros(len(chain.src))
    attempts = np.zeros(n)
    self_loops = np.zeros(n)
    escapes = np.zeros(n)
    made = 0
    while made < n_transitions:
        f = found_list[rng.integers(len(found_list))]
        k = min(children, n_transitions - made)
        made += k
        attempts[f] += k
        lo, hi = ptr[f], ptr[f + 1]
        u = rng.random(k)
        for x in u:
            if x < chain.escape:
                escapes[f] += 1
                continue
            target = cum[lo] + (x - chain.escape)
            if target >= cum[hi]:
                self_loops[f] += 1
                continue
            e = lo + int(np.searchsorted(cum[lo + 1:hi + 1], target, side="right"))
            edge_counts[e] += 1
            g = chain.dst[e]
            if not found[g]:
                found[g] = True
                found_list.append(int(g))
    return _observed(chain, edge_counts, attempts, self_loops, escapes)


def sample_fixed(
    chain: SyntheticChain, attempts_per_state: float, *, seed: int | None = 0
) -> TransitionCounts:
    """Every state makes the same number of attempts (vectorised; for large benchmarks)."""
    trials = np.full(chain.n_states, float(attempts_per_state))
    rng = np.random.default_rng(seed)
    # seed=None must give fresh edge counts too, not the fixed stream of seed 0
    edge_seed = int(rng.integers(2**32)) if seed is None else seed
    counts = sample_edge_counts(chain.src, chain.p, trials, edge_seed)
    moved = np.bincount(chain.src, weights=counts, minlength=chain.n_states)
    rest = trials - moved
    remainder = np.maximum(1e-12, 1.0 - _row_sums(chain))
    escapes = rng.binomial(rest.astype(np.int64), np.clip(chain.escape / remainder, 0.0, 1.0))
    return _observed(chain, counts.astype(float), trials, rest - escapes, escapes)


def _row_sums(chain: SyntheticChain) -> np.ndarray:
    return np.bincount(chain.src, weights=chain.p, minlength=chain.n_states)


def _observed(chain: SyntheticChain, edge_counts: np.ndarray, attempts: np.ndarray,
              self_loops: np.ndarray, escapes: np.ndarray) -> TransitionCounts:
    seen = edge_counts > 0
    return TransitionCounts.from_arrays(
        chain.labels, chain.src[seen], chain.dst[seen], edge_counts[seen], attempts,
        self_loops, escapes,
    )


# -- a chain whose potential is a formula of state features -----------------------------
@dataclass(frozen=True)
class PlantedChain:
    """Counts sampled from a Metropolis chain whose potential is ``formula(features)``."""

    counts: TransitionCounts
    features: object  # detbal.evo.features.FeatureMatrix
    V: np.ndarray
    formula: str


def planted_chain(
    n_states: int = 60,
    formula: str = "1.6*f1 - f2**2",
    *,
    n_features: int = 3,
    mean_degree: float = 6.0,
    attempts_per_state: float = 400,
    escape: float = 0.1,
    seed: int = 0,
) -> PlantedChain:
    """Random N(0, 1) features ``f1..fk``; V = formula; Metropolis moves on a random graph.

    the planted V goes into :func:`metropolis_chain`; every state makes ``attempts_per_state``
    attempts (:func:`sample_fixed`).  For explicit-potential discovery (tests, benchmarks).
    """
    from detbal.evo import registry
    from detbal.evo.features import FeatureMatrix

    rng = np.random.default_rng(seed)
    names = tuple(f"f{i + 1}" for i in range(n_features))
    X = rng.normal(size=(n_states, n_features))
    V = registry.to_numpy(registry.parse_formula(formula, names), names)(X)
    chain = metropolis_chain(n_states, mean_degree=mean_degree, escape=escape, seed=seed + 1,
                             potential=V)
    counts = sample_fixed(chain, attempts_per_state, seed=seed + 2)
    F = FeatureMatrix(names=names, X=X, states=counts.states, mode="fixed", kind="synthetic")
    return PlantedChain(counts=counts, features=F, V=V - V.mean(), formula=formula)
