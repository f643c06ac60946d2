"""Retries, back-off, budgets and the committing attempt loop, with in-process backends."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

import detbal.agents.runner as runner
from detbal.agents.backends.base import (
    BackendError,
    BackendExhausted,
    BackendStop,
    Completion,
    Message,
    SamplingParams,
)
from detbal.agents.runner import (
    Budget,
    BudgetExhausted,
    CallFailed,
    CallPolicy,
    Tally,
    call_model,
    open_run,
)
from detbal.agents.session import UnitResult, drive
from detbal.store import Attempt, RunStore

MSG = [{"role": "user", "content": "x"}]


class Flaky:
    """Fails with the given errors in order, then answers."""

    name = "flaky"
    model = "flaky"

    def __init__(self, errors: Sequence[BaseException], tokens: int = 10) -> None:
        self.errors = list(errors)
        self.tokens = tokens
        self.calls = 0

    async def complete(self, messages: Sequence[Message], params: SamplingParams) -> Completion:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Completion("OK", self.tokens, 1, 0.0, "stop", self.model)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record back-off sleeps instead of waiting."""
    waited: list[float] = []

    async def fake_sleep(d: float) -> None:
        waited.append(d)

    monkeypatch.setattr(runner.asyncio, "sleep", fake_sleep)
    return waited


def test_retryable_errors_are_retried_and_retry_after_honoured(sleeps) -> None:
    b = Flaky([BackendError("429", retryable=True, status=429, retry_after=7.0),
               BackendError("500", retryable=True, status=500)])
    tally = Tally()
    c = asyncio.run(call_model(b, MSG, SamplingParams(), CallPolicy(backoff_s=0.1), Budget(),
                               tally=tally, rng=random.Random(0)))
    assert c.text == "OK" and b.calls == 3 and tally.calls == 3
    assert sleeps[0] >= 7.0  # Retry-After wins over the shorter back-off
    assert 0.1 <= sleeps[1] <= 0.2  # second back-off: d = 0.2, waits in [d/2, d]


@pytest.mark.parametrize("k", range(6))
def test_backoff_is_exponential_with_jitter_and_capped(k: int) -> None:
    policy = CallPolicy(backoff_s=0.5, backoff_max_s=4.0)
    d = min(4.0, 0.5 * 2**k)
    waits = [policy.delay(k, None, random.Random(i)) for i in range(50)]
    assert all(d / 2 <= w <= d for w in waits)
    assert len(set(waits)) > 1


def test_exhausted_retries_and_fatal_errors(sleeps) -> None:
    b = Flaky([BackendError("503", retryable=True)] * 10)
    with pytest.raises(CallFailed) as info:
        asyncio.run(call_model(b, MSG, SamplingParams(), CallPolicy(retries=2)))
    assert info.value.tries == 3 and b.calls == 3
    b = Flaky([BackendError("400 bad request", retryable=False)])
    with pytest.raises(CallFailed):
        asyncio.run(call_model(b, MSG, SamplingParams(), CallPolicy(retries=5)))
    assert b.calls == 1
    b = Flaky([BackendStop("credentials refused", status=401)])
    with pytest.raises(BackendStop):
        asyncio.run(call_model(b, MSG, SamplingParams(), CallPolicy(retries=5)))
    b = Flaky([RuntimeError("bug in a backend")])
    with pytest.raises(CallFailed, match="RuntimeError"):
        asyncio.run(call_model(b, MSG, SamplingParams(), CallPolicy()))


def test_timeout_is_retryable() -> None:
    class Slow(Flaky):
        async def complete(self, messages, params):
            self.calls += 1
            if self.calls == 1:
                await asyncio.sleep(10)
            return Completion("OK", 1, 1, 0.0, "stop", "slow")

    b = Slow([])
    c = asyncio.run(call_model(b, MSG, SamplingParams(), CallPolicy(timeout_s=0.05, backoff_s=0.0)))
    assert c.text == "OK" and b.calls == 2


