"""Importers (CSV/TSV/JSON Lines/the paper's JSON) and exports (CSV/Parquet)."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from detbal.errors import InputError
from detbal.io import (
    ATTEMPT_COLUMNS,
    COUNT_COLUMNS,
    export_store,
    import_into_store,
    load_count_rows,
    read_transitions,
)
from detbal.store import Attempt, RunStore

DATA = Path(__file__).parent / "data"

# (source, target, escape) -> count for the small table below
EXPECTED = {
    ("A", "B", None): 3,
    ("B", "A", None): 1,
    ("A", "A", None): 2,
    ("B", None, "imported"): 4,
    ("C", "A", None): 1,
}


def _as_dict(rows) -> dict:
    out: dict = {}
    for s, t, e, n in rows.rows:
        out[(s, t, e)] = out.get((s, t, e), 0) + n
    return out


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


DELIMITED = {
    "counts.csv": "source,target,count\nA,B,2\nA,B,1\nB,A,1\nA,A,2\nB,,4\nC,A,\n",
    "counts.tsv": "source\ttarget\tcount\nA\tB\t3\nB\tA\t1\nA\tA\t2\nB\t\t4\nC\tA\t1\n",
    "nocount.csv": "source,target\nA,B\nA,B\nA,B\nB,A\nA,A\nA,A\nB,\nB,\nB,\nB,\nC,A\n",
    "spaced.csv": "\n\n Source , TARGET ,Count\nA, B ,3\nB,A,1\nA,A,2\n\nB,,4\nC,A,1\n",
    "tabbed.txt": "source\ttarget\tcount\nA\tB\t3\nB\tA\t1\nA\tA\t2\nB\t\t4\nC\tA\t1\n",
    "bom.csv": "\ufeffsource,target,count\r\nA,B,3\r\nB,A,1\r\nA,A,2\r\nB,,4\r\nC,A,1\r\n",
    "noext": "source,target,count\nA,B,3\nB,A,1\nA,A,2\nB,,4\nC,A,1\n",
}


@pytest.mark.parametrize("name", sorted(DELIMITED))
def test_delimited(tmp_path: Path, name: str) -> None:
    rows = read_transitions(_write(tmp_path, name, DELIMITED[name]))
    assert _as_dict(rows) == EXPECTED
    assert rows.label.endswith(name)


def test_csv_escape_column_names_category(tmp_path: Path) -> None:
    path = _write(tmp_path, "e.csv", "source,target,escape,count\nA,,wrong_sum,2\nA,,,1\nA,B,,1\n")
    assert _as_dict(read_transitions(path)) == {
        ("A", None, "wrong_sum"): 2, ("A", None, "imported"): 1, ("A", "B", None): 1,
    }


def test_csv_quoted_fields(tmp_path: Path) -> None:
    text = 'source,target,count\n"param1*x, y","exp(param1)",2\n"a ""b""",c,1\n'
    rows = _as_dict(read_transitions(_write(tmp_path, "q.csv", text)))
    assert rows == {("param1*x, y", "exp(param1)", None): 2, ('a "b"', "c", None): 1}


JSONL = "\n".join([
    json.dumps({"source": "A", "target": "B", "count": 2}),
    json.dumps({"source": "A", "target": "B"}),
    "",
    json.dumps({"source": "B", "target": "A"}),
    json.dumps({"source": "A", "target": "A", "count": 2}),
    json.dumps({"source": "B", "target": None, "count": 3}),
    json.dumps({"source": "B", "target": ""}),
    json.dumps({"source": "C", "target": "A", "count": "1"}),
]) + "\n"


@pytest.mark.parametrize("name", ["t.jsonl", "t.ndjson", "t.json", "t"])
def test_json_lines(tmp_path: Path, name: str) -> None:
    assert _as_dict(read_transitions(_write(tmp_path, name, JSONL))) == EXPECTED


def test_single_line_jsonl_without_suffix(tmp_path: Path) -> None:
    path = _write(tmp_path, "one", json.dumps({"source": "A", "target": "B", "count": 3}))
    assert _as_dict(read_transitions(path)) == {("A", "B", None): 3}


def test_jsonl_escape_category(tmp_path: Path) -> None:
    path = _write(tmp_path, "e.jsonl", json.dumps({"source": "A", "escape": "not_a_word"}) + "\n")
    assert _as_dict(read_transitions(path)) == {("A", None, "not_a_word"): 1}


@pytest.mark.parametrize("name", ["words_paper.json", "words_paper_copy"])
def test_paper_word_json(tmp_path: Path, name: str) -> None:
    path = DATA / "words_paper.json"
    if name != path.name:
        path = _write(tmp_path, name, path.read_text())
    assert _as_dict(read_transitions(path)) == {
        ("BUZZY", "ATTITUDE", None): 2, ("BUZZY", "TURKEY", None): 1,
        ("BUZZY", "BUZZY", None): 1, ("BUZZY", None, "imported"): 1,
        ("ATTITUDE", "PERSONAL", None): 2, ("ATTITUDE", "PROBLEMS", None): 1,
        ("PERSONAL", "ATTITUDE", None): 1,
    }


