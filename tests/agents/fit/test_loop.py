"""The island search: bookkeeping, escapes, stops and resume (also after kill -9).

Most tests use :class:`ScriptedBackendForBookkeeping`, which answers from a fixed list
of formulas chosen by a hash of the prompt: it tests the loop's bookkeeping only,
not any model.  ``test_recorded_smollm2_answers`` replays real answers of the embedded
SmolLM2-135M model recorded in ``tests/data/fit_smollm2_answers.json`` (re-record with
``python tests/agents/fit/test_loop.py --record``), and ``test_real_local_model`` (slow) runs
that model live.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from detbal.agents.backends.base import BackendError, Completion, Message, SamplingParams
from detbal.agents.fit import FitConfig, add_fit_arguments, config_from_args, run_fit
from detbal.agents.fit.prompts import prompt_hash
from detbal.errors import DetbalError
from detbal.store import ESCAPE_CATEGORIES, RunStore

from support import DATA as TEST_DATA
from support import NIKURADSE as DATA
from support.fit import SMALL_FIT, ScriptedBackendForBookkeeping, bare_call, table
from support.runs import kill_9_after, script


@pytest.fixture(autouse=True)
def _data(nikuradse: Path) -> None:
    """Every test here reads Nikuradse's data (``DETBAL_DATA_DIR``); skipped where absent."""


def _config(**kw: Any) -> FitConfig:
    return FitConfig(**(SMALL_FIT | kw))


def _run(store: RunStore, run_id: int, backends: list[Any], cfg: FitConfig, **kw: Any) -> Any:
    kw.setdefault("call", bare_call)
    return asyncio.run(run_fit(store, run_id, backends, cfg, **kw))


def _new_run(store: RunStore, cfg: FitConfig) -> int:
    return store.create_run("fit", "scripted-list", "scripted", {"fit": cfg.as_dict()})


def _reference_run(store: RunStore, cfg: FitConfig) -> int:
    """A new run of ``cfg`` done whole, uninterrupted, by the scripted backend (to compare with)."""
    ref = _new_run(store, cfg)
    _run(store, ref, [ScriptedBackendForBookkeeping()], cfg)
    return ref


