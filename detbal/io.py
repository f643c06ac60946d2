"""Import transitions from files and export counts and attempts.

Readers return :class:`~detbal.analysis.counts.CountRows`; nothing touches a store until a
file has been read completely, so a bad file can never damage existing data.

Accepted inputs:

* CSV/TSV with a header ``source,target[,count]`` (an empty target is an escape
  from that source; an optional ``escape`` column names its category);
* JSON Lines, one object per line with ``source``, ``target`` (null or "" for an
  escape) and optional ``count`` / ``escape``;
* the paper's word-task JSON, ``{word: [next words, ...]}``;
* the paper's fitting-agent JSON, ``[{"target_expression": ...,
  "source_expressions": [{"expression": ...}, ...]}, ...]``;
* Parquet with the CSV's columns (what ``detbal export counts`` writes).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from detbal.analysis.counts import CountColumns, CountRows
from detbal.errors import InputError
from detbal.store import Attempt, RunStore, is_run_store

_Row = tuple[str, str | None, str | None, int]


def read_text(path: Path) -> str:
    """Whole file as UTF-8 text, with one-line errors for the usual problems."""
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise InputError(path, "empty file")
    return text


def read_transitions(path: str | Path) -> CountRows:
    """Read any supported transition file (not a run store) into count rows."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows = _parse_parquet(path)
        if not rows:
            raise InputError(path, "no transitions found")
        return CountRows(rows=_aggregate(rows), label=str(path))
    text = read_text(path)
    if suffix in {".jsonl", ".ndjson"}:
        rows = _parse_jsonl(path, text)
    elif suffix == ".json":
        stripped = text.lstrip()
        rows = _parse_jsonl(path, text) if _looks_like_jsonl(stripped) else _parse_json(path, text)
    elif suffix in {".csv", ".tsv", ".txt"}:
        rows = _parse_delimited(path, text, "\t" if suffix == ".tsv" else None)
    else:
        stripped = text.lstrip()
        if stripped.startswith(("{", "[")):
            rows = _parse_jsonl(path, text) if _looks_like_jsonl(stripped) else _parse_json(path, text)
        else:
            rows = _parse_delimited(path, text, None)
    if not rows:
        raise InputError(path, "no transitions found")
    return CountRows(rows=_aggregate(rows), label=str(path))


def load_count_rows(path: str | Path) -> CountRows:
    """Count rows from a run store or any importable file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if is_run_store(path):
        with RunStore(path, create=False) as store:
            return store.count_rows()
    return read_transitions(path)


#: files at least this large go through pyarrow's CSV reader (:func:`read_count_columns`);
#: below it the csv module is quicker than importing pyarrow (~0.3 s) and its first call (~0.3 s)
FAST_CSV_BYTES = 2 << 20


def read_count_columns(path: str | Path, *, min_bytes: int = FAST_CSV_BYTES) -> CountColumns | None:
    """A large CSV/TSV file read by pyarrow into columns, or None.

    None (the caller then reads rows: :func:`load_count_rows`) when the file is smaller
    than ``min_bytes``, not a CSV/TSV, or anything the vectorised reader would not take
    exactly as the row reader does: a malformed line, a row without a source, a count
    that is not a plain positive integer, undecodable text.  The row reader then reads
    the file and reports its problem with a line number.  Values are stripped of
    surrounding whitespace and states keep the row reader's order, so both readers give
    the same :class:`~detbal.analysis.counts.TransitionCounts`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix not in {".csv", ".tsv", ".txt"} or not path.is_file() or path.stat().st_size < min_bytes:
            return None
        if is_run_store(path):
            return None
    except OSError:
        return None
    try:
        return _columns_pyarrow(path, suffix)
    except Exception:  # noqa: BLE001 - any doubt: the row reader decides and explains
        return None


def _header(path: Path, suffix: str) -> tuple[str, list[str]] | None:
    """Delimiter and column names of the first non-blank line, as the row reader reads them."""
    with path.open("rb") as fh:
        lines = fh.read(1 << 16).decode("utf-8-sig", errors="replace").splitlines()
    line = next((x for x in lines[:-1] if x.strip()), None)  # the last may be cut short
    if line is None:
        return None
    delimiter = "\t" if suffix == ".tsv" or "\t" in line else ","
    return delimiter, next(csv.reader([line], delimiter=delimiter))


