"""Calls that lose nothing: retries, budgets, stop requests and run lookup.

Two layers, usable separately:

* :func:`call_model` makes one model call under a :class:`CallPolicy` (time-out,
  retries with exponential back-off and jitter, ``Retry-After`` honoured) and a
  :class:`Budget` (calls, tokens, money).  A call whose retries are exhausted
  raises :class:`CallFailed`; the agent stores it as escape ``api_error``.
* :class:`StopSignal`, :func:`signal_handlers`, :func:`open_run`: the pieces the one
  agent driver (:mod:`detbal.agents.session`) stops and opens runs with; the driver
  commits each unit of work with the run's generator state before it counts.

Back-off before retry ``k`` (k = 0, 1, ...)::

    d_k = min(backoff_max_s, backoff_s * 2**k),  wait = d_k/2 + U(0, d_k/2)
    wait = max(wait, min(Retry-After, retry_after_max_s))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detbal.agents.backends.base import (
    Backend,
    BackendError,
    BackendStop,
    Completion,
    Message,
    SamplingParams,
)
from detbal.store import Attempt, RunStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallPolicy:
    """How one model call is retried.

    ``retries`` extra tries after the first; only errors marked retryable (rate
    limits, server errors, time-outs, broken responses) are retried.
    """

    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 120.0
    retry_after_max_s: float = 120.0

    def delay(self, k: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``k`` (see the module docstring)."""
        d = min(self.backoff_max_s, self.backoff_s * (2.0**k))
        u = (rng or random).random()
        wait = d / 2.0 + u * d / 2.0
        if retry_after is not None and retry_after > 0:
            wait = max(wait, min(float(retry_after), self.retry_after_max_s))
        return wait


class BudgetExhausted(Exception):
    """The run's budget of calls, tokens or money is spent; no new call starts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallFailed(BackendError):
    """A call that failed for good (retries exhausted or not retryable)."""

    def __init__(self, last: BackendError, tries: int) -> None:
        super().__init__(str(last), retryable=False, status=last.status)
        self.last = last
        self.tries = tries


class Budget:
    """Per-run limits on calls, tokens (prompt + completion) and money.

    Cost = prompt_tokens * price_input / 1e6 + completion_tokens * price_output / 1e6
    (prices in currency units per million tokens).  A call is counted when it
    starts, tokens and cost when it returns, so concurrent calls can overshoot the
    token and money limits by at most the calls in flight.  ``None`` = no limit.
    """

    def __init__(
        self,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        *,
        price_input: float = 0.0,
        price_output: float = 0.0,
        calls: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.price_input = float(price_input)
        self.price_output = float(price_output)
        self.calls = int(calls)
        self.prompt_tokens = int(prompt_tokens)
        self.completion_tokens = int(completion_tokens)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return (self.prompt_tokens * self.price_input + self.completion_tokens * self.price_output) / 1e6

    def exhausted(self) -> str | None:
        """Why no further call may start, or None."""
        if self.max_calls is not None and self.calls >= self.max_calls:
            return f"call budget reached ({self.calls} of {self.max_calls} calls)"
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            return f"token budget reached ({self.tokens} of {self.max_tokens} tokens)"
        if self.max_cost is not None and self.cost >= self.max_cost:
            return f"money budget reached ({self.cost:.4f} of {self.max_cost:.4f})"
        return None

    def start_call(self) -> None:
        """Count a call about to start; raise :class:`BudgetExhausted` if none is left."""
        reason = self.exhausted()
        if reason is not None:
            raise BudgetExhausted(reason)
        self.calls += 1

    def add_usage(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        self.prompt_tokens += int(prompt_tokens or 0)
        self.completion_tokens += int(completion_tokens or 0)


@dataclass
class Tally:
    """Requests one attempt issued (retries included); pass to :func:`call_model`."""

    calls: int = 0


async def call_model(
    backend: Backend,
    messages: Sequence[Message],
    params: SamplingParams,
    policy: CallPolicy | None = None,
    budget: Budget | None = None,
    *,
    key: str | None = None,
    tally: Tally | None = None,
    rng: random.Random | None = None,
) -> Completion:
    """One model call with time-out, retries and budget accounting.

    Raises :class:`BudgetExhausted` before a call the budget does not allow,
    :class:`~detbal.agents.backends.base.BackendStop` when calling again cannot
    help (replay ran dry, credentials refused; both mean: stop the run, store nothing), and
    :class:`CallFailed` when the call failed for good (store an ``api_error``).
    """
    policy = policy or CallPolicy()
    tries = 0
    while True:
        if budget is not None:
            budget.start_call()
        if tally is not None:
            tally.calls += 1
        tries += 1
        try:
            if key is None:
                coro = backend.complete(messages, params)
            else:
                coro = backend.complete(messages, params, key=key)
            completion = await asyncio.wait_for(coro, policy.timeout_s)
        except asyncio.TimeoutError:
            err = BackendError(f"no answer within {policy.timeout_s:g} s", retryable=True)
        except BackendStop:
            raise
        except BackendError as exc:
            err = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a backend bug must not lose the attempt
            log.warning("backend %s raised %s: %s", getattr(backend, "name", "?"),
                        type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            err = BackendError(f"{type(exc).__name__}: {exc}", retryable=False)
        else:
            if budget is not None:
                budget.add_usage(completion.prompt_tokens, completion.completion_tokens)
            return completion
        if not err.retryable or tries > policy.retries:
            raise CallFailed(err, tries)
        wait = policy.delay(tries - 1, err.retry_after, rng)
        log.debug("retry %d after %.2f s: %s", tries, wait, err)
        await asyncio.sleep(wait)


# -- stopping ------------------------------------------------------------------------


class StopSignal:
    """Stop requests: any ``request()`` stops new attempts (in-flight ones finish and are
    stored); a second request from the user (``user=True``, e.g. Ctrl-C twice) abandons
    the attempts in flight."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason: str | None = None
        self.kind: str | None = None  # "interrupt", "budget", "backend", "error"
        self.requests = 0
        self._abandon: Callable[[], None] | None = None

    def request(self, reason: str = "interrupted", *, user: bool = False, kind: str | None = None) -> None:
        if user:
            self.requests += 1
        if self.reason is None:
            self.reason = reason
            self.kind = kind or ("interrupt" if user else None)
        self.event.set()
        if self.requests >= 2 and self._abandon is not None:
            self._abandon()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()