@pytest.mark.parametrize("mode", ["two-call", "one-call"])
def test_every_attempt_is_a_transition_or_a_categorised_escape(tmp_path: Path, mode: str) -> None:
    cfg = _config(mode=mode)
    with RunStore(tmp_path / "s.db") as store:
        rid = _new_run(store, cfg)
        ticks: list[int] = []
        res = _run(store, rid, [ScriptedBackendForBookkeeping()], cfg,
                   progress=lambda n=1, **pf: ticks.append(n))
        rows = sorted(store.iter_attempts([rid]), key=lambda r: r["seq"])
        features = store.state_features()
        canonical = store.state_canonical()
    assert res.stopped is None and res.committed == res.stored == res.target == 36
    assert ticks == [3] * 12  # one tick per round, after its three attempts are committed
    assert [r["seq"] for r in rows] == list(range(36))
    seen_escapes = set()
    produced = {cfg.initial_ansatz: -1}
    for r in rows:
        p = json.loads(r["params"])
        rnd, slot = divmod(r["seq"], 3)
        assert (p["round"], p["slot"], p["island"]) == (rnd, slot, rnd % cfg.islands)
        assert p["mode"] == mode and r["prompt_hash"] == prompt_hash(mode)
        assert (r["target"] is None) != (r["escape"] is None)
        # the example shown was the seed or produced by an earlier round
        assert r["source"] in produced and produced[r["source"]] < 3 * rnd
        if r["escape"] is None:
            f = features[r["target"]]
            assert f["dataset"] == "nikuradse_2" and 0 <= f["score"] <= 100
            assert len(f["params"]) == f["n_params"] and f["mse"] > 0
            assert p["fit"]["score"] == f["score"]
            assert r["target"] in canonical
            produced.setdefault(r["target"], r["seq"])
        else:
            assert r["escape"] in ESCAPE_CATEGORIES and r["escape_detail"]
            seen_escapes.add(r["escape"])
    assert {"invalid_ansatz", "fit_failed"} <= seen_escapes <= {"invalid_ansatz", "fit_failed", "empty"}
    by_round: dict[int, set[str]] = {}
    for r in rows:
        by_round.setdefault(r["seq"] // 3, set()).add(r["source"])
    assert all(len(s) == 1 for s in by_round.values())  # one example per round
    # the seed is a source the model may never write: its form and fit are stored too
    assert canonical[cfg.initial_ansatz] == "log_v_k_nu*param1 + param2"
    assert features[cfg.initial_ansatz]["score"] == 20.0


def test_partial_stop_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _config()
    with RunStore(tmp_path / "s.db") as store:
        ref = _reference_run(store, cfg)
        rid = _new_run(store, cfg)
        first = _run(store, rid, [ScriptedBackendForBookkeeping()], cfg, attempts=20, concurrency=3)
        assert first.stored == 20 and sorted(store.stored_seqs(rid)) == list(range(20))
        again = _run(store, rid, [ScriptedBackendForBookkeeping()], cfg, concurrency=2)
        assert again.committed == 16 and again.stored == 36
        assert table(store, rid) == table(store, ref)
        # nothing left to do: no model call, nothing stored
        backend = ScriptedBackendForBookkeeping()
        done = _run(store, rid, [backend], cfg)
        assert done.committed == 0 and backend.calls == 0


def test_attempts_beyond_the_planned_cycles_continue(tmp_path: Path) -> None:
    cfg = _config(cycles=1)
    with RunStore(tmp_path / "s.db") as store:
        rid = _new_run(store, cfg)
        res = _run(store, rid, [ScriptedBackendForBookkeeping()], cfg, attempts=25)
        assert res.stored == 25 and sorted(store.stored_seqs(rid)) == list(range(25))


def test_several_models_are_all_used(tmp_path: Path) -> None:
    cfg = _config()
    models = [ScriptedBackendForBookkeeping("model-a"), ScriptedBackendForBookkeeping("model-b")]
    with RunStore(tmp_path / "s.db") as store:
        rid = _new_run(store, cfg)
        _run(store, rid, models, cfg)
        used = [json.loads(r["params"])["model"] for r in store.iter_attempts([rid])]
    counts = {m: used.count(m) for m in ("model-a", "model-b")}
    assert min(counts.values()) >= 6


class _Failing(ScriptedBackendForBookkeeping):
    async def complete(self, messages: Sequence[Message], params: SamplingParams,
                       *, key: str | None = None) -> Completion:
        raise BackendError("HTTP 500: upstream failed", retryable=False, status=500)


def test_failed_calls_are_api_error_escapes(tmp_path: Path) -> None:
    cfg = _config()
    with RunStore(tmp_path / "s.db") as store:
        rid = _new_run(store, cfg)
        res = _run(store, rid, [_Failing()], cfg, attempts=9)
        rows = list(store.iter_attempts([rid]))
    assert res.stored == 9
    assert {r["escape"] for r in rows} == {"api_error"}
    assert all("HTTP 500" in r["escape_detail"] for r in rows)
    assert {r["source"] for r in rows} == {cfg.initial_ansatz}


def test_budget_stop_stores_nothing_half_done_and_resumes(tmp_path: Path) -> None:
    from detbal.agents.runner import Budget, call_model

    cfg = _config()
    with RunStore(tmp_path / "s.db") as store:
        ref = _reference_run(store, cfg)
        rid = _new_run(store, cfg)
        budget = Budget(max_calls=10)

        async def limited(backend: Any, messages: Any, params: Any, *, key: str | None = None) -> Completion:
            return await call_model(backend, messages, params, budget=budget, key=key)

        res = _run(store, rid, [ScriptedBackendForBookkeeping()], cfg, call=limited)
        assert res.stopped is not None and "budget" in res.stopped
        stored = sorted(store.stored_seqs(rid))
        assert 0 < len(stored) < 36 and len(stored) % 3 == 0  # whole rounds only
        _run(store, rid, [ScriptedBackendForBookkeeping()], cfg)
        assert table(store, rid) == table(store, ref)


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    cfg = _config()
    with RunStore(tmp_path / "s.db") as store:
        rid = _new_run(store, cfg)
        with pytest.raises(DetbalError, match="islands=3"):
            _run(store, rid, [ScriptedBackendForBookkeeping()], _config(islands=4))


def test_repopulation_reseeds_the_worst_islands_from_the_best() -> None:
    from detbal.agents.fit.loop import Member, repopulated

    scores = [30.0, 55.0, 10.0, 20.0]
    islands = [[Member(f"s{i}", sc, 1.0, (), "", i)] for i, sc in enumerate(scores)]
    assert [pop[0].text for pop in repopulated(islands, 0.5)] == ["s0", "s1", "s1", "s1"]
    assert [pop[0].text for pop in repopulated(islands, 0.25)] == ["s0", "s1", "s1", "s3"]
    assert [pop[0].text for pop in repopulated(islands, 0.0)] == ["s0", "s1", "s2", "s3"]


def test_cli_options_and_config() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)  # the runner's own option is left alone
    add_fit_arguments(parser)
    args = parser.parse_args(["--islands", "4", "--fit-mode", "one-call", "--starts", "50",
                              "--dataset", "nikuradse_1", "--seed", "7", "--data-dir", "/x"])
    cfg = config_from_args(args)
    assert (cfg.islands, cfg.mode, cfg.starts, cfg.dataset, cfg.seed, cfg.data_dir) == (
        4, "one-call", 50, "nikuradse_1", 7, "/x")
    assert cfg.cycles == 30 and cfg.rounds == 10 and cfg.per_round == 3
    assert FitConfig.from_mapping(cfg.as_dict()) == cfg
    with pytest.raises(DetbalError):
        FitConfig(mode="three-call")


