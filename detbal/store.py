"""The run store: one SQLite file per study (WAL mode).

Schema (see docs/store.md for the column-by-column description)::

    runs(id, task, model, backend, config, code_version, created, rng_state)
    states(id, text UNIQUE, canonical, features)
    attempts(id, run_id, seq, source_id, raw_answer, target_id, escape,
             escape_detail, count, prompt_tokens, completion_tokens,
             latency_s, finish_reason, params, prompt_hash,
             started, finished)

An attempt is one LLM call (or one imported aggregated row, ``count`` > 1) from a
source state.  Exactly one of ``target_id`` and ``escape`` is set.  ``(run_id,
seq)`` is unique, so a resumed run can never store the same attempt twice.
Every write happens inside one transaction; a crash leaves either the whole
attempt (with the run's generator state) or nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detbal import __version__
from detbal.errors import DetbalError, InputError

if TYPE_CHECKING:
    from detbal.analysis.counts import CountColumns, CountRows

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: attempts read per query by :meth:`RunStore.count_columns` (bounds the text SQLite builds)
_FETCH_ROWS = 1 << 20

ESCAPE_CATEGORIES = (
    "not_a_word",
    "wrong_sum",
    "same_word",
    "empty",
    "api_error",
    "invalid_ansatz",
    "fit_failed",
    "no_majority",
    "imported",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    backend TEXT NOT NULL,
    config TEXT NOT NULL,
    code_version TEXT NOT NULL,
    created TEXT NOT NULL,
    rng_state TEXT
);
CREATE TABLE IF NOT EXISTS states (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE,
    canonical TEXT,
    features TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    source_id INTEGER NOT NULL REFERENCES states(id),
    raw_answer TEXT,
    target_id INTEGER REFERENCES states(id),
    "escape" TEXT,
    escape_detail TEXT,
    count INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s REAL,
    finish_reason TEXT,
    params TEXT,
    prompt_hash TEXT,
    started TEXT,
    finished TEXT,
    CHECK ((target_id IS NULL) <> ("escape" IS NULL)),
    UNIQUE (run_id, seq)
);
CREATE INDEX IF NOT EXISTS attempts_source ON attempts(source_id);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts(run_id);
"""


