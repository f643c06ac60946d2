"""One driver for every agent task: open or continue a run, stop, budgets, commit once.

From Python (a notebook)::

    import detbal
    from detbal.agents.backends.local import LocalBackend

    task = detbal.WordTask(target=100, seed=3)      # or detbal.FitTask(dataset="nikuradse_2", ...)
    with detbal.RunStore("study.sqlite") as store:
        res = detbal.run_agent(store, task, LocalBackend(), attempts=20000)
    res.stored, res.stopped, res.summary             # a frozen AgentRunResult

The same call again continues the run; ``detbal run words|fit`` is this call behind flags.

**Tasks.**  A task (:class:`AgentTask`: :class:`~detbal.agents.words.WordTask`,
:class:`~detbal.agents.fit.loop.FitTask`) says what its run is (:class:`RunSpec`: the
stored config and the keys that identify it) and, through :meth:`AgentTask.begin`,
returns a :class:`TaskRun` restored from the attempts already stored: which units of
work remain (a word attempt; a fit round, i.e. one model call's 1..n attempts), how to
perform one, and what follows when one is committed.

**The driver** (:func:`arun_agent`, :func:`run_agent` runs it on an event loop) owns
everything else, once for every task:

* *Opening.*  A stored run of the same task, backend and model whose identity keys
  equal the task's is continued (a key None here, e.g. a seed not given, takes the stored
  value); ``run_id`` names one, ``new_run`` always starts one.
* *Committing.*  Every unit is stored in ONE store transaction with its generator state
  (:meth:`~detbal.store.RunStore.record_unit`) before it counts, is shown on the progress
  or changes the task's state.  A run killed at any moment holds whole units only and
  continues where it stopped: nothing lost, nothing stored twice.
* *Stopping.*  SIGINT/SIGTERM (``handle_signals``), a budget running out (checked before
  each unit and before each call), or a backend that cannot go on (replay ran dry,
  credentials refused) stop new units; units in flight finish and are stored.  A second
  signal abandons them (nothing half-done is stored; they are redone on resume).
* *Budgets.*  :class:`~detbal.agents.runner.Budget` limits count the run's usage over all
  sessions: the calls and tokens of its stored attempts are added first.

At most ``concurrency`` units are in flight; a unit that depends on earlier ones (a fit
round on its island's previous round, a guided draw on its refit point) waits for them
to be committed (:meth:`SessionContext.wait_for`), so the stored data depend on the seed
and the stored prefix only, never on timing.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from detbal.agents.backends.base import Backend, BackendStop, Completion
from detbal.agents.runner import (
    Budget,
    BudgetExhausted,
    CallPolicy,
    StopSignal,
    call_model,
    open_run,
    signal_handlers,
    stored_usage,
)
from detbal.errors import DetbalError
from detbal.progress import Progress, ProgressUI
from detbal.store import Attempt, RunStore

log = logging.getLogger(__name__)

CallFn = Callable[..., Awaitable[Completion]]
"""``await call(backend, messages, params, *, key=None, **kw) -> Completion``."""


# -- what a task is -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """What identifies a task's run in the store.

    ``config``: the run config to store (``seed`` None = a random seed for a new run, or
    the stored one for a continued run); ``identity``: the config keys that must equal a
    stored run's to continue it; ``defaults``: the value of an identity key in a stored
    run made before the key existed.
    """

    task: str
    config: Mapping[str, Any]
    identity: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitResult:
    """One performed unit: its attempts ``(seq, Attempt)`` and the generator state to store
    with them; ``state`` is the task's own record, handed back to :meth:`TaskRun.committed`."""

    attempts: tuple[tuple[int, Attempt], ...]
    rng_state: Any = None
    state: Any = None


