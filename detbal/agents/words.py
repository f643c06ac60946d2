"""Conditioned word generation (METHOD.md section 1), run against a real model.

A state is an upper-case word whose letter values (A=1 ... Z=26) sum to the target
(default 100).  Each attempt ``seq`` draws the prompt word uniformly from the valid
words found so far (starting from the seed word, default BUZZY), makes one call
(or ``M`` calls with majority voting), strips and upper-cases the answer and
stores the outcome: a new state, or an escape ``empty`` / ``not_a_word`` /
``same_word`` / ``wrong_sum`` (sum in ``escape_detail``) / ``api_error`` /
``no_majority``.  Escapes never become prompt words.

*Constrained decoding* (``WordsConfig.constrain``, the default of the embedded
model): each call carries a grammar that admits only the dictionary words whose
letter values sum to the target, minus the prompt word (:class:`WordGrammar`).
The prompt is unchanged.  The dictionary is the lower-case entries of a word list
(default: Debian's ``wamerican``, /usr/share/dict/american-english; 757 words of
value 100).  Excluding the prompt word turns the ``same_word`` escape, which the
task defines as no new state, into a new state: the kernel from ``f`` is the
model's kernel renormalised over ``g != f``, which changes ``log T(g<-f)/T(f<-g)``
by ``log(1 - P(f|f)) - log(1 - P(g|g))``, a potential difference; balance tests are
unaffected and the potential shifts by a per-state term.

*Relaxed mode* (for small models that cannot do the arithmetic): any alphabetic
word is a state; the prompt still asks for the target sum, and the letter sum is
stored as the state feature ``letter_sum``.

Randomness is derived from ``(seed, seq)`` only: the prompt word of attempt
``seq`` is ``found[Random(f"{seed}:{seq}").randrange(len(found))]`` over the
found list as it stands (states in the order their first attempt was committed),
and the model's sampling seed is a hash of ``(seed, seq, vote index)``.  A
resumed run rebuilds the found list from the store and so continues the same
generator; at concurrency 1 a resumed run makes exactly the choices an
uninterrupted one would have made.

*Potential-guided selection* (``WordsConfig.select``, :mod:`detbal.agents.select`):
the prompt word is drawn from the same found list with probabilities from the
potential fitted on attempts ``0 .. P-1``, ``P = every * floor(seq / every)``,
using the uniform number ``Random(f"{seed}:{seq}").random()``.  An attempt whose
refit point is not stored yet (concurrency > 1) waits for it, so the fit is always
the same function of the same stored attempts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.resources
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detbal.agents.backends.base import Backend, Completion, Message, SamplingParams
from detbal.agents.grammar import Grammar, literals
from detbal.agents.select import CONFIG_DEFAULTS, Guide, Selection, refit_point, uniform_record, walk_record
from detbal.agents.runner import Budget, CallFailed, CallPolicy, RunTotals, StopSignal, Tally, call_model
from detbal.errors import DetbalError, InputError
from detbal.progress import Progress
from detbal.store import Attempt, RunStore, utc_now

if TYPE_CHECKING:
    from detbal.agents.session import AgentRunResult, RunSpec, SessionContext, UnitResult

TASK = "words"
_ROLE_LINE = re.compile(r"^\[(system|user|assistant)\]\s*$")
_STRIP = " \t\r\n\"'`*.,!?;:()[]{}<>"


# -- the prompt ------------------------------------------------------------------


@dataclass(frozen=True)
class PromptTemplate:
    """Chat messages with ``{word}`` and ``{target}`` placeholders, from a text file.

    File format: ``#`` lines are comments; ``[system]``, ``[user]`` or
    ``[assistant]`` on a line of its own starts a message.  ``sha256`` is the hash
    of the file's bytes, stored with every attempt as ``prompt_hash``.
    """

    messages: tuple[tuple[str, str], ...]
    sha256: str
    source: str

    @classmethod
    def parse(cls, raw: bytes, source: str = "<text>") -> PromptTemplate:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(source, "prompt template is not UTF-8 text") from None
        messages: list[tuple[str, list[str]]] = []
        for line in text.splitlines():
            m = _ROLE_LINE.match(line)
            if m:
                messages.append((m.group(1), []))
            elif line.startswith("#") and not messages:
                continue
            elif line.startswith("#"):
                continue
            elif messages:
                messages[-1][1].append(line)
            elif line.strip():
                raise InputError(source, "prompt template text before the first [system]/[user] line")
        out = tuple((role, "\n".join(lines).strip()) for role, lines in messages)
        if not out or out[-1][0] != "user":
            raise InputError(source, "prompt template must end with a [user] message")
        if not any("{word}" in content for _, content in out):
            raise InputError(source, "prompt template must contain the placeholder {word}")
        return cls(messages=out, sha256=hashlib.sha256(raw).hexdigest(), source=source)

    @classmethod
    def packaged(cls, name: str = "words.txt") -> PromptTemplate:
        """A template shipped in ``detbal/agents/prompts/``."""
        raw = importlib.resources.files("detbal.agents").joinpath(f"prompts/{name}").read_bytes()
        return cls.parse(raw, f"detbal/agents/prompts/{name}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> PromptTemplate:
        """``path``, or the packaged default ``detbal/agents/prompts/words.txt``."""
        if path is None:
            return cls.packaged()
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise InputError(p, f"cannot read prompt template ({exc.strerror})") from None
        return cls.parse(raw, str(p))

    def render(self, word: str, target: int) -> list[Message]:
        return [
            {"role": role, "content": content.replace("{word}", word).replace("{target}", str(target))}
            for role, content in self.messages
        ]


# -- answers ---------------------------------------------------------------------


def letter_sum(word: str) -> int:
    """Sum of letter values, A=1 ... Z=26 (the word must be upper-case A-Z)."""
    return sum(ord(c) - 64 for c in word)


def normalise(answer: str) -> str:
    """Strip white space and enclosing quotes/punctuation, upper-case."""
    return answer.strip().strip(_STRIP).upper()


def is_word(text: str) -> bool:
    return text.isascii() and text.isalpha()


@dataclass(frozen=True)
class Outcome:
    target: str | None
    escape: str | None
    detail: str | None = None
    features: dict[str, Any] | None = None


def classify(answer: str, source: str, target_sum: int, relaxed: bool = False) -> Outcome:
    """Turn one answer into a new state or a categorised escape."""
    word = normalise(answer)
    if not word:
        return Outcome(None, "empty")
    if not is_word(word):
        return Outcome(None, "not_a_word", word[:80])
    if word == source:
        return Outcome(None, "same_word")
    s = letter_sum(word)
    if not relaxed and s != target_sum:
        return Outcome(None, "wrong_sum", str(s))
    return Outcome(word, None, None, {"letter_sum": s})


def majority(answers: Sequence[str], n_agree: int) -> tuple[str | None, str]:
    """The most common normalised answer if at least ``n_agree`` agree, and a tally."""
    counts = Counter(normalise(a) for a in answers)
    tally = json.dumps(dict(counts.most_common()), ensure_ascii=True)
    if not counts:
        return None, tally
    top, n = counts.most_common(1)[0]
    return (top if n >= n_agree else None), tally


# -- the dictionary grammar -------------------------------------------------------

#: Debian's ``wamerican`` word list (scripts/setup.sh installs it)
DEFAULT_WORD_LIST = "/usr/share/dict/american-english"
#: how the per-call grammar is derived from the base grammar (recorded in the run config)
GRAMMAR_RULE = "dictionary words of the target value, minus the prompt word"


@dataclass(frozen=True)
class WordGrammar:
    """The dictionary words of value ``target`` and the grammar of each call.

    ``words``: upper-case, sorted.  :attr:`base` admits all of them; :meth:`for_source`
    all but the prompt word (the grammar actually sent).  :attr:`sha256` (of the base
    grammar) and :data:`GRAMMAR_RULE` identify the grammar of every call.
    """

    words: tuple[str, ...]
    target: int
    source: str
    source_sha256: str
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, target: int = 100, path: str | Path | None = None) -> WordGrammar:
        """Lower-case alphabetic entries of the word list at ``path`` whose value is ``target``.

        Capitalised entries (proper nouns) and entries with other characters
        (possessives, accents) are left out.
        """
        p = Path(path or DEFAULT_WORD_LIST)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            hint = " (Debian: apt-get install wamerican)" if path is None else ""
            raise InputError(p, f"no such word list{hint}") from None
        except OSError as exc:
            raise InputError(p, f"cannot read the word list ({exc.strerror})") from None
        text = raw.decode("utf-8", errors="replace")
        words = sorted({w.upper() for w in (line.strip() for line in text.splitlines())
                        if w.isascii() and w.isalpha() and w.islower()
                        and letter_sum(w.upper()) == target})
        if len(words) < 2:
            raise InputError(p, f"fewer than 2 lower-case words of value {target} in the word list")
        return cls(tuple(words), target, str(p), hashlib.sha256(raw).hexdigest())

    @cached_property
    def base(self) -> Grammar:
        return Grammar({"root": literals(self.words)},
                       f"{len(self.words)} words of value {self.target} from {self.source}")

    @property
    def sha256(self) -> str:
        return self.base.sha256

    def for_source(self, word: str) -> str:
        """GBNF text admitting every dictionary word except ``word``."""
        text = self._cache.get(word)
        if text is None:
            rest = [w for w in self.words if w != word]
            text = self.base.with_rule("root", literals(rest)).gbnf
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[word] = text
        return text

    def describe(self) -> dict[str, Any]:
        """What the run config records."""
        return {"grammar": self.sha256, "grammar_rule": GRAMMAR_RULE, "word_list": self.source,
                "word_list_sha256": self.source_sha256, "grammar_words": len(self.words)}


# -- the agent -------------------------------------------------------------------


def call_seed(seed: int, seq: int, i: int = 0) -> int:
    """The model's sampling seed for call ``i`` of attempt ``seq`` (31 bits)."""
    h = hashlib.blake2b(f"{seed}:{seq}:{i}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class WordsConfig:
    """Everything that defines a word run (stored in the run config)."""

    target: int = 100
    seed_word: str = "BUZZY"
    relaxed: bool = False
    vote: tuple[int, int] | None = None  # (M answers, n that must agree)
    seed: int = 0
    sampling: SamplingParams = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=16)
    constrain: bool = False  # grammar-constrained decoding (strict mode only)
    word_list: str | None = None  # the dictionary of the grammar (default DEFAULT_WORD_LIST)
    select: Selection = Selection()  # how the prompt word is drawn

    def __post_init__(self) -> None:
        word = normalise(self.seed_word)
        if not is_word(word):
            raise DetbalError(f"seed word {self.seed_word!r} is not alphabetic")
        if not self.relaxed and letter_sum(word) != self.target:
            raise DetbalError(
                f"seed word {word} sums to {letter_sum(word)}, not {self.target} (relaxed mode takes any word)"
            )
        if self.vote is not None:
            m, n = self.vote
            if not 1 <= n <= m:
                raise DetbalError("vote (M, n) needs 1 <= n <= M")
        if self.constrain and self.relaxed:
            raise DetbalError("constrained decoding needs the strict word task (relaxed is set)")

    @cached_property
    def grammar(self) -> WordGrammar | None:
        """The dictionary grammar when ``constrain`` is set (loaded once)."""
        return WordGrammar.load(self.target, self.word_list) if self.constrain else None

    def as_config(self) -> dict[str, Any]:
        return {
            "target": self.target, "seed_word": normalise(self.seed_word),
            "relaxed": self.relaxed, "vote": f"{self.vote[0]}:{self.vote[1]}" if self.vote else None,
            "seed": self.seed, "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p, "max_tokens": self.sampling.max_tokens,
            "constrain": self.constrain,
        } | (self.grammar.describe() if self.grammar is not None else {"grammar": None}) \
          | self.select.as_config()