def _columns_pyarrow(path: Path, suffix: str) -> CountColumns | None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pacsv

    head = _header(path, suffix)
    if head is None:
        return None
    delimiter, names = head
    fields = [f.strip().lower() for f in names]
    if len(set(fields)) != len(fields) or len(set(names)) != len(names) \
            or not {"source", "target"} <= set(fields):
        return None
    wanted = [names[fields.index(f)] for f in ("source", "target", "count") if f in fields]
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=False,
            include_columns=wanted),
    )
    table = table.rename_columns([f.strip().lower() for f in table.column_names])
    source = pc.utf8_trim_whitespace(table["source"]).combine_chunks()
    if len(source) == 0 or pc.any(pc.equal(source, "")).as_py():
        return None
    target = pc.utf8_trim_whitespace(table["target"]).combine_chunks()
    target = pc.if_else(pc.equal(target, ""), pa.scalar(None, pa.string()), target)
    if "count" in fields:
        text = pc.utf8_trim_whitespace(table["count"]).combine_chunks()
        count = pc.cast(pc.if_else(pc.equal(text, ""), "1", text), pa.int64()).to_numpy()
        if count.size and count.min() < 1:
            return None
    else:
        count = np.ones(len(source), dtype=np.int64)
    # states numbered in order of first appearance, row by row, source before target
    n = len(source)
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2] = np.arange(n)
    order[1::2] = np.arange(n, 2 * n)
    both = pa.concat_arrays([source, target]).take(pa.array(order))
    encoded = pc.dictionary_encode(both).combine_chunks() if isinstance(both, pa.ChunkedArray) \
        else pc.dictionary_encode(both)
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
    return CountColumns(states=tuple(encoded.dictionary.to_pylist()), source=codes[0::2],
                        target=codes[1::2], count=count, label=str(path))


def import_into_store(path: str | Path, store: RunStore) -> tuple[int, int]:
    """Read ``path`` fully, then add it to ``store`` as one new run in one transaction.

    Returns ``(run_id, attempts added)``.
    """
    rows = read_transitions(path)
    attempts = [
        Attempt(source=s, target=t, escape=e, count=n) for s, t, e, n in rows.rows
    ]
    # one outer transaction: the run row and its attempts land together or not at all
    with store.transaction():
        run_id = store.create_run("import", Path(path).name, "import", {"source_file": str(path)})
        store.record_attempts(run_id, attempts)
    return run_id, sum(a.count for a in attempts)


# -- parsers --------------------------------------------------------------
def _looks_like_jsonl(stripped: str) -> bool:
    """First line is a complete JSON object with a ``source`` key (one record per line)."""
    first_line = stripped.splitlines()[0].strip()
    if not (first_line.startswith("{") and first_line.endswith("}")):
        return False
    try:
        first = json.loads(first_line)
    except json.JSONDecodeError:
        return False
    return isinstance(first, dict) and "source" in first and not isinstance(first["source"], list)


def _aggregate(rows: list[_Row]) -> tuple[_Row, ...]:
    totals: Counter[tuple[str, str | None, str | None]] = Counter()
    for source, target, escape, count in rows:
        totals[(source, target, escape)] += count
    return tuple((s, t, e, n) for (s, t, e), n in totals.items())


def _outcome(source: str, target: Any, escape: Any) -> tuple[str | None, str | None]:
    target_text = "" if target is None else str(target).strip()
    if target_text:
        return target_text, None
    return None, (str(escape).strip() if escape else "imported")


def _count(path: Path, where: str, value: Any) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1
    if isinstance(value, bool):
        raise InputError(path, f"{where}: count {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{where}: count {value!r} is not a number") from None
    if not math.isfinite(number) or number != int(number) or number < 1:
        raise InputError(path, f"{where}: count {value!r} is not a positive integer")
    return int(number)


def _parse_delimited(path: Path, text: str, delimiter: str | None) -> list[_Row]:
    # leading blank lines would otherwise be taken as an empty header
    lines = text.splitlines(keepends=True)
    skipped = 0
    while skipped < len(lines) and not lines[skipped].strip():
        skipped += 1
    text = "".join(lines[skipped:])
    if delimiter is None:
        header_line = text.splitlines()[0]
        delimiter = "\t" if "\t" in header_line else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    missing = [c for c in ("source", "target") if c not in fields]
    if missing:
        raise InputError(
            path, f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            f" (header has: {', '.join(fields) or 'nothing'})"
        )
    reader.fieldnames = fields
    rows: list[_Row] = []
    try:
        for rec in reader:
            lineno = reader.line_num + skipped
            source = (rec.get("source") or "").strip()
            if not source:
                if not any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                    continue
                raise InputError(path, f"line {lineno}: empty source")
            target, escape = _outcome(source, rec.get("target"), rec.get("escape"))
            rows.append((source, target, escape, _count(path, f"line {lineno}", rec.get("count"))))
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV ({exc})") from None
    return rows


