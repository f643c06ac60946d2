"""Transition counts and kernel estimation (METHOD.md section 2)."""

from __future__ import annotations

import numpy as np
import pytest

from detbal.analysis.counts import (
    CountRows,
    TransitionCounts,
    estimate_kernel,
    reverse_pairs,
)
from detbal.errors import DetbalError

ROWS = (
    ("A", "B", None, 6),
    ("A", "C", None, 2),
    ("A", "A", None, 3),      # self-loop: counted in N0(A), not an edge
    ("A", None, "wrong_sum", 9),
    ("B", "A", None, 4),
    ("B", "C", None, 1),
    ("C", "A", None, 1),      # N0(C) = 1: dropped in empirical mode
    ("D", "A", None, 5),
    ("D", "D", None, 2),
    ("E", None, "empty", 4),  # only escapes
)


@pytest.fixture
def counts() -> TransitionCounts:
    return TransitionCounts.from_rows(CountRows(ROWS))


def _edges(k) -> dict[tuple[str, str], float]:
    return {(k.states[s], k.states[d]): t for s, d, t in zip(k.src, k.dst, k.T)}


def test_from_rows(counts: TransitionCounts) -> None:
    st = counts.states
    assert set(st) == {"A", "B", "C", "D", "E"}
    att = dict(zip(st, counts.attempts))
    assert att == {"A": 20, "B": 5, "C": 1, "D": 7, "E": 4}
    assert dict(zip(st, counts.self_loops)) == {"A": 3, "B": 0, "C": 0, "D": 2, "E": 0}
    assert dict(zip(st, counts.escapes)) == {"A": 9, "B": 0, "C": 0, "D": 0, "E": 4}
    edges = {(st[s], st[d]): n for s, d, n in zip(counts.src, counts.dst, counts.count)}
    assert edges == {("A", "B"): 6, ("A", "C"): 2, ("B", "A"): 4, ("B", "C"): 1,
                     ("C", "A"): 1, ("D", "A"): 5}
    assert np.all(counts.src != counts.dst)
    assert counts.total_attempts == 37
    # edges sorted by (source, target)
    key = counts.src.astype(np.int64) * counts.n_states + counts.dst
    assert np.all(np.diff(key) > 0)
    assert counts.index("D") == st.index("D")
    with pytest.raises(DetbalError):
        counts.index("nope")


def test_from_rows_sums_duplicate_rows() -> None:
    c = TransitionCounts.from_rows([("A", "B", None, 2), ("A", "B", None, 3), ("B", "A", None, 1)])
    assert list(c.count) == [5, 1]
    assert list(c.attempts) == [5, 1]


def test_from_arrays_rejects_self_loop_edges() -> None:
    with pytest.raises(ValueError):
        TransitionCounts.from_arrays(("a", "b"), np.array([0]), np.array([0]), np.array([1.0]),
                                     np.array([1.0, 0.0]))


def test_empirical(counts: TransitionCounts) -> None:
    k = estimate_kernel(counts, "empirical")
    st = k.states
    kept = dict(zip(st, k.kept))
    assert kept == {"A": True, "B": True, "C": False, "D": True, "E": True}
    # every edge touching C is gone (both A->C, B->C and C->A)
    assert _edges(k) == pytest.approx({("A", "B"): 6 / 20, ("B", "A"): 4 / 5, ("D", "A"): 5 / 7})
    assert dict(zip(st, k.n0)) == {"A": 20, "B": 5, "C": 1, "D": 7, "E": 4}
    assert k.n_sources == 4
    assert k.total_attempts == 37
    esc = dict(zip(st, k.escape_probability()))
    assert esc["A"] == pytest.approx(1 - 6 / 20 - 3 / 20)  # edges to C count as missing mass
    assert esc["D"] == pytest.approx(0.0)
    assert esc["E"] == pytest.approx(1.0)


@pytest.mark.parametrize("threshold, dropped", [(0, set()), (4, {"C", "E"}), (5, {"B", "C", "E"})])
def test_empirical_min_source_count(counts: TransitionCounts, threshold: int, dropped: set) -> None:
    k = estimate_kernel(counts, "empirical", min_source_count=threshold)
    assert {s for s, keep in zip(k.states, k.kept) if not keep} == dropped
    for s, d in zip(k.src, k.dst):
        assert k.states[s] not in dropped and k.states[d] not in dropped
    assert np.allclose(k.T, k.count / k.n0[k.src])