def test_paper_fit_json() -> None:
    lin, prop = "param1*log_v_k_nu + param2", "param1*log_v_k_nu"
    tanh = "param1*tanh(log_v_k_nu - param2) + param3"
    assert _as_dict(read_transitions(DATA / "fit_paper.json")) == {
        (prop, lin, None): 2, (lin, prop, None): 1, (lin, tanh, None): 1,
    }


def test_fit_json_plain_string_sources(tmp_path: Path) -> None:
    path = _write(tmp_path, "f.json", json.dumps(
        [{"target_expression": "b", "source_expressions": ["a", {"expression": "c"}]}]))
    assert _as_dict(read_transitions(path)) == {("a", "b", None): 1, ("c", "b", None): 1}


BAD = {
    "missing_target.csv": ("source,count\nA,1\n", "missing column target"),
    "missing_both.csv": ("from,to\nA,B\n", "missing columns source, target"),
    "empty.csv": ("", "empty file"),
    "blank.csv": ("  \n\n", "empty file"),
    "header_only.csv": ("source,target\n", "no transitions"),
    "badcount.csv": ("source,target,count\nA,B,2\nA,C,many\n", "line 3: count 'many'"),
    "fraction.csv": ("source,target,count\nA,B,2.5\n", "not a positive integer"),
    "zero.csv": ("source,target,count\nA,B,0\n", "not a positive integer"),
    "negative.tsv": ("source\ttarget\tcount\nA\tB\t-3\n", "not a positive integer"),
    "nan.csv": ("source,target,count\nA,B,nan\n", "not a positive integer"),
    "inf.csv": ("source,target,count\nA,B,inf\n", "not a positive integer"),
    "huge.csv": ("source,target,count\nA,B,1e400\n", "not a positive integer"),
    "nosource.csv": ("source,target\nA,B\n,C\n", "line 3: empty source"),
    "malformed.json": ('{"A": ["B", "C"', "malformed JSON"),
    "scalar.json": ("42", "JSON must be"),
    "notlist.json": ('{"A": "B"}', "expected a list"),
    "noexpr.json": ('[{"target_expression": "x", "source_expressions": [{"score": 1}]}]',
                    "no 'expression'"),
    "notarget.json": ('[{"source_expressions": [{"expression": "x"}]}]', "target_expression"),
    "empty_list.json": ("[]", "no transitions"),
    "badline.jsonl": ('{"source": "A", "target": "B"}\n{"source": "A", "target"\n',
                      "line 2: malformed JSON"),
    "nosource.jsonl": ('{"target": "B"}\n', "line 1: expected an object with a 'source'"),
    "nullsource.jsonl": ('{"source": null, "target": "B"}\n', "line 1: empty source"),
    "boolcount.jsonl": ('{"source": "A", "target": "B", "count": true}\n', "not a number"),
    "listcount.jsonl": ('{"source": "A", "target": "B", "count": [1]}\n', "not a number"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_names_file_and_problem(tmp_path: Path, name: str) -> None:
    text, problem = BAD[name]
    path = _write(tmp_path, name, text)
    with pytest.raises(InputError) as info:
        read_transitions(path)
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert "\n" not in message


def test_non_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, "latin1.csv", "source,target\nCAF\xc9,TEA\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_transitions(path)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as info:
        read_transitions(tmp_path / "absent.csv")
    assert "absent.csv" in str(info.value)
    with pytest.raises(InputError, match="no such file"):
        load_count_rows(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="directory"):
        read_transitions(tmp_path)
    with pytest.raises(InputError, match="directory"):
        load_count_rows(tmp_path)


def _store_snapshot(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("meta", "runs", "states", "attempts")}
    finally:
        conn.close()


def test_import_into_store_and_load(tmp_path: Path) -> None:
    path = _write(tmp_path, "counts.csv", DELIMITED["counts.csv"])
    db = tmp_path / "runs.sqlite"
    with RunStore(db) as store:
        run_id, added = import_into_store(path, store)
        assert added == sum(EXPECTED.values())
        run = store.get_run(run_id)
        assert run.task == "import" and run.model == "counts.csv"
        assert _as_dict(store.count_rows([run_id])) == EXPECTED
    assert _as_dict(load_count_rows(db)) == EXPECTED


@pytest.mark.parametrize("name", ["badcount.csv", "malformed.json", "empty.csv", "nullsource.jsonl"])
def test_bad_import_leaves_store_unchanged(tmp_path: Path, name: str) -> None:
    db = tmp_path / "runs.sqlite"
    with RunStore(db) as store:
        rid = store.create_run("words", "m", "replay", {})
        store.record_attempts(rid, [Attempt(source="A", target="B"), Attempt(source="B", escape="empty")])
    before = _store_snapshot(db)
    text, _ = BAD[name]
    bad = _write(tmp_path, name, text)
    with RunStore(db) as store:
        with pytest.raises(InputError):
            import_into_store(bad, store)
        with pytest.raises(InputError):
            import_into_store(tmp_path / "absent.csv", store)
    assert _store_snapshot(db) == before


def test_import_failing_mid_write_leaves_no_empty_run(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "runs.sqlite"
    path = _write(tmp_path, "counts.csv", DELIMITED["counts.csv"])
    with RunStore(db) as store:
        rid = store.create_run("words", "m", "replay", {})
        store.record_attempt(rid, 0, Attempt(source="A", target="B"))
        before = _store_snapshot(db)

        def broken(*args, **kwargs):
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(store, "record_attempts", broken)
        with pytest.raises(sqlite3.OperationalError):
            import_into_store(path, store)
    assert _store_snapshot(db) == before


def _filled_store(tmp_path: Path) -> Path:
    db = tmp_path / "runs.sqlite"
    with RunStore(db) as store:
        rid = store.create_run("words", "m", "replay", {"temperature": 0.7})
        store.record_attempts(rid, [
            Attempt(source="A", target="B", raw_answer="b", prompt_tokens=12, completion_tokens=2,
                    latency_s=0.5, finish_reason="stop", params={"t": 0.7}, prompt_hash="h",
                    started="2025-01-01T00:00:00+00:00", finished="2025-01-01T00:00:01+00:00"),
            Attempt(source="A", target="B", count=2),
            Attempt(source="A", target="A"),
            Attempt(source="B", escape="wrong_sum", escape_detail="sum 99", raw_answer="XYZ"),
            Attempt(source="B", target="A, the comma"),
        ])
    return db


def test_export_counts_csv_round_trips(tmp_path: Path) -> None:
    db = _filled_store(tmp_path)
    out = tmp_path / "out" / "counts.csv"
    with RunStore(db) as store:
        assert export_store(store, "counts", out) == out
        expected = _as_dict(store.count_rows())
    with out.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == COUNT_COLUMNS
    assert _as_dict(read_transitions(out)) == expected


def test_export_counts_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    db = _filled_store(tmp_path)
    out = tmp_path / "counts.parquet"
    with RunStore(db) as store:
        export_store(store, "counts", out)
        expected = {(s, t, e): n for s, t, e, n in store.count_rows().rows}
    table = pq.read_table(out)
    assert table.column_names == COUNT_COLUMNS
    got = {(r["source"], r["target"], r["escape"]): r["count"] for r in table.to_pylist()}
    assert got == expected
    # and it imports back
    assert _as_dict(read_transitions(out)) == expected
    assert _as_dict(load_count_rows(out)) == expected


def test_parquet_bad_input(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    garbage = _write(tmp_path, "garbage.parquet", b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file") as info:
        read_transitions(garbage)
    assert str(garbage) in str(info.value)
    nocol = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"source": ["A"], "count": [2]}), nocol)
    with pytest.raises(InputError, match="missing column target"):
        read_transitions(nocol)
    badcount = tmp_path / "badcount.parquet"
    pq.write_table(pa.table({"source": ["A"], "target": ["B"], "count": [0]}), badcount)
    with pytest.raises(InputError, match="row 1: count 0"):
        read_transitions(badcount)
    with pytest.raises(InputError, match="no such file"):
        read_transitions(tmp_path / "absent.parquet")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_attempts(tmp_path: Path, suffix: str) -> None:
    db = _filled_store(tmp_path)
    out = tmp_path / f"attempts{suffix}"
    with RunStore(db) as store:
        export_store(store, "attempts", out)
        expected = list(store.iter_attempts())
    if suffix == ".parquet":
        pq = pytest.importorskip("pyarrow.parquet")
        table = pq.read_table(out)
        assert table.column_names == ATTEMPT_COLUMNS
        assert table.to_pylist() == expected
    else:
        with out.open(newline="", encoding="utf-8") as fh:
            got = list(csv.DictReader(fh))
        assert list(got[0]) == ATTEMPT_COLUMNS
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert {k: ("" if v is None else str(v)) for k, v in e.items()} == g
        assert json.loads(got[0]["params"]) == {"t": 0.7}


def test_export_unknown_kind(tmp_path: Path) -> None:
    db = _filled_store(tmp_path)
    with RunStore(db) as store, pytest.raises(ValueError):
        export_store(store, "states", tmp_path / "x.csv")