@pytest.mark.parametrize(
    "budget,calls_allowed",
    [
        (Budget(max_calls=3), 3),
        (Budget(max_tokens=25), 3),  # 11 tokens per call: stops once 25 are spent
        (Budget(max_cost=0.002, price_input=100.0, price_output=100.0), 2),  # 0.0011 per call
    ],
)
def test_budgets_stop_new_calls(budget: Budget, calls_allowed: int) -> None:
    b = Flaky([])

    async def go() -> int:
        n = 0
        while True:
            try:
                await call_model(b, MSG, SamplingParams(), CallPolicy(), budget)
            except BudgetExhausted:
                return n
            n += 1

    assert asyncio.run(go()) == calls_allowed


def _attempt_fn(n_fail_stop: int | None = None, stop_exc: BaseException | None = None):
    async def fn(seq: int):
        await asyncio.sleep(0.001 * (seq % 3))
        if n_fail_stop is not None and seq >= n_fail_stop:
            raise stop_exc  # type: ignore[misc]
        return UnitResult(((seq, Attempt(source="A", target=f"S{seq % 5}")),), {"seq": seq})

    return fn


@pytest.mark.parametrize("concurrency", [1, 8])
def test_drive_commits_every_seq_once(tmp_path, concurrency: int) -> None:
    committed: list[int] = []
    with RunStore(tmp_path / "d.sqlite") as store:
        rid = store.create_run("t", "m", "b", {})
        res = asyncio.run(drive(store, rid, range(40), _attempt_fn(), concurrency=concurrency,
                                on_commit=lambda unit, result: committed.append(unit), handle_signals=False))
        assert res.committed == 40 and res.stopped is None
        assert store.stored_seqs(rid) == set(range(40))
        assert sorted(committed) == list(range(40))
        assert store.get_run(rid).rng_state is not None


@pytest.mark.parametrize("exc,reason", [
    (BudgetExhausted("call budget reached"), "call budget"),
    (BackendExhausted("no stored answer left"), "backend stopped"),
])
def test_drive_stops_cleanly(tmp_path, exc, reason) -> None:
    with RunStore(tmp_path / "d.sqlite") as store:
        rid = store.create_run("t", "m", "b", {})
        res = asyncio.run(drive(store, rid, range(40), _attempt_fn(10, exc), concurrency=4,
                                handle_signals=False))
        assert res.stopped is not None and res.stopped.startswith(reason)
        assert store.stored_seqs(rid) == set(range(10))


def test_open_run_continues_matching_run(tmp_path) -> None:
    with RunStore(tmp_path / "o.sqlite") as store:
        cfg = {"temperature": 1.0, "seed": None}
        rid, c1, created = open_run(store, "words", "b", "m", cfg, identity=("temperature", "seed"))
        assert created and isinstance(c1["seed"], int)
        rid2, c2, created2 = open_run(store, "words", "b", "m", cfg, identity=("temperature", "seed"))
        assert (rid2, created2, c2["seed"]) == (rid, False, c1["seed"])
        rid3, _, created3 = open_run(store, "words", "b", "m", {"temperature": 0.5, "seed": None},
                                     identity=("temperature", "seed"))
        assert created3 and rid3 != rid
        rid4, _, created4 = open_run(store, "words", "b", "m", cfg, identity=("temperature",), new=True)
        assert created4 and rid4 not in (rid, rid3)


def test_drive_keeps_an_attempt_another_process_stored_first(tmp_path) -> None:
    with RunStore(tmp_path / "d.sqlite") as store:
        rid = store.create_run("t", "m", "b", {})
        store.record_attempt(rid, 3, Attempt(source="A", escape="empty"))
        res = asyncio.run(drive(store, rid, range(6), _attempt_fn(), concurrency=2,
                                handle_signals=False))
        assert res.committed == 5 and store.stored_seqs(rid) == set(range(6))
        assert [r["escape"] for r in store.iter_attempts([rid]) if r["seq"] == 3] == ["empty"]