def parse_vote(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not m:
        raise DetbalError(f"a vote is written M:n (e.g. 5:3), not {text!r}")
    return int(m.group(1)), int(m.group(2))


#: run-config keys that identify a word run (a stored run continues only if they match)
WORD_IDENTITY = ("target", "seed_word", "relaxed", "vote", "seed", "temperature", "top_p",
                 "max_tokens", "prompt_hash", "base_url", "constrain", "grammar")


class WordTask:
    """The word task, ready for :func:`detbal.run_agent` (an :class:`~detbal.agents.session.AgentTask`).

    Every setting is a keyword, as in a PySR or deeptime estimator::

        task = detbal.WordTask(target=100, seed_word="BUZZY", seed=3, temperature=0.7)
        task = detbal.WordTask(relaxed=True, vote="5:3", select="potential")

    Keywords: the fields of :class:`WordsConfig` (``target``, ``seed_word``, ``relaxed``,
    ``vote`` as ``(M, n)`` or ``"M:n"``, ``constrain``, ``word_list``, ``select`` as a
    :class:`~detbal.agents.select.Selection` or a rule name), the sampling
    ``temperature``/``top_p``/``max_tokens``, ``prompt`` (a template file or
    :class:`PromptTemplate`; default the packaged one) and ``seed`` (None: a random seed
    for a new run, the stored one for a continued run).  Or pass a :class:`WordsConfig`
    (its ``seed`` is used unless ``seed`` is given) and keywords to change.
    """

    name = TASK

    def __init__(self, config: WordsConfig | None = None, /, *, prompt: str | Path | PromptTemplate | None = None,
                 seed: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 max_tokens: int | None = None, **fields: Any) -> None:
        if isinstance(fields.get("vote"), str):
            fields["vote"] = parse_vote(fields["vote"])
        if isinstance(fields.get("select"), str):
            fields["select"] = Selection(rule=fields["select"])
        base = config or WordsConfig()
        sampling = base.sampling
        for name, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens)):
            if value is not None:
                sampling = replace(sampling, **{name: value})
        try:
            self.config = replace(base, sampling=sampling, **fields,
                                  **({"seed": int(seed)} if seed is not None else {}))
        except TypeError as exc:
            raise DetbalError(f"WordTask: {exc}") from None
        self.seed = seed if seed is not None else (config.seed if config is not None else None)
        self.template = prompt if isinstance(prompt, PromptTemplate) else PromptTemplate.load(prompt)

    def __repr__(self) -> str:
        return f"WordTask({self.config!r}, seed={self.seed!r}, prompt={self.template.source!r})"

    def run_spec(self) -> RunSpec:
        from detbal.agents.session import RunSpec

        config = self.config.as_config() | {"seed": self.seed, "prompt_hash": self.template.sha256,
                                            "prompt_file": self.template.source}
        return RunSpec(TASK, config, WORD_IDENTITY + tuple(CONFIG_DEFAULTS), CONFIG_DEFAULTS)

    def default_attempts(self) -> int | None:
        return None  # the word task has no natural end: attempts must be given

    async def begin(self, ctx: SessionContext) -> WordAgent:
        if ctx.attempts is None:
            raise DetbalError("attempts: the word task needs the number of attempts to run to")
        seed = ctx.config.get("seed")
        config = replace(self.config, seed=int(seed)) if seed is not None else self.config
        agent = WordAgent(ctx.backends[0], self.template, config, ctx.policy, ctx.budget)
        agent.bind(ctx)
        agent.restore(ctx.store, ctx.run_id)
        return agent