@runtime_checkable
class TaskRun(Protocol):
    """A task bound to one stored run, its state restored from the stored attempts."""

    #: the number of attempts the run is driven to (seqs 0 .. target-1)
    target: int

    def units(self) -> Iterable[Any]:
        """The units not stored yet, in schedule order (the driver takes them in this order)."""
        ...

    async def perform(self, unit: Any) -> UnitResult:
        """Call the model(s) and build the unit's attempts; store nothing."""
        ...

    def committed(self, unit: Any, result: UnitResult) -> None:
        """The unit is stored: update the state later units depend on."""
        ...

    def postfix(self) -> Mapping[str, Any]:
        """Running figures for the progress bar."""
        ...

    def summary(self) -> Mapping[str, Any]:
        """Task-specific figures of the run so far (``AgentRunResult.summary``)."""
        ...

    async def end(self) -> None:
        """Release what :meth:`AgentTask.begin` acquired (threads); called however the run ends."""
        ...


@runtime_checkable
class AgentTask(Protocol):
    """A task the driver can run: :class:`~detbal.agents.words.WordTask`,
    :class:`~detbal.agents.fit.loop.FitTask`."""

    #: the task name stored with the run ("words", "fit")
    name: str

    def run_spec(self) -> RunSpec:
        """The run config and its identity keys."""
        ...

    def default_attempts(self) -> int | None:
        """Attempts when the caller gives none (the planned search), or None: must be given."""
        ...

    async def begin(self, ctx: SessionContext) -> TaskRun:
        """Check the stored run fits this task and restore the state from its attempts."""
        ...


# -- what the driver hands a task -------------------------------------------------------------


class Stopped(Exception):
    """The run stopped while a unit waited for earlier ones; the unit is not performed."""