def test_empirical_never_source_target_is_dropped() -> None:
    c = TransitionCounts.from_rows([("A", "B", None, 3), ("A", "Z", None, 2), ("B", "A", None, 2)])
    k = estimate_kernel(c)
    assert not k.kept[c.index("Z")]
    assert _edges(k) == pytest.approx({("A", "B"): 3 / 5, ("B", "A"): 1.0})


def test_uniform(counts: TransitionCounts) -> None:
    k = estimate_kernel(counts, "uniform")
    assert np.all(k.n0 == pytest.approx(37 / 5))
    assert np.all(k.kept)
    n0 = 37 / 5
    assert _edges(k) == pytest.approx({
        ("A", "B"): 6 / n0, ("A", "C"): 2 / n0, ("B", "A"): 4 / n0, ("B", "C"): 1 / n0,
        ("C", "A"): 1 / n0, ("D", "A"): 5 / n0,
    })
    esc = dict(zip(k.states, k.escape_probability()))
    assert esc["A"] == pytest.approx(0.0)  # 8/7.4 + 3/7.4 > 1: clipped
    assert esc["B"] == pytest.approx(1 - 5 / n0)
    assert esc["E"] == pytest.approx(1.0)
    assert k.n_sources == 5


def test_uniform_claude4_attempts_override() -> None:
    rows = [("ATTITUDE", "PERSONAL", None, 66), ("ATTITUDE", "PROBLEMS", None, 20),
            ("TURKEY", "ATTITUDE", None, 4122), ("PERSONAL", "ATTITUDE", None, 3879),
            ("PROBLEMS", "ATTITUDE", None, 3558), ("BUZZY", "ATTITUDE", None, 3859),
            ("BUZZY", "TURKEY", None, 238)]
    c = TransitionCounts.from_rows(rows)
    k = estimate_kernel(c, "uniform", total_attempts=20000)
    assert np.all(k.n0 == 4000.0)
    assert k.total_attempts == 20000
    e = _edges(k)
    assert e[("TURKEY", "ATTITUDE")] == 1.0  # min(1, 4122/4000)
    assert e[("PERSONAL", "ATTITUDE")] == pytest.approx(3879 / 4000)
    assert e[("ATTITUDE", "PERSONAL")] == pytest.approx(66 / 4000)
    esc = dict(zip(k.states, k.escape_probability()))
    assert esc["ATTITUDE"] == pytest.approx(1 - 86 / 4000)
    assert esc["TURKEY"] == 0.0
    # without the override N0 is the recorded total over the states
    assert np.all(estimate_kernel(c, "uniform").n0 == pytest.approx(sum(r[3] for r in rows) / 5))


def test_attempts_override_below_recorded_is_an_error(counts: TransitionCounts) -> None:
    with pytest.raises(DetbalError, match="attempts"):
        estimate_kernel(counts, "uniform", total_attempts=counts.total_attempts - 1)
    k = estimate_kernel(counts, "empirical", total_attempts=1000)
    assert k.total_attempts == 1000
    assert dict(zip(k.states, k.n0))["A"] == 20  # empirical N0 is unaffected


def test_unknown_mode_and_empty(counts: TransitionCounts) -> None:
    with pytest.raises(DetbalError, match="mode"):
        estimate_kernel(counts, "poisson")  # type: ignore[arg-type]
    with pytest.raises(DetbalError):
        estimate_kernel(TransitionCounts.from_rows([]))


def _brute_pairs(src, dst):
    where = {(int(s), int(d)): i for i, (s, d) in enumerate(zip(src, dst))}
    out = []
    for (s, d), i in where.items():
        if s < d and (d, s) in where:
            out.append((i, where[(d, s)]))
    return sorted(out)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n, m", [(2, 2), (5, 12), (40, 300), (300, 2000)])