class WordAgent:
    """One word run in progress (a :class:`~detbal.agents.session.TaskRun`): builds, runs
    and classifies word attempts; keeps the found list in commit order.  A unit is one
    attempt, named by its seq."""

    def __init__(self, backend: Backend, template: PromptTemplate, config: WordsConfig,
                 policy: CallPolicy, budget: Budget) -> None:
        self.backend = backend
        self.template = template
        self.config = config
        self.policy = policy
        self.budget = budget
        self.seed_word = normalise(config.seed_word)
        self.found: list[str] = [self.seed_word]
        self._found_set = {self.seed_word}
        self.totals = RunTotals()
        self._t0 = time.perf_counter()
        self._calls0 = budget.calls
        self.guide = Guide(config.select)
        self._prefix = 0  # seqs 0 .. _prefix-1 are stored
        self._stored_seqs: set[int] = set()
        self.target = 0
        self.ctx: SessionContext | None = None
        self.call: Callable[..., Any] = functools.partial(call_model, policy=policy, budget=budget)

    def bind(self, ctx: SessionContext) -> None:
        """Work in the driver's run: its call (policy, budget), stop signal and target."""
        self.ctx = ctx
        self.call = ctx.call
        self.target = int(ctx.attempts or 0)

    # -- state ------------------------------------------------------------------
    def restore(self, store: RunStore, run_id: int) -> None:
        """Rebuild the found list and totals from the attempts already committed."""
        for row in store.iter_attempts([run_id]):
            a = Attempt(source=row["source"], target=row["target"], escape=row["escape"],
                        count=row["count"])
            self.totals.add(a)
            self._add_found(row["target"])
            self._stored(int(row["seq"]), a)

    def _add_found(self, word: str | None) -> None:
        if word is not None and word not in self._found_set:
            self._found_set.add(word)
            self.found.append(word)

    def _stored(self, seq: int, a: Attempt) -> None:
        self._stored_seqs.add(seq)
        self.guide.add(seq, (a.source, a.target, a.escape, a.count))
        while self._prefix in self.guide.rows:
            self._prefix += 1

    def units(self) -> Iterator[int]:
        done = set(self._stored_seqs)
        return (s for s in range(self.target) if s not in done)

    def committed(self, seq: int, result: UnitResult) -> None:
        for _seq, attempt in result.attempts:
            self.totals.add(attempt)
            self._add_found(attempt.target)
            self._stored(_seq, attempt)

    def choose(self, seq: int) -> str:
        """The prompt word of attempt ``seq``: uniform over the found list as it stands."""
        return self.found[random.Random(f"{self.config.seed}:{seq}").randrange(len(self.found))]

    async def draw(self, seq: int) -> tuple[str, dict[str, Any]]:
        """The prompt word of attempt ``seq`` and how it was drawn (``params.select``)."""
        sel = self.config.select
        if sel.rule == "walk":
            return await self.walk(seq)
        if not sel.guided:
            n = len(self.found)
            return self.choose(seq), uniform_record(n)
        P = refit_point(seq, sel.every)
        if self._prefix < P:  # concurrency > 1: earlier attempts still in flight
            if self.ctx is None:
                raise DetbalError(f"attempt {seq}: attempts before its refit point {P} are not stored")
            await self.ctx.wait_for(lambda: self._prefix >= P)
        u = random.Random(f"{self.config.seed}:{seq}").random()
        return self.guide.choose(list(self.found), u, P)

    async def walk(self, seq: int) -> tuple[str, dict[str, Any]]:
        """The walk's prompt word: the word attempt ``seq - 1`` wrote, or its prompt word
        again if it escaped (attempt 0: the seed word).  Waits for attempt ``seq - 1``."""
        if seq == 0:
            return self.found[0], walk_record(-1, 1)
        if self._prefix < seq:
            if self.ctx is None:
                raise DetbalError(f"attempt {seq}: the attempt before it is not stored")
            await self.ctx.wait_for(lambda: self._prefix >= seq)
        source, target, _escape, _count = self.guide.rows[seq - 1]
        return (target if target is not None else source), walk_record(seq - 1, 1)  # no choice

    def postfix(self) -> dict[str, Any]:
        dt = max(time.perf_counter() - self._t0, 1e-9)
        return {
            "valid": len(self.found),
            "esc": f"{self.totals.escape_rate:.0%}",
            "tok": self.budget.tokens,
            "calls/s": f"{(self.budget.calls - self._calls0) / dt:.1f}",
        }

    def summary(self) -> dict[str, Any]:
        """``valid_states`` (the seed word included) and ``found`` (in order of discovery)."""
        return {"valid_states": len(self.found), "found": tuple(self.found)}

    async def end(self) -> None:
        return None

    # -- one attempt ------------------------------------------------------------
    async def perform(self, seq: int) -> UnitResult:
        from detbal.agents.session import UnitResult

        attempt, rng_state = await self.attempt(seq)
        return UnitResult(((seq, attempt),), rng_state)

    async def attempt(self, seq: int) -> tuple[Attempt, Any]:
        cfg = self.config
        source, select = await self.draw(seq)
        # the found list as the draw saw it (nothing awaited since: the same length)
        rng_state = {"scheme": "seed+seq", "seed": cfg.seed, "found": len(self.found)}
        messages = self.template.render(source, cfg.target)
        m = cfg.vote[0] if cfg.vote else 1
        tally = Tally()
        started = utc_now()
        t0 = time.perf_counter()
        seeds = [call_seed(cfg.seed, seq, i) for i in range(m)]
        jitter = random.Random(f"retry:{cfg.seed}:{seq}")

        grammar = cfg.grammar.for_source(source) if cfg.grammar is not None else None

        async def one(i: int) -> Completion | CallFailed:
            try:
                sampling = replace(cfg.sampling, seed=seeds[i], grammar=grammar)
                return await self.call(self.backend, messages, sampling, key=source, tally=tally,
                                       rng=jitter)
            except CallFailed as exc:
                return exc

        if m == 1:
            results: list[Completion | CallFailed] = [await one(0)]
        else:
            results = list(await asyncio.gather(*(one(i) for i in range(m))))
        latency = time.perf_counter() - t0
        answers = [r for r in results if isinstance(r, Completion)]
        errors = [r for r in results if isinstance(r, CallFailed)]
        params = replace(cfg.sampling, grammar=grammar).as_dict() | {
            "seed": seeds[0], "run_seed": cfg.seed, "calls": tally.calls, "select": select}
        if cfg.vote:
            params["vote"] = f"{cfg.vote[0]}:{cfg.vote[1]}"
        common = dict(
            source=source, params=params, prompt_hash=self.template.sha256, started=started,
            finished=utc_now(), latency_s=latency,
            prompt_tokens=_sum(a.prompt_tokens for a in answers),
            completion_tokens=_sum(a.completion_tokens for a in answers),
            finish_reason=answers[0].finish_reason if answers else None,
        )
        if not answers:
            err = errors[0]
            detail = f"{err} (after {err.tries} tries)"
            return Attempt(escape="api_error", escape_detail=detail[:500], **common), rng_state
        if m == 1:
            raw = answers[0].text
            out = classify(raw, source, cfg.target, cfg.relaxed)
        else:
            raw = json.dumps([a.text for a in answers], ensure_ascii=False)
            winner, counts = majority([a.text for a in answers], cfg.vote[1])  # type: ignore[index]
            if winner is None:
                out = Outcome(None, "no_majority", counts)
            else:
                out = classify(winner, source, cfg.target, cfg.relaxed)
        return Attempt(target=out.target, escape=out.escape, escape_detail=out.detail,
                       raw_answer=raw, target_features=out.features, **common), rng_state