def _parse_parquet(path: Path) -> list[_Row]:
    """A table with ``source, target[, count][, escape]`` columns (what ``export counts`` writes)."""
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a file")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for bad files
        raise InputError(path, f"not a readable Parquet file ({type(exc).__name__})") from None
    fields = [c.strip().lower() for c in table.column_names]
    missing = [c for c in ("source", "target") if c not in fields]
    if missing:
        raise InputError(
            path, f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            f" (table has: {', '.join(fields) or 'nothing'})"
        )
    table = table.rename_columns(fields)
    data = {c: table.column(c).to_pylist() for c in ("source", "target", "escape", "count") if c in fields}
    rows: list[_Row] = []
    for i, source in enumerate(data["source"]):
        where = f"row {i + 1}"
        source_text = "" if source is None else str(source).strip()
        if not source_text:
            raise InputError(path, f"{where}: empty source")
        escape = data["escape"][i] if "escape" in data else None
        target, esc = _outcome(source_text, data["target"][i], escape)
        count = data["count"][i] if "count" in data else None
        rows.append((source_text, target, esc, _count(path, where, count)))
    return rows


def _parse_jsonl(path: Path, text: str) -> list[_Row]:
    rows: list[_Row] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"line {lineno}: malformed JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or "source" not in rec:
            raise InputError(path, f"line {lineno}: expected an object with a 'source' key")
        source = "" if rec["source"] is None else str(rec["source"]).strip()
        if not source:
            raise InputError(path, f"line {lineno}: empty source")
        target, escape = _outcome(source, rec.get("target"), rec.get("escape"))
        rows.append((source, target, escape, _count(path, f"line {lineno}", rec.get("count"))))
    return rows


def _parse_json(path: Path, text: str) -> list[_Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            path, f"malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        ) from None
    rows: list[_Row] = []
    if isinstance(data, dict):
        for source, targets in data.items():
            if not isinstance(targets, list):
                raise InputError(
                    path, f"word {source!r}: expected a list of next words, got {type(targets).__name__}"
                )
            for target in targets:
                t, e = _outcome(source, target, None)
                rows.append((str(source).strip(), t, e, 1))
        return rows
    if isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "target_expression" not in item:
                raise InputError(path, f"item {i}: expected an object with 'target_expression'")
            sources = item.get("source_expressions") or []
            if not isinstance(sources, list):
                raise InputError(path, f"item {i}: 'source_expressions' is not a list")
            target = item["target_expression"]
            for src in sources:
                expr = src.get("expression") if isinstance(src, dict) else src
                if expr is None or not str(expr).strip():
                    raise InputError(path, f"item {i}: a source has no 'expression'")
                t, e = _outcome(str(expr), target, None)
                rows.append((str(expr).strip(), t, e, 1))
        return rows
    raise InputError(path, "JSON must be a {word: [next words]} object or a list of records")


# -- export ---------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (for ``json.dumps``)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def export_table(records: list[dict[str, Any]], columns: list[str], out: str | Path) -> Path:
    """Write ``records`` to CSV or Parquet, chosen by the suffix of ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [r.get(c) for r in records] for c in columns})
        pq.write_table(table, out)
    else:
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
    return out


COUNT_COLUMNS = ["source", "target", "escape", "count"]
ATTEMPT_COLUMNS = [
    "id", "run_id", "seq", "source", "raw_answer", "target", "escape", "escape_detail",
    "count", "prompt_tokens", "completion_tokens", "latency_s", "finish_reason", "params",
    "prompt_hash", "started", "finished",
]


def export_store(store: RunStore, what: str, out: str | Path) -> Path:
    """Export ``counts`` or ``attempts`` of ``store`` to CSV or Parquet."""
    if what == "counts":
        records = [
            dict(zip(COUNT_COLUMNS, row)) for row in store.count_rows().rows
        ]
        return export_table(records, COUNT_COLUMNS, out)
    if what == "attempts":
        return export_table(list(store.iter_attempts()), ATTEMPT_COLUMNS, out)
    raise ValueError(f"unknown export {what!r}: use counts or attempts")
