"""The word task's rules: answers -> states or categorised escapes, prompts, seeded choices."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from detbal.agents.backends.base import Completion, Message, SamplingParams
from detbal.agents.runner import Budget, CallPolicy
from detbal.agents.words import (
    PromptTemplate,
    WordAgent,
    WordsConfig,
    call_seed,
    classify,
    letter_sum,
    majority,
    parse_vote,
    run_words,
)
from detbal.errors import DetbalError, InputError
from detbal.store import RunStore


@pytest.mark.parametrize("word,total", [("BUZZY", 100), ("ATTITUDE", 100), ("EXCELLENT", 100),
                                        ("CAT", 24), ("A", 1), ("Z", 26)])
def test_letter_sum(word: str, total: int) -> None:
    assert letter_sum(word) == total


@pytest.mark.parametrize(
    "answer,source,relaxed,expected",
    [
        ("ATTITUDE", "BUZZY", False, ("ATTITUDE", None, None)),
        ("  attitude.\n", "BUZZY", False, ("ATTITUDE", None, None)),
        ('"Turkey"', "BUZZY", False, ("TURKEY", None, None)),
        ("", "BUZZY", False, (None, "empty", None)),
        ("  ...  ", "BUZZY", False, (None, "empty", None)),
        ("hello world", "BUZZY", False, (None, "not_a_word", "HELLO WORLD")),
        ("42", "BUZZY", False, (None, "not_a_word", "42")),
        ("CAFÉ", "BUZZY", False, (None, "not_a_word", "CAFÉ")),
        ("buzzy", "BUZZY", False, (None, "same_word", None)),
        ("cat", "BUZZY", False, (None, "wrong_sum", "24")),
        ("cat", "BUZZY", True, ("CAT", None, None)),
        ("BUZZY", "BUZZY", True, (None, "same_word", None)),
        ("two words", "BUZZY", True, (None, "not_a_word", "TWO WORDS")),
    ],
)
def test_classify(answer: str, source: str, relaxed: bool, expected: tuple) -> None:
    out = classify(answer, source, 100, relaxed)
    assert (out.target, out.escape, out.detail) == expected
    if out.target is not None:
        assert out.features == {"letter_sum": letter_sum(out.target)}


def test_majority_needs_n_agreeing() -> None:
    assert majority(["Turkey", "TURKEY.", "cat"], 2)[0] == "TURKEY"
    assert majority(["Turkey", "cat", "dog"], 2)[0] is None
    assert parse_vote("5:3") == (5, 3)
    with pytest.raises(DetbalError):
        parse_vote("3")
    with pytest.raises(DetbalError):
        WordsConfig(vote=(3, 4))


def test_library_errors_name_parameters_not_command_line_flags() -> None:
    from detbal.agents.backends.local import LocalBackend
    from detbal.agents.fit import FitConfig

    cases = [(lambda: WordsConfig(vote=(3, 4)), "vote"),
             (lambda: LocalBackend(n_threads=0), "n_threads"),
             (lambda: FitConfig(islands=0), "islands must be at least 1"),
             (lambda: FitConfig(mode="three-call"), "mode must be one of"),
             (lambda: FitConfig(repopulate_fraction=1.5), "repopulate_fraction")]
    for make, words in cases:
        with pytest.raises(DetbalError) as err:
            make()
        assert words in str(err.value) and "--" not in str(err.value)


def test_seed_word_must_be_valid_unless_relaxed() -> None:
    with pytest.raises(DetbalError, match="sums to 24"):
        WordsConfig(seed_word="CAT")
    WordsConfig(seed_word="CAT", relaxed=True)


def test_packaged_prompt_renders_and_hashes(tmp_path) -> None:
    t = PromptTemplate.load()
    msgs = t.render("BUZZY", 100)
    assert msgs[-1]["role"] == "user" and "BUZZY" in msgs[-1]["content"]
    assert all("{word}" not in m["content"] and "{target}" not in m["content"] for m in msgs)
    assert len(t.sha256) == 64
    small = PromptTemplate.packaged("words_small.txt")
    assert small.sha256 != t.sha256
    own = tmp_path / "p.txt"
    own.write_text("# mine\n[user]\nWord {word}, sum {target}?\n")
    mine = PromptTemplate.load(own)
    assert mine.render("TURKEY", 90) == [{"role": "user", "content": "Word TURKEY, sum 90?"}]


@pytest.mark.parametrize("text,problem", [
    ("[user]\nno placeholder\n", "{word}"),
    ("[user]\n{word}\n[assistant]\nX\n", "end with a [user]"),
    ("stray text\n[user]\n{word}\n", "before the first"),
])
def test_bad_prompt_templates(tmp_path, text: str, problem: str) -> None:
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(InputError, match=problem.replace("[", r"\[").replace("{", r"\{")):
        PromptTemplate.load(p)


def test_choices_depend_on_seed_and_seq_only() -> None:
    cfg = WordsConfig(seed=7)
    a = WordAgent(None, PromptTemplate.load(), cfg, CallPolicy(), Budget())  # type: ignore[arg-type]
    b = WordAgent(None, PromptTemplate.load(), cfg, CallPolicy(), Budget())  # type: ignore[arg-type]
    for agent in (a, b):
        agent.found.extend(["ATTITUDE", "TURKEY", "PERSONAL"])
    assert [a.choose(s) for s in range(50)] == [b.choose(s) for s in range(50)]
    assert len({a.choose(s) for s in range(200)}) == 4
    assert call_seed(1, 2, 0) == call_seed(1, 2, 0) != call_seed(1, 3, 0)


class ScriptedBackend:
    """Answers from a list in call order; records what it was asked."""

    name = "scripted"
    model = "scripted"

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str | None, SamplingParams]] = []

    async def complete(self, messages: Sequence[Message], params: SamplingParams, *,
                       key: str | None = None) -> Completion:
        self.calls.append((key, params))
        text = self.answers[(len(self.calls) - 1) % len(self.answers)]
        return Completion(text, 10, 2, 0.0, "stop", self.model)

    async def aclose(self) -> None:
        return None


def _run(store_path, backend, config, attempts, concurrency=1):
    async def go():
        with RunStore(store_path) as store:
            run_id = store.runs()[0].id if store.runs() else store.create_run("words", "m", "x", {})
            result, agent = await run_words(store, run_id, backend, config, attempts=attempts,
                                            concurrency=concurrency, handle_signals=False)
            rows = list(store.iter_attempts([run_id]))
        return result, agent, rows

    return asyncio.run(go())


def test_every_outcome_is_stored_and_escapes_never_become_prompts(tmp_path) -> None:
    backend = ScriptedBackend(["ATTITUDE", "cat", "", "hello world", "BUZZY", "TURKEY"])
    result, agent, rows = _run(tmp_path / "s.sqlite", backend, WordsConfig(seed=3), 30)
    assert result.committed == 30 and result.stopped is None
    assert sorted(r["seq"] for r in rows) == list(range(30))
    assert {r["escape"] for r in rows} >= {None, "wrong_sum", "empty", "not_a_word"}
    valid = {"BUZZY", "ATTITUDE", "TURKEY"}
    assert {r["source"] for r in rows} <= valid
    assert set(agent.found) <= valid
    for r in rows:
        assert r["prompt_hash"] == PromptTemplate.load().sha256
        assert '"temperature": 1.0' in r["params"] and '"seed"' in r["params"]
        if r["escape"] == "wrong_sum":
            assert r["escape_detail"] == "24"
    # the sampling seed differs per attempt and is passed to the model
    assert len({p.seed for _, p in backend.calls}) == 30


def test_relaxed_mode_stores_letter_sums(tmp_path) -> None:
    backend = ScriptedBackend(["cat", "dog", "ATTITUDE"])
    _run(tmp_path / "r.sqlite", backend, WordsConfig(relaxed=True, seed=1), 9)
    with RunStore(tmp_path / "r.sqlite") as store:
        feats = store.state_features()
    assert feats["CAT"] == {"letter_sum": 24} and feats["DOG"] == {"letter_sum": 26}


def test_majority_vote_stores_all_answers(tmp_path) -> None:
    backend = ScriptedBackend(["TURKEY", "TURKEY", "cat", "ATTITUDE", "PERSONAL", "cat"])
    _, _, rows = _run(tmp_path / "v.sqlite", backend, WordsConfig(vote=(3, 2), seed=1), 2)
    by_seq = {r["seq"]: r for r in rows}
    # calls of one attempt run concurrently; with the scripted order attempt 0 gets
    # TURKEY, TURKEY, cat and attempt 1 gets ATTITUDE, PERSONAL, cat
    assert by_seq[0]["target"] == "TURKEY"
    assert by_seq[1]["escape"] == "no_majority"
    assert '"vote": "3:2"' in by_seq[0]["params"]
    assert len(backend.calls) == 6
