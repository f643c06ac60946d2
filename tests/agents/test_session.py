"""The one agent driver from Python: ``detbal.run_agent`` for both tasks, budgets, resume, atomic units.

Words run against the session's fake OpenAI server (``fake_openai``, reset before each run,
so its answer counter starts at 0); fit runs use the scripted bookkeeping backend
(``tests/support/fit.py``).  A run stopped by its budget and continued by the same call
must store exactly what an uninterrupted run stores.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from servers.fake_openai import FakeServer

import detbal
from detbal.agents import Budget, FitTask, WordTask, arun_agent
from detbal.agents.backends.openai_compat import OpenAIBackend, OpenAISettings
from detbal.errors import DetbalError
from detbal.store import RunStore

from support import NIKURADSE
from support.fit import SMALL_FIT, ScriptedBackendForBookkeeping, table
from support.runs import kill_9_after, script


def _openai(server: FakeServer) -> OpenAIBackend:
    return OpenAIBackend(OpenAISettings(base_url=server.url, model="ok", api_key="sk-x"))


def _word_rows(store: RunStore, run_id: int) -> list[tuple[Any, ...]]:
    rows = sorted(store.iter_attempts([run_id]), key=lambda r: r["seq"])
    return [(r["seq"], r["source"], r["raw_answer"], r["target"], r["escape"],
             json.loads(r["params"])["seed"]) for r in rows]


def _words_uninterrupted(server: FakeServer, path: Path, task: WordTask, n: int) -> list[tuple[Any, ...]]:
    with RunStore(path) as store:
        res = detbal.run_agent(store, task, _openai(server), attempts=n, close_backends=True)
        assert res.done and res.stored == n
        return _word_rows(store, res.run_id)


def test_words_budget_stop_then_resume_equals_an_uninterrupted_run(fake_openai: FakeServer,
                                                                   tmp_path: Path) -> None:
    task = detbal.WordTask(target=100, seed=11)
    want = _words_uninterrupted(fake_openai, tmp_path / "ref.sqlite", task, 30)
    ticks: list[int] = []
    server = fake_openai.reset()
    with RunStore(tmp_path / "s.sqlite") as store:
        first = detbal.run_agent(store, task, _openai(server), attempts=30, budget=Budget(max_calls=12),
                                 progress=lambda n=1, **_: ticks.append(n), close_backends=True)
        assert first.created and first.stopped_by == "budget" and "call budget" in first.stopped
        assert (first.stored, first.committed, first.calls) == (12, 12, 12) and not first.done
        assert sum(ticks) == 12
        # the budget counts the whole run: the stored calls are spent already
        again = detbal.run_agent(store, task, _openai(server), attempts=30, budget=Budget(max_calls=12),
                                 close_backends=True)
        assert again.run_id == first.run_id and again.committed == 0 and again.stopped_by == "budget"
        rest = detbal.run_agent(store, task, [_openai(server)], attempts=30, close_backends=True)
        assert (rest.run_id, rest.created, rest.committed, rest.stored) == (first.run_id, False, 18, 30)
        assert rest.done and rest.stopped is None and rest.calls == 30
        assert _word_rows(store, rest.run_id) == want
        assert len(store.runs()) == 1
    valid = {r[3] for r in want if r[3]} | {"BUZZY"}
    assert set(rest.summary["found"]) == valid and rest.summary["valid_states"] == len(valid)


def test_run_agent_opens_the_matching_run_and_checks_its_input(fake_openai: FakeServer,
                                                               tmp_path: Path) -> None:
    server = fake_openai
    with RunStore(tmp_path / "o.sqlite") as store:
        def run(task: WordTask, **kw: Any) -> Any:  # a client per event loop
            return detbal.run_agent(store, task, _openai(server), close_backends=True, **kw)

        a = run(WordTask(seed=1), attempts=3)
        b = run(WordTask(seed=1, temperature=0.5), attempts=3)
        c = run(WordTask(seed=1), attempts=5)
        d = run(WordTask(seed=1), attempts=5, new_run=True)
        assert [a.created, b.created, c.created, d.created] == [True, True, False, True]
        assert c.run_id == a.run_id and b.run_id != a.run_id and c.committed == 2
        # a task without a seed continues the stored one
        e = run(WordTask(temperature=0.5), attempts=4)
        assert e.run_id == b.run_id and e.committed == 1
        with pytest.raises(DetbalError, match="attempts"):
            run(WordTask())
        # one backend object serves successive calls (they share an event loop)
        shared = _openai(server)
        f1 = detbal.run_agent(store, WordTask(seed=9), shared, attempts=2)
        f2 = detbal.run_agent(store, WordTask(seed=9), shared, attempts=4, close_backends=True)
        assert f2.run_id == f1.run_id and f2.committed == 2
        assert [r["escape"] for r in store.iter_attempts([f1.run_id]) if r["escape"] == "api_error"] == []
        with pytest.raises(DetbalError, match="backends"):
            detbal.run_agent(store, WordTask(), [], attempts=1)
        with pytest.raises(DetbalError, match="WordTask"):
            WordTask(no_such_setting=1)

        async def inside_a_loop() -> None:
            with pytest.raises(DetbalError, match="arun_agent"):
                detbal.run_agent(store, WordTask(seed=1), [], attempts=3)
            res = await arun_agent(store, WordTask(seed=1), _openai(server), attempts=6, close_backends=True)
            assert res.run_id == d.run_id and res.committed == 1  # the latest matching run

        asyncio.run(inside_a_loop())
        with pytest.raises(AttributeError):
            a.stored = 0  # type: ignore[misc]


def test_both_tasks_implement_the_one_protocol() -> None:
    from detbal.agents import AgentTask, run_agent

    assert detbal.run_agent is run_agent
    for task in (WordTask(seed=2), FitTask(islands=2)):
        assert isinstance(task, AgentTask)
        spec = task.run_spec()
        assert spec.task == task.name and set(spec.identity) <= set(spec.config) | {"base_url"}
    assert WordTask().default_attempts() is None
    assert FitTask(islands=2, cycles=3, rounds=4, per_round=2).default_attempts() == 48
    with pytest.raises(DetbalError, match="FitTask"):
        FitTask(no_such_setting=1)


# -- the fit task under the same driver -----------------------------------------------------------


def _fit_task(**kw: Any) -> FitTask:
    return detbal.FitTask(**(SMALL_FIT | kw))


def _fit_reference(path: Path, task: FitTask) -> list[tuple[Any, ...]]:
    with RunStore(path) as store:
        res = detbal.run_agent(store, task, ScriptedBackendForBookkeeping())
        assert res.done and res.stored == res.target == 36
        return table(store, res.run_id)


def _whole_rounds(seqs: set[int], n: int = 3) -> bool:
    return all(all(r * n + s in seqs for s in range(n)) for r in {q // n for q in seqs})


def test_fit_budget_stop_then_resume_equals_an_uninterrupted_run(tmp_path: Path, nikuradse: Path) -> None:
    task = _fit_task()
    want = _fit_reference(tmp_path / "ref.sqlite", task)
    with RunStore(tmp_path / "s.sqlite") as store:
        first = detbal.run_agent(store, task, ScriptedBackendForBookkeeping(), concurrency=2,
                                 budget=Budget(max_calls=11))
        assert first.stopped_by == "budget" and first.calls <= 11
        stored = store.stored_seqs(first.run_id)
        assert 0 < len(stored) < 36 and _whole_rounds(stored)
        rest = detbal.run_agent(store, task, [ScriptedBackendForBookkeeping()], concurrency=3)
        assert (rest.run_id, rest.created, rest.stored) == (first.run_id, False, 36)
        assert rest.committed == 36 - len(stored)
        assert table(store, rest.run_id) == want
        assert rest.summary["best_ansatz"] and rest.summary["best_score"] > 0
        # another structure is another run
        other = detbal.run_agent(store, _fit_task(islands=1, cycles=1), ScriptedBackendForBookkeeping())
        assert other.created and other.stored == 6


def test_a_round_is_committed_whole_or_not_at_all(tmp_path: Path, nikuradse: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A store write failing on the second attempt of round 2 leaves none of that round."""
    task = _fit_task()
    want = _fit_reference(tmp_path / "ref.sqlite", task)
    with RunStore(tmp_path / "s.sqlite") as store:
        real = store._insert_attempt

        def failing(run_id: int, seq: int, attempt: Any) -> int:
            if seq == 7:
                raise OSError("disk full")
            return real(run_id, seq, attempt)

        monkeypatch.setattr(store, "_insert_attempt", failing)
        with pytest.raises(OSError, match="disk full"):
            detbal.run_agent(store, task, ScriptedBackendForBookkeeping())
        assert store.stored_seqs(1) == set(range(6))  # rounds 0 and 1; nothing of round 2
        monkeypatch.setattr(store, "_insert_attempt", real)
        rest = detbal.run_agent(store, task, ScriptedBackendForBookkeeping())
        assert rest.run_id == 1 and rest.committed == 30 and table(store, 1) == want


def _child(db: str) -> None:
    """Run in a subprocess: the fit run through ``run_agent``, slowly, until killed."""
    os.environ["DETBAL_DATA_DIR"] = str(NIKURADSE)
    with RunStore(db) as store:
        detbal.run_agent(store, _fit_task(), ScriptedBackendForBookkeeping(delay=0.1), concurrency=3)


@pytest.mark.slow
def test_kill_9_leaves_whole_rounds_and_the_run_resumes(tmp_path: Path, nikuradse: Path) -> None:
    task = _fit_task()
    db = tmp_path / "killed.sqlite"
    assert kill_9_after(script(__file__, str(db)), db, 7, timeout=120) >= 7
    with RunStore(db) as store:
        before = store.stored_seqs(1)
        assert 7 <= len(before) < 36 and _whole_rounds(before)
        rest = detbal.run_agent(store, task, ScriptedBackendForBookkeeping())
        assert rest.run_id == 1 and rest.committed == 36 - len(before)
        got = table(store, 1)
    assert got == _fit_reference(tmp_path / "ref.sqlite", task)


if __name__ == "__main__":
    _child(sys.argv[1])
