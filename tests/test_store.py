"""The run store: schema, atomic writes, duplicates, aggregation, reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from detbal.analysis.counts import CountRows, TransitionCounts
from detbal.errors import InputError
from detbal.store import ESCAPE_CATEGORIES, Attempt, RunStore, utc_now


@pytest.fixture
def store(tmp_path: Path):
    with RunStore(tmp_path / "runs.sqlite") as s:
        yield s


def _full_attempt(source: str = "ATTITUDE", target: str = "PERSONAL") -> Attempt:
    return Attempt(
        source=source, target=target, raw_answer=f" {target.lower()} \n", count=1,
        prompt_tokens=41, completion_tokens=3, latency_s=0.125, finish_reason="stop",
        params={"temperature": 1.0, "top_p": 0.9}, prompt_hash="abc123",
        started=utc_now(), finished=utc_now(),
        target_features={"sum": 100, "letters": 8}, target_canonical=target.lower(),
    )


def _all_rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("runs", "states", "attempts")
        }


def test_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    RunStore(path).close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert {"meta", "runs", "states", "attempts"} <= tables
    assert mode.lower() == "wal"
    assert version is not None


def test_create_and_get_run(store: RunStore) -> None:
    rid = store.create_run("words", "gpt-test", "replay", {"temperature": 1.0, "seed": 3})
    run = store.get_run(rid)
    assert (run.task, run.model, run.backend) == ("words", "gpt-test", "replay")
    assert run.config == {"temperature": 1.0, "seed": 3}
    assert run.rng_state is None
    store.set_rng_state(rid, {"bit_generator": "PCG64", "state": [1, 2]})
    assert store.get_run(rid).rng_state == {"bit_generator": "PCG64", "state": [1, 2]}
    assert [r.id for r in store.runs()] == [rid]


def test_attempt_round_trip_all_fields(store: RunStore) -> None:
    rid = store.create_run("words", "m", "replay", {})
    a = _full_attempt()
    store.record_attempt(rid, 0, a, rng_state={"k": 1})
    esc = Attempt(source="ATTITUDE", escape="wrong_sum", escape_detail="sum 97",
                  raw_answer="CAT", count=2)
    store.record_attempt(rid, 1, esc)
    got = list(store.iter_attempts())
    assert len(got) == 2
    first, second = got
    assert first["run_id"] == rid and first["seq"] == 0
    assert first["source"] == "ATTITUDE" and first["target"] == "PERSONAL"
    assert first["escape"] is None
    for name in ("raw_answer", "count", "prompt_tokens", "completion_tokens", "latency_s",
                 "finish_reason", "prompt_hash", "started", "finished"):
        assert first[name] == getattr(a, name), name
    import json

    assert json.loads(first["params"]) == {"temperature": 1.0, "top_p": 0.9}
    assert second["target"] is None and second["escape"] == "wrong_sum"
    assert second["escape_detail"] == "sum 97" and second["count"] == 2
    assert store.get_run(rid).rng_state == {"k": 1}
    assert store.state_features() == {"PERSONAL": {"sum": 100, "letters": 8}}
    assert store.state_canonical() == {"PERSONAL": "personal"}


def test_state_features_update_keeps_one_row(store: RunStore) -> None:
    rid = store.create_run("words", "m", "replay", {})
    store.record_attempt(rid, 0, Attempt(source="A", target="B"))
    store.record_attempt(rid, 1, Attempt(source="A", target="B", target_features={"x": 1}))
    store.record_attempt(rid, 2, Attempt(source="B", target="A", target_canonical="a"))
    assert store.state_features() == {"B": {"x": 1}}
    assert store.state_canonical() == {"A": "a"}
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM states").fetchone()[0] == 2


@pytest.mark.parametrize("bad", [
    dict(source="A"),
    dict(source="A", target="B", escape="empty"),
    dict(source="A", target="B", count=0),
])
def test_attempt_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        Attempt(**bad)


def test_duplicate_seq_rejected_and_original_kept(store: RunStore) -> None:
    rid = store.create_run("words", "m", "replay", {})
    store.record_attempt(rid, 5, Attempt(source="A", target="B", raw_answer="b"))
    before = list(store.iter_attempts())
    with pytest.raises(sqlite3.IntegrityError):
        store.record_attempt(rid, 5, Attempt(source="C", target="D", raw_answer="d"),
                             rng_state={"should": "not be stored"})
    assert list(store.iter_attempts()) == before
    assert store.get_run(rid).rng_state is None
    assert store.stored_seqs(rid) == {5}
    assert store.next_seq(rid) == 6
    # the rolled-back states must not linger, and the store stays usable
    store.record_attempt(rid, 6, Attempt(source="C", target="A"))
    assert {r[0] for r in store.count_rows().rows} == {"A", "C"}
    # another run may reuse the same seq
    other = store.create_run("words", "m", "replay", {})
    store.record_attempt(other, 5, Attempt(source="A", target="B"))
    assert store.next_seq(other) == 6


def test_failing_transaction_leaves_nothing(store: RunStore) -> None:
    rid = store.create_run("words", "m", "replay", {})
    store.record_attempt(rid, 0, Attempt(source="A", target="B"))
    snapshot = _all_rows(store.path)

    def attempts():
        yield Attempt(source="A", target="NEW1")
        yield Attempt(source="NEW2", target="B")
        raise RuntimeError("crash in the middle of an import")

    with pytest.raises(RuntimeError):
        store.record_attempts(rid, attempts(), first_seq=1)
    assert _all_rows(store.path) == snapshot

    with pytest.raises(KeyError):
        with store.transaction():
            store.create_run("words", "m2", "replay", {})
            store.record_attempt(rid, 1, Attempt(source="X", target="Y"), rng_state=[1])
            raise KeyError("boom")
    assert _all_rows(store.path) == snapshot
    # states created in the failed transactions can be created again afterwards
    store.record_attempt(rid, 1, Attempt(source="X", target="NEW1"))
    assert store.stored_seqs(rid) == {0, 1}


def test_duplicate_inside_batch_rolls_back_whole_batch(store: RunStore) -> None:
    rid = store.create_run("words", "m", "replay", {})
    store.record_attempt(rid, 3, Attempt(source="A", target="B"))
    with pytest.raises(sqlite3.IntegrityError):
        store.record_attempts(rid, [Attempt(source="A", target="C")] * 5, first_seq=0)
    assert store.stored_seqs(rid) == {3}


def test_nested_transaction_commits_together(store: RunStore) -> None:
    with store.transaction():
        rid = store.create_run("words", "m", "replay", {})
        store.record_attempts(rid, [Attempt(source="A", target="B")] * 3)
    assert store.stored_seqs(rid) == {0, 1, 2}


def _fill(store: RunStore) -> tuple[int, int]:
    r1 = store.create_run("words", "m1", "replay", {})
    r2 = store.create_run("words", "m2", "replay", {})
    store.record_attempts(r1, [
        Attempt(source="A", target="B", prompt_tokens=10, completion_tokens=2),
        Attempt(source="A", target="B", count=3, prompt_tokens=10, completion_tokens=2),
        Attempt(source="A", target="A"),
        Attempt(source="A", escape="wrong_sum"),
        Attempt(source="B", target="A"),
        Attempt(source="B", escape="wrong_sum", count=2),
        Attempt(source="B", escape="not_a_word"),
    ])
    store.record_attempts(r2, [
        Attempt(source="A", target="B"),
        Attempt(source="C", target="B", prompt_tokens=5),
    ])
    return r1, r2


def test_count_rows_aggregates(store: RunStore) -> None:
    r1, r2 = _fill(store)
    rows = store.count_rows()
    assert isinstance(rows, CountRows)
    got = {(s, t, e): n for s, t, e, n in rows.rows}
    assert got == {
        ("A", "B", None): 5, ("A", "A", None): 1, ("A", None, "wrong_sum"): 1,
        ("B", "A", None): 1, ("B", None, "wrong_sum"): 2, ("B", None, "not_a_word"): 1,
        ("C", "B", None): 1,
    }
    only1 = {(s, t, e): n for s, t, e, n in store.count_rows([r1]).rows}
    assert only1[("A", "B", None)] == 4 and ("C", "B", None) not in only1
    only2 = {(s, t, e): n for s, t, e, n in store.count_rows([r2]).rows}
    assert only2 == {("A", "B", None): 1, ("C", "B", None): 1}


def _same_counts(a, b) -> None:
    assert a.states == b.states
    for name in ("src", "dst", "count", "attempts", "self_loops", "escapes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("runs", [None, [1], [2], [1, 2], [99]])
def test_count_columns_give_the_counts_of_count_rows(store: RunStore, runs) -> None:
    _fill(store)
    cols = store.count_columns(runs)
    rows = store.count_rows(runs)
    fast, slow = TransitionCounts.from_columns(cols), TransitionCounts.from_rows(rows)
    _same_counts(fast, slow)
    assert cols.label == rows.label == str(store.path)
    with store.transaction():  # inside a caller's transaction too
        _same_counts(TransitionCounts.from_columns(store.count_columns(runs)), slow)
    if runs is None:  # A first (the lowest source), escapes summed over their categories
        assert fast.states == ("A", "B", "C") and list(fast.escapes) == [1, 3, 0]
        assert list(cols.target[cols.source == 1]) == [-1, 0]  # B: its escapes, then B -> A


def test_load_counts_from_a_store_equals_the_row_path(tmp_path: Path, planted_study,
                                                      reversible_chain, monkeypatch) -> None:
    """A planted store (counts > 1, self-loops, escapes) plus a second run of single attempts
    in shuffled order (other escape categories, shared and new states): the column path
    numbers the states as the row path does, for every run selection, open or by path."""
    from detbal.analysis.counts import load_counts
    from support.stores import planted_store

    path = planted_store(planted_study[0], tmp_path / "p.sqlite")
    rows = reversible_chain[1].to_rows()  # states s0 .. s59 as in the planted chain: half renamed
    name = {s: s if int(s[1:]) % 2 else f"r{s}" for s in reversible_chain[1].states}
    rng = np.random.default_rng(5)
    singles = [Attempt(source=name[s], target=t and name[t],
                       escape=None if t else ("wrong_sum", "empty")[i % 2])
               for i, (s, t, n) in enumerate(rows) for _ in range(min(int(n), 3))]
    singles = [singles[i] for i in rng.permutation(len(singles))]
    with RunStore(path) as st:
        r2 = st.create_run("words", "m", "replay", {})
        st.record_attempts(r2, singles)
        monkeypatch.setattr("detbal.store._FETCH_ROWS", 97)  # many chunks, a run in several
        for runs in (None, [1], [r2]):
            slow = TransitionCounts.from_rows(st.count_rows(runs))
            _same_counts(TransitionCounts.from_columns(st.count_columns(runs)), slow)
        assert slow.total_attempts == len(singles)
        slow = TransitionCounts.from_rows(st.count_rows())
        _same_counts(load_counts(st), slow)
    _same_counts(load_counts(path), slow)
    assert slow.n_states > planted_study[0].counts.n_states and slow.escapes.sum() > 0


def test_run_summaries(store: RunStore) -> None:
    r1, r2 = _fill(store)
    by_id = {s.run.id: s for s in store.run_summaries()}
    s1, s2 = by_id[r1], by_id[r2]
    assert s1.attempts == 10
    assert s1.transitions == 6  # A->B x4, A->A, B->A
    assert s1.escapes == 4
    assert s1.escape_counts == {"not_a_word": 1, "wrong_sum": 3}
    assert s1.prompt_tokens == 20 and s1.completion_tokens == 4
    assert s1.valid_states == 2
    assert (s2.attempts, s2.transitions, s2.escapes, s2.prompt_tokens) == (2, 2, 0, 5)
    assert s2.escape_counts == {}


def test_escape_categories_cover_the_agents() -> None:
    for name in ("not_a_word", "wrong_sum", "same_word", "empty", "api_error", "imported"):
        assert name in ESCAPE_CATEGORIES


def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    with RunStore(path) as s:
        _fill(s)
        rows = s.count_rows().rows
        feats = s.state_features()
    with RunStore(path, create=False) as s:
        assert s.count_rows().rows == rows
        assert s.state_features() == feats
        assert len(s.runs()) == 2
        rid = s.runs()[0].id
        s.record_attempt(rid, s.next_seq(rid), Attempt(source="A", target="C"))
    with RunStore(path) as s:
        assert sum(n for *_, n in s.count_rows().rows) == 13


def test_empty_file_is_a_fresh_store(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    path.write_bytes(b"")
    with RunStore(path) as s:
        rid = s.create_run("words", "m", "replay", {})
        s.record_attempt(rid, 0, Attempt(source="A", target="B"))
    with RunStore(path, create=False) as s:
        assert s.stored_seqs(rid) == {0}


@pytest.mark.parametrize("content", [
    b"source,target\nA,B\n",
    b"\x00\x01\x02 not sqlite at all",
    b"SQLite format 3\x00" + b"\xff" * 200,
])
def test_non_store_file_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.sqlite"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        RunStore(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content  # never modified


def test_foreign_sqlite_database_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (name TEXT)")
        conn.execute("INSERT INTO runs VALUES ('not ours')")
    conn.close()
    with pytest.raises(InputError, match="not a detbal run store"):
        RunStore(path)
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"runs"}


def test_missing_store_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such run store"):
        RunStore(tmp_path / "absent.sqlite", create=False)
    with pytest.raises(InputError, match="directory"):
        RunStore(tmp_path)
    with pytest.raises(InputError):
        RunStore(tmp_path / "no" / "such" / "dir" / "runs.sqlite")


def test_inner_failure_rolls_back_only_the_inner_part(store: RunStore) -> None:
    rid = store.create_run("words", "m", "replay", {})
    with store.transaction():
        store.record_attempt(rid, 0, Attempt(source="A", target="B"))
        with pytest.raises(sqlite3.IntegrityError):
            store.record_attempt(rid, 0, Attempt(source="NEW", target="B"))
        store.record_attempt(rid, 1, Attempt(source="NEW", target="A"))
    assert store.stored_seqs(rid) == {0, 1}
    assert {r[0] for r in store.count_rows().rows} == {"A", "NEW"}


def test_threads_share_one_store(store: RunStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rid = store.create_run("words", "m", "replay", {})

    def work(worker: int) -> None:
        for i in range(40):
            seq = worker * 1000 + i
            store.record_attempt(rid, seq, Attempt(source=f"S{i % 7}", target=f"T{worker}"),
                                 rng_state={"seq": seq})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert len(store.stored_seqs(rid)) == 160
    assert sum(n for *_, n in store.count_rows().rows) == 160
