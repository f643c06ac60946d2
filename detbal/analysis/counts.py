"""Transition counts and the estimated kernel T(g<-f) = N(g<-f) / N0(f).

Two normalisations (METHOD.md section 2):

* ``empirical``: N0(f) is the number of attempts from f (self-loops and escapes
  included); sources with N0(f) <= ``min_source_count`` are dropped together with
  every edge that touches them.
* ``uniform``: N0 = total attempts / number of states for every state and
  T = min(1, N / N0); the missing mass 1 - sum_g T(g<-f) is the escape probability.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from detbal.errors import DetbalError

if TYPE_CHECKING:
    from scipy import sparse

    from detbal.store import RunStore

N0Mode = Literal["empirical", "uniform"]


@dataclass(frozen=True)
class CountRows:
    """Aggregated outcomes as the store and the file readers return them:
    ``(source, target_or_None, escape_or_None, count)`` rows and where they came from."""

    rows: tuple[tuple[str, str | None, str | None, int], ...]
    label: str = ""


@dataclass(frozen=True)
class CountColumns:
    """Outcomes as columns, as the fast reader of large CSV files returns them
    (:func:`detbal.io.read_count_columns`): per row the codes of ``source`` and ``target``
    in ``states`` (-1: an escape) and its ``count``.  ``states`` are in order of first
    appearance, row by row, source before target: the order
    :meth:`TransitionCounts.from_rows` gives the same rows."""

    states: tuple[str, ...]
    source: np.ndarray
    target: np.ndarray
    count: np.ndarray
    label: str = ""


@dataclass(frozen=True)
class TransitionCounts:
    """Aggregated outcomes on states ``0..n-1``.

    ``src, dst, count`` are the edges f -> g with f != g; ``attempts[f]`` counts
    every attempt from f (edges, self-loops and escapes).
    """

    states: tuple[str, ...]
    src: np.ndarray
    dst: np.ndarray
    count: np.ndarray
    attempts: np.ndarray
    self_loops: np.ndarray
    escapes: np.ndarray

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def total_attempts(self) -> float:
        return float(self.attempts.sum())

    def index(self, state: str) -> int:
        try:
            return self.states.index(state)
        except ValueError:
            raise DetbalError(f"state {state!r} does not occur in the data") from None

    @classmethod
    def from_rows(
        cls,
        rows: CountRows | Iterable[tuple[str, str | None, int] | tuple[str, str | None, str | None, int]],
    ) -> TransitionCounts:
        """Counts from rows ``(source, target, count)`` or ``(source, target, escape, count)``.

        A target of ``None`` (or ``""``) is an escape from the source; a target equal to
        the source is a self-loop.  Rows may repeat an outcome (their counts add up).
        ``rows`` may also be the :class:`CountRows` that a store or file
        reader returns.
        """
        items = rows.rows if isinstance(rows, CountRows) else tuple(_row(r) for r in rows)
        index: dict[str, int] = {}  # states numbered in order of appearance, source first
        source: list[int] = []
        target: list[int] = []
        for s, t, _escape, _n in items:
            source.append(index.setdefault(s, len(index)))
            target.append(-1 if t is None else index.setdefault(t, len(index)))
        count = np.fromiter((n for *_, n in items), dtype=np.float64, count=len(items))
        return cls.from_columns(CountColumns(tuple(index), np.array(source, dtype=np.int64),
                                             np.array(target, dtype=np.int64), count))

    @classmethod
    def from_columns(cls, cols: CountColumns) -> TransitionCounts:
        """Counts from :class:`CountColumns`, vectorised; equal to :meth:`from_rows` on the
        same rows (same states in the same order, same edges, sums of integer counts)."""
        n = len(cols.states)
        s = np.asarray(cols.source, dtype=np.int64)
        t = np.asarray(cols.target, dtype=np.int64)
        c = np.asarray(cols.count, dtype=np.float64)
        escape, loop = t < 0, t == s
        edge = ~escape & ~loop
        key, inverse = np.unique(s[edge] * n + t[edge], return_inverse=True)
        return cls.from_arrays(
            cols.states, key // n, key % n, np.bincount(inverse, weights=c[edge], minlength=len(key)),
            np.bincount(s, weights=c, minlength=n),
            np.bincount(s[loop], weights=c[loop], minlength=n),
            np.bincount(s[escape], weights=c[escape], minlength=n),
        )

    def to_rows(self) -> list[tuple[str, str | None, int]]:
        """``(source, target, count)`` rows, the inverse of :meth:`from_rows`: every edge, then
        per state its self-loops (target = source) and escapes (target None)."""
        rows: list[tuple[str, str | None, int]] = [
            (self.states[s], self.states[d], int(n)) for s, d, n in zip(self.src, self.dst, self.count)]
        for i, name in enumerate(self.states):
            if self.self_loops[i]:
                rows.append((name, name, int(self.self_loops[i])))
            if self.escapes[i]:
                rows.append((name, None, int(self.escapes[i])))
        return rows

    def __repr__(self) -> str:
        return (f"TransitionCounts({self.n_states} states, {len(self.src)} edges,"
                f" {self.total_attempts:g} attempts)")

    @classmethod
    def from_arrays(
        cls,
        states: Sequence[str],
        src: np.ndarray,
        dst: np.ndarray,
        count: np.ndarray,
        attempts: np.ndarray,
        self_loops: np.ndarray | None = None,
        escapes: np.ndarray | None = None,
    ) -> TransitionCounts:
        """Counts from edge arrays, sorted by (source, target) for locality."""
        n = len(states)
        src = np.asarray(src, dtype=np.int32)
        dst = np.asarray(dst, dtype=np.int32)
        count = np.asarray(count, dtype=np.float64)
        if np.any(src == dst):
            raise ValueError("self-loops belong in self_loops, not in the edge list")
        order = np.lexsort((dst, src))
        attempts = np.asarray(attempts, dtype=np.float64)
        zeros = np.zeros(n)
        return cls(
            states=tuple(states),
            src=src[order],
            dst=dst[order],
            count=count[order],
            attempts=attempts,
            self_loops=zeros if self_loops is None else np.asarray(self_loops, float),
            escapes=zeros if escapes is None else np.asarray(escapes, float),
        )

    def count_matrix(self) -> sparse.csr_matrix:
        """N(g<-f) as a sparse matrix, rows = from f, columns = to g (no self-loops)."""
        from scipy import sparse

        n = self.n_states
        return sparse.csr_matrix((self.count, (self.src, self.dst)), shape=(n, n))


@dataclass(frozen=True)
class Kernel:
    """Estimated kernel on the edges that survived the cuts.

    ``T[e] = count[e] / n0[src[e]]`` (capped at 1 in uniform mode); ``kept`` marks
    the states that take part; ``n_sources`` is the number of kept states with at
    least one attempt (the action's normalisation).
    """

    counts: TransitionCounts
    mode: N0Mode
    n0: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    count: np.ndarray
    T: np.ndarray
    kept: np.ndarray
    min_source_count: float
    total_attempts: float

    @property
    def states(self) -> tuple[str, ...]:
        return self.counts.states

    def __repr__(self) -> str:
        return (f"Kernel(n0={self.mode!r}, {int(np.count_nonzero(self.kept))} of {self.n_states} states kept,"
                f" {len(self.src)} edges, total_attempts={self.total_attempts:g})")

    @property
    def n_states(self) -> int:
        return self.counts.n_states

    @property
    def n_sources(self) -> int:
        return int(np.count_nonzero(self.kept & (self.counts.attempts > 0)))

    def escape_probability(self) -> np.ndarray:
        """1 - sum_g T(g<-f) - T(f<-f) per state (NaN for states with N0 = 0)."""
        out = np.full(self.n_states, np.nan)
        row_sum = np.bincount(self.src, weights=self.T, minlength=self.n_states)
        with np.errstate(divide="ignore", invalid="ignore"):
            loops = np.minimum(1.0, self.counts.self_loops / self.n0)
        has = self.n0 > 0
        out[has] = np.clip(1.0 - row_sum[has] - loops[has], 0.0, 1.0)
        return out

    def matrix(self) -> sparse.csr_matrix:
        """T(g<-f) as a sparse matrix, rows = from f, columns = to g."""
        from scipy import sparse

        n = self.n_states
        return sparse.csr_matrix((self.T, (self.src, self.dst)), shape=(n, n))

    @property
    def trials(self) -> np.ndarray:
        """Attempts per source to draw when resampling: N0 for kept states, 0 otherwise."""
        return np.where(self.kept, self.n0, 0.0)

    def rates(self, count: np.ndarray) -> np.ndarray:
        """T = N / N0(source) for counts on this kernel's edges (capped at 1 in uniform mode)."""
        return _rates(count, self.n0[self.src], self.mode)

    def pair_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Edge indices ``(e_fg, e_gf)`` of every pair observed in both directions, f < g."""
        return reverse_pairs(self.src, self.dst, self.n_states)


def _row(r: Sequence[object]) -> tuple[str, str | None, str | None, int]:
    """One ``from_rows`` row as ``(source, target_or_None, escape_or_None, count)``."""
    if len(r) == 3:
        source, target, n = r
        escape = None
    elif len(r) == 4:
        source, target, escape, n = r
    else:
        raise ValueError(f"rows: expected (source, target, count) or (source, target, escape, count), got {r!r}")
    if not isinstance(source, str) or not (target is None or isinstance(target, str)):
        raise ValueError(f"rows: source and target must be strings (target None for an escape), got {r!r}")
    try:
        count = int(n)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"rows: count must be a non-negative integer, got {r!r}") from None
    if count < 0 or count != n:
        raise ValueError(f"rows: count must be a non-negative integer, got {r!r}")
    return source, (target or None), (None if escape is None else str(escape)), count


def reverse_index(src: np.ndarray, dst: np.ndarray, n_states: int) -> np.ndarray:
    """For every edge f -> g, the index of the edge g -> f, or -1 where it is absent."""
    if len(src) == 0:
        return np.zeros(0, dtype=np.int64)
    key = src.astype(np.int64) * n_states + dst
    rkey = dst.astype(np.int64) * n_states + src
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    # searched in sorted order: consecutive binary searches then touch nearby memory
    # (4 s -> under 2 s a call at 3 million edges); the same positions
    rorder = np.argsort(rkey, kind="stable")
    pos = np.empty(len(rkey), dtype=np.int64)
    pos[rorder] = np.searchsorted(sorted_key, rkey[rorder])
    pos = np.minimum(pos, len(sorted_key) - 1)
    return np.where(sorted_key[pos] == rkey, order[pos], -1)


def reverse_pairs(src: np.ndarray, dst: np.ndarray, n_states: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (f->g, g->f) with f < g, both present."""
    rev = reverse_index(src, dst, n_states)
    forward = np.flatnonzero((rev >= 0) & (src < dst))
    return forward, rev[forward]


def _rates(count: np.ndarray, n0_source: np.ndarray, mode: str) -> np.ndarray:
    T = count / n0_source
    return np.minimum(1.0, T) if mode == "uniform" else T


#: what makes two outcomes one state: their text, or the canonical form the agent stored
#: with it (the fit agent's functional form: sympy's form with the fit parameters relabelled)
STATE_IDENTITIES = ("text", "canonical")


def merge_states(rows: CountRows, canonical: Mapping[str, str]) -> CountRows:
    """``rows`` with every state replaced by its canonical form where it has one, outcomes
    that become the same summed.  A transition between two texts of one form becomes a
    self-loop (counted in N0, not an edge), as a copy of the prompt state is."""
    merged: dict[tuple[str, str | None, str | None], int] = {}
    for s, t, e, n in rows.rows:
        key = (canonical.get(s, s), None if t is None else canonical.get(t, t), e)
        merged[key] = merged.get(key, 0) + int(n)
    return CountRows(rows=tuple((s, t, e, n) for (s, t, e), n in merged.items()), label=rows.label)


def load_counts(source: str | Path | RunStore, *, states: str = "text") -> TransitionCounts:
    """Transition counts from a run store (an open :class:`~detbal.store.RunStore` or its
    path) or any importable file (CSV/TSV, JSON Lines, the paper's JSON, Parquet).

    ``states="canonical"`` (run stores only) merges states with one canonical form
    (:func:`merge_states`): for the fitting agent, ansatzes that differ only in how their
    fit parameters are named or their terms ordered.  States without a stored canonical
    form keep their text.

    A run store is read as integer columns (:meth:`~detbal.store.RunStore.count_columns`,
    the same counts as its rows); with ``states="canonical"`` through its rows
    (:meth:`~detbal.store.RunStore.count_rows`), which :func:`merge_states` merges by text."""
    from detbal.io import load_count_rows, read_count_columns
    from detbal.store import RunStore, is_run_store

    if states not in STATE_IDENTITIES:
        raise ValueError(f"states must be one of {', '.join(STATE_IDENTITIES)}, not {states!r}")
    if isinstance(source, (str, Path)) and is_run_store(source):  # a store's path: open it once
        with RunStore(source, create=False) as store:
            return load_counts(store, states=states)
    if isinstance(source, RunStore):
        if states == "canonical":
            return TransitionCounts.from_rows(merge_states(source.count_rows(), source.state_canonical()))
        return TransitionCounts.from_columns(source.count_columns())  # integer columns
    if states == "canonical":
        raise DetbalError(f"{source}: canonical states need a run store (transition files carry no"
                          " canonical forms)")
    if not isinstance(source, (str, Path)):
        raise TypeError(f"load_counts: expected a path or a RunStore, got {type(source).__name__}")
    columns = read_count_columns(source)  # large plain CSV files: vectorised
    if columns is not None:
        return TransitionCounts.from_columns(columns)
    return TransitionCounts.from_rows(load_count_rows(source))


def estimate_kernel(
    counts: TransitionCounts,
    n0: N0Mode = "empirical",
    *,
    min_source_count: float | None = None,
    total_attempts: float | None = None,
) -> Kernel:
    """Estimate T(g<-f) from counts (METHOD.md section 2).

    ``total_attempts`` overrides the store's total (for imported counts that carry
    no escapes: the paper's Claude-4 example has 20,000 attempts over 5 states).
    ``min_source_count`` defaults to 1 in empirical mode (drop N0 <= 1) and 0 in
    uniform mode.  ``n0``: ``"empirical"`` or ``"uniform"`` (module docstring).
    """
    mode = n0
    n = counts.n_states
    if n == 0:
        raise DetbalError("no states in the data")
    total = counts.total_attempts if total_attempts is None else float(total_attempts)
    if total_attempts is not None and total_attempts < counts.total_attempts:
        raise DetbalError(
            f"total_attempts={total_attempts:g} is smaller than the {counts.total_attempts:g}"
            " attempts recorded in the data"
        )
    if mode == "empirical":
        threshold = 1.0 if min_source_count is None else float(min_source_count)
        n0_per_state = counts.attempts.copy()
        kept = n0_per_state > threshold
    elif mode == "uniform":
        threshold = 0.0 if min_source_count is None else float(min_source_count)
        n0_per_state = np.full(n, total / n)
        kept = counts.attempts > threshold if threshold > 0 else np.ones(n, dtype=bool)
    else:
        raise DetbalError(f"unknown n0 mode {mode!r}: use n0='empirical' or n0='uniform'")
    keep_edge = kept[counts.src] & kept[counts.dst]
    src, dst, cnt = counts.src[keep_edge], counts.dst[keep_edge], counts.count[keep_edge]
    T = _rates(cnt, n0_per_state[src], mode)
    return Kernel(
        counts=counts, mode=mode, n0=n0_per_state, src=src, dst=dst, count=cnt, T=T, kept=kept,
        min_source_count=threshold, total_attempts=total,
    )
