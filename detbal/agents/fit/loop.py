"""The island search loop of the symbolic-fitting agent (METHOD.md section 1).

Schedule.  Round ``r`` of the run belongs to cycle ``c = r // (I R)``, is round
``k = (r // I) % R`` of that cycle and runs on island ``i = r % I`` (``I`` islands,
``R`` rounds per cycle).  Its ``n`` (default 3) attempts have the seqs
``r n .. r n + n - 1``.  Within a cycle the islands run concurrently and each
island's rounds run in order; a cycle ends (and the worst islands are reseeded from
the best) only when every island has finished it.

A round draws, from ``numpy.random.default_rng([seed, r])``, the example state
(uniformly from the island's population), the model (uniformly from the backends)
and the sampling seed; shows the example with its score, fitted parameters and
reasoning; asks for ``n`` new ansatzes (two-call: generator, then a translator call
at temperature 0 per idea; one-call: one call); validates and fits each; and
stores one attempt per new ansatz: ``source`` = example, ``target`` = ansatz string
(features: score, MSE, parameters; canonical: sympy form) or an escape
(``api_error``, ``empty``, ``invalid_ansatz``, ``fit_failed``).

Constrained decoding (``FitConfig.constrain``).  One-call: the whole answer is
decoded under :func:`~detbal.agents.fit.grammar.ansatz_grammar` (``per_round``
ideas); two-call: each translation is.  Parameters are then renumbered in order of
first use, so every answer the grammar admits is a valid state; ``params.grammar``
of every attempt holds the grammar's SHA-256 (None: free text).

Replay.  Each call's whole answer is stored once: in ``params.answer`` of the
first attempt the round stores (the others point to it with ``params.answer_in``);
``raw_answer`` of each attempt holds its own idea (two-call: idea, the mark
:data:`~detbal.agents.fit.prompts.TRANSLATION_MARK` and the translation).
Translator calls carry the key ``translate:<idea>``, so the replay backend
serves every call of a stored run again.

Driver.  :class:`FitTask` is a task of the one agent driver
(:mod:`detbal.agents.session`, :func:`detbal.run_agent`); a unit is a round.  At most
``concurrency`` rounds (and model calls) are in flight; a round waits until its
island's previous round is committed, the first round of a cycle until the cycle
before is complete and repopulated.  A round's attempts are committed in one
transaction, so a killed run holds whole rounds only.

Resume.  Every choice is a function of the seed, the round index and the island
populations, and the populations are a function of the stored attempts (their
``params`` hold island, round and fit results).  So a restarted run replays the
stored rounds without calling any model and continues; a round cut short (stored
one by one by earlier versions) is re-run storing only its missing seqs, with the
stored example.  Seqs are never duplicated (``(run_id, seq)`` is unique in the store).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from detbal.agents.backends.base import Backend, BackendError, BackendStop, Completion, Message, SamplingParams
from detbal.agents.fit import prompts as P
from detbal.agents.fit.ansatz import (
    AnsatzError,
    canonical_form,
    compile_ansatz,
    renumber_params,
    validate_ansatz,
)
from detbal.agents.fit.config import SEED_REASONING, FitConfig
from detbal.agents.fit.data import Dataset, load_dataset
from detbal.agents.fit.fitting import FitFailed, fit_parameters, fit_seed, score_from_mse
from detbal.agents.fit.grammar import config_grammar
from detbal.agents.runner import Budget, BudgetExhausted, CallPolicy, StopSignal
from detbal.agents.select import CONFIG_DEFAULTS, Guide, draw_index, refit_point, uniform_record, walk_record
from detbal.errors import DetbalError
from detbal.progress import Progress
from detbal.store import Attempt, RunStore, utc_now

if TYPE_CHECKING:
    from detbal.agents.session import AgentRunResult, CallFn, RunSpec, SessionContext, UnitResult

log = logging.getLogger(__name__)

RNG_SCHEME = "numpy.random.default_rng([seed, round])"
#: run-config keys that identify a fit run (besides the selection's)
FIT_IDENTITY = ("fit_structure", "temperature", "top_p", "base_url")


def grammar_shape(config: FitConfig) -> dict[str, Any]:
    """The run-config keys of the grammar's shape."""
    return {name: getattr(config, name) for name in FitConfig.GRAMMAR}


