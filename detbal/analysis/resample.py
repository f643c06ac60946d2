"""Multinomial resampling of attempts per source (bootstrap, parametric bootstrap).

Edges are grouped by source (sorted by ``src``); each source f with ``trials[f]``
attempts draws its edge counts from Multinomial(trials[f], p[edges of f], 1 - sum p),
implemented as a chain of binomials so rows of any length cost O(edges).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from numba import njit

T = TypeVar("T")


@njit(cache=True, nogil=True)
def _multinomial_rows(row_ptr, p, trials, seed, out):  # pragma: no cover - compiled
    np.random.seed(seed)
    for r in range(trials.shape[0]):
        remaining = trials[r]
        mass = 1.0
        for e in range(row_ptr[r], row_ptr[r + 1]):
            if remaining <= 0 or mass <= 0.0:
                out[e] = 0
                continue
            q = p[e] / mass
            if q >= 1.0:
                k = remaining
            elif q <= 0.0:
                k = 0
            else:
                k = np.random.binomial(remaining, q)
            out[e] = k
            remaining -= k
            mass -= p[e]


def row_pointer(src: np.ndarray, n_states: int) -> np.ndarray:
    """CSR row pointer for edges sorted by source."""
    return np.searchsorted(src, np.arange(n_states + 1)).astype(np.int64)


def sample_edge_counts(
    src: np.ndarray,
    p: np.ndarray,
    trials: np.ndarray,
    seed: int,
    *,
    ptr: np.ndarray | None = None,
) -> np.ndarray:
    """Counts per edge: every source draws ``trials[f]`` attempts over its edges.

    ``src`` must be sorted; ``p`` are per-edge probabilities whose row sums are <= 1
    (the rest is self-loops and escapes).  ``ptr``: ``row_pointer(src, len(trials))``
    when the caller draws many replicates of the same edges.
    """
    n_states = len(trials)
    if ptr is None:
        ptr = row_pointer(np.asarray(src), n_states)
    out = np.zeros(len(src), dtype=np.int64)
    _multinomial_rows(
        ptr,
        np.ascontiguousarray(p, dtype=np.float64),
        np.ascontiguousarray(np.rint(trials), dtype=np.int64),
        int(seed) % (2**32),
        out,
    )
    return out


def replicate_seeds(seed: int | None, n: int) -> list[int]:
    """Independent 32-bit seeds for ``n`` replicates, reproducible from ``seed``."""
    ss = np.random.SeedSequence(seed)
    return [int(s.generate_state(1)[0]) for s in ss.spawn(n)]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def map_replicates(
    fn: Callable[[int], T],
    seeds: Sequence[int],
    *,
    n_jobs: int = 1,
    progress: Callable[[int], object] | None = None,
) -> list[T]:
    """``[fn(s) for s in seeds]``, in order; ``n_jobs`` > 1 runs them in threads.

    The compiled work of a replicate (sampling, the Newton solver, the cycle
    reduction) releases the GIL, so threads overlap it; every replicate has its
    own seed, so the results do not depend on ``n_jobs``.  ``progress(1)`` is
    called once per finished replicate, from the calling thread.
    """
    if n_jobs <= 1 or len(seeds) <= 1:
        out = []
        for s in seeds:
            out.append(fn(s))
            if progress:
                progress(1)
        return out
    with ThreadPoolExecutor(min(int(n_jobs), len(seeds))) as pool:
        out = []
        for result in pool.map(fn, seeds):
            out.append(result)
            if progress:
                progress(1)
        return out