@dataclass
class SessionContext:
    """The run a :class:`TaskRun` works in, and the driver's services."""

    store: RunStore
    run_id: int
    config: Mapping[str, Any]  # the run's config as opened (seed resolved)
    backends: tuple[Backend, ...]
    attempts: int | None  # as the caller asked (None: the task's default)
    concurrency: int
    policy: CallPolicy
    budget: Budget
    stop: StopSignal
    call: CallFn  # call_model with the run's policy and budget, unless the caller gave one
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def notify(self) -> None:
        """A unit was committed: wake the units waiting in :meth:`wait_for`."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        """Return once ``ready()`` holds (re-checked after each commit); raise :class:`Stopped`
        if the run stops first."""
        while not ready():
            if self.stop.is_set:
                raise Stopped()
            changed = self._changed
            stop = asyncio.ensure_future(self.stop.event.wait())
            wake = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({stop, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                wake.cancel()


# -- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentRunResult:
    """What one :func:`run_agent` call did.

    ``stored``: attempts of the run with seq < ``target`` now in the store; ``committed``:
    attempts this call stored; ``stopped``: why it ended before the target (None: the
    target is reached); ``stopped_by``: ``"interrupt"``, ``"budget"``, ``"backend"``
    (replay ran dry, credentials refused) or None; ``summary``: task-specific figures
    (words: ``valid_states``; fit: ``best_ansatz``, ``best_score``).
    """

    run_id: int
    task: str
    created: bool
    stored: int
    committed: int
    target: int
    stopped: str | None
    stopped_by: str | None
    elapsed_s: float
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.stopped is None

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupt"


@dataclass(frozen=True)
class OpenedRun:
    """The run a :func:`run_agent` call works on, before any unit (``on_open``)."""

    run_id: int
    task: str
    created: bool
    config: Mapping[str, Any]
    backend: str
    model: str
    stored: int
    target: int


# -- the unit loop ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriveResult:
    """What one :func:`drive` did."""

    committed: int  # attempts stored
    units: int  # units stored
    stopped: str | None  # None: every unit is stored
    stopped_by: str | None
    elapsed_s: float

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupt"


async def drive(
    store: RunStore,
    run_id: int,
    units: Iterable[Any],
    perform: Callable[[Any], Awaitable[UnitResult]],
    *,
    concurrency: int = 1,
    on_commit: Callable[[Any, UnitResult], None] | None = None,
    on_conflict: Callable[[Any], None] | None = None,
    progress: Progress | None = None,
    postfix: Callable[[], Mapping[str, Any]] | None = None,
    budget: Budget | None = None,
    stop: StopSignal | None = None,
    handle_signals: bool = True,
) -> DriveResult:
    """Perform every unit, at most ``concurrency`` at a time, committing each in one transaction.

    A unit's attempts are stored with :meth:`RunStore.record_unit` (with its
    ``rng_state``), then ``on_commit(unit, result)`` and ``progress(n_attempts,
    **postfix())`` are called.  A unit whose seq another process stored first is
    skipped (theirs is kept) and passed to ``on_conflict``.  See the module docstring
    for the stop rules.
    """
    if concurrency < 1:
        raise DetbalError("concurrency must be at least 1")
    stop = stop or StopSignal()
    it: Iterator[Any] = iter(units)
    committed = n_units = 0
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal committed, n_units
        while not stop.is_set:
            reason = budget.exhausted() if budget is not None else None
            if reason is not None:
                stop.request(reason, kind="budget")
                return
            try:
                unit = next(it)
            except StopIteration:
                return
            try:
                result = await perform(unit)
            except Stopped:
                return
            except BudgetExhausted as exc:
                stop.request(exc.reason, kind="budget")
                return
            except BackendStop as exc:
                stop.request(f"backend stopped: {exc}", kind="backend")
                return
            except Exception as exc:
                stop.request(f"error: {type(exc).__name__}: {exc}", kind="error")
                raise
            if result.attempts:
                try:
                    store.record_unit(run_id, result.attempts, rng_state=result.rng_state)
                except sqlite3.IntegrityError:
                    # another process continuing the same run stored it first: keep theirs
                    log.warning("attempts %s of run %d were already stored; kept the stored ones",
                                [s for s, _ in result.attempts], run_id)
                    if on_conflict is not None:
                        on_conflict(unit)
                    continue
                except BaseException as exc:  # the store failed: nothing of the unit is stored
                    stop.request(f"error: the store failed: {exc}", kind="error")
                    raise
            committed += len(result.attempts)
            n_units += 1
            if on_commit is not None:
                on_commit(unit, result)
            if progress is not None and result.attempts:
                progress(len(result.attempts), **(postfix() if postfix is not None else {}))

    loop = asyncio.get_running_loop()
    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]

    def abandon() -> None:
        for t in tasks:
            t.cancel()

    stop._abandon = abandon

    def on_signal(signame: str) -> None:
        if stop.requests == 0:
            log.warning("%s: stopping after the units in flight (again: abandon them)", signame)
        else:
            log.warning("%s again: abandoning the units in flight", signame)
        stop.request("interrupted", user=True, kind="interrupt")

    with signal_handlers(loop, on_signal if handle_signals else None):
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
            raise r
    return DriveResult(committed=committed, units=n_units, stopped=stop.reason,
                       stopped_by=stop.kind, elapsed_s=time.perf_counter() - t0)


# -- the driver ---------------------------------------------------------------------------------


def _budget_for(store: RunStore, run_id: int, limits: Budget | None) -> Budget:
    """A fresh budget with ``limits``' limits and prices, counting the run's stored usage."""
    limits = limits or Budget()
    calls, ptok, ctok = stored_usage(store, run_id)
    return Budget(limits.max_calls, limits.max_tokens, limits.max_cost,
                  price_input=limits.price_input, price_output=limits.price_output,
                  calls=calls, prompt_tokens=ptok, completion_tokens=ctok)


def _stored_below(store: RunStore, run_id: int, target: int) -> int:
    return sum(1 for s in store.stored_seqs(run_id) if s < target)


async def drive_task(
    store: RunStore,
    run_id: int,
    task: AgentTask,
    backends: Backend | Sequence[Backend],
    *,
    attempts: int | None = None,
    concurrency: int = 1,
    budget: Budget | None = None,
    policy: CallPolicy | None = None,
    progress: Progress | None = None,
    call: CallFn | None = None,
    stop: StopSignal | None = None,
    handle_signals: bool = True,
    config: Mapping[str, Any] | None = None,
    created: bool = False,
    on_begin: Callable[[TaskRun], None] | None = None,
) -> AgentRunResult:
    """Drive ``task`` on the stored run ``run_id`` (already opened) until ``attempts`` are stored.

    The lower layer of :func:`arun_agent`: no run lookup.  ``config``: the run's config
    (default: as stored); ``budget``: limits (the run's stored usage is added);
    ``call``: replaces :func:`~detbal.agents.runner.call_model` (with ``policy`` and the
    budget) for every model call; ``on_begin``: called with the restored :class:`TaskRun`.
    """
    if concurrency < 1:
        raise DetbalError("concurrency must be at least 1")
    backend_list = _backends(backends)
    run_config = dict(config) if config is not None else store.get_run(run_id).config
    live_budget = _budget_for(store, run_id, budget)
    policy = policy or CallPolicy()
    stop = stop or StopSignal()
    ctx = SessionContext(
        store=store, run_id=run_id, config=run_config, backends=tuple(backend_list),
        attempts=attempts, concurrency=concurrency, policy=policy, budget=live_budget, stop=stop,
        call=call or functools.partial(call_model, policy=policy, budget=live_budget),
    )
    t0 = time.perf_counter()
    run = await task.begin(ctx)
    try:
        if on_begin is not None:
            on_begin(run)

        def on_commit(unit: Any, result: UnitResult) -> None:
            run.committed(unit, result)
            ctx.notify()

        outcome = await drive(store, run_id, run.units(), run.perform, concurrency=concurrency,
                              on_commit=on_commit, on_conflict=getattr(run, "conflicted", None),
                              progress=progress, postfix=run.postfix,
                              budget=live_budget, stop=stop, handle_signals=handle_signals)
    finally:
        await run.end()
    stored = _stored_below(store, run_id, run.target)
    stopped, stopped_by = outcome.stopped, outcome.stopped_by
    if stored >= run.target:
        stopped = stopped_by = None
    elif stopped is None:
        stopped, stopped_by = "stopped", None
    return AgentRunResult(
        run_id=run_id, task=task.name, created=created, stored=stored,
        committed=outcome.committed, target=run.target, stopped=stopped, stopped_by=stopped_by,
        elapsed_s=time.perf_counter() - t0, calls=live_budget.calls,
        prompt_tokens=live_budget.prompt_tokens, completion_tokens=live_budget.completion_tokens,
        cost=live_budget.cost, summary=dict(run.summary()),
    )


def _backends(backends: Backend | Sequence[Backend]) -> list[Backend]:
    out = list(backends) if isinstance(backends, (list, tuple)) else [backends]  # type: ignore[list-item]
    if not out:
        raise DetbalError("backends: give at least one model backend")
    for b in out:
        if not hasattr(b, "complete"):
            raise DetbalError(f"backends: {b!r} is not a model backend (it has no complete())")
    return out


async def arun_agent(
    store: RunStore,
    task: AgentTask,
    backends: Backend | Sequence[Backend],
    *,
    attempts: int | None = None,
    concurrency: int = 1,
    budget: Budget | None = None,
    policy: CallPolicy | None = None,
    progress: Progress | ProgressUI | None = None,
    run_id: int | None = None,
    new_run: bool = False,
    handle_signals: bool = True,
    close_backends: bool = False,
    on_open: Callable[[OpenedRun], None] | None = None,
    stop: StopSignal | None = None,
) -> AgentRunResult:
    """The coroutine behind :func:`run_agent` (same parameters), for a running event loop."""
    if attempts is not None and attempts < 0:
        raise DetbalError("attempts must not be negative")
    backend_list = _backends(backends)
    try:
        target = attempts if attempts is not None else task.default_attempts()
        if target is None:
            raise DetbalError(f"attempts: the {task.name} task needs the number of attempts to run to")
        spec = task.run_spec()
        backend = backend_list[0]
        model = ",".join(b.model for b in backend_list)
        describe = getattr(backend, "describe", lambda: {})()
        config = dict(spec.config) | {f"backend_{k}": v for k, v in describe.items()}
        config["base_url"] = describe.get("base_url")
        if budget is not None and budget.price_input:
            config["price_input"] = budget.price_input
        if budget is not None and budget.price_output:
            config["price_output"] = budget.price_output
        rid, config, created = open_run(store, spec.task, backend.name, model, config,
                                        identity=spec.identity, run_id=run_id, new=new_run,
                                        defaults=spec.defaults)
        if backend.name == "replay" and not created:
            skip_replayed(store, rid, backend)
        if on_open is not None:
            on_open(OpenedRun(run_id=rid, task=spec.task, created=created, config=config,
                              backend=backend.name, model=model,
                              stored=_stored_below(store, rid, target), target=target))
        kw = dict(attempts=target, concurrency=concurrency, budget=budget, policy=policy,
                  stop=stop, handle_signals=handle_signals, config=config, created=created)
        if hasattr(progress, "progress"):  # a ProgressUI: a bar over the run's target
            with progress.progress(total=target, desc=f"run {rid}", unit="att") as tick:  # type: ignore[union-attr]
                done = _stored_below(store, rid, target)
                if done:
                    tick(done)
                return await drive_task(store, rid, task, backend_list, progress=tick, **kw)
        return await drive_task(store, rid, task, backend_list, progress=progress, **kw)  # type: ignore[arg-type]
    finally:
        if close_backends:
            for b in backend_list:
                await b.aclose()


def run_agent(
    store: RunStore,
    task: AgentTask,
    backends: Backend | Sequence[Backend],
    *,
    attempts: int | None = None,
    concurrency: int = 1,
    budget: Budget | None = None,
    policy: CallPolicy | None = None,
    progress: Progress | ProgressUI | None = None,
    run_id: int | None = None,
    new_run: bool = False,
    handle_signals: bool = True,
    close_backends: bool = False,
    on_open: Callable[[OpenedRun], None] | None = None,
) -> AgentRunResult:
    """Run (or continue) ``task`` against ``backends`` until ``attempts`` attempts are stored.

    ``store``: an open :class:`~detbal.store.RunStore`.  ``task``: a
    :class:`~detbal.agents.words.WordTask` or :class:`~detbal.agents.fit.loop.FitTask`.
    ``backends``: one backend or a list (the fit task draws one per round; the word task
    uses the first).  ``attempts``: the run's total (stored attempts count; fit: None =
    the planned search).  ``concurrency``: units in flight (word attempts, fit rounds).
    ``budget``: :class:`~detbal.agents.runner.Budget` limits on calls, tokens, money over
    the whole run.  ``policy``: retries and time-out per call.  ``progress``: a callback
    ``progress(n, **postfix)`` per stored unit, or a ``ProgressUI``.  ``run_id`` /
    ``new_run``: continue that run / always start a new one.  ``handle_signals``:
    SIGINT/SIGTERM stop cleanly (main thread only).  ``close_backends``: ``aclose()``
    them at the end.  ``on_open``: called with the :class:`OpenedRun` before any unit.

    Synchronous: runs the coroutine on this thread's event loop, the same one for every
    call, so one backend object serves any number of calls (in a running loop, e.g.
    Jupyter's, ``await arun_agent(...)``).  Returns a frozen :class:`AgentRunResult`.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise DetbalError("run_agent: an event loop is running here (e.g. Jupyter); use"
                          " `await detbal.agents.arun_agent(...)` instead")
    return _runner().run(arun_agent(
        store, task, backends, attempts=attempts, concurrency=concurrency, budget=budget,
        policy=policy, progress=progress, run_id=run_id, new_run=new_run,
        handle_signals=handle_signals, close_backends=close_backends, on_open=on_open))


_RUNNERS = threading.local()


def _runner() -> asyncio.Runner:
    """This thread's event loop for :func:`run_agent`, kept between calls: a backend (its HTTP
    client, its model pool) is bound to the loop it first ran on, so successive calls with
    the same backend must share one.  Closed when the interpreter exits."""
    runner = getattr(_RUNNERS, "runner", None)
    if runner is None:
        runner = _RUNNERS.runner = asyncio.Runner()
        atexit.register(runner.close)
    return runner


def skip_replayed(store: RunStore, run_id: int, backend: Any) -> None:
    """A continued replay run must not serve the answers it already used again."""
    from detbal.agents.backends.replay import stored_answers

    used: dict[str, int] = {}
    for row in store.iter_attempts([run_id]):
        params = json.loads(row["params"]) if row["params"] else {}
        answers = stored_answers(row)
        if not params.get("vote") and "answer" not in params and "answer_in" not in params:
            answers = answers[:1]  # an attempt of a live run used one answer whatever its count
        for key, _answer in answers:
            used[key] = used.get(key, 0) + 1
    for key, n in used.items():
        backend.skip(key, n)