def test_nikuradse_1_runs_with_its_own_variables(tmp_path: Path) -> None:
    cfg = _config(dataset="nikuradse_1", islands=1, cycles=1, rounds=1)
    with RunStore(tmp_path / "s.db") as store:
        rid = _new_run(store, cfg)
        res = _run(store, rid, [ScriptedBackendForBookkeeping()], cfg)
        rows = list(store.iter_attempts([rid]))
    assert res.stored == 3
    assert rows[0]["source"] == "param1*r_k + param2*log_Re + param3"
    # the scripted formulas use log_v_k_nu, which nikuradse_1 does not have
    assert all(r["escape"] in ("invalid_ansatz", "fit_failed", "empty") for r in rows)


# -- kill -9 ---------------------------------------------------------------------

def _child(db: str) -> None:
    """Run in a subprocess: the whole run, slowly, until killed."""
    os.environ["DETBAL_DATA_DIR"] = str(DATA)
    cfg = _config()
    with RunStore(db) as store:
        asyncio.run(run_fit(store, 1, [ScriptedBackendForBookkeeping(delay=0.15)], cfg,
                            concurrency=2, call=bare_call))


def test_resume_after_kill_9(tmp_path: Path) -> None:
    cfg = _config()
    db = tmp_path / "killed.db"
    ref_db = tmp_path / "ref.db"
    with RunStore(db) as store:
        assert _new_run(store, cfg) == 1
    assert kill_9_after(script(__file__, str(db)), db, 10, timeout=120) >= 10
    with RunStore(db) as store:
        before = store.stored_seqs(1)
        assert 10 <= len(before) < 36
        assert {s - s % 3 + k for s in before for k in range(3)} == before  # whole rounds only
        res = _run(store, 1, [ScriptedBackendForBookkeeping()], cfg)
        assert res.stored == 36 and res.committed == 36 - len(before)
        got = table(store, 1)
    with RunStore(ref_db) as store:
        ref = _reference_run(store, cfg)
        want = table(store, ref)
    assert got == want


# -- constrained decoding -----------------------------------------------------------

class GrammarEcho:
    """Answers as a constrained model could (free parameter numbers); records each call's grammar."""

    name = "echo"
    model = "echo"

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str | None]] = []  # (key, grammar)

    async def complete(self, messages: Sequence[Message], params: SamplingParams,
                       *, key: str | None = None) -> Completion:
        self.calls.append((key, params.grammar))
        if messages[-1]["content"].startswith("Turn the formula"):
            text = "param4*log_v_k_nu"
        else:
            text = ("IDEA 1\nREASONING: a line\nANSATZ: param3*log_v_k_nu + param7\n"
                    "IDEA 2\nREASONING: a curve\nANSATZ: param2*tanh(log_v_k_nu)\n"
                    "IDEA 3\nREASONING: again\nANSATZ: log_v_k_nu*param1 + param1\n")
        return Completion(text, 10, 10, 0.0, "stop", self.model)

    async def aclose(self) -> None:
        pass