#: the grammar's shape in a run config (runs made before it was a setting: the defaults)
GRAMMAR_DEFAULTS: dict[str, Any] = grammar_shape(FitConfig())


@dataclass(frozen=True)
class Member:
    """A state in an island's population."""

    text: str
    score: float
    mse: float
    params: tuple[float, ...]
    reasoning: str
    seq: int  # attempt that produced it; -1 for the initial state


@dataclass(frozen=True)
class Evaluation:
    """A validated and fitted ansatz."""

    text: str
    canonical: str
    n_params: int
    params: tuple[float, ...]
    mse: float
    score: float
    n_finite: int

    def features(self, dataset: str, starts: int) -> dict[str, Any]:
        return {"dataset": dataset, "score": self.score, "mse": self.mse, "params": list(self.params),
                "n_params": self.n_params, "starts": starts, "n_finite": self.n_finite}


class Evaluator:
    """Validate, fit and score ansatz strings on one data set (results cached by text)."""

    def __init__(self, dataset: Dataset, config: FitConfig) -> None:
        self.dataset = dataset
        self.config = config
        self._cache: dict[str, Evaluation | AnsatzError | FitFailed] = {}
        base = self._fit(config.baseline)
        self.mse_base = base.mse

    def _fit(self, text: str) -> Any:
        ansatz = validate_ansatz(text, self.dataset.features)
        result = fit_parameters(
            compile_ansatz(ansatz), self.dataset.X, self.dataset.y, starts=self.config.starts,
            seed=fit_seed(ansatz.text, self.config.seed), maxiter=self.config.fit_maxiter,
        )
        return result

    def evaluate(self, text: str) -> Evaluation:
        """Raise :class:`AnsatzError` or :class:`FitFailed`, else the fitted :class:`Evaluation`."""
        hit = self._cache.get(text)
        if hit is None:
            try:
                ansatz = validate_ansatz(text, self.dataset.features)
                result = self._fit(text)
                hit = Evaluation(
                    text=ansatz.text, canonical=canonical_form(ansatz), n_params=ansatz.n_params,
                    params=result.params, mse=result.mse,
                    score=score_from_mse(result.mse, self.mse_base), n_finite=result.n_finite,
                )
            except (AnsatzError, FitFailed) as exc:
                hit = exc
            self._cache[text] = hit
        if isinstance(hit, Exception):
            raise hit
        return hit


@dataclass
class _Slot:
    """The outcome of one of a round's attempts, before it is stored."""

    raw: str | None = None
    text: str | None = None
    escape: str | None = None
    detail: str | None = None
    evaluation: Evaluation | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    translator: dict[str, Any] | None = None
    call_answer: str | None = None  # slot 0 only: the whole answer of the round's (generator) call


def _add_usage(slot: _Slot, c: Completion) -> None:
    if c.prompt_tokens is not None:
        slot.prompt_tokens = (slot.prompt_tokens or 0) + c.prompt_tokens
    if c.completion_tokens is not None:
        slot.completion_tokens = (slot.completion_tokens or 0) + c.completion_tokens
    slot.latency_s = (slot.latency_s or 0.0) + c.latency_s


def repopulated(islands: Sequence[list[Member]], fraction: float) -> list[list[Member]]:
    """The islands after a cycle: the worst ``floor(fraction * n)`` (at least one when
    ``fraction`` > 0 and n >= 2) get a copy of the best island's population."""
    out = [list(pop) for pop in islands]
    n = len(out)
    if fraction <= 0 or n < 2:
        return out
    k = max(1, math.floor(fraction * n))
    order = sorted(range(n), key=lambda i: (-max(m.score for m in out[i]), i))
    donor = out[order[0]]
    for i in order[-k:]:
        if i != order[0]:
            out[i] = list(donor)
    return out