def test_reverse_pairs_matches_brute_force(seed: int, n: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n, size=m)
    d = rng.integers(0, n, size=m)
    keep = s != d
    key = np.unique(s[keep] * n + d[keep])
    src, dst = (key // n).astype(np.int32), (key % n).astype(np.int32)
    perm = rng.permutation(len(src))  # order must not matter
    src, dst = src[perm], dst[perm]
    fwd, rev = reverse_pairs(src, dst, n)
    assert sorted(zip(fwd.tolist(), rev.tolist())) == _brute_pairs(src, dst)
    assert np.all(src[fwd] < dst[fwd])
    assert np.all(src[fwd] == dst[rev]) and np.all(dst[fwd] == src[rev])


def test_reverse_pairs_empty_and_kernel_pair_index(counts: TransitionCounts) -> None:
    e = np.zeros(0, dtype=np.int32)
    fwd, rev = reverse_pairs(e, e, 3)
    assert len(fwd) == 0 and len(rev) == 0
    k = estimate_kernel(counts, "uniform")
    fwd, rev = k.pair_index()
    pairs = {tuple(sorted((k.states[k.src[i]], k.states[k.dst[i]]))) for i in fwd}
    assert pairs == {("A", "B"), ("A", "C")}


@pytest.mark.parametrize("mode", ["empirical", "uniform"])
def test_kernel_rates_and_sparse_views_agree_with_the_estimate(mode: str) -> None:
    from detbal.systems import metropolis_chain, sample_agent

    counts = sample_agent(metropolis_chain(40, seed=2), 3000, seed=3)
    k = estimate_kernel(counts, mode, total_attempts=6000 if mode == "uniform" else None)
    assert np.array_equal(k.rates(k.count), k.T)
    assert np.array_equal(k.trials, np.where(k.kept, k.n0, 0.0))
    T = k.matrix()
    assert T.shape == (k.n_states, k.n_states)
    assert np.allclose(T[k.src, k.dst].A1, k.T)
    N = counts.count_matrix()
    assert N.sum() == counts.count.sum()
    assert N.diagonal().sum() == 0  # self-loops are not edges


def test_reverse_index_matches_brute_force() -> None:
    from detbal.analysis.counts import reverse_index

    rng = np.random.default_rng(4)
    pairs = {tuple(p) for p in rng.integers(0, 15, size=(60, 2)) if p[0] != p[1]}
    src = np.array([a for a, _ in pairs])
    dst = np.array([b for _, b in pairs])
    rev = reverse_index(src, dst, 15)
    where = {(a, b): i for i, (a, b) in enumerate(zip(src, dst))}
    for i, (a, b) in enumerate(zip(src, dst)):
        assert rev[i] == where.get((b, a), -1)


# -- state identity: text or canonical form ----------------------------------------------------

def _fit_like_store(path):
    """A store whose targets carry canonical forms: B1 and B2 are one form written two ways."""
    from detbal.store import Attempt, RunStore

    forms = {"A": "form-a", "B1": "form-b", "B2": "form-b", "C": "form-c"}
    outcomes = [("S", "A"), ("A", "B1"), ("A", "B2"), ("B1", "A"), ("B2", "A"), ("B1", "B2"),
                ("B2", "C"), ("C", "B1"), ("A", None)]
    store = RunStore(path)
    rid = store.create_run("fit", "m", "replay", {})
    for seq, (s, t) in enumerate(outcomes):
        store.record_attempt(rid, seq, Attempt(source=s, target=t, escape=None if t else "empty",
                                               target_canonical=forms.get(t) if t else None))
    return store


def test_canonical_states_merge_forms_and_turn_moves_between_them_into_self_loops(tmp_path) -> None:
    from detbal.analysis.counts import load_counts

    with _fit_like_store(tmp_path / "f.sqlite") as store:
        text = load_counts(store)
        merged = load_counts(store, states="canonical")
    assert set(text.states) == {"S", "A", "B1", "B2", "C"}
    # the seed "S" never was a target, so it has no stored form and keeps its text
    assert set(merged.states) == {"S", "form-a", "form-b", "form-c"}
    assert merged.total_attempts == text.total_attempts == 9
    edges = {(merged.states[s], merged.states[d]): c for s, d, c in zip(merged.src, merged.dst, merged.count)}
    assert edges == {("S", "form-a"): 1, ("form-a", "form-b"): 2, ("form-b", "form-a"): 2,
                     ("form-b", "form-c"): 1, ("form-c", "form-b"): 1}
    b = merged.states.index("form-b")
    assert merged.self_loops[b] == 1 and merged.attempts[b] == 4  # B1 -> B2 is a copy of the form
    # the same through a path, as `detbal analyze --states canonical` reads it
    again = load_counts(tmp_path / "f.sqlite", states="canonical")
    assert again.states == merged.states and list(again.count) == list(merged.count)


def test_canonical_states_need_a_store_and_a_known_identity(tmp_path) -> None:
    from detbal.analysis.counts import load_counts

    csv = tmp_path / "t.csv"
    csv.write_text("source,target,count\nA,B,2\nB,A,1\n")
    with pytest.raises(DetbalError, match="canonical states need a run store"):
        load_counts(csv, states="canonical")
    with pytest.raises(ValueError, match="states must be one of text, canonical"):
        load_counts(csv, states="forms")