def test_constrained_answers_are_renumbered_and_record_their_grammar(tmp_path: Path) -> None:
    from detbal.agents.backends.replay import stored_answers
    from detbal.agents.fit.grammar import ansatz_grammar

    one = ansatz_grammar(("log_v_k_nu",), 3)
    with RunStore(tmp_path / "s.db") as store:
        for constrain in (True, False):
            cfg = _config(islands=1, cycles=1, rounds=1, mode="one-call", constrain=constrain)
            rid = _new_run(store, cfg)
            echo = GrammarEcho()
            _run(store, rid, [echo], cfg)
            rows = sorted(store.iter_attempts([rid]), key=lambda r: r["seq"])
            params = [json.loads(r["params"]) for r in rows]
            if constrain:
                assert echo.calls == [("param1*log_v_k_nu + param2", one.gbnf)]
                assert [r["target"] for r in rows] == [
                    "param1*log_v_k_nu + param2", "param1*tanh(log_v_k_nu)", "log_v_k_nu*param1 + param1"]
                assert all(p["grammar"] == one.sha256 for p in params)
            else:
                assert echo.calls == [("param1*log_v_k_nu + param2", None)]
                assert rows[0]["escape"] == "invalid_ansatz"  # param3, param7: gaps
                assert rows[1]["escape"] == "invalid_ansatz" and rows[2]["target"]
                assert all(p["grammar"] is None for p in params)
            # the whole answer is stored once, with the first attempt; replay serves it once
            assert params[0]["answer"].startswith("IDEA 1") and [p.get("answer_in") for p in params[1:]] == [0, 0]
            served = [a for r in rows for a in stored_answers(r)]
            assert [(k, text) for k, (text, *_rest) in served] == [(rows[0]["source"], params[0]["answer"])]
        # two-call: the generator is free, each translation is constrained (and replayable by idea)
        cfg = _config(islands=1, cycles=1, rounds=1, mode="two-call", constrain=True)
        rid = _new_run(store, cfg)
        echo = GrammarEcho()
        _run(store, rid, [echo], cfg)
        bare = ansatz_grammar(("log_v_k_nu",), None)
        assert echo.calls[0][1] is None and [g for _k, g in echo.calls[1:]] == [bare.gbnf] * 3
        assert all(k.startswith("translate:IDEA") for k, _g in echo.calls[1:])
        rows = sorted(store.iter_attempts([rid]), key=lambda r: r["seq"])
        assert {r["target"] for r in rows} == {"param1*log_v_k_nu"}
        p = json.loads(rows[0]["params"])
        assert p["grammar"] is None and p["translator"]["grammar"] == bare.sha256
        served = [k for r in rows for k, _a in stored_answers(r)]
        assert served == [rows[0]["source"]] + [k for k, _g in echo.calls[1:]]


# -- a real model ------------------------------------------------------------------

@pytest.mark.slow
def test_real_local_model(tmp_path: Path) -> None:
    """SmolLM2-135M (embedded, llama.cpp): every answer ends as a transition or a categorised escape."""
    pytest.importorskip("llama_cpp")
    local = pytest.importorskip("detbal.agents.backends.local")
    try:
        backend = local.LocalBackend(n_threads=2)
    except DetbalError as exc:
        pytest.skip(str(exc))
    cfg = FitConfig(islands=1, cycles=1, rounds=1, mode="one-call", max_tokens=96, starts=20, seed=1)
    with RunStore(tmp_path / "s.db") as store:
        rid = store.create_run("fit", backend.model, "local", {"fit": cfg.as_dict()})
        res = asyncio.run(run_fit(store, rid, [backend], cfg))
        rows = list(store.iter_attempts([rid]))
    asyncio.run(backend.aclose())
    assert res.stored == 3 and sorted(r["seq"] for r in rows) == [0, 1, 2]
    assert rows[0]["completion_tokens"] and rows[0]["prompt_tokens"]
    for r in rows:
        assert (r["target"] is None) != (r["escape"] is None)
        assert r["escape"] is None or r["escape"] in ("empty", "invalid_ansatz", "fit_failed")


# -- real answers, recorded ---------------------------------------------------------

RECORDED = TEST_DATA / "fit_smollm2_answers.json"


def _recording_config() -> FitConfig:
    return FitConfig(islands=2, cycles=1, rounds=2, mode="two-call", max_tokens=160,
                     translate_max_tokens=48, starts=20, seed=5)


