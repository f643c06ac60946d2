"""Multinomial resampling of attempts per source (bootstrap, parametric bootstrap).

Edges are grouped by source (sorted by ``src``); each source f with ``trials[f]``
attempts draws its edge counts from Multinomial(trials[f], p[edges of f], 1 - sum p),
implemented as a chain of binomials so rows of any length cost O(edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from detbal.parallel import MapBackend

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
    backend: MapBackend | None = None,
) -> list[T]:
    """``[fn(s) for s in seeds]``, in order; ``n_jobs`` > 1 runs them in threads.

    The compiled work of a replicate (sampling, the Newton solver, the cycle
    reduction) releases the GIL, so threads overlap it; every replicate has its
    own seed, so the results do not depend on ``n_jobs``.  ``progress(1)`` is
    called once per finished replicate, from the calling thread.  ``backend``
    (:func:`detbal.parallel.make_backend`, e.g. a Dask cluster) runs them instead of
    the threads; ``fn`` must then pickle (it is sent to the workers once).
    """
    if backend is not None and seeds:
        return backend.map(fn, list(seeds), progress)
    if n_jobs <= 1 or len(seeds) <= 1:
        from detbal.parallel import SerialBackend

        return SerialBackend().map(fn, seeds, progress)
    with ThreadPoolExecutor(min(int(n_jobs), len(seeds))) as pool:
        out = []
        for result in pool.map(fn, seeds):
            out.append(result)
            if progress:
                progress(1)
        return out


@dataclass(frozen=True)
class SequentialStop:
    """When to stop a Monte-Carlo p-value's simulations early (none are wasted on a settled
    decision).

    After ``first`` simulations, and every ``step`` more, the p-value p = (1 + k)/(1 + R)
    (k of the R usable simulations as extreme as the data) has Monte-Carlo standard
    error se = sqrt(p (1 - p) / R); the simulations stop once |p - alpha| > z se, i.e.
    the decision at ``alpha`` is ``z`` standard errors away from flipping.  Near alpha
    they run to the end.  The simulations done are the first R of the full list (same
    seeds), so an early stop reports exactly what the full run would have after R.
    """

    alpha: float = 0.05
    z: float = 3.0
    first: int = 40
    step: int = 20

    def settled(self, k: int, r: int) -> bool:
        if r <= 0:
            return False
        p, se = mc_p_value(k, r)
        return abs(p - self.alpha) > self.z * se


def mc_p_value(k: int, r: int) -> tuple[float, float]:
    """``(p, se)``: the Monte-Carlo p-value (1 + k)/(1 + r) and its binomial standard error."""
    p = (1 + k) / (1 + r)
    return p, math.sqrt(p * (1.0 - p) / r) if r > 0 else math.nan


def map_until(
    fn: Callable[[int], T],
    seeds: Sequence[int],
    extreme: Callable[[T], bool | None],
    stop: SequentialStop | None,
    *,
    n_jobs: int = 1,
    progress: Callable[[int], object] | None = None,
    backend: MapBackend | None = None,
) -> list[T]:
    """:func:`map_replicates` over a prefix of ``seeds``, stopping early by ``stop``.

    ``extreme(result)`` says whether a simulation is at least as extreme as the data
    (None: unusable, e.g. no degrees of freedom).  ``stop=None`` runs every seed.
    """
    if stop is None:
        return map_replicates(fn, seeds, n_jobs=n_jobs, progress=progress, backend=backend)
    out: list[T] = []
    k = r = 0
    start = 0
    size = max(1, stop.first)
    while start < len(seeds):
        batch = map_replicates(fn, seeds[start:start + size], n_jobs=n_jobs, progress=progress,
                               backend=backend)
        out.extend(batch)
        start += len(batch)
        for result in batch:
            e = extreme(result)
            if e is not None:
                r += 1
                k += bool(e)
        if stop.settled(k, r):
            break
        size = max(1, stop.step)
    return out