def utc_now() -> str:
    """ISO-8601 UTC timestamp with microseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Attempt:
    """One outcome from a source state: a new state (``target``) or an escape."""

    source: str
    target: str | None = None
    escape: str | None = None
    escape_detail: str | None = None
    raw_answer: str | None = None
    count: int = 1
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    params: Mapping[str, Any] | None = None
    prompt_hash: str | None = None
    started: str | None = None
    finished: str | None = None
    target_features: Mapping[str, Any] | None = None
    target_canonical: str | None = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.escape is None):
            raise ValueError("an attempt has exactly one of target and escape")
        if self.count < 1:
            raise ValueError("count must be >= 1")


@dataclass(frozen=True)
class RunRecord:
    id: int
    task: str
    model: str
    backend: str
    config: dict[str, Any]
    code_version: str
    created: str
    rng_state: Any | None


@dataclass(frozen=True)
class RunSummary:
    """Per-run totals for ``detbal runs``."""

    run: RunRecord
    attempts: int
    transitions: int
    escapes: int
    valid_states: int
    prompt_tokens: int
    completion_tokens: int
    escape_counts: dict[str, int] = field(default_factory=dict)


class RunStore:
    """A SQLite run store.  Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise InputError(self.path, "no such run store")
        if self.path.is_dir():
            raise InputError(self.path, "is a directory, expected a run store file")
        # an empty file (e.g. from mkstemp) is a fresh store; anything else must be SQLite
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh and not is_run_store(self.path):
            raise InputError(self.path, "not a detbal run store (SQLite)")
        if fresh and not create:
            raise InputError(self.path, "empty file, not a detbal run store")
        try:
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=30.0, check_same_thread=False
            )
            if not fresh and not _is_detbal_schema(self._conn):
                self._conn.close()
                raise InputError(self.path, "an SQLite database, but not a detbal run store")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        except sqlite3.DatabaseError as exc:
            raise InputError(self.path, f"cannot open as a run store ({exc})") from None
        self._state_ids: dict[str, int] = {}
        self._depth = 0
        self._lock = threading.RLock()

    # -- plumbing ---------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception.

        Transactions nest: inside another one this is a ``SAVEPOINT``, so a caller
        can group several store calls (a run and its attempts) into one atomic write.
        """
        with self._lock:  # one writer thread at a time on the shared connection
            with self._transaction() as conn:
                yield conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        cache_before = dict(self._state_ids)
        nested = self._conn.in_transaction
        if nested:
            self._depth += 1
            name = f"detbal_sp{self._depth}"
            self._conn.execute(f"SAVEPOINT {name}")
        else:
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            if nested:
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
            else:
                self._conn.execute("ROLLBACK")
            self._state_ids = cache_before
            raise
        else:
            if nested:
                self._conn.execute(f"RELEASE {name}")
            else:
                self._conn.execute("COMMIT")
        finally:
            if nested:
                self._depth -= 1

    # -- runs -------------------------------------------------------------
    def create_run(
        self, task: str, model: str, backend: str, config: Mapping[str, Any]
    ) -> int:
        """Insert a run and return its id.  ``config`` must not contain secrets."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO runs(task, model, backend, config, code_version, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (task, model, backend, json.dumps(dict(config), sort_keys=True),
                 __version__, utc_now()),
            )
            return int(cur.lastrowid)

    def get_run(self, run_id: int) -> RunRecord:
        row = self._conn.execute(
            "SELECT id, task, model, backend, config, code_version, created, rng_state"
            " FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise DetbalError(f"{self.path}: no run with id {run_id}")
        return _run_record(row)

    def runs(self) -> list[RunRecord]:
        rows = self._conn.execute(
            "SELECT id, task, model, backend, config, code_version, created, rng_state"
            " FROM runs ORDER BY id"
        ).fetchall()
        return [_run_record(r) for r in rows]

    def set_rng_state(self, run_id: int, state: Any) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET rng_state = ? WHERE id = ?", (json.dumps(state), run_id)
            )

    # -- states -----------------------------------------------------------
    def _state_id(
        self,
        text: str,
        features: Mapping[str, Any] | None = None,
        canonical: str | None = None,
    ) -> int:
        """Id of ``text`` in ``states``, inserting it; call inside a transaction."""
        sid = self._state_ids.get(text)
        if sid is not None and features is None and canonical is None:
            return sid
        row = self._conn.execute("SELECT id FROM states WHERE text = ?", (text,)).fetchone()
        if row is None:
            cur = self._conn.execute(
                "INSERT INTO states(text, canonical, features) VALUES (?, ?, ?)",
                (text, canonical, json.dumps(dict(features)) if features else None),
            )
            sid = int(cur.lastrowid)
        else:
            sid = int(row[0])
            if features is not None or canonical is not None:
                self._conn.execute(
                    "UPDATE states SET features = COALESCE(?, features),"
                    " canonical = COALESCE(?, canonical) WHERE id = ?",
                    (json.dumps(dict(features)) if features else None, canonical, sid),
                )
        self._state_ids[text] = sid
        return sid

    def describe_state(self, text: str, *, canonical: str | None = None,
                       features: Mapping[str, Any] | None = None) -> None:
        """Record ``text``'s canonical form and features (a state that may occur only as a
        source, such as the fit agent's seed ansatz; targets get theirs with their attempt)."""
        with self.transaction():
            self._state_id(text, features, canonical)

    def state_features(self) -> dict[str, dict[str, Any]]:
        """``{state text: features}`` for every state that has features."""
        rows = self._conn.execute(
            "SELECT text, features FROM states WHERE features IS NOT NULL"
        ).fetchall()
        return {text: json.loads(feat) for text, feat in rows}

    def state_canonical(self) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT text, canonical FROM states WHERE canonical IS NOT NULL"
        ).fetchall()
        return dict(rows)

    # -- attempts ---------------------------------------------------------
    def next_seq(self, run_id: int) -> int:
        row = self._conn.execute(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM attempts WHERE run_id = ?", (run_id,)
        ).fetchone()
        return int(row[0])

    def stored_seqs(self, run_id: int) -> set[int]:
        rows = self._conn.execute("SELECT seq FROM attempts WHERE run_id = ?", (run_id,))
        return {int(r[0]) for r in rows}

    def record_attempt(
        self,
        run_id: int,
        seq: int,
        attempt: Attempt,
        *,
        rng_state: Any | None = None,
    ) -> int:
        """Store one attempt (and optionally the run's generator state) atomically.

        Raises :class:`sqlite3.IntegrityError` if ``(run_id, seq)`` is already
        stored, so a resumed run cannot duplicate an attempt.
        """
        return self.record_unit(run_id, [(seq, attempt)], rng_state=rng_state)[0]

    def record_unit(
        self,
        run_id: int,
        attempts: Sequence[tuple[int, Attempt]],
        *,
        rng_state: Any | None = None,
    ) -> list[int]:
        """Store one unit of an agent's work, ``[(seq, attempt), ...]``, in ONE transaction
        together with the run's generator state; returns the attempt ids.

        Either every attempt of the unit (e.g. the 1..n attempts of one model call of
        the fit agent) is stored, or, on any error, none is: a crash cannot leave half a
        unit.  Raises :class:`sqlite3.IntegrityError` (and stores nothing) if one of
        the seqs is already stored.
        """
        with self.transaction():
            ids = [self._insert_attempt(run_id, seq, attempt) for seq, attempt in attempts]
            if rng_state is not None:
                self._conn.execute(
                    "UPDATE runs SET rng_state = ? WHERE id = ?",
                    (json.dumps(rng_state), run_id),
                )
        return ids

    def record_attempts(self, run_id: int, attempts: Iterable[Attempt], first_seq: int = 0) -> int:
        """Store many attempts in one transaction (imports); returns how many."""
        n = 0
        with self.transaction():
            for i, attempt in enumerate(attempts):
                self._insert_attempt(run_id, first_seq + i, attempt)
                n += 1
        return n

    def _insert_attempt(self, run_id: int, seq: int, a: Attempt) -> int:
        source_id = self._state_id(a.source)
        target_id = (
            self._state_id(a.target, a.target_features, a.target_canonical)
            if a.target is not None
            else None
        )
        cur = self._conn.execute(
            "INSERT INTO attempts(run_id, seq, source_id, raw_answer, target_id, \"escape\","
            " escape_detail, count, prompt_tokens, completion_tokens, latency_s,"
            " finish_reason, params, prompt_hash, started, finished)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id, seq, source_id, a.raw_answer, target_id, a.escape,
                a.escape_detail, a.count, a.prompt_tokens, a.completion_tokens,
                a.latency_s, a.finish_reason,
                json.dumps(dict(a.params), sort_keys=True) if a.params is not None else None,
                a.prompt_hash, a.started, a.finished,
            ),
        )
        return int(cur.lastrowid)

    def iter_attempts(self, run_ids: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
        """Every attempt as a dict with source/target texts, in insertion order."""
        where, args = _run_filter(run_ids)
        cur = self._conn.execute(
            "SELECT a.id, a.run_id, a.seq, s.text, a.raw_answer, t.text, a.\"escape\","
            " a.escape_detail, a.count, a.prompt_tokens, a.completion_tokens, a.latency_s,"
            " a.finish_reason, a.params, a.prompt_hash, a.started, a.finished"
            " FROM attempts a JOIN states s ON s.id = a.source_id"
            " LEFT JOIN states t ON t.id = a.target_id" + where + " ORDER BY a.id",
            args,
        )
        names = [
            "id", "run_id", "seq", "source", "raw_answer", "target", "escape",
            "escape_detail", "count", "prompt_tokens", "completion_tokens", "latency_s",
            "finish_reason", "params", "prompt_hash", "started", "finished",
        ]
        for row in cur:
            yield dict(zip(names, row))

    def count_rows(self, run_ids: Sequence[int] | None = None) -> CountRows:
        """Aggregated ``(source, target, escape, count)`` rows for the analysis."""
        from detbal.analysis.counts import CountRows

        where, args = _run_filter(run_ids)
        rows = self._conn.execute(
            "SELECT s.text, t.text, a.\"escape\", SUM(a.count)"
            " FROM attempts a JOIN states s ON s.id = a.source_id"
            " LEFT JOIN states t ON t.id = a.target_id" + where +
            " GROUP BY a.source_id, a.target_id, a.\"escape\" ORDER BY a.source_id, a.target_id",
            args,
        ).fetchall()
        return CountRows(
            rows=tuple((s, t, e, int(n)) for s, t, e, n in rows), label=str(self.path)
        )

    def count_columns(self, run_ids: Sequence[int] | None = None) -> CountColumns:
        """The outcomes of :meth:`count_rows` as integer columns, without a Python tuple per row
        (a 10^6-state store: see docs/performance.md): per aggregated row the codes of its
        source and target (-1: an escape; the escape categories of a source are summed into
        one row) and its count.  States are numbered in order of first appearance in
        :meth:`count_rows`' order, source before target, so
        :meth:`~detbal.analysis.counts.TransitionCounts.from_columns` of these columns equals
        :meth:`~detbal.analysis.counts.TransitionCounts.from_rows` of those rows."""
        import numpy as np

        from detbal.analysis.counts import CountColumns

        raw = self._attempt_columns(run_ids)
        if len(raw) == 0:
            none = np.zeros(0, dtype=np.int64)
            return CountColumns(states=(), source=none, target=none, count=none, label=str(self.path))
        # count_rows' aggregation and order: by source id, then target id (escapes, -1, first)
        top = int(raw[:, :2].max())
        key = raw[:, 0] * (top + 2) + (raw[:, 1] + 1)
        order = np.argsort(key)
        key = key[order]
        start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        count = np.add.reduceat(raw[order, 2], start)
        del raw, order
        key = key[start]
        source, target = key // (top + 2), key % (top + 2) - 1
        # first appearance of every state id, row by row, source before target (position
        # 2 row + 0 or 1): a source's first row starts its block, a target's is its least row
        first = np.full(top + 1, np.iinfo(np.int64).max)
        block = np.flatnonzero(np.r_[True, source[1:] != source[:-1]])
        first[source[block]] = 2 * block
        row = np.flatnonzero(target >= 0)
        np.minimum.at(first, target[row], 2 * row + 1)
        ids = np.flatnonzero(first < np.iinfo(np.int64).max)
        ids = ids[np.argsort(first[ids])]  # state ids in order of first appearance
        code = np.full(top + 1, -1, dtype=np.int64)
        code[ids] = np.arange(len(ids))
        return CountColumns(states=self._state_texts(ids), source=code[source],
                            target=np.where(target >= 0, code[target], -1), count=count,
                            label=str(self.path))

    def _attempt_columns(self, run_ids: Sequence[int] | None) -> Any:
        """``(source_id, target_id or -1, count)`` of every attempt (of ``run_ids``) as an
        ``(n, 3)`` integer array.  SQLite writes each column of a chunk of rows as one text
        of numbers that numpy parses: a third of the time of a Python tuple per row.  The
        three ``group_concat`` of one query step through the same rows in the same order."""
        import numpy as np

        where, args = _run_filter(run_ids)
        where = (where + " AND" if where else " WHERE") + " a.id BETWEEN ? AND ?"
        query = ("SELECT group_concat(a.source_id), group_concat(ifnull(a.target_id, -1)),"
                 " group_concat(a.count) FROM attempts a" + where)
        parts = [np.zeros((0, 3), dtype=np.int64)]
        with self._lock:  # the chunks read one snapshot, as count_rows' one query does
            own = not self._conn.in_transaction
            if own:
                self._conn.execute("BEGIN")
            try:
                low, high = self._conn.execute("SELECT MIN(id), MAX(id) FROM attempts").fetchone()
                for first in range(low or 0, (high or -1) + 1, _FETCH_ROWS):
                    texts = self._conn.execute(query, (*args, first, first + _FETCH_ROWS - 1)).fetchone()
                    if texts[0] is not None:
                        parts.append(np.stack([np.fromstring(t, dtype=np.int64, sep=",") for t in texts],
                                              axis=1))
            finally:
                if own:
                    self._conn.execute("COMMIT")
        return np.concatenate(parts)

    def _state_texts(self, ids: Any) -> tuple[str, ...]:
        """The texts of the state ``ids`` (an integer array), in its order."""
        (top,) = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM states").fetchone()
        text: list[str | None] = [None] * (int(top) + 1)
        for i, t in self._conn.execute("SELECT id, text FROM states"):
            text[i] = t
        return tuple(map(text.__getitem__, ids.tolist()))  # type: ignore[arg-type]

    def run_summaries(self) -> list[RunSummary]:
        out = []
        for run in self.runs():
            agg = self._conn.execute(
                "SELECT COALESCE(SUM(count), 0),"
                " COALESCE(SUM(CASE WHEN target_id IS NOT NULL THEN count END), 0),"
                " COALESCE(SUM(CASE WHEN \"escape\" IS NOT NULL THEN count END), 0),"
                " COUNT(DISTINCT target_id), COALESCE(SUM(prompt_tokens), 0),"
                " COALESCE(SUM(completion_tokens), 0)"
                " FROM attempts WHERE run_id = ?",
                (run.id,),
            ).fetchone()
            escapes = dict(
                self._conn.execute(
                    "SELECT \"escape\", SUM(count) FROM attempts WHERE run_id = ? AND \"escape\""
                    " IS NOT NULL GROUP BY \"escape\" ORDER BY \"escape\"",
                    (run.id,),
                ).fetchall()
            )
            out.append(RunSummary(run, *[int(x) for x in agg], escape_counts=escapes))
        return out


def _run_filter(run_ids: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    if not run_ids:
        return "", ()
    marks = ", ".join("?" for _ in run_ids)
    return f" WHERE a.run_id IN ({marks})", tuple(int(r) for r in run_ids)


def _run_record(row: Sequence[Any]) -> RunRecord:
    rid, task, model, backend, config, code_version, created, rng_state = row
    return RunRecord(
        id=int(rid), task=task, model=model, backend=backend, config=json.loads(config),
        code_version=code_version, created=created,
        rng_state=json.loads(rng_state) if rng_state else None,
    )


def _is_detbal_schema(conn: sqlite3.Connection) -> bool:
    """True for a database with our ``meta`` table or with no tables at all."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return True
        if "meta" not in tables:
            return False
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError:
        return False
    return row is not None


def is_run_store(path: str | Path) -> bool:
    """True if ``path`` starts with the SQLite header."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False