def _call_key(messages: Sequence[Message], params: SamplingParams) -> str:
    import hashlib

    sampling = params.as_dict()
    if sampling.get("grammar") is None:  # recorded before constrained decoding existed
        sampling.pop("grammar", None)
    blob = json.dumps([list(messages), sampling], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class RecordedSmolLM2:
    """Real SmolLM2-135M answers, served by a hash of (messages, sampling parameters)."""

    name = "recorded"

    def __init__(self, path: Path = RECORDED) -> None:
        doc = json.loads(path.read_text())
        self.model = doc["model"]
        self.answers = doc["answers"]

    async def complete(self, messages: Sequence[Message], params: SamplingParams,
                       *, key: str | None = None) -> Completion:
        a = self.answers.get(_call_key(messages, params))
        if a is None:
            raise AssertionError("no recorded answer for this prompt: prompts or schedule changed;"
                                 " re-record with `python tests/agents/fit/test_loop.py --record`")
        return Completion(a["text"], a["prompt_tokens"], a["completion_tokens"], a["latency_s"],
                          a["finish_reason"], self.model)

    async def aclose(self) -> None:
        pass


def _record() -> None:
    """Run the recording configuration on the embedded model and save every answer."""
    from detbal.agents.backends.local import LocalBackend

    os.environ.setdefault("DETBAL_DATA_DIR", str(DATA))
    backend = LocalBackend(n_threads=2)
    answers: dict[str, Any] = {}

    async def recording(b: Any, messages: Any, params: Any, *, key: str | None = None) -> Completion:
        c = await b.complete(messages, params)
        answers[_call_key(messages, params)] = {
            "text": c.text, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "latency_s": round(c.latency_s, 3), "finish_reason": c.finish_reason}
        return c

    import tempfile

    cfg = _recording_config()
    with tempfile.TemporaryDirectory() as d, RunStore(Path(d) / "rec.db") as store:
        rid = store.create_run("fit", backend.model, "local", {"fit": cfg.as_dict()})
        asyncio.run(run_fit(store, rid, [backend], cfg, call=recording))
    asyncio.run(backend.aclose())
    RECORDED.write_text(json.dumps({"model": backend.model, "config": cfg.as_dict(),
                                    "answers": answers}, indent=1, sort_keys=True) + "\n")


def test_recorded_smollm2_answers(tmp_path: Path) -> None:
    """The loop on real model output: every answer ends as a transition or a categorised escape."""
    if not RECORDED.is_file():
        pytest.skip("no recorded answers")
    cfg = _recording_config()
    backend = RecordedSmolLM2()
    with RunStore(tmp_path / "s.db") as store:
        rid = store.create_run("fit", backend.model, "recorded", {"fit": cfg.as_dict()})
        res = _run(store, rid, [backend], cfg)
        rows = sorted(store.iter_attempts([rid]), key=lambda r: r["seq"])
        features = store.state_features()
    assert res.stopped is None and [r["seq"] for r in rows] == list(range(12))
    for r in rows:
        assert (r["target"] is None) != (r["escape"] is None)
        if r["escape"] is None:
            assert 0 <= features[r["target"]]["score"] <= 100
        else:
            assert r["escape"] in ("empty", "invalid_ansatz", "fit_failed") and r["escape_detail"]
    # tokens: each round's generator call on its slot 0, plus the translator calls
    assert all(rows[3 * k]["prompt_tokens"] for k in range(4))


if __name__ == "__main__":
    if sys.argv[1] == "--record":
        _record()
    else:
        _child(sys.argv[1])


@pytest.mark.parametrize("signals", [1, 2])
def test_sigint_stops_cleanly_and_the_run_resumes(tmp_path: Path, signals: int) -> None:
    """One SIGINT: rounds in flight finish; a second: they are dropped. Either way whole rounds only."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    cfg = _config()
    sent = []

    def progress(n: int = 1, **_: Any) -> None:
        if not sent:
            sent.append(1)
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)

    with RunStore(tmp_path / "s.db") as store:
        ref = _reference_run(store, cfg)
        rid = _new_run(store, cfg)
        res = _run(store, rid, [ScriptedBackendForBookkeeping(delay=0.01)], cfg, concurrency=3,
                   progress=progress, handle_signals=True)
        assert res.stopped == "interrupted"
        n = len(store.stored_seqs(rid))
        assert 3 <= n < 36 and n % 3 == 0
        _run(store, rid, [ScriptedBackendForBookkeeping()], cfg)
        assert table(store, rid) == table(store, ref)
