"""The vectorised reader of large CSV files (pyarrow) gives what the row reader gives, and
leaves every file it would read differently to the row reader (and its line numbers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import detbal
from detbal.analysis.counts import TransitionCounts
from detbal.errors import InputError
from detbal.io import load_count_rows, read_count_columns


def _equal(a: TransitionCounts, b: TransitionCounts) -> None:
    assert a.states == b.states
    for name in ("src", "dst", "count", "attempts", "self_loops", "escapes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _write(tmp_path: Path, text: str | bytes, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("name, text", [
    ("plain.csv", "source,target,count\na,b,2\nb,a,1\na,,3\nb,b,4\nc,a,1\na,b,5\n"),
    ("spaces.csv", "\n\nSource , Target\n a , b\nb,a\n\"c,d\",a\n a ,\n"),  # no count: 1 each
    ("numbers.csv", "\ufeffsource,target,count,escape\n1,2,3,\n2,,1,refused\n007,1,2,x\n2,007, 4 ,\n"),
    ("tabs.tsv", "source\ttarget\tcount\tnote\na\tb\t2\tx\nb\t\t1\t\nb\ta\t\t\n"),
    ("tabs.txt", "target\tsource\ncat\tdog\ndog\tcat\n"),
])
def test_columns_equal_rows(tmp_path: Path, name: str, text: str) -> None:
    path = _write(tmp_path, text, name)
    cols = read_count_columns(path, min_bytes=0)
    assert cols is not None
    _equal(TransitionCounts.from_columns(cols), TransitionCounts.from_rows(load_count_rows(path)))


def test_columns_equal_rows_on_a_sampled_chain(tmp_path: Path, driven_chain) -> None:
    counts = driven_chain[1]
    rows = counts.to_rows()
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in rng.permutation(len(rows))]  # states appear in another order
    path = _write(tmp_path, "source,target,count\n" + "".join(
        f"{s},{'' if t is None else t},{n}\n" for s, t, n in rows))
    cols = read_count_columns(path, min_bytes=0)
    assert cols is not None
    fast = TransitionCounts.from_columns(cols)
    _equal(fast, TransitionCounts.from_rows(load_count_rows(path)))
    assert sorted(fast.states) == sorted(counts.states) and fast.total_attempts == counts.total_attempts


@pytest.mark.parametrize("text", [
    "source,target,count\na,b,2.0\n",        # the row reader takes 2.0 as 2
    "source,target,count\na,b,2,9\n",        # a field too many
    "source,target,count\na,b,0\n",          # not a positive count
    "source,target,count\na,b,x\n",
    "source,target,count\n,b,2\n",           # empty source
    "source,target,count\n,,\na,b,1\n",      # a blank record the row reader skips
    "source,count\na,2\n",                   # no target column
    "source,target,count,escape\na,b,1\n",  # a field short (the row reader fills it)
    b"source,target\na,\xff\n",              # not UTF-8
])
def test_anything_doubtful_goes_to_the_row_reader(tmp_path: Path, text: str | bytes) -> None:
    assert read_count_columns(_write(tmp_path, text), min_bytes=0) is None


def test_small_files_and_other_formats_are_left_to_the_row_reader(tmp_path: Path) -> None:
    csv = _write(tmp_path, "source,target\na,b\n")
    assert read_count_columns(csv) is None  # below FAST_CSV_BYTES: pyarrow's import would cost more
    assert read_count_columns(_write(tmp_path, '{"source": "a", "target": "b"}\n', "t.jsonl"), min_bytes=0) is None
    assert read_count_columns(tmp_path / "missing.csv", min_bytes=0) is None


def test_load_counts_takes_the_fast_path_with_the_row_readers_errors(tmp_path: Path, monkeypatch) -> None:
    import detbal.io

    monkeypatch.setattr(detbal.io, "FAST_CSV_BYTES", 0)
    monkeypatch.setattr(detbal.io.read_count_columns, "__kwdefaults__", {"min_bytes": 0})
    good = _write(tmp_path, "source,target,count\na,b,2\nb,a,1\nb,,1\n")
    counts = detbal.load_counts(good)
    assert counts.states == ("a", "b") and counts.escapes.tolist() == [0.0, 1.0]
    bad = _write(tmp_path, "source,target,count\na,b,2\na,b,2.5\n", "bad.csv")
    with pytest.raises(InputError, match="line 3: count '2.5' is not a positive integer"):
        detbal.load_counts(bad)