class FitTask:
    """The symbolic-fitting task, ready for :func:`detbal.run_agent` (an
    :class:`~detbal.agents.session.AgentTask`).

    Every setting is a keyword (the fields of :class:`~detbal.agents.fit.config.FitConfig`),
    as in a PySR or deeptime estimator::

        task = detbal.FitTask(dataset="nikuradse_2", islands=4, cycles=5, mode="one-call", seed=1)

    or pass a :class:`FitConfig` (and keywords to change).  ``data``: an already loaded
    :class:`~detbal.agents.fit.data.Dataset` (default: loaded from ``dataset``/``data_dir``).
    Without ``attempts`` a run goes to the planned ``cycles * islands * rounds * per_round``.
    """

    name = "fit"

    def __init__(self, config: FitConfig | Mapping[str, Any] | None = None, /, *,
                 data: Dataset | None = None, **fields: Any) -> None:
        if isinstance(config, Mapping):
            config = FitConfig.from_mapping(config)
        try:
            self.config = replace(config or FitConfig(), **fields)
        except TypeError as exc:
            raise DetbalError(f"FitTask: {exc}") from None
        self.data = data

    def __repr__(self) -> str:
        return f"FitTask({self.config!r})"

    def run_spec(self) -> RunSpec:
        from detbal.agents.fit import grammar_sha256
        from detbal.agents.session import RunSpec

        cfg = self.config
        structural = {k: getattr(cfg, k) for k in FitConfig.STRUCTURAL}
        config = {"fit": cfg.as_dict(), "fit_structure": structural, "seed": cfg.seed,
                  "temperature": cfg.temperature, "top_p": cfg.top_p,
                  "planned_attempts": cfg.planned_attempts, "constrain": cfg.constrain,
                  "grammar": grammar_sha256(cfg)} | cfg.selection.as_config() | grammar_shape(cfg)
        defaults = CONFIG_DEFAULTS | GRAMMAR_DEFAULTS
        return RunSpec(self.name, config, FIT_IDENTITY + tuple(defaults), defaults)

    def default_attempts(self) -> int | None:
        return self.config.planned_attempts

    async def begin(self, ctx: SessionContext) -> FitRun:
        _check_resume(ctx.store, ctx.run_id, self.config)
        run = FitRun(ctx, self.config, self.data)
        await run.start()
        return run