@contextlib.contextmanager
def signal_handlers(
    loop: asyncio.AbstractEventLoop, on_signal: Callable[[str], None] | None
) -> Iterator[None]:
    """While the block runs, SIGINT/SIGTERM call ``on_signal(signal name)`` on ``loop``.

    The handlers are removed when the block ends, however it ends.  Where the loop
    cannot install one (not the main thread, no signal support) the block runs
    without it; with ``on_signal`` None nothing is installed.
    """
    installed: list[int] = []
    if on_signal is not None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@dataclass
class RunTotals:
    """Running totals shown on the progress bar."""

    attempts: int = 0
    transitions: int = 0
    escapes: int = 0
    escape_counts: dict[str, int] = field(default_factory=dict)

    def add(self, attempt: Attempt) -> None:
        self.attempts += attempt.count
        if attempt.escape is None:
            self.transitions += attempt.count
        else:
            self.escapes += attempt.count
            self.escape_counts[attempt.escape] = self.escape_counts.get(attempt.escape, 0) + attempt.count

    @property
    def escape_rate(self) -> float:
        return self.escapes / self.attempts if self.attempts else 0.0


# -- runs: continue the matching one or start a new one ---------------------------


def open_run(
    store: RunStore,
    task: str,
    backend: str,
    model: str,
    config: Mapping[str, Any],
    *,
    identity: Sequence[str],
    run_id: int | None = None,
    new: bool = False,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[int, dict[str, Any], bool]:
    """The run to continue, or a new one: ``(run_id, config, created)``.

    A stored run matches when task, backend, model and every ``identity`` key of
    its config equal ours; a key whose value is None here (e.g. a seed the user
    did not give) matches anything and is taken from the stored run.  The most
    recent match is continued.  ``run_id`` names the run explicitly (its identity
    must match); ``new`` always starts a new run.  A new run gets a random seed
    if ``config["seed"]`` is None.  ``defaults``: the value an identity key has in a
    stored run that lacks it (made before the key existed).
    """
    config = dict(config)
    defaults = dict(defaults or {})

    def stored_value(stored: Mapping[str, Any], k: str) -> Any:
        return stored[k] if k in stored else defaults.get(k)

    def differences(stored: Mapping[str, Any]) -> list[str]:
        out = []
        for k in identity:
            if config.get(k) is not None and stored_value(stored, k) != config.get(k):
                out.append(f"{k}: stored {stored_value(stored, k)!r}, now {config.get(k)!r}")
        return out

    def adopt(rec_config: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(config)
        for k in identity:
            if merged.get(k) is None:
                merged[k] = stored_value(rec_config, k)
        return merged

    if run_id is not None:
        from detbal.errors import DetbalError

        rec = store.get_run(run_id)
        problems = ([f"task: stored {rec.task!r}, now {task!r}"] if rec.task != task else []) + (
            [f"model: stored {rec.model!r}, now {model!r}"] if rec.model != model else []
        ) + differences(rec.config)
        if problems:
            raise DetbalError(f"run {run_id} was made with other settings ({'; '.join(problems)})")
        return run_id, adopt(rec.config), False
    if not new:
        for rec in reversed(store.runs()):
            if (rec.task, rec.backend, rec.model) == (task, backend, model) and not differences(rec.config):
                return rec.id, adopt(rec.config), False
    if config.get("seed") is None:
        config["seed"] = random.SystemRandom().randrange(2**31)
    return store.create_run(task, model, backend, config), config, True


def stored_usage(store: RunStore, run_id: int) -> tuple[int, int, int]:
    """``(calls, prompt_tokens, completion_tokens)`` already spent by a run's stored attempts."""
    import json

    calls = prompt = completion = 0
    for row in store.iter_attempts([run_id]):
        params = json.loads(row["params"]) if row["params"] else {}
        calls += int(params.get("calls", 1))
        prompt += int(row["prompt_tokens"] or 0)
        completion += int(row["completion_tokens"] or 0)
    return calls, prompt, completion