def _sum(values: Any) -> int | None:
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


async def run_words(
    store: RunStore,
    run_id: int,
    backend: Backend,
    config: WordsConfig,
    *,
    attempts: int,
    template: PromptTemplate | None = None,
    concurrency: int = 1,
    policy: CallPolicy | None = None,
    budget: Budget | None = None,
    progress: Progress | None = None,
    stop: StopSignal | None = None,
    handle_signals: bool = True,
    on_start: Callable[[WordAgent], None] | None = None,
) -> tuple[AgentRunResult, WordAgent]:
    """Continue the stored run ``run_id`` until seqs ``0 .. attempts-1`` are all stored.

    :func:`detbal.agents.session.drive_task` with a :class:`WordTask` of ``config``: no
    run lookup (the run's stored config is not checked; its ``seed``, if stored, wins).
    Returns the driver's result and the run's :class:`WordAgent` (found list, totals).
    """
    from detbal.agents.session import drive_task

    task = WordTask(config, prompt=template or PromptTemplate.load())
    began: list[WordAgent] = []

    def on_begin(run: Any) -> None:
        began.append(run)
        if on_start is not None:
            on_start(run)

    result = await drive_task(store, run_id, task, backend, attempts=attempts, concurrency=concurrency,
                              budget=budget, policy=policy, progress=progress, stop=stop,
                              handle_signals=handle_signals, on_begin=on_begin)
    return result, began[0]