class FitRun:
    """One fit run in progress (a :class:`~detbal.agents.session.TaskRun`); see the module
    docstring.  A unit is a round ``r``: one model call's 1..n attempts (two-call: with the
    translator calls of its ideas)."""

    def __init__(self, ctx: SessionContext, config: FitConfig, dataset: Dataset | None = None) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.run_id = ctx.run_id
        self.backends = list(ctx.backends)
        self.config = config
        self.target = int(ctx.attempts) if ctx.attempts is not None else config.planned_attempts
        if self.target < 0:
            raise DetbalError("attempts must not be negative")
        self.call: CallFn = ctx.call
        self.dataset = dataset or load_dataset(config.dataset, config.data_dir, download=config.download)
        self.prompt_hash = P.prompt_hash(config.mode)
        grammar = config_grammar(config)
        self.grammar = grammar.gbnf if grammar is not None else None  # one-call answer or translation
        self.committed_attempts = 0
        self.escapes = 0
        self.guide = Guide(config.selection) if config.selection.guided else None
        self.outcomes: dict[int, tuple[str, str | None]] = {}  # seq -> (source, target): the walk
        self.best: Member | None = None
        n = config.per_round
        self.n_rounds = -(-self.target // n)
        self._per_cycle = config.islands * config.rounds
        self._sem = asyncio.Semaphore(ctx.concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self.rows: dict[int, dict[str, Any]] = {}
        self.stored: set[int] = set()
        self.applied: set[int] = set()
        self._members: dict[int, list[Member | None]] = {}  # committed live, not applied yet
        self._cycle = 0  # the first cycle not complete

    # -- schedule ------------------------------------------------------------------
    def _place(self, r: int) -> tuple[int, int, int]:
        """``(cycle, round in cycle, island)`` of round ``r``."""
        I = self.config.islands
        return r // self._per_cycle, (r // I) % self.config.rounds, r % I

    def _seqs(self, r: int) -> list[int]:
        n = self.config.per_round
        return [r * n + s for s in range(n) if r * n + s < self.target]

    def _may_start(self, r: int) -> bool:
        """The round's island population is final: its previous round in the cycle is
        applied, or (first round of a cycle) every earlier cycle is complete."""
        c, k, _i = self._place(r)
        if k > 0:
            return (r - self.config.islands) in self.applied
        return self._cycle >= c

    def _advance(self) -> None:
        """Apply every stored round whose turn has come, completing (and repopulating) cycles."""
        cfg = self.config
        while self._cycle * self._per_cycle < self.n_rounds:
            c = self._cycle
            rounds = range(c * self._per_cycle, min((c + 1) * self._per_cycle, self.n_rounds))
            changed = True
            while changed:
                changed = False
                for r in rounds:
                    if r in self.applied or not self._may_start(r):
                        continue
                    if all(s in self.stored for s in self._seqs(r)):
                        self._apply(r)
                        changed = True
            if not all(r in self.applied for r in rounds):
                return
            self._cycle += 1
            if (c + 1) % cfg.repopulate_every == 0:
                self.islands = repopulated(self.islands, cfg.repopulate_fraction)

    def _apply(self, r: int) -> None:
        members = self._members.pop(r, None)
        if members is None:  # stored before this session
            members = [self._member_from_row(self.rows[s]) for s in self._seqs(r)]
        i = self._place(r)[2]
        for m in members:
            if m is not None:
                self.known.setdefault(m.text, m)
                self._add(i, m)
        self.applied.add(r)

    # -- the TaskRun protocol ---------------------------------------------------------
    async def start(self) -> None:
        """Fit the seed ansatz, then restore the islands from the stored attempts."""
        cfg = self.config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detbal-fit")
        loop = asyncio.get_running_loop()
        try:
            self.evaluator = await loop.run_in_executor(self._executor, Evaluator, self.dataset, cfg)
            try:
                seed_eval = await loop.run_in_executor(self._executor, self.evaluator.evaluate,
                                                       cfg.initial_ansatz)
            except (AnsatzError, FitFailed) as exc:
                raise DetbalError(f"the seed ansatz {cfg.initial_ansatz!r} is unusable: {exc}") from None
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        seed_member = self._member_from_eval(seed_eval, SEED_REASONING, -1)
        # the seed is a source before the model ever writes it: its canonical form and
        # features go in now, so that `--states canonical` merges it with its spellings
        self.store.describe_state(seed_eval.text, canonical=seed_eval.canonical,
                                  features=seed_eval.features(self.dataset.name, cfg.starts))
        self.islands: list[list[Member]] = [[seed_member] for _ in range(cfg.islands)]
        self.known: dict[str, Member] = {seed_member.text: seed_member}
        self.best = seed_member
        self.rows = self._load_stored()
        for seq in sorted(self.rows):
            self.stored.add(seq)
            self._stored_row(seq, self.rows[seq])
        self._advance()

    def units(self) -> Iterator[int]:
        todo = [r for r in range(self.n_rounds) if not all(s in self.stored for s in self._seqs(r))]
        return iter(todo)

    async def perform(self, r: int) -> UnitResult:
        await self.ctx.wait_for(lambda: self._may_start(r))
        return await self._live_round(r)

    def committed(self, r: int, result: UnitResult) -> None:
        for seq, attempt in result.attempts:
            self.stored.add(seq)
            self._stored_row(seq, {"source": attempt.source, "target": attempt.target,
                                   "escape": attempt.escape, "count": attempt.count})
            self.committed_attempts += 1
            if attempt.escape is not None:
                self.escapes += 1
        self._members[r] = result.state
        self._advance()

    def conflicted(self, r: int) -> None:
        """Another process stored this round first: the populations can no longer be known."""
        self.ctx.stop.request(f"round {r} of run {self.run_id} was stored by another process;"
                              " run again to continue from the store", kind="error")

    def postfix(self) -> dict[str, Any]:
        best = self.best.score if self.best is not None else math.nan
        return {"best": f"{best:.1f}", "esc": f"{self.escapes / max(1, self.committed_attempts):.0%}"}

    def summary(self) -> dict[str, Any]:
        """``best_ansatz`` and ``best_score`` over every island so far."""
        best = self.best
        return {"best_ansatz": best.text if best else None,
                "best_score": best.score if best else math.nan}

    async def end(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- populations ---------------------------------------------------------
    def _member_from_eval(self, ev: Evaluation, reasoning: str, seq: int) -> Member:
        return Member(ev.text, ev.score, ev.mse, ev.params, reasoning, seq)

    def _add(self, island: int, member: Member) -> None:
        pop = self.islands[island]
        if any(m.text == member.text for m in pop):
            return
        pop.append(member)
        pop.sort(key=lambda m: (-m.score, m.seq))
        del pop[self.config.population:]
        if self.best is None or (member.score, -member.seq) > (self.best.score, -self.best.seq):
            self.best = member

    # -- stored attempts -------------------------------------------------------
    def _load_stored(self) -> dict[int, dict[str, Any]]:
        import json

        rows: dict[int, dict[str, Any]] = {}
        for row in self.store.iter_attempts([self.run_id]):
            p = row.get("params")
            row["params"] = json.loads(p) if isinstance(p, str) else (p or {})
            rows[int(row["seq"])] = row
        return rows

    def _member_from_row(self, row: Mapping[str, Any]) -> Member | None:
        if row.get("target") is None:
            return None
        fit = row["params"].get("fit")
        reasoning = P.reasoning_from_raw(row.get("raw_answer"))
        if fit and all(k in fit for k in ("score", "mse", "params")):
            return Member(row["target"], float(fit["score"]), float(fit["mse"]),
                          tuple(float(v) for v in fit["params"]), reasoning, int(row["seq"]))
        try:  # stored without fit results (not written by this loop): fit again
            ev = self.evaluator.evaluate(row["target"])
        except (AnsatzError, FitFailed):
            return None
        return self._member_from_eval(ev, reasoning, int(row["seq"]))

    def _stored_row(self, seq: int, row: Mapping[str, Any]) -> None:
        self.outcomes[seq] = (row["source"], row["target"])
        if self.guide is not None:
            self.guide.add(seq, (row["source"], row["target"], row["escape"], int(row.get("count") or 1)))

    # -- one round -----------------------------------------------------------
    async def _call(self, backend: Backend, messages: list[Message], params: SamplingParams,
                    key: str | None) -> Completion:
        async with self._sem:
            if key is None:
                return await self.call(backend, messages, params)
            return await self.call(backend, messages, params, key=key)

    async def _guarded(self, backend: Backend, messages: list[Message], params: SamplingParams,
                       key: str | None) -> Completion | BackendError:
        """A completion, or the error to store as ``api_error``; a stop condition (budget spent,
        backend stopped) propagates and the driver stores nothing of the round."""
        try:
            return await self._call(backend, messages, params, key)
        except (BackendStop, BudgetExhausted):
            raise
        except BackendError as exc:
            return exc
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a backend bug must not lose the attempt
            log.warning("model call raised %s: %s", type(exc).__name__, exc)
            return BackendError(f"{type(exc).__name__}: {exc}", retryable=False)

    def _example_fields(self, example: Member) -> dict[str, Any]:
        return {
            "data_description": P.DATA_DESCRIPTIONS[self.dataset.name],
            "variables": ", ".join(self.dataset.features),
            "example_ansatz": example.text,
            "example_score": P.format_score(example.score),
            "example_params": P.format_params(example.params),
            "example_reasoning": example.reasoning or "(none given)",
            "baseline_ansatz": self.config.baseline,
            "n_new": self.config.per_round,
        }

    async def _evaluate(self, slot: _Slot) -> None:
        if slot.text is None:
            return
        if not slot.text:
            slot.escape, slot.detail = "empty", "no ansatz in the answer"
            return
        loop = asyncio.get_running_loop()
        try:
            slot.evaluation = await loop.run_in_executor(self._executor, self.evaluator.evaluate, slot.text)
        except AnsatzError as exc:
            slot.escape, slot.detail = "invalid_ansatz", exc.reason
        except FitFailed as exc:
            slot.escape, slot.detail = "fit_failed", exc.reason

    async def _two_call(self, backend: Backend, example: Member, sp: SamplingParams) -> list[_Slot]:
        cfg = self.config
        n = cfg.per_round
        fields = self._example_fields(example)
        msgs = [{"role": "user", "content": P.render("generate", **fields)}]
        gen = await self._guarded(backend, msgs, sp, example.text)
        if isinstance(gen, BackendError):
            return [_Slot(escape="api_error", detail=str(gen)[:500]) for _ in range(n)]
        ideas = P.split_ideas(gen.text, n)
        slots = [_Slot() for _ in range(n)]
        _add_usage(slots[0], gen)
        for s in range(n):
            slots[s].finish_reason = gen.finish_reason
            if s >= len(ideas):
                slots[s].raw = gen.text if not ideas else None
                slots[s].escape = "empty"
                slots[s].detail = f"the answer held {len(ideas)} of {n} ideas"
        slots[0].call_answer = gen.text
        tp = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=cfg.translate_max_tokens, seed=sp.seed,
                            grammar=self.grammar)

        async def translate(s: int) -> None:
            idea = ideas[s]
            tmsgs = [{"role": "user", "content": P.render(
                "translate", variables=", ".join(self.dataset.features), idea=idea.text)}]
            out = await self._guarded(backend, tmsgs, tp, P.translation_key(idea.text))
            slot = slots[s]
            slot.translator = tp.as_dict()
            if isinstance(out, BackendError):
                slot.raw = idea.text
                slot.escape, slot.detail = "api_error", f"translator: {str(out)[:480]}"
                return
            _add_usage(slot, out)
            slot.finish_reason = out.finish_reason
            slot.raw = idea.text + P.TRANSLATION_MARK + out.text
            slot.text = self._decoded(P.translated_ansatz(out.text))
            await self._evaluate(slot)

        done = await asyncio.gather(*(translate(s) for s in range(min(n, len(ideas)))),
                                    return_exceptions=True)
        for outcome in done:  # after all translations have settled, so none is left running
            if isinstance(outcome, BaseException):
                raise outcome
        return slots

    async def _one_call(self, backend: Backend, example: Member, sp: SamplingParams) -> list[_Slot]:
        n = self.config.per_round
        msgs = [{"role": "user", "content": P.render("one-call", **self._example_fields(example))}]
        out = await self._guarded(backend, msgs, sp, example.text)
        if isinstance(out, BackendError):
            return [_Slot(escape="api_error", detail=str(out)[:500]) for _ in range(n)]
        ideas = P.split_ideas(out.text, n)
        slots = [_Slot(finish_reason=out.finish_reason) for _ in range(n)]
        _add_usage(slots[0], out)
        slots[0].call_answer = out.text
        for s in range(n):
            if s < len(ideas):
                slots[s].raw = ideas[s].text
                slots[s].text = self._decoded(ideas[s].formula)
                if not ideas[s].formula:
                    slots[s].escape, slots[s].detail = "empty", "the idea has no ANSATZ line"
                    slots[s].text = None
            else:
                slots[s].raw = out.text if not ideas else None
                slots[s].escape, slots[s].detail = "empty", f"the answer held {len(ideas)} of {n} ideas"
        await asyncio.gather(*(self._evaluate(sl) for sl in slots))
        return slots

    def _decoded(self, formula: str) -> str:
        """Under a grammar the model numbers parameters freely: renumber them in order of use."""
        return renumber_params(formula) if self.grammar is not None and formula else formula

    def _attempt(self, slot: _Slot, example: Member, base_params: dict[str, Any], s: int,
                 started: str) -> Attempt:
        params = dict(base_params, slot=s)
        if slot.translator is not None:
            params["translator"] = slot.translator
        features = canonical = None
        if slot.escape is None and slot.evaluation is not None:
            ev = slot.evaluation
            params["fit"] = {"score": ev.score, "mse": ev.mse, "params": list(ev.params)}
            features = ev.features(self.dataset.name, self.config.starts)
            canonical = ev.canonical
            target, escape = ev.text, None
        else:
            target, escape = None, slot.escape or "empty"
        return Attempt(
            source=example.text, target=target, escape=escape,
            escape_detail=slot.detail if escape else None, raw_answer=slot.raw,
            prompt_tokens=slot.prompt_tokens, completion_tokens=slot.completion_tokens,
            latency_s=slot.latency_s, finish_reason=slot.finish_reason, params=params,
            prompt_hash=self.prompt_hash, started=started, finished=utc_now(),
            target_features=features, target_canonical=canonical,
        )

    def _ready(self, r: int) -> int:
        """Seqs certain to be stored when round ``r`` starts: every earlier round with one
        island, else the rounds of the earlier cycles (islands run concurrently)."""
        cfg = self.config
        if cfg.islands == 1:
            return r * cfg.per_round
        return (r // (cfg.islands * cfg.rounds)) * cfg.islands * cfg.rounds * cfg.per_round

    def _draw(self, r: int, pop: list[Member], rng: np.random.Generator) -> tuple[Member, dict[str, Any]]:
        """The round's example and how it was drawn (``params.select``)."""
        uniform = pop[int(rng.integers(len(pop)))]
        if self.config.selection.rule == "walk" and r >= self.config.islands:
            return self._walk(r)
        if self.guide is None:
            return uniform, uniform_record(len(pop))
        u = float(np.random.default_rng([self.config.seed, r, 1]).random())
        P = refit_point(min(self._ready(r), self.target), self.guide.selection.every)
        text, record = self.guide.choose([m.text for m in pop], u, P)
        return next(m for m in pop if m.text == text), record

    def _walk(self, r: int) -> tuple[Member, dict[str, Any]]:
        """The walk's next example: one of the ansatzes the island's previous round wrote
        (drawn with the round's own uniform number), or that round's example again if it
        wrote none.  That round is applied before this one starts (``_may_start``)."""
        prev = r - self.config.islands
        seqs = self._seqs(prev)
        written = [self.outcomes[s][1] for s in seqs if self.outcomes[s][1] is not None]
        if written:
            u = float(np.random.default_rng([self.config.seed, r, 1]).random())
            text = written[draw_index(np.full(len(written), 1.0 / len(written)), u)]
        else:
            text = self.outcomes[seqs[0]][0]
        example = self.known.get(text) or Member(text, math.nan, math.nan, (), "", -1)
        return example, walk_record(prev, len(written))

    async def _live_round(self, r: int) -> UnitResult:
        from detbal.agents.session import UnitResult

        cfg = self.config
        c, k, i = self._place(r)
        seqs = self._seqs(r)
        stored = {s: self.rows[s] for s in seqs if s in self.rows}
        rng = np.random.default_rng([cfg.seed, r])
        pop = self.islands[i]
        example, select = self._draw(r, pop, rng)
        backend = self.backends[int(rng.integers(len(self.backends)))]
        call_seed = int(rng.integers(2**31 - 1))
        if stored:  # a round cut short (stored one by one before rounds were atomic): keep its example
            src = next(iter(stored.values()))["source"]
            if src != example.text:
                example = self.known.get(src) or Member(src, math.nan, math.nan, (), "", -1)
        sp = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                            seed=call_seed, grammar=self.grammar if cfg.mode == "one-call" else None)
        started = utc_now()
        if cfg.mode == "two-call":
            slots = await self._two_call(backend, example, sp)
        else:
            slots = await self._one_call(backend, example, sp)
        base_params = {**sp.as_dict(), "model": backend.model, "backend": backend.name,
                       "mode": cfg.mode, "island": i, "cycle": c, "round": r, "round_in_cycle": k,
                       "select": select}
        rng_state = {"scheme": RNG_SCHEME, "seed": cfg.seed, "round": r}
        first = r * cfg.per_round
        # the call's whole answer is stored once, with the first attempt this call stores
        carrier = min(seq for seq in seqs if seq not in stored)
        attempts: list[tuple[int, Attempt]] = []
        members: list[Member | None] = []
        for seq in seqs:
            s = seq - first
            if seq in stored:
                members.append(self._member_from_row(stored[seq]))
                continue
            attempt = self._attempt(slots[s], example, base_params, s, started)
            if slots[0].call_answer is not None:
                extra = {"answer": slots[0].call_answer} if seq == carrier else {"answer_in": carrier}
                attempt = replace(attempt, params={**(attempt.params or {}), **extra})
            attempts.append((seq, attempt))
            ev = slots[s].evaluation
            members.append(self._member_from_eval(ev, P.reasoning_from_raw(slots[s].raw), seq)
                           if attempt.target is not None and ev is not None else None)
        return UnitResult(tuple(attempts), rng_state, members)


def _check_resume(store: RunStore, run_id: int, config: FitConfig) -> None:
    """Refuse to continue a run with settings that would change its schedule."""
    stored = store.get_run(run_id).config.get("fit")
    if not isinstance(stored, Mapping):
        return
    for name in FitConfig.STRUCTURAL + FitConfig.SELECTION + FitConfig.GRAMMAR:
        if name in stored and stored[name] != getattr(config, name):
            raise DetbalError(
                f"run {run_id} was made with {name}={stored[name]!r}, not {getattr(config, name)!r};"
                " resume it with the same settings"
            )


async def run_fit(
    store: RunStore,
    run_id: int,
    backends: Sequence[Backend],
    config: FitConfig | Mapping[str, Any],
    *,
    attempts: int | None = None,
    concurrency: int = 1,
    progress: Progress | None = None,
    call: CallFn | None = None,
    budget: Budget | None = None,
    policy: CallPolicy | None = None,
    stop: StopSignal | None = None,
    handle_signals: bool = False,
    dataset: Dataset | None = None,
) -> AgentRunResult:
    """Run (or resume) the island search on the stored run ``run_id`` until ``attempts``
    attempts are stored: :func:`detbal.agents.session.drive_task` with a :class:`FitTask`
    (no run lookup; settings that would change the schedule are refused)."""
    from detbal.agents.session import drive_task

    task = FitTask(config, data=dataset)
    return await drive_task(store, run_id, task, list(backends), attempts=attempts,
                            concurrency=concurrency, budget=budget, policy=policy, progress=progress,
                            call=call, stop=stop, handle_signals=handle_signals)
